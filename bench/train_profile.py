"""Where a training step's time goes: the real trainer under torch.profiler, top ops and the rest.

    python bench/train_profile.py                       # the quickstart, 1 epoch
    python bench/train_profile.py --data FILE --steps 40 --top 20
    python bench/train_profile.py --model qwen2-0.5b-shape --inputs short --steps 8 --warmup 3
    python bench/train_profile.py --model qwen2-0.5b-shape --inputs long --steps 4 --warmup 2

Runs `entrenar-train` in this process (monitor files in a temporary folder) with torch.profiler
recording CPU ops over training steps warmup+1 .. warmup+steps of epoch 1 (default: 11..40), then prints
the ops with the most self time, the share of the steps' wall time (FineTuneRecipe._train_step:
collation, forward, backward, clipping, the optimizer) spent inside torch ops, and what is left:
Python (the trainer's, peft's and transformers' module code, the collator). The monitor files are
written outside the step and are not in it (bench/monitor_overhead.py measures them). Last, the
matmuls' share and the MFU's ceiling at this profile: the steps' MFU (their FLOPs as the trainer
counts them, against the run's peak) over that share, i.e. the MFU if every other op took no time.

`--model qwen2-0.5b-shape`: the Qwen2-0.5B-shaped classifier of bench/qwen2_shape.py (built once
into --shape-dir), batch 16, LoRA r 8 on q_proj/v_proj, on `--inputs short` (the corpus's real
texts, ~13 tokens) or `long` (texts of one label joined to ~200 tokens); `--set KEY=VALUE` adds
config overrides (e.g. train.fast_dropout=off).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHAPE_DIR = Path(tempfile.gettempdir()) / "entrenar-bench-qwen2-0.5b-shape"
# The ops that do a step's matmul work on a CPU (the profile's self time is theirs, not aten::linear's
# or aten::matmul's, which only dispatch): the ceiling line divides the MFU by their share.
MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO / "examples" / "data" / "shell-safety.jsonl"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=10, help="steps before the profiled ones")
    ap.add_argument("--model", help="a model folder, or qwen2-0.5b-shape")
    ap.add_argument("--shape-dir", type=Path, default=SHAPE_DIR)
    ap.add_argument("--inputs", choices=("short", "long"), default="short")
    ap.add_argument("--set", action="append", default=[], help="a config override KEY=VALUE")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch threads (1 keeps the shares true on a box other work shares: no thread waits"
        " for a descheduled sibling at every op)",
    )
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile

    from trainer.cli import main as train_main
    from trainer.train import FineTuneRecipe

    window = range(args.warmup + 1, args.warmup + 1 + args.steps)
    state = {"n": 0, "wall": 0.0, "flops": 0, "peak": None, "prof": None}
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
            state["flops"] += result.flops
            state["peak"] = self.peak.flops_per_sec
        if state["n"] == window.stop - 1:
            state["prof"].__exit__(None, None, None)
        return result

    FineTuneRecipe._train_step = step
    with tempfile.TemporaryDirectory() as tmp:
        overrides = []
        if args.model == "qwen2-0.5b-shape":
            from bench.qwen2_shape import shape_run_overrides

            overrides = shape_run_overrides(
                args.shape_dir, args.inputs, Path(tmp), args.warmup + args.steps + 1
            )
        elif args.model:
            overrides = [f"model.path={Path(args.model).resolve()}"]
        else:
            overrides = [f"data.train={args.data}"]
        code = train_main(
            [
                str(REPO / "examples" / "quickstart.toml"),
                *overrides,
                "train.epochs=1",
                f"lora.dropout={args.lora_dropout}",
                f"output.dir={tmp}/run",
                *args.set,
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
    print(f"{'op':<60}{'self s':>9}{'share':>8}{'calls':>8}")
    for e in top[: args.top]:
        print(
            f"{e.key[:59]:<60}{e.self_cpu_time_total / 1e6:>9.3f}{e.self_cpu_time_total / 1e6 / wall:>8.1%}{e.count:>8}"
        )
    print(f"{'inside torch ops (all)':<60}{inside:>9.3f}{inside / wall:>8.1%}")
    print(
        f"{'outside: Python, collation, files':<60}{wall - inside:>9.3f}{(wall - inside) / wall:>8.1%}"
    )
    matmuls = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6
    print(
        f"{'matmuls (' + ', '.join(sorted(MATMUL_OPS)) + ')':<60}{matmuls:>9.3f}{matmuls / wall:>8.1%}"
    )
    if state["peak"] and matmuls:
        mfu = state["flops"] / wall / state["peak"]
        print(
            f"MFU of these steps {mfu:.1%} (peak {state['peak'] / 1e9:.0f} GFLOP/s); with every other op"
            f" taking no time and the matmuls as they ran: {mfu * wall / matmuls:.1%}"
        )


if __name__ == "__main__":
    main()
