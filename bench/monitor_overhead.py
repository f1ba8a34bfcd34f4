"""The monitor writer's cost per batch, and whether it stays flat as the run grows.

    python bench/monitor_overhead.py                    # after 1, 10k and 1M prior batches
    python bench/monitor_overhead.py --step-ms 190      # and as a fraction of a training step

For each history length it first plays that many batches into a fresh run directory through the real
`MonitorWriter` (steps.jsonl grows to the full size), then times the per-batch work the trainer
does (append a steps.jsonl line + rewrite state.json atomically) over --samples batches, and prints
the median and p95 µs. The quickstart's step time on this machine (epochs.json's samples/s over the
batch size) gives the fraction; pass --step-ms to use another.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.monitor.writer import MonitorWriter


def step_record(i: int) -> dict:
    return {
        "epoch": 1 + i // 1000, "step": 1 + i % 1000, "global_step": i + 1, "loss": 1.0 / (1 + i),
        "lr": 1e-4, "grad_norm": 0.5, "accuracy": 0.5, "samples_per_sec": 170.0, "t": time.time(),
    }  # fmt: skip


def state_fields(i: int) -> dict:
    return {
        "status": "running", "epoch": 1 + i // 1000, "step": 1 + i % 1000, "global_step": i + 1,
        "loss": 0.5, "train_loss": 0.6, "train_accuracy": 0.7, "lr": 1e-4, "grad_norm": 0.5,
        "samples_per_sec": 170.0, "tokens_per_sec": 3000.0, "elapsed_s": float(i), "eta_s": 100.0,
    }  # fmt: skip


def measure(prior: int, samples: int) -> list[float]:
    """The time of each of `samples` batches after `prior` batches of history."""
    with tempfile.TemporaryDirectory() as tmp:
        writer = MonitorWriter(Path(tmp))
        writer.write_run({"name": "bench"})
        for i in range(prior):  # history: the file grows as in a real run of that length
            writer.append_step(step_record(i))
        writer.update_state(**state_fields(prior))
        times: list[float] = []
        for i in range(prior, prior + samples):
            t = time.perf_counter()
            writer.append_step(step_record(i))
            writer.update_state(**state_fields(i))
            times.append(time.perf_counter() - t)
        size = (Path(tmp) / "steps.jsonl").stat().st_size
        writer.close()
    print(
        f"  after {prior:>9,} batches (steps.jsonl {size / 2**20:7.1f} MiB): measured",
        file=sys.stderr,
    )
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000, help="timed batches per history length")
    ap.add_argument(
        "--step-ms", type=float, default=None, help="a training step's time, for the fraction"
    )
    ap.add_argument("--histories", default="1,10000,1000000")
    args = ap.parse_args()
    rows = []
    for prior in map(int, args.histories.split(",")):
        times = sorted(measure(prior, args.samples))
        rows.append((prior, statistics.median(times) * 1e6, times[int(0.95 * len(times))] * 1e6))
    step_ms = (
        args.step_ms or 32 / 175 * 1000
    )  # the quickstart: batch 32 at ~175 samples/s on 2 cores
    print(f"\nmonitor writer per batch (steps.jsonl line + atomic state.json), "
          f"{args.samples} batches each; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print(f"{'prior batches':>14}{'median µs':>11}{'p95 µs':>9}{'of a step':>11}")
    for prior, med, p95 in rows:
        print(f"{prior:>14,}{med:>11.0f}{p95:>9.0f}{med / 1000 / step_ms:>10.2%}")
    first, last = rows[0][1], rows[-1][1]
    print(f"flat in run length: median after {rows[-1][0]:,} / after {rows[0][0]:,} = {last / first:.2f}; "
          f"step time assumed {step_ms:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
