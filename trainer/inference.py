"""`entrenar-train eval | predict | export CHECKPOINT ...`: use a checkpoint without training.

eval: accuracy, loss, per-class precision/recall/F1/support, macro and weighted averages and the
confusion matrix, printed and written to eval.json. predict: JSONL of label and probabilities for
each text (arguments or stdin lines). export: merge the adapter into a plain HF model folder that
`transformers.pipeline("text-classification", model=OUT)` loads.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch
import torch.nn.functional as F

from trainer.checkpoint import METADATA, TRAINER_JSON, check_for_inference, read_json
from trainer.errors import UserError
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.class_metrics import (
    Cells,
    cells_of,
    class_scores,
    confusion_cells,
    dense,
)
from trainer.monitor.text import printable

# ---------------------------------------------------------------------------------------- metrics


# eval.json holds the confusion matrix whole up to this many classes (10,000 cells); beyond, only
# its non-zero cells (at most one per sample): 10,000 classes made a 10⁸-cell matrix (4.2 GB).
DENSE_MATRIX_MAX_CLASSES = 100
PRINTED_CLASSES = 20  # eval's printed table: every class up to this many, else the best and worst


def confusion_matrix(labels: list[int], predictions: list[int], k: int) -> list[list[int]]:
    """matrix[true][predicted] = count."""
    return dense(confusion_cells(labels, predictions), k)


def classification_report(matrix: list[list[int]] | Cells, names: list[str]) -> dict[str, Any]:
    """Per-class precision/recall/F1/support and macro/weighted averages from a confusion matrix
    (dense, or its non-zero cells), computed as the epoch records' are
    (trainer/monitor/class_metrics.py)."""
    k = len(names)
    cells = cells_of(matrix) if isinstance(matrix, list) else matrix
    scores = class_scores(cells, k)
    per_class = dict(zip(names, scores))
    support = [s["support"] for s in scores]
    total = sum(support)

    def average(weights: list[float]) -> dict[str, float]:
        norm = sum(weights)
        return {
            m: sum(w * s[m] for w, s in zip(weights, scores)) / norm if norm else 0.0
            for m in ("precision", "recall", "f1")
        }

    if k <= DENSE_MATRIX_MAX_CLASSES:
        confusion: dict[str, Any] = {"labels": names, "matrix": dense(cells, k)}
    else:
        nonzero = [[y, p, n] for (y, p), n in sorted(cells.items())]
        confusion = {"labels": names, "matrix": None, "nonzero": nonzero}
    hits = sum(n for (y, p), n in cells.items() if y == p)
    return {
        "accuracy": hits / total if total else 0.0,
        "per_class": per_class,
        "macro_avg": {**average([1.0] * k), "support": total},
        "weighted_avg": {**average([float(s) for s in support]), "support": total},
        "confusion_matrix": confusion,
    }


# ---------------------------------------------------------------------------------------- loading

# No token is longer than this many characters in any real vocabulary (most are under 16), so the
# first max_length × 32 characters of a text hold all the tokens truncation keeps; the rest would
# only cost memory (a 12 MB text once took 3.4 GB to tokenize, for 128 tokens kept).
CHARS_PER_TOKEN_BOUND = 32


def cut(text: str, max_length: int) -> str:
    """The part of `text` tokenization with truncation to max_length can use."""
    return text[: max_length * CHARS_PER_TOKEN_BOUND]


@dataclass
class Classifier:
    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    autocast: Any
    config: Any  # the run's Config, as the checkpoint saved it

    def logits(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        out = []
        self.model.eval()
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(
                    [cut(text, self.max_length) for text in texts[i : i + batch_size]],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                with self.autocast():
                    out.append(self.model(**enc).logits.float())
        return torch.cat(out) if out else torch.empty(0, len(self.labels))


def load_classifier(checkpoint: str | Path) -> Classifier:
    """A checkpoint folder → the base model from its recorded path with the adapter on top."""
    from trainer.model import (
        autocast,
        check_model_dir,
        pick_device,
        quiet_bitsandbytes,
        quiet_transformers,
        resolve_precision,
    )

    quiet_bitsandbytes()
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from trainer.config import config_from_dict
    from trainer.custom_code import load_pretrained, refuse_custom_code

    folder = Path(checkpoint)
    if not (folder / "adapter_config.json").is_file():
        raise UserError(f"{folder}: not a checkpoint folder (no adapter_config.json)")
    state = read_json(folder / TRAINER_JSON)
    if not isinstance(state.get("config"), dict):
        raise UserError(
            f"{folder / TRAINER_JSON}: no saved config (the run's settings); not a checkpoint "
            "entrenar-train wrote, or a damaged one"
        )
    check_for_inference(folder)  # one line for a damaged or hostile file, before peft tries
    config = config_from_dict(state["config"], str(folder / TRAINER_JSON))
    meta = read_json(folder / METADATA)
    base_path = meta.get("base_model") or config.model.path
    if not Path(base_path, "config.json").is_file():
        raise UserError(f"{folder}: its base model {base_path} is not there any more")
    check_model_dir(base_path)  # safetensors weights only, no custom code
    refuse_custom_code(folder, read_json(folder / "config.json"), f"checkpoint {folder}")
    hf_config = load_pretrained(AutoConfig, folder)
    with quiet_transformers():
        base = load_pretrained(
            AutoModelForSequenceClassification,
            base_path,
            config=hf_config,
            dtype=torch.float32,
            use_safetensors=True,
        )
        model = PeftModel.from_pretrained(base, folder, trust_remote_code=False)
    tokenizer = load_pretrained(AutoTokenizer, folder)
    device = pick_device()
    precision = resolve_precision(config.model.precision, device)

    labels = [hf_config.id2label[i] for i in range(len(hf_config.id2label))]
    return Classifier(
        model.to(device),
        tokenizer,
        labels,
        config.model.max_length,
        lambda: autocast(device, precision),
        config,
    )


# ---------------------------------------------------------------------------------------- commands


def cmd_eval(args: argparse.Namespace) -> int:
    from trainer.data import label_ids, read_rows

    clf = load_classifier(args.checkpoint)
    rows = read_rows(args.data, clf.config.data.text_field, clf.config.data.label_field)
    labels = label_ids(rows, clf.labels)
    logits = clf.logits([r.text for r in rows])
    target = torch.tensor(labels)
    loss = float(F.cross_entropy(logits.cpu(), target))
    predictions = logits.argmax(-1).tolist()
    report = classification_report(confusion_cells(labels, predictions), clf.labels)
    result = {
        "schema": "entrenar-tui/eval",
        "version": 1,
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "data": str(Path(args.data).resolve()),
        "n": len(rows),
        "loss": loss,
        **report,
    }
    atomic_write_json(args.out, result)
    print(format_report(result))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 0


def format_report(result: dict[str, Any]) -> str:
    """The human table of `eval`. Labels come from the checkpoint (and so from whoever made the
    data): printable, so none can send the terminal an escape sequence. With more than
    PRINTED_CLASSES classes, the best and the worst by F1 and a line saying how many are left out
    (all of them are in eval.json); the confusion matrix only where it fits."""
    per_class = [(printable(name), m) for name, m in result["per_class"].items()]
    left_out = max(0, len(per_class) - PRINTED_CLASSES)
    if left_out:
        half = PRINTED_CLASSES // 2
        order = sorted(range(len(per_class)), key=lambda i: (per_class[i][1]["f1"], -per_class[i][1]["support"]))  # fmt: skip
        worst = order[:half]  # the lowest F1; among equals, the most samples
        rest = sorted(order[half:], key=lambda i: (-per_class[i][1]["f1"], -per_class[i][1]["support"]))  # fmt: skip
        per_class = [per_class[i] for i in rest[:half] + worst[::-1]]
    width = max(12, *(len(n) for n, _ in per_class)) + 2
    lines = [
        f"accuracy {result['accuracy']:.4f}   loss {result['loss']:.4f}   n {result['n']}",
        "",
        f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]

    def row(name: str, m: dict[str, Any]) -> str:
        return f"{name:<{width}}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10}"

    for i, (name, m) in enumerate(per_class):
        if left_out and i == PRINTED_CLASSES // 2:
            lines.append(
                f"... {left_out:,} more class{'es' if left_out > 1 else ''} between these "
                "(the best and the worst by F1; every class is in the --out JSON)"
            )
        lines.append(row(name, m))
    lines += [row("macro avg", result["macro_avg"]), row("weighted avg", result["weighted_avg"])]
    matrix = result["confusion_matrix"]["matrix"]
    if left_out or matrix is None:
        k = len(result["confusion_matrix"]["labels"])
        lines += [
            "",
            f"confusion matrix: {k:,} × {k:,}, not printed (all of it is in the --out JSON)",
        ]
        return "\n".join(lines)
    names = [printable(n) for n in result["confusion_matrix"]["labels"]]
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(f"{'':<{width}}" + "".join(f"{n[:9]:>10}" for n in names))
    for name, counts in zip(names, matrix):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>10}" for v in counts))
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    clf = load_classifier(args.checkpoint)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    probabilities = clf.logits(texts).softmax(-1).tolist()
    for text, probs in zip(texts, probabilities):
        best = max(range(len(probs)), key=probs.__getitem__)
        record = {
            "text": text,
            "label": clf.labels[best],
            "probabilities": dict(zip(clf.labels, probs)),
        }
        sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
    sys.stdout.flush()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from trainer.checkpoint import save_model_config
    from trainer.model import quiet_transformers
    from trainer.monitor.atomic import match_umask
    from trainer.preflight import check_output_dir

    out = Path(args.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder")
    clf = load_classifier(args.checkpoint)
    check_output_dir(out, "OUT_DIR")
    merged = clf.model.merge_and_unload()
    with quiet_transformers():  # no "Writing model shards" bar
        merged.save_pretrained(out, safe_serialization=True)
    save_model_config(merged.config, out)
    clf.tokenizer.save_pretrained(out)
    match_umask(out)
    print(f"exported a merged model to {out}", file=sys.stderr)
    return 0
