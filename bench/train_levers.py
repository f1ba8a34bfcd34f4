"""Training-step levers on the quickstart work, each against plain eager, in alternating processes.

    python bench/train_levers.py                                   # 2 rounds x 2 epochs, all variants
    python bench/train_levers.py --rounds 3 --variants eager,compile-encoder --epochs 10

The step is trainer/train.py's (the same model load, tokenization, length-grouped batches, bf16
autocast, weighted cross-entropy, clipping, AdamW + warmup/cosine, one host sync a step) without the
monitor files. Variants:
- eager:           the trainer's step with torch's own dropout (train.fast_dropout = off)
- fused:           torch.optim.AdamW(fused=True)
- pad8, pad16:     DataCollatorWithPadding(pad_to_multiple_of=8/16): fewer shapes, more tokens
- threads1:        torch.set_num_threads(1)
- compile-encoder: torch.compile(bert.encoder, dynamic=True) (the six layers, LoRA included)
- compile-model:   torch.compile(peft model, dynamic=True)
- fast-dropout:    trainer.model.use_fast_dropout (train.fast_dropout = on, the default on a CPU):
                   BERT's hidden dropout, LoRA's input dropout and the attention probabilities
                   dropout draw their masks from 4x fewer random words
- frozen-bf16:     fast-dropout + trainer.model.store_frozen_matmuls: the frozen Linear weights
                   stored in bf16 once instead of autocast casting them every step (exact)
- nomask:          frozen-bf16 + no attention mask for a batch without padding (what the trainer
                   does now: no host read of the mask, SDPA unmasked)
- sdpa-attn-dropout: nomask, but attention probabilities dropped inside SDPA (Bernoulli sampling)
                   as before issue 16's fast attention dropout
- bf16-norms:      nomask + every other frozen parameter (embeddings, LayerNorm) in bf16 too, the
                   step under autocast (LayerNorm/GELU/adds then run on bf16 inputs; not exact)
- bf16-model:      nomask + every frozen parameter in bf16 and no autocast (the LoRA weights stay
                   fp32: peft casts their input up and their output back; not exact)
- compile-buckets: nomask + lengths padded up to a bucket (multiples of 4 to 32, then of 8 to 64:
                   ~13% more tokens than padding to the batch's longest on the quickstart) and the
                   encoder compiled with static shapes (one graph a bucket; dynamic=False)
Prints per variant (medians over rounds): the first step (compile time lands here), epoch 1 and the
steady state (epochs 2+) in samples/s, and the wall time of the whole process (import + load + all
epochs, validation excluded). Each compile run gets a fresh TORCHINDUCTOR_CACHE_DIR (cold, as a
user's first run), unless --warm-cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "eager": {},
    "fused": {"fused": True},
    "pad8": {"pad": 8},
    "pad16": {"pad": 16},
    "threads1": {"threads": 1},
    "compile-encoder": {"compile": "encoder"},
    "compile-model": {"compile": "model"},
    "fast-dropout": {"fast_dropout": True},
    "frozen-bf16": {"fast_dropout": True, "frozen_bf16": True},
    "nomask": {"fast_dropout": True, "frozen_bf16": True, "nomask": True},
    "sdpa-attn-dropout": {"fast_dropout": True, "frozen_bf16": True, "nomask": True, "sdpa": True},
    "bf16-norms": {"fast_dropout": True, "frozen_bf16": True, "nomask": True, "bf16_all": True},
    "bf16-model": {
        "fast_dropout": True,
        "frozen_bf16": True,
        "nomask": True,
        "bf16_all": True,
        "no_autocast": True,
    },
    "compile-buckets": {
        "fast_dropout": True,
        "frozen_bf16": True,
        "nomask": True,
        "compile": "buckets",
    },
}
BUCKETS = (4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)


def child(variant: str, epochs: int) -> dict:
    t_start = time.perf_counter()
    v = VARIANTS[variant]
    sys.path.insert(0, str(REPO))
    import torch
    import torch.nn.functional as F

    if v.get("threads"):
        torch.set_num_threads(v["threads"])
    from transformers import DataCollatorWithPadding, get_cosine_with_min_lr_schedule_with_warmup

    from trainer.config import load_config
    from trainer.data import epoch_batches, load_corpus, steps_per_epoch, tokenize
    from trainer.model import (
        FAST_ATTENTION_DROPOUT,
        load_model,
        store_frozen_matmuls,
        use_fast_dropout,
    )

    cfg = load_config(REPO / "examples" / "quickstart.toml")
    t = cfg.train
    torch.manual_seed(t.seed)
    corpus = load_corpus(cfg.data, t.seed)
    loaded = load_model(cfg.model, cfg.lora, corpus.label_names, torch.device("cpu"))
    model = loaded.model
    collate = DataCollatorWithPadding(
        loaded.tokenizer, return_tensors="pt", pad_to_multiple_of=v.get("pad")
    )
    feats = tokenize(
        loaded.tokenizer, corpus.train_texts, corpus.train_labels, cfg.model.max_length
    )
    lengths = [len(f["input_ids"]) for f in feats]
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        trainable,
        lr=t.learning_rate,
        weight_decay=t.weight_decay,
        **({"fused": True} if v.get("fused") else {}),
    )
    spe = steps_per_epoch(len(feats), t.batch_size)
    total = spe * t.epochs
    sch = get_cosine_with_min_lr_schedule_with_warmup(
        opt,
        num_warmup_steps=math.ceil(t.warmup_fraction * total),
        num_training_steps=total,
        min_lr=t.lr_min,
    )
    fwd = model
    if v.get("fast_dropout"):
        use_fast_dropout(model)
    if v.get("sdpa"):  # attention-probability dropout back to SDPA's own (Bernoulli) sampling
        for m in model.modules():
            m.__dict__.pop(FAST_ATTENTION_DROPOUT, None)
    if v.get("frozen_bf16"):
        store_frozen_matmuls(model, loaded.precision)
    if v.get("bf16_all"):
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    if v.get("no_autocast"):  # the trainable head (fp32) takes the bf16 encoder's output
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32:
                m.register_forward_pre_hook(lambda mod, args: (args[0].to(mod.weight.dtype),))
    if v.get("compile") == "buckets":
        bert = model.get_base_model().bert
        bert.encoder = torch.compile(bert.encoder, dynamic=False)
    if v.get("compile") == "model":
        fwd = torch.compile(model, dynamic=True)
    elif v.get("compile") == "encoder":
        bert = model.get_base_model().bert
        bert.encoder = torch.compile(bert.encoder, dynamic=True)
    cw = torch.tensor(corpus.class_weights) if corpus.class_weights else None
    model.train()
    times: list[float] = []
    epoch_s: list[float] = []
    for ep in range(1, epochs + 1):
        te = time.perf_counter()
        for idx in epoch_batches(lengths, t.batch_size, t.seed, ep, t.group_by_length):
            tb = time.perf_counter()
            rows = [feats[i] for i in idx]
            if v.get("compile") == "buckets":
                longest = max(len(f["input_ids"]) for f in rows)
                collate.max_length = next((b for b in BUCKETS if b >= longest), longest)
                collate.padding = "max_length"
            batch = collate(rows)
            labels = batch.pop("labels")
            if (
                v.get("nomask")
                and len({len(f["input_ids"]) for f in rows}) == 1
                and v.get("compile") != "buckets"
            ):
                batch.pop("attention_mask")
            with contextlib.nullcontext() if v.get("no_autocast") else loaded.autocast():
                logits = fwd(**batch).logits.float()
            w = cw[labels] if cw is not None else torch.ones_like(labels, dtype=torch.float)
            weighted = (F.cross_entropy(logits, labels, reduction="none") * w).sum()
            (weighted / float(w.sum())).backward()
            gn = torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip)
            correct = (logits.detach().argmax(-1) == labels).sum()
            torch.stack(
                [weighted.detach(), correct.float(), gn]
            ).tolist()  # the step's one host sync
            opt.step()
            sch.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - tb)
        epoch_s.append(time.perf_counter() - te)
    n = t.batch_size * spe
    later = times[spe:]
    return {
        "first_step_s": times[0],
        "epoch1_sps": n / epoch_s[0],
        "steady_sps": t.batch_size * len(later) / sum(later) if later else None,
        "wall_s": time.perf_counter() - t_start,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="eager,fused,pad8,pad16,threads1,compile-encoder")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument(
        "--warm-cache", action="store_true", help="share one inductor cache across compile runs"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.epochs)))
        return
    variants = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for v in variants:
                cache = Path(tmp) / ("cache" if args.warm_cache else f"cache-{v}-{r}")
                env = {
                    **os.environ,
                    "HF_HUB_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false",
                    "TORCHINDUCTOR_CACHE_DIR": str(cache),
                }
                out = subprocess.run(
                    [sys.executable, __file__, "--child", v, "--epochs", str(args.epochs)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results[v].append(res)
                load = os.getloadavg()[0]
                steady = f"{res['steady_sps']:6.1f}" if res["steady_sps"] else "     -"
                print(
                    f"round {r + 1} {v:<16} first step {res['first_step_s']:6.2f} s  epoch 1 {res['epoch1_sps']:6.1f}  steady {steady} samples/s  wall {res['wall_s']:6.1f} s  (load {load:.2f})",
                    file=sys.stderr,
                )
    print(
        f"\n{args.epochs} epochs of the quickstart (batch 32, max_length 64, bf16 autocast where fast), {args.rounds} alternating rounds, medians; {os.cpu_count()} CPU cores"
    )
    print(
        f"{'variant':<17}{'first step':>11}{'epoch 1':>9}{'steady':>9}{'wall':>9}{'steady/eager':>14}"
    )
    base = statistics.median(x["steady_sps"] or x["epoch1_sps"] for x in results[variants[0]])
    for v in variants:
        med = lambda k, v=v: statistics.median(x[k] for x in results[v])  # noqa: E731
        steady = statistics.median(x["steady_sps"] or x["epoch1_sps"] for x in results[v])
        print(
            f"{v:<17}{med('first_step_s'):>9.2f} s{med('epoch1_sps'):>9.1f}{steady:>9.1f}{med('wall_s'):>7.1f} s{steady / base:>13.2f}×"
        )


if __name__ == "__main__":
    main()
