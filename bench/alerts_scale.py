"""What the alerts cost the monitor on a long run: detect() over a million steps from scratch (the
first look at a run), against a Detector kept for the run that is given the same history plus 100
new steps (every later look). Both measured in one run; the ratio is the figure.

    python bench/alerts_scale.py [--steps 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tui_scale import machine
from entrenar_tui.model.alerts import Detector, StepColumns, detect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n, rng = args.steps, np.random.default_rng(0)
    t = 1.7e9 + 0.1 * np.arange(n)
    loss = 0.3 + 0.5 * np.exp(-np.arange(n) / (n / 5)) + rng.normal(0, 0.02, n)
    whole = StepColumns(np.arange(1.0, n + 1), loss, t, edits=0)
    head = StepColumns(whole.global_step[:-100], loss[:-100], t[:-100], edits=0)
    scratch, incremental = [], []
    for _ in range(args.rounds):  # alternating, so that load hits both alike
        started = time.perf_counter()
        found = detect(whole, [], "running", t[-1] + 1)
        scratch.append(time.perf_counter() - started)
        detector = Detector()
        detector.detect(head, [], "running", t[-1])
        started = time.perf_counter()
        assert detector.detect(whole, [], "running", t[-1] + 1) == found
        incremental.append(time.perf_counter() - started)
    a, b = statistics.median(scratch), statistics.median(incremental)
    print(machine())
    print(f"{n:,} steps, {args.rounds} rounds (medians)")
    print(f"detect from scratch          {a * 1000:8.1f} ms")
    print(f"Detector, 100 new steps       {b * 1000:8.1f} ms")
    print(f"scratch / incremental: {a / b:.0f}×")


if __name__ == "__main__":
    main()
