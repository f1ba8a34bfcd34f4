"""Step levers on the Qwen2-0.5B shape, A/B in one process: every variant's model loaded side by
side, their training steps interleaved (A, B, A, B, ...), medians and minima compared.

    python bench/qwen2_levers.py --inputs short --reps 8
    python bench/qwen2_levers.py --inputs long --reps 4 --variants short-attn,fused-norm
    python bench/qwen2_levers.py --threads 1        # shares hold on a box other work shares

Interleaving in one process makes the comparison fair on a shared machine: a burst of other work
lands on both variants alike, where separate processes minutes apart compare two different loads.
Each step is the trainer's (trainer/train.py `_backward`): the model as the trainer loads it
(trainer.model.load_model, fast dropout, frozen matmuls stored in bf16), one fixed batch of 16
(short: the corpus's first texts, ~13 tokens; long: ~200), bf16 autocast, weighted cross-entropy,
backward; no optimizer step (the LoRA weights stay as loaded, so every rep does the same work).
Variants:
- base:        the trainer's model before issue 27 (attention: torch's SDPA, the CPU flash kernel)
- short-attn:  base + trainer.model.use_short_attention: inputs of ≤ 256 positions attend
               through plain matmuls and a softmax
- fused-norm:  short-attn + trainer.rms_norm.use_fused_rms_norm (what the trainer does now on a
               CPU): the frozen RMSNorms' backward in five passes (autograd's: one per op)
- bf16-stream: short-attn + every other frozen parameter (embeddings, RMSNorm weights) stored in
               bf16 (store_frozen_in_compute_dtype below): the residual stream, the norms'
               outputs, RoPE's cos/sin run in bf16 instead of fp32 with a cast before every Linear
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHAPE_DIR = Path(tempfile.gettempdir()) / "entrenar-bench-qwen2-0.5b-shape"


def store_frozen_in_compute_dtype(model) -> int:
    """The bf16-stream variant: every frozen floating-point parameter the trainer keeps in fp32
    (embeddings, RMSNorm weights) stored in bf16, so that a decoder's residual stream starts and
    stays in bf16 (norm outputs, RoPE's cos/sin, the adds) and no Linear casts its input first.
    Not exact: the residual stream rounds to bf16 between layers. Not built into the trainer."""
    import torch

    count = 0
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != torch.bfloat16:
            param.data = param.data.to(torch.bfloat16)
            count += 1
    return count


def load(folder: Path, variant: str, labels: list[str]):
    import torch

    from trainer.config import LoraSection, ModelSection
    from trainer.model import (
        load_model,
        store_frozen_matmuls,
        use_fast_dropout,
        use_short_attention,
    )
    from trainer.rms_norm import use_fused_rms_norm

    torch.manual_seed(0)
    loaded = load_model(
        ModelSection(path=str(folder), max_length=256),
        LoraSection(r=8, alpha=16, dropout=0.05),
        labels,
        torch.device("cpu"),
    )
    use_fast_dropout(loaded.model)
    store_frozen_matmuls(loaded.model, loaded.precision)
    if variant in ("short-attn", "fused-norm", "bf16-stream"):
        use_short_attention(loaded.model)
    if variant == "fused-norm":
        use_fused_rms_norm(loaded.model)
    if variant == "bf16-stream":
        store_frozen_in_compute_dtype(loaded.model)
    loaded.model.train()
    return loaded


def step(loaded, batch: dict, labels) -> None:
    import torch.nn.functional as F

    with loaded.autocast():
        logits = loaded.model(**batch).logits.float()
    F.cross_entropy(logits, labels).backward()
    loaded.model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape-dir", type=Path, default=SHAPE_DIR)
    ap.add_argument("--inputs", choices=("short", "long"), default="short")
    ap.add_argument("--variants", default="base,short-attn,fused-norm")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    import torch
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from bench.qwen2_shape import SHAPE_BATCH, cached_shape, long_corpus, short_corpus

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = cached_shape(args.shape_dir)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    tok.pad_token = tok.eos_token
    rows = short_corpus(SHAPE_BATCH) if args.inputs == "short" else long_corpus(SHAPE_BATCH, tok)
    names = sorted({r["label"] for r in rows})
    enc = [tok(r["input"], truncation=True, max_length=256) for r in rows]
    batch = dict(DataCollatorWithPadding(tok, return_tensors="pt")(enc))
    labels = torch.tensor([names.index(r["label"]) for r in rows])
    variants = args.variants.split(",")
    models = {v: load(folder, v, names) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for v in variants:  # one warm-up step each
        step(models[v], batch, labels)
    for _ in range(args.reps):
        for v in variants:
            torch.manual_seed(1)
            started = time.perf_counter()
            step(models[v], batch, labels)
            times[v].append(time.perf_counter() - started)
    n_tokens = int(batch["attention_mask"].sum())
    print(
        f"{args.inputs}: batch {SHAPE_BATCH}, {batch['input_ids'].shape[1]} positions, {n_tokens} "
        f"tokens; {torch.get_num_threads()} threads; {args.reps} interleaved reps"
    )
    base = statistics.median(times[variants[0]])
    for v in variants:
        med = statistics.median(times[v])
        print(
            f"{v:<14} median {med * 1e3:8.1f} ms  min {min(times[v]) * 1e3:8.1f} ms  "
            f"{variants[0]}/{v} {base / med:5.2f}x  all: "
            + " ".join(f"{t * 1e3:.0f}" for t in times[v])
        )


if __name__ == "__main__":
    main()
