"""One call of `entrenar-train sweep`: the sweep's directory checked (not a run's, not another
sweep's) and held, what earlier calls completed kept, the rest run, sweep.json kept current.

Exit code: 0 when every run completed; 1 when any did not (failed, or stopped by hand; the
others still ran); 128 + the signal (130, 143) when the sweep itself was asked to stop.
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys
from typing import Any

from trainer.auto_resume import run_completed
from trainer.errors import UserError
from trainer.lock import RunLock, identity, refuse_if_running
from trainer.monitor.safe_files import kind
from trainer.monitor.schema import Files
from trainer.monitor.text import printable
from trainer.preflight import check_output_dir
from trainer.sweep import slurm
from trainer.sweep.command import SweepPlan, describe, plan_sweep, print_table, usable_gpus
from trainer.sweep.record import SweepRecord, check_same_sweep, read_sweep, target_reached
from trainer.sweep.record import identity as sweep_identity
from trainer.sweep.runner import Launch, SweepRunner, best_fields, read_state, slot_environments
from trainer.sweep.slurm import sbatch_options
from trainer.sweep_tag import tag_environment


def say(text: str) -> None:
    print(f"sweep: {text}", file=sys.stderr, flush=True)


def run_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    """`entrenar-train sweep`, its arguments parsed (trainer/cli.py): plan every run, check the
    sweep's directory, then run them; with --dry-run the same checks (nothing made, no lock taken),
    then the runs printed: exit 2 where the real command would refuse, else 0."""
    if not args.slurm and (args.wait or args.slurm_arg):
        raise UserError(f"{'--wait' if args.wait else '--slurm-arg'} goes with --slurm")
    options = sbatch_options(args.slurm_arg) if args.slurm else []
    plan = plan_sweep(args)
    if args.dry_run:
        return dry_run(plan, options if args.slurm else None, args.parallel)
    command = ["entrenar-train", "sweep", *argv]
    if args.slurm:
        return run_on_slurm(plan, args.parallel, command, options, wait=args.wait)
    return run_session(plan, args.parallel, command)


def dry_run(plan: SweepPlan, slurm_options: list[str] | None = None, parallel: int = 1) -> int:
    """Every check of run_session but writing: the directory (writable, not a run's, not another
    sweep's, no sweep running on it), each run's folder; then the plan (continuing a sweep: each
    run `completed`, kept, or `pending`). With --slurm, also the sbatch command it would run."""
    if slurm_options is not None:
        slurm.slurm_tool("sbatch")
        script = plan.directory / slurm.SCRIPT
        submit = slurm.sbatch_command(plan.directory, script, len(plan.runs), parallel, slurm_options)  # fmt: skip
    check_sweep_directory(plan, create=False)
    refuse_if_running(plan.directory)
    check_run_folders(plan)
    print(describe(plan))
    rows = []
    for run in plan.runs:
        folder = plan.directory / run.name
        row = {"dir": run.name, "values": run.values}
        if run_completed(folder):
            row |= {**best_fields(read_state(folder)), "status": "completed"}
        rows.append(row)
    if any("status" in row for row in rows):  # a continued sweep: what is kept, what runs
        rows = [{"status": "pending", **row} for row in rows]
    print_table(plan.grid.keys, rows)
    if slurm_options is not None:
        print(f"would submit: {shlex.join(submit)}")
    return 0


def check_sweep_directory(plan: SweepPlan, *, create: bool) -> tuple[dict[str, Any], dict | None]:
    """output.dir can hold this sweep: writable, not a run's, no other sweep's sweep.json. Its
    identity, and the previous call's sweep.json (None on the first call)."""
    directory = plan.directory
    check_output_dir(directory, create=create)
    if (directory / Files.RUN).exists():
        raise UserError(
            f"output.dir {directory} holds a run ({Files.RUN}), not a sweep; choose another output.dir"
        )
    ident = sweep_identity(plan.grid, plan.base.to_dict(), plan.search)
    previous = read_sweep(directory / Files.SWEEP)
    if previous is not None:
        check_same_sweep(previous, ident, directory / Files.SWEEP)
    return ident, previous


def run_session(plan: SweepPlan, parallel: int, argv: list[str]) -> int:
    ident, previous = check_sweep_directory(plan, create=True)
    lock = RunLock(plan.directory).acquire()  # one sweep per directory at a time
    try:
        return _run(plan, parallel, argv, ident, previous)
    finally:
        lock.release()


def about_the_call(plan: SweepPlan, parallel: int, argv: list[str]) -> dict[str, Any]:
    """sweep.json's fields on who runs the sweep and how."""
    about = {"config_file": str(plan.config_path.resolve()), "overrides": plan.overrides}
    about["target"] = plan.search.target
    return about | {"parallel": parallel, "argv": argv, **identity()}


def _run(
    plan: SweepPlan, parallel: int, argv: list[str], ident: dict[str, Any], previous: dict | None
) -> int:
    about = about_the_call(plan, parallel, argv)
    check_run_folders(plan)  # before sweep.json says anything
    record = SweepRecord.begin(plan.directory / Files.SWEEP, ident, plan.runs, about, previous)
    launches = _keep_completed_and_list_the_rest(plan, record, previous)
    slots, split = slot_environments(max(1, min(parallel, len(launches))), usable_gpus())
    record.doc["slots"] = slots
    record.write()
    kept = len(plan.runs) - len(launches)
    say(
        f"{describe(plan)}; {f'{kept} completed earlier, ' if kept else ''}{len(launches)} to run, "
        f"{len(slots)} at a time" + (f"; {split}" if split else "")
    )
    signum = SweepRunner(record, launches, slots, len(plan.runs)).run()
    status, code = final_status(record, signum)
    record.finish(status)
    summary(plan, record)
    return code


def summary(plan: SweepPlan, record: SweepRecord) -> None:
    """The sweep's end: how many runs completed, then the runs as a table, the best starred."""
    runs = record.doc["runs"]
    done = sum(r["status"] == "completed" for r in runs)
    pruned = sum(r["status"] == "pruned" for r in runs)
    also = f", {pruned} pruned" if pruned else ""
    status = record.doc["status"]
    say(f"{status}: {done} of {len(runs)} runs completed{also}; {plan.directory / Files.SWEEP}")
    print_table(plan.grid.keys, runs, record.doc["best_run"])


def run_on_slurm(
    plan: SweepPlan, parallel: int, argv: list[str], options: list[str], *, wait: bool
) -> int:
    """Every trial as one task of a SLURM job array (trainer/sweep/slurm.py). Without --wait: the
    job id on stdout, how to watch it on stderr, exit 0. With --wait: the summary once the array
    has left the queue, exit 0 when every run completed, else 1."""
    slurm.slurm_tool("sbatch")  # before anything is written
    slurm.log_pattern(plan.directory)  # (sbatch_command's checks)
    ident, previous = check_sweep_directory(plan, create=True)
    lock = RunLock(plan.directory).acquire()  # one submission (or wait) per directory at a time
    try:
        slurm.refuse_if_queued(previous, plan.directory)
        check_run_folders(plan)
        about = about_the_call(plan, parallel, argv)
        record = SweepRecord.begin(plan.directory / Files.SWEEP, ident, plan.runs, about, previous)
        _keep_completed_and_list_the_rest(plan, record, previous)
        record.doc[
            "slots"
        ] = []  # SLURM gives each task its resources (--slurm-arg cpus-per-task=...)
        job = slurm.submit(record, plan.directory, len(plan.runs), parallel, options)
        say(
            f"{describe(plan)}; submitted as SLURM job array {job} "
            f"(--array={record.doc['slurm']['array']}: {parallel} at a time)"
        )
        if not wait:
            print(job, flush=True)
            say(
                f"watch it: entrenar-tui monitor {plan.directory}  (or squeue -j {job}); "
                f"each task's output: {plan.directory}/slurm-{job}_<task>.log"
            )
            return 0
        say(f"waiting until the array has left the queue (squeue -j {job})")
        try:
            slurm.wait_for_array(job)
        except KeyboardInterrupt:
            say(f"stopped waiting; the array goes on (squeue -j {job}; scancel {job} stops it)")
            return 130
        slurm.settle(record, plan.directory)
        record.finish(final_status(record, None)[0])
        summary(plan, record)
        return 0 if record.doc["status"] == "completed" else 1
    finally:
        lock.release()


def _keep_completed_and_list_the_rest(
    plan: SweepPlan, record: SweepRecord, previous: dict | None
) -> list[Launch]:
    """Mark the runs an earlier call completed (kept as they are); the launches of the others."""
    before = {r.get("index"): r for r in (previous or {}).get("runs") or [] if isinstance(r, dict)}
    if plan.search.study:
        return _study_launches(plan, record, before)
    launches = []
    for run, config in zip(plan.runs, plan.configs):
        folder = plan.directory / run.name
        if run_completed(folder):
            kept = {k: before[run.index].get(k) for k in ("exit_code", "started_at", "finished_at")}
            kept = kept if before.get(run.index, {}).get("dir") == run.name else {}
            fields = {**kept, **best_fields(read_state(folder)), "status": "completed"}
            record.update_run(run.index, write=False, **fields)
            continue
        env = tag_environment(plan.directory.name, run.index, run.values)
        launches.append(Launch(run, folder, plan.command(run, config), env))
    return launches


def _study_launches(
    plan: SweepPlan, record: SweepRecord, before: dict[Any, dict[str, Any]]
) -> list[Launch]:
    """A study sweep: the runs an earlier call completed or pruned keep their entries; the others
    are `sweep-trial` processes (the per-trial logic a SLURM task runs), which ask the study."""
    from trainer.monitor.control import trainer_command

    launches = []
    for run in plan.runs:
        earlier = before.get(run.index) or {}
        if earlier.get("dir") == run.name and earlier.get("status") in (
            "pending",
            "running",
            "stopped",
            "failed",
        ):
            kept = {k: earlier.get(k) for k in ("values", "started_at", "value")}
            record.update_run(run.index, write=False, **{k: v for k, v in kept.items() if v})
        elif earlier.get("dir") == run.name and earlier.get("status") in ("completed", "pruned"):
            record.update_run(
                run.index, write=False, **{k: earlier.get(k) for k in earlier if k != "index"}
            )
            continue
        argv = trainer_command("sweep-trial", str(plan.directory), "--index", str(run.index - 1))
        launches.append(Launch(run, plan.directory / run.name, argv, trial=True))
    return launches


def check_run_folders(plan: SweepPlan) -> None:
    """Refused at once: a run's name taken by something that is not a directory of the sweep (a
    symbolic link would have the run written elsewhere), or a run a trainer still runs on (an
    earlier sweep's run, still stopping: the kernel names it)."""
    for run in plan.runs:
        folder = plan.directory / run.name
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(mode):
            what = "a file" if stat.S_ISREG(mode) else kind(mode)
            raise UserError(
                f"sweep run {run.index}: {printable(folder)} is {what}, not a run directory "
                "of the sweep; nothing written: remove it, then rerun the sweep"
            )
        try:
            refuse_if_running(folder)
        except UserError as e:
            raise UserError(f"sweep run {run.index}: {e}, then rerun the sweep") from None


def final_status(record: SweepRecord, signum: int | None) -> tuple[str, int]:
    statuses = [r["status"] for r in record.doc["runs"]]
    if signum is not None:
        return "stopped", 128 + signum
    if all(s in ("completed", "pruned") for s in statuses):
        return "completed", 0
    if target_reached(record.doc) and all(
        s in ("completed", "pruned", "pending") for s in statuses
    ):
        return "completed", 0  # (--target: the runs not started need not be)
    return ("failed" if "failed" in statuses else "stopped"), 1
