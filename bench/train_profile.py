"""Where a training step's time goes: the real trainer under torch.profiler, top ops and the rest.

    python bench/train_profile.py                       # the quickstart, 1 epoch
    python bench/train_profile.py --data FILE --steps 40 --top 20

Runs `entrenar-train` in this process (monitor files in a temporary folder) with torch.profiler
recording CPU ops over training steps 11.. 10+steps of epoch 1 (the first ten warm up), then prints
the ops with the most self time, the share of the steps' wall time (FineTuneRecipe._train_step:
collation, forward, backward, clipping, the optimizer) spent inside torch ops, and what is left:
Python (the trainer's, peft's and transformers' module code, the collator). The monitor files are
written outside the step and are not in it (bench/monitor_overhead.py measures them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO / "examples" / "data" / "shell-safety.jsonl"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from trainer.cli import main as train_main
    from trainer.train import FineTuneRecipe

    window = range(11, 11 + args.steps)
    state = {"n": 0, "wall": 0.0, "prof": None}
    original = FineTuneRecipe._train_step

    def step(self, batch):
        state["n"] += 1
        if state["n"] == window.start:
            state["prof"] = profile(activities=[ProfilerActivity.CPU])
            state["prof"].__enter__()
        started = time.perf_counter()
        result = original(self, batch)
        if state["n"] in window:
            state["wall"] += time.perf_counter() - started
        if state["n"] == window.stop - 1:
            state["prof"].__exit__(None, None, None)
        return result

    FineTuneRecipe._train_step = step
    with tempfile.TemporaryDirectory() as tmp:
        code = train_main(
            [
                str(REPO / "examples" / "quickstart.toml"),
                f"data.train={args.data}",
                "train.epochs=1",
                f"lora.dropout={args.lora_dropout}",
                f"output.dir={tmp}/run",
            ]
        )
    assert code == 0
    events = state["prof"].key_averages()
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    inside = sum(e.self_cpu_time_total for e in events) / 1e6
    wall = state["wall"]
    print(
        f"\n{args.steps} steps: {wall:.2f} s wall ({wall / args.steps * 1e3:.1f} ms a step); torch {torch.__version__}"
    )
    print(f"{'op':<44}{'self s':>9}{'share':>8}{'calls':>8}")
    for e in top[: args.top]:
        print(
            f"{e.key[:43]:<44}{e.self_cpu_time_total / 1e6:>9.3f}{e.self_cpu_time_total / 1e6 / wall:>8.1%}{e.count:>8}"
        )
    print(f"{'inside torch ops (all)':<44}{inside:>9.3f}{inside / wall:>8.1%}")
    print(
        f"{'outside: Python, collation, files':<44}{wall - inside:>9.3f}{(wall - inside) / wall:>8.1%}"
    )


if __name__ == "__main__":
    main()
