"""entrenar-train against HF Trainer + PEFT on a Qwen2-0.5B-shaped classifier, LoRA and QLoRA: one command.

    pip install -e . && python bench/gpu.py                 # a CUDA box: the full-size model
    python bench/gpu.py --rounds 3 --epochs 2 --batch-size 32
    python bench/gpu.py --tiny --device cpu                 # the same path in a minute, anywhere

What it does, nothing downloaded:
1. Builds the model in a temporary folder: a byte-level BPE tokenizer trained here on the corpus, and
   a randomly initialised Qwen2ForSequenceClassification of Qwen2-0.5B's shape (hidden 896, 24
   layers, 14 heads, 2 KV heads, intermediate 4864; --tiny: hidden 64, 2 layers, 4 heads).
2. The corpus: ~60-token docstrings of this interpreter's standard library, six topics
   (bench/docstring_corpus.py).
3. Contenders, each in its own process, alternating over --rounds, for LoRA and for QLoRA (NF4 base):
   entrenar-train (bf16) and HF Trainer + PEFT at its best (bf16, attn_implementation="sdpa",
   train_sampling_strategy="group_by_length"), the same LoRA (r 16, alpha 32, dropout 0.05, q/v),
   batch, max_length, schedule, epochs, seed.
   Reported per contender (medians): training samples/s and non-padding tokens/s (validation
   excluded), MFU (trainer/flops.py's model FLOPs over the device's table peak in bf16, or over the
   measured bf16 matmul peak on a CPU), peak memory (torch.cuda.max_memory_allocated on CUDA, the
   process's peak RSS on a CPU), final validation accuracy.
4. A correctness run (entrenar-train, LoRA, 4 epochs at learning rate 2e-3): the loss goes down (the mean of the last
   steps below the first steps'), and the adapter reloaded from checkpoints/last
   (trainer.inference.load_classifier) reaches the validation accuracy epochs.json recorded.
Prints a table and writes it as JSON (--json FILE). Exit 1 if the correctness run fails.
"""

from __future__ import annotations

import argparse
import importlib.util
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

SHAPES = {
    "full": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab": 8000},
    # hidden 64: bitsandbytes packs NF4 in blocks of 64 input features
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab": 500},
}  # fmt: skip
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "targets": ["q_proj", "v_proj"]}


# ------------------------------------------------------------------------------------ the setup


def lora_config():
    """The adapter both contenders train (and the FLOP count is made for): LORA's settings."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"],
    )


def write_corpus(path: Path, limit: int | None) -> list[str]:
    from bench.docstring_corpus import build

    rows = build(seed=0)[:limit]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [r["input"] for r in rows]


def build_model(folder: Path, texts: list[str], shape: dict, num_labels: int) -> None:
    """A local byte-level BPE tokenizer and a random Qwen2ForSequenceClassification, saved."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForSequenceClassification

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>"]
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=shape["vocab"], special_tokens=special)
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=special[0], pad_token=special[0])
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    dims = {k: v for k, v in shape.items() if k != "vocab"}
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(), max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tok.token_to_id(special[0]), pad_token_id=tok.token_to_id(special[0]),
        num_labels=num_labels, **dims,
    )  # fmt: skip
    Qwen2ForSequenceClassification(config).save_pretrained(folder)


