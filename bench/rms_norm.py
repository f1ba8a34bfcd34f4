"""One frozen RMSNorm, forward and backward, at a training step's shape: transformers' Qwen2RMSNorm
as written against trainer.rms_norm's turned norm (torch's op forward, a five-pass backward),
interleaved in one process.

    python bench/rms_norm.py                       # Qwen2-0.5B's long step: 16 x 218 x 896, fp32
    python bench/rms_norm.py --positions 12 --reps 50

Prints each side's median and minimum, their ratio, and what the 2·layers + 1 norms of a step
(Qwen2-0.5B: 49) save at the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--positions", type=int, default=218)
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    import torch
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    from bench.train_vs_hf import cpu_flags, load_text
    from trainer.rms_norm import use_fused_rms_norm

    if args.threads:
        torch.set_num_threads(args.threads)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = Qwen2RMSNorm(args.hidden, eps=1e-6).requires_grad_(False)

    own, fused = Holder(), Holder()
    assert use_fused_rms_norm(fused) == 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.positions, args.hidden, generator=g)
    grad = torch.randn(x.shape, generator=g)

    def run(norm) -> float:
        leaf = x.detach().requires_grad_(True)
        started = time.perf_counter()
        norm(leaf).backward(grad)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"transformers": [], "fused": []}
    for _ in range(3):  # warm-up
        run(own.norm), run(fused.norm)
    for _ in range(args.reps):
        times["transformers"].append(run(own.norm))
        times["fused"].append(run(fused.norm))
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "unknown CPU",
    )  # fmt: skip
    print(f"CPU: {model}; flags: {cpu_flags()}; {load_text()}")
    print(
        f"RMSNorm forward + backward, {args.batch} x {args.positions} x {args.hidden} fp32, "
        f"{torch.get_num_threads()} threads, {args.reps} interleaved reps"
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:<13} median {med[k] * 1e3:7.2f} ms  min {min(v) * 1e3:7.2f} ms")
    norms = 2 * args.layers + 1
    print(
        f"transformers/fused {med['transformers'] / med['fused']:.2f}x; "
        f"{norms} norms a step: {(med['transformers'] - med['fused']) * norms * 1e3:.0f} ms saved"
    )


if __name__ == "__main__":
    main()
