"""`entrenar-train sweep-trial SWEEP_DIR --index I`: one trial of a sweep, as a unit a batch
scheduler can run (a SLURM array task runs trial $SLURM_ARRAY_TASK_ID; I is 0-based).

The sweep is planned again from its sweep.json (`argv`: the command that wrote it), so the trial
runs exactly the command the local runner would, `entrenar-train CONFIG ... output.dir=<run dir>
--auto-resume`, in its run directory: a requeued or preempted task resumes its run, a completed
one exits 0 at once. SIGTERM or SIGINT is passed on once to the trainer (its clean stop: a
scheduler that signals every process of the job must not make it two), and the trial waits for it.
Grid and random sweeps only: the minimal form the SLURM arrays are built on.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

from trainer.config import toml_value
from trainer.errors import UserError
from trainer.monitor.control import launch_detached
from trainer.monitor.safe_files import make_directory
from trainer.monitor.schema import Files
from trainer.monitor.text import printable
from trainer.sweep.arguments import sweep_parser
from trainer.sweep.record import read_sweep
from trainer.sweep_tag import tag_environment


def planned_again(sweep_dir: Path) -> Any:
    """The SweepPlan of the sweep in sweep_dir, from the command its sweep.json records."""
    from trainer.sweep.command import plan_sweep

    doc = read_sweep(sweep_dir / Files.SWEEP)
    if doc is None:
        raise UserError(f"{sweep_dir}: no {Files.SWEEP}; not a sweep's directory")
    argv = doc.get("argv")
    if not (isinstance(argv, list) and argv[1:2] == ["sweep"] and all(isinstance(a, str) for a in argv)):  # fmt: skip
        raise UserError(f"{sweep_dir / Files.SWEEP}: argv is not a sweep's command line")
    plan = plan_sweep(sweep_parser().parse_intermixed_args(argv[2:]))
    if plan.directory.resolve() != sweep_dir.resolve():
        raise UserError(
            f"{sweep_dir / Files.SWEEP}: its command writes to {plan.directory}, not here; "
            "run sweep-trial from the directory the sweep was started in"
        )
    return plan


def run_trial(sweep_dir: Path, index: int) -> int:
    """Run trial `index` (0-based) of the sweep in sweep_dir to its end; the trainer's exit code."""
    plan = planned_again(sweep_dir)
    if not 0 <= index < len(plan.runs):
        raise UserError(f"--index {index}: the sweep has trials 0 to {len(plan.runs) - 1}")
    run, config = plan.runs[index], plan.configs[index]
    folder = plan.directory / run.name
    make_directory(folder, "run not started, nothing written through it")
    env = tag_environment(plan.directory.name, run.index, run.values)
    proc = launch_detached(plan.command(run, config), folder, env=env, stop_with_parent=True)
    values = " ".join(f"{k}={toml_value(v)}" for k, v in run.values.items())
    say(f"trial {index}: run {run.index} ({values}) in {folder}; its output: {folder / Files.LOG}")
    passed_on: list[int] = []

    def pass_on(signum: int, frame: Any) -> None:
        if not passed_on and proc.poll() is None:
            passed_on.append(signum)
            proc.send_signal(signum)

    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
        say(f"trial {index}: the trainer exited {code}")
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def say(text: str) -> None:
    print(f"sweep-trial: {printable(text)}", file=sys.stderr, flush=True)
