"""The MFU ceiling of a LoRA step on Qwen2-0.5B's shape on this machine: the step's matmuls alone.

    python bench/matmul_ceiling.py --threads 2                 # short and long inputs, as train_vs_hf's
    python bench/matmul_ceiling.py --threads 2 --reps 40 --sustained 30

On a frozen base a LoRA step runs, in every layer, the seven frozen projections forward (q, k, v, o,
gate, up, down) and their input gradients backward (the weights' gradients are never asked for),
and the attention's six batched matmuls (two forward, four backward; the grouped-query heads stacked
as the trainer's plain attention stacks them). This script runs each of them alone in bf16 at the
step's padded rows, with the trainer's heap settings (trainer.model.loading_memory: without them a
34 MB output is a fresh mapping at every call and its page faults cost a third of the matmul).

- Best of: each matmul's fastest of `--reps` interleaved reps.
- Back to back: one layer's matmuls in a loop for `--sustained` seconds, as a step runs them; the
  median rate is what this VM keeps (its best-of figures catch moments of twice that).

The ceiling is the step's model FLOPs (non-padding tokens only, as trainer.flops counts them;
LoRA's and the head's small matmuls left out) over those matmuls' time, against the bf16 peak: the
larger of the one bench/train_vs_hf.py measures at its start (trainer.flops.measure_cpu_peak) and
the best of the same 1024³ matmul timed within the reps (this VM's speed moves by 2x within
seconds). It is the MFU the step would reach if everything else it does (norms, SiLU, RoPE,
softmax, casts, dropout, LoRA, the optimizer) took no time: no change to that other work can take a
step with these matmuls above it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# bench/train_vs_hf.py's inputs on the Qwen2-0.5B shape: batch 16; short texts ~12 tokens in
# batches padded to ~16, long ones ~208 tokens padded to ~218 (their longest in the batch).
INPUTS = {"short": (12, 16), "long": (208, 218)}


@dataclass
class Matmul:
    name: str
    flops_real: int  # at the non-padding tokens, as the MFU counts them
    flops_padded: int  # at the padded rows it runs at
    run: object  # a callable that runs it once at the padded shape
    best: float = float("inf")


def step_matmuls(shape: dict, batch: int, tokens: int, positions: int) -> list[Matmul]:
    import torch
    import torch.nn.functional as F

    h, f = shape["hidden_size"], shape["intermediate_size"]
    heads, kv = shape["num_attention_heads"], shape["num_key_value_heads"]
    d, groups = h // heads, heads // kv
    rows, real = batch * positions, batch * tokens
    bf16 = torch.bfloat16
    out = []
    projections = {"q": (h, h), "k": (h, kv * d), "v": (h, kv * d), "o": (h, h)}
    projections |= {"gate": (h, f), "up": (h, f), "down": (f, h)}
    for name, (n_in, n_out) in projections.items():
        x, w, g = (
            torch.randn(r, c, dtype=bf16) for r, c in ((rows, n_in), (n_out, n_in), (rows, n_out))
        )
        flops = (2 * real * n_in * n_out, 2 * rows * n_in * n_out)
        out.append(
            Matmul(
                f"{name} forward {rows}×{n_in} → {n_out}", *flops, lambda x=x, w=w: F.linear(x, w)
            )
        )
        out.append(
            Matmul(f"{name} input grad {rows}×{n_out} → {n_in}", *flops, lambda g=g, w=w: g.mm(w))
        )
    # Attention, per kv head: the groups' queries stacked [groups·L, d] against the head's [L, d].
    n, stacked = batch * kv, groups * positions
    q, k, v = torch.randn(n, stacked, d, dtype=bf16), torch.randn(n, positions, d, dtype=bf16), torch.randn(n, positions, d, dtype=bf16)  # fmt: skip
    p = torch.randn(n, stacked, positions, dtype=bf16)
    flops = (2 * batch * heads * tokens * tokens * d, 2 * batch * heads * positions * positions * d)
    attention = {
        "scores q·kᵀ": lambda: torch.bmm(q, k.transpose(1, 2)),
        "out p·v": lambda: torch.bmm(p, v),
        "grad p: dO·vᵀ": lambda: torch.bmm(q, v.transpose(1, 2)),
        "grad v: pᵀ·dO": lambda: torch.bmm(p.transpose(1, 2), q),
        "grad q: dS·k": lambda: torch.bmm(p, k),
        "grad k: dSᵀ·q": lambda: torch.bmm(p.transpose(1, 2), q),
    }
    out += [
        Matmul(f"attention {name} ({n} × {stacked}, {positions})", *flops, fn)
        for name, fn in attention.items()
    ]
    return out


def sustained_rates(matmuls: list[Matmul], seconds: float) -> list[float]:
    """One layer's matmuls back to back for `seconds` (at least 10 passes): each pass's model FLOP/s."""
    flops, rates = sum(m.flops_real for m in matmuls), []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 10:
        started = time.perf_counter()
        for m in matmuls:
            m.run()
        rates.append(flops / (time.perf_counter() - started))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", default="short,long", help="short, long or both (comma-separated)")
    ap.add_argument(
        "--reps", type=int, default=30, help="interleaved reps; each matmul keeps its best"
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--sustained", type=float, default=20.0, help="seconds of back-to-back passes (0: none)"
    )
    ap.add_argument("--threads", type=int, help="torch threads (default torch's)")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from bench.qwen2_shape import QWEN2_05B_SHAPE
    from bench.train_vs_hf import cpu_flags, load_text
    from trainer.flops import measure_cpu_peak
    from trainer.model import loading_memory

    with loading_memory():  # leaves the heap as the trainer trains with: a 34 MB output reused,
        pass  # not mapped afresh (and faulted in) at every call
    peak = measure_cpu_peak("bf16", budget_s=3.0)
    print(
        f"CPU: {peak.device}; flags: {cpu_flags()}; {torch.get_num_threads()} threads; {load_text()}; "
        f"peak {peak.flops_per_sec / 1e9:.0f} GFLOP/s bf16 ({peak.source}); torch {torch.__version__}"
    )
    layers = QWEN2_05B_SHAPE["num_hidden_layers"]
    a, b = (torch.randn(1024, 1024, dtype=torch.bfloat16) for _ in range(2))
    square = Matmul("1024³ (the peak's)", 2 * 1024**3, 2 * 1024**3, lambda: a @ b)
    for inputs in args.inputs.split(","):
        tokens, positions = INPUTS[inputs]
        matmuls = step_matmuls(QWEN2_05B_SHAPE, args.batch, tokens, positions)
        for m in [square, *matmuls]:
            m.run()  # oneDNN creates its kernel for the shape on the first call
        for _ in range(args.reps):
            for m in [square, *matmuls]:
                started = time.perf_counter()
                m.run()
                m.best = min(m.best, time.perf_counter() - started)
        best_peak = max(peak.flops_per_sec, square.flops_real / square.best)
        seconds = layers * sum(m.best for m in matmuls)
        flops = layers * sum(m.flops_real for m in matmuls)
        print(
            f"\n{inputs}: batch {args.batch} × {tokens} tokens padded to {positions}, {layers} layers,"
            f" best of {args.reps} interleaved reps each; peak {best_peak / 1e9:.0f} GFLOP/s (1024³ within"
            f" the reps so far: {square.flops_real / square.best / 1e9:.0f})"
        )
        print(
            f"{'matmul (GFLOP/s at the padded rows it runs)':<52}{'best ms':>9}{'GFLOP/s':>9}{'of peak':>9}{'share':>8}"
        )
        for m in matmuls:
            rate = m.flops_padded / m.best
            print(
                f"{m.name:<52}{m.best * 1e3:>9.3f}{rate / 1e9:>9.0f}{rate / best_peak:>9.1%}"
                f"{layers * m.best / seconds:>8.1%}"
            )
        print(
            f"{inputs}: the step's matmuls at their best take {seconds * 1e3:.0f} ms for"
            f" {flops / 1e12:.3f} TFLOP: MFU ceiling {flops / seconds / best_peak:.1%}"
        )
        if args.sustained:
            rates = sustained_rates(matmuls, args.sustained)
            p10, median, p90 = (statistics.quantiles(rates, n=10)[i] for i in (0, 4, 8))
            print(
                f"{inputs}: back to back for {args.sustained:.0f} s ({len(rates)} layers' matmuls): model"
                f" {median / 1e9:.0f} GFLOP/s median (p10 {p10 / 1e9:.0f}, p90 {p90 / 1e9:.0f}):"
                f" MFU ceiling at the median {median / best_peak:.1%}"
            )
    print(f"\n{load_text()} at the end")


if __name__ == "__main__":
    main()