def training_flops(spec: dict) -> tuple[int, int, int]:
    """(model FLOPs of one epoch, non-padding tokens of one epoch, training samples): trainer/flops.py's
    count on the train split, the same for every contender."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from trainer.flops import step_flops
    from trainer.model import head_modules

    lengths = train_lengths(spec)
    config = AutoConfig.from_pretrained(spec["model"], trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    model = get_peft_model(
        model,
        lora_config(),
    )
    return step_flops(model, head_modules(model)).of_lengths(lengths), sum(lengths), len(lengths)


def train_lengths(spec: dict) -> list[int]:
    from transformers import AutoTokenizer

    from trainer.config import DataSection
    from trainer.data import load_corpus

    corpus = load_corpus(
        DataSection(train=spec["data"], val_split=0.2, class_weights="uniform"), spec["seed"]
    )
    tok = AutoTokenizer.from_pretrained(spec["model"], trust_remote_code=False)
    return [
        len(ids)
        for ids in tok(corpus.train_texts, truncation=True, max_length=spec["max_length"])[
            "input_ids"
        ]
    ]


def peak_flops(device: str) -> tuple[float | None, str]:
    import torch

    from trainer.flops import measure_cpu_peak, table_peak

    if device == "cuda":
        name = torch.cuda.get_device_name()
        found = table_peak(name, "bf16")
        return (found[0], found[1]) if found else (None, f"{name}: not in the peak table")
    peak = measure_cpu_peak("bf16", budget_s=2.0)
    return peak.flops_per_sec, f"{peak.device}: {peak.source}"


# ------------------------------------------------------------------------------------ contenders


def run_entrenar(spec: dict) -> dict:
    from trainer.cli import main as train_main
    from trainer.config import load_config
    from trainer.data import load_corpus
    from trainer.inference import classification_report, confusion_matrix, load_classifier

    config = Path(spec["out"]).with_suffix(".toml")
    config.write_text(
        f'[model]\npath = "{spec["model"]}"\nmax_length = {spec["max_length"]}\nprecision = "bf16"\n'
        f'quantize = "{"nf4" if spec["qlora"] else "none"}"\n'
        f"[lora]\nr = {LORA['r']}\nalpha = {LORA['alpha']}\ndropout = {LORA['dropout']}\n"
        f"target_modules = {json.dumps(LORA['targets'])}\n"
        f'[data]\ntrain = "{spec["data"]}"\nval_split = 0.2\nclass_weights = "uniform"\n'
        f"[train]\nepochs = {spec['epochs']}\nbatch_size = {spec['batch_size']}\nlearning_rate = {spec['lr']}\n"
        f"lr_min = 1e-6\nwarmup_fraction = 0.06\nsave_every = 0\nearly_stopping_patience = 0\n"
        f"log_interval = {spec['log_interval']}\nseed = {spec['seed']}\n"
        f'[output]\ndir = "{spec["out"]}"\n'
    )
    code = train_main([str(config)])
    if code != 0:
        raise SystemExit(f"entrenar-train exited {code}")
    run = Path(spec["out"])
    epochs = json.loads((run / "epochs.json").read_text())["epochs"]
    n_train = json.loads((run / "run.json").read_text())["data"]["n_train"]
    train_time = sum(n_train / e["train_samples_per_sec"] for e in epochs)
    result = {"train_time_s": train_time, "val_accuracy": epochs[-1]["val_accuracy"]}
    if spec.get("correctness"):
        losses = [
            json.loads(line)["loss"] for line in (run / "steps.jsonl").read_text().splitlines()
        ]
        k = max(1, len(losses) // 5)
        clf = load_classifier(run / "checkpoints" / "last")
        corpus = load_corpus(load_config(config).data, spec["seed"])
        preds = clf.logits(corpus.val_texts).argmax(-1).tolist()
        report = classification_report(
            confusion_matrix(corpus.val_labels, preds, len(clf.labels)), clf.labels
        )
        result |= {
            "first_loss": sum(losses[:k]) / k,
            "last_loss": sum(losses[-k:]) / k,
            "reloaded_accuracy": report["accuracy"],
        }
    return result


def run_hf(spec: dict) -> dict:
    """HF Trainer + PEFT at its best: bf16, SDPA, length-grouped batches (and NF4 for QLoRA)."""
    import numpy as np
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BitsAndBytesConfig,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from trainer.config import DataSection
    from trainer.data import load_corpus

    corpus = load_corpus(
        DataSection(train=spec["data"], val_split=0.2, class_weights="uniform"), spec["seed"]
    )
    tok = AutoTokenizer.from_pretrained(spec["model"], trust_remote_code=False)
    names = corpus.label_names
    kwargs = {"num_labels": len(names), "attn_implementation": "sdpa", "dtype": torch.float32}
    if spec["qlora"]:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=["score"],
        )
        kwargs["device_map"] = {"": spec["device"] if spec["device"] == "cpu" else 0}
    model = AutoModelForSequenceClassification.from_pretrained(
        spec["model"], trust_remote_code=False, **kwargs
    )
    model.config.pad_token_id = tok.pad_token_id
    if spec["qlora"]:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(
        model,
        lora_config(),
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

    args = TrainingArguments(
        output_dir=spec["out"], per_device_train_batch_size=spec["batch_size"], per_device_eval_batch_size=spec["batch_size"] * 2,
        num_train_epochs=spec["epochs"], learning_rate=spec["lr"], weight_decay=0.01, warmup_steps=0.06,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr": 1e-6}, max_grad_norm=1.0, seed=spec["seed"],
        bf16=True, train_sampling_strategy="group_by_length", eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to=[], use_cpu=spec["device"] == "cpu", dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Rows(corpus.train_texts, corpus.train_labels),
        data_collator=DataCollatorWithPadding(tok),
    )
    out = trainer.train()
    pred = trainer.predict(Rows(corpus.val_texts, corpus.val_labels))
    accuracy = float(np.mean(np.argmax(pred.predictions, -1) == np.array(corpus.val_labels)))
    return {"train_time_s": out.metrics["train_runtime"], "val_accuracy": accuracy}


def child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    result = run_hf(spec) if spec["contender"] == "hf-best" else run_entrenar(spec)
    if spec["device"] == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    Path(spec["result"]).write_text(json.dumps(result))


def run_child(spec: dict, tmp: Path) -> dict:
    spec_path = tmp / f"{spec['contender']}-{time.monotonic_ns()}.json"
    spec["result"] = str(spec_path.with_suffix(".result.json"))
    spec_path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(REPO),
    }
    if spec["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the trainer picks CUDA where it sees one
    log = tmp / f"{spec_path.stem}.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(spec_path)],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(
            f"{spec['contender']} failed (exit {os.waitstatus_to_exitcode(status)}):\n{tail}"
        )
    result = json.loads(Path(spec["result"]).read_text())
    result.setdefault("peak_memory_bytes", usage.ru_maxrss * 1024)
    return result


# ------------------------------------------------------------------------------------ driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="a 2-layer, 64-wide model and 160 samples: the path, not a figure",
    )
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--modes", default="lora,qlora")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    import torch

    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    shape = SHAPES["tiny" if args.tiny else "full"]
    modes = args.modes.split(",")
    if "qlora" in modes and importlib.util.find_spec("bitsandbytes") is None:
        print(
            "bitsandbytes is not installed: QLoRA skipped (pip install bitsandbytes)",
            file=sys.stderr,
        )
        modes.remove("qlora")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "docstrings.jsonl"
        texts = write_corpus(data, 160 if args.tiny else None)
        labels = {json.loads(line)["label"] for line in data.read_text().splitlines()}
        model = tmp / "qwen2-classifier"
        build_model(model, texts, shape, len(labels))
        common = {
            "model": str(model), "data": str(data), "device": device, "seed": 42, "epochs": args.epochs,
            "batch_size": args.batch_size, "max_length": args.max_length, "lr": 2e-4, "log_interval": 50,
        }  # fmt: skip
        epoch_flops, epoch_tokens, n_train = training_flops(common)
        peak, peak_source = peak_flops(device)
        print(f"device: {device}; peak {peak / 1e12 if peak else float('nan'):.3f} TFLOP/s bf16 ({peak_source}); "
              f"model {'tiny' if args.tiny else 'Qwen2-0.5B-shaped'}, {n_train} training samples, "
              f"{epoch_tokens / n_train:.1f} tokens a sample; load {os.getloadavg()[0]:.2f}", file=sys.stderr)  # fmt: skip
        results: dict[tuple[str, str], list[dict]] = {}
        for r in range(args.rounds):
            for mode in modes:
                for contender in ("hf-best", "entrenar"):
                    spec = {
                        **common,
                        "contender": contender,
                        "qlora": mode == "qlora",
                        "out": str(tmp / f"{contender}-{mode}-{r}"),
                    }
                    res = run_child(spec, tmp)
                    seconds = res["train_time_s"]
                    res |= {
                        "samples_per_sec": n_train * args.epochs / seconds,
                        "tokens_per_sec": epoch_tokens * args.epochs / seconds,
                        "mfu": epoch_flops * args.epochs / seconds / peak if peak else None,
                    }
                    results.setdefault((mode, contender), []).append(res)
                    print(f"round {r + 1} {mode:<6}{contender:<9} {res['samples_per_sec']:8.1f} samples/s "
                          f"{res['tokens_per_sec']:9.0f} tokens/s  peak memory {res['peak_memory_bytes'] / 2**20:7.0f} MiB  "
                          f"val acc {res['val_accuracy']:.3f}", file=sys.stderr)  # fmt: skip
        # A learning rate that moves a randomly initialised model within a few epochs.
        spec = {
            **common,
            "contender": "entrenar",
            "qlora": False,
            "correctness": True,
            "epochs": 4,
            "lr": 2e-3,
            "out": str(tmp / "correctness"),
        }
        check = run_child(spec, tmp)

    rows = []
    print(
        f"\n{'mode':<7}{'contender':<10}{'samples/s':>11}{'tokens/s':>11}{'MFU':>8}{'peak memory':>14}{'val acc':>9}"
    )
    for (mode, contender), runs in results.items():
        med = {
            k: statistics.median(x[k] for x in runs) if runs[0][k] is not None else None
            for k in ("samples_per_sec", "tokens_per_sec", "mfu")
        }
        memory = max(x["peak_memory_bytes"] for x in runs)
        accuracy = statistics.fmean(x["val_accuracy"] for x in runs)
        mfu = f"{med['mfu']:.1%}" if med["mfu"] is not None else "-"
        print(
            f"{mode:<7}{contender:<10}{med['samples_per_sec']:>11.1f}{med['tokens_per_sec']:>11.0f}{mfu:>8}{memory / 2**20:>10.0f} MiB{accuracy:>9.3f}"
        )
        rows.append(
            {
                "mode": mode,
                "contender": contender,
                **med,
                "peak_memory_bytes": memory,
                "val_accuracy": accuracy,
                "rounds": runs,
            }
        )
    for mode in modes:
        ours, theirs = results[(mode, "entrenar")], results[(mode, "hf-best")]
        ratio = statistics.median(x["samples_per_sec"] for x in ours) / statistics.median(
            x["samples_per_sec"] for x in theirs
        )
        print(f"{mode}: entrenar / hf-best {ratio:.2f}×")
    ok = (
        check["last_loss"] < check["first_loss"]
        and abs(check["reloaded_accuracy"] - check["val_accuracy"]) < 1e-9
    )
    print(f"correctness: loss {check['first_loss']:.4f} → {check['last_loss']:.4f} (first/last fifth of the steps); "
          f"reloaded adapter val accuracy {check['reloaded_accuracy']:.4f} vs epochs.json {check['val_accuracy']:.4f}: "
          f"{'ok' if ok else 'FAILED'}")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": device,
                    "peak_flops": peak,
                    "peak_source": peak_source,
                    "results": rows,
                    "correctness": {**check, "ok": ok},
                },
                indent=1,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
