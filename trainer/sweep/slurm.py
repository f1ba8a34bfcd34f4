"""`entrenar-train sweep ... --slurm [--slurm-arg KEY=VALUE ...] [--wait]`: the sweep's trials as
one SLURM job array, submitted with `sbatch` itself.

Not submitit: it pickles a Python callable into the job, and this project unpickles nothing and
runs no code the user did not install; a plain batch script is also what a cluster admin can read.
The script (`<sweep dir>/slurm-array.sh`, mode 0700) execs `entrenar-train sweep-trial SWEEP_DIR
--index $SLURM_ARRAY_TASK_ID` with the absolute path of the entrenar-train that submitted it; the
array is `0-(N-1)%P` with `--requeue`, so a preempted or requeued task runs its trial again, which
resumes its run (--auto-resume). `--wait` follows the array with squeue until it has left the queue
(no sacct needed: a small cluster may run no slurmdbd), then reads each run's own files. The sweep
directory must be on a file system every node sees. Torch-free.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainer.errors import UserError
from trainer.monitor.atomic import atomic_write_bytes
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import FINAL_STATUSES, Files
from trainer.monitor.text import printable, utc_now
from trainer.sweep.record import SweepRecord
from trainer.sweep.runner import best_fields

SCRIPT = "slurm-array.sh"
LOG_PATTERN = "slurm-%A_%a.log"  # in the sweep directory: sbatch's %A array job id, %a task id
POLL_S = 2.0  # how often --wait asks squeue
KEY = re.compile(r"[a-z][a-z-]*")
# sbatch options the sweep sets itself, or that would change what a trial runs or where it writes
OURS = frozenset(
    [
        "array",
        "output",
        "error",
        "requeue",
        "no-requeue",
        "job-name",
        "parsable",
        "wrap",
        "chdir",
        "export",
        "export-file",
        "input",
        "open-mode",
        "test-only",
        "wait",
    ]
)


def sbatch_options(items: list[str]) -> list[str]:
    """Each `--slurm-arg KEY=VALUE` as sbatch's `--KEY=VALUE`, checked: KEY lower-case letters and
    dashes, not one of the options the sweep sets; VALUE printable, on one line, not empty."""
    options = []
    for item in items:
        key, eq, value = item.partition("=")
        shown = printable(item[:120])
        if not eq or not KEY.fullmatch(key):
            raise UserError(
                f"--slurm-arg {shown}: expected KEY=VALUE with KEY an sbatch option's long name "
                "(lower-case letters and dashes), e.g. --slurm-arg partition=gpu"
            )
        if key in OURS:
            raise UserError(
                f"--slurm-arg {key}: set by the sweep itself (--array, --output, --requeue, "
                "--job-name...), or it would change what a trial runs; leave it out"
            )
        if not value or not value.isprintable():
            raise UserError(
                f"--slurm-arg {shown}: the value must be printable text on one line, not empty"
            )
        options.append(f"--{key}={value}")
    return options


def batch_script(sweep_dir: Path) -> str:
    """The array's batch script: every task runs its trial with this installation's entrenar-train
    (every path quoted)."""
    from trainer.monitor.control import trainer_command

    argv = trainer_command("sweep-trial", str(sweep_dir.resolve()), "--index")
    return (
        "#!/bin/bash\n"
        f"# sweep {sweep_dir.name}: one trial a task (written by entrenar-train sweep --slurm)\n"
        f'exec {shlex.join(argv)} "$SLURM_ARRAY_TASK_ID"\n'
    )


def sbatch_command(
    sweep_dir: Path, script: Path, trials: int, parallel: int, options: list[str]
) -> list[str]:
    return [
        "sbatch", "--parsable", f"--array={array_spec(trials, parallel)}", "--requeue",
        f"--job-name=entrenar-{sweep_dir.name}", f"--output={log_pattern(sweep_dir)}",
        *options, str(script),
    ]  # fmt: skip


def log_pattern(sweep_dir: Path) -> str:
    """sbatch's --output for the tasks: the sweep directory's own `%` doubled (sbatch reads `%j`,
    `%u`... in the whole path), then the array's `%A_%a`. A backslash would turn every pattern
    off (one file for all tasks): refused."""
    directory = str(sweep_dir.resolve())
    if "\\" in directory:
        raise UserError(
            f"--slurm: {printable(directory)} has a backslash, which sbatch's --output takes as "
            "'no patterns' (every task's output in one file); choose another output.dir"
        )
    return directory.replace("%", "%%") + "/" + LOG_PATTERN


def array_spec(trials: int, parallel: int) -> str:
    return f"0-{trials - 1}%{parallel}"


def slurm_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise UserError(f"--slurm: {name} is not on PATH; run the sweep where SLURM's commands are")
    return found


def submit(record: SweepRecord, sweep_dir: Path, trials: int, parallel: int, options: list[str]) -> str:  # fmt: skip
    """Write the batch script, submit the array, record it in sweep.json; the job id."""
    sbatch = slurm_tool("sbatch")
    script = sweep_dir / SCRIPT
    atomic_write_bytes(script, batch_script(sweep_dir).encode(), mode=0o700)
    argv = sbatch_command(sweep_dir, script, trials, parallel, options)
    done = subprocess.run([sbatch, *argv[1:]], capture_output=True, text=True, check=False)
    job_id = done.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;cluster"
    if done.returncode != 0 or not job_id.isdigit():
        said = printable((done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1])
        record.finish("failed")  # no array: sweep.json must not say it runs
        raise UserError(f"--slurm: sbatch refused the job array: {said[:300]}")
    record.doc["slurm"] = {
        "job_id": job_id,
        "array": array_spec(trials, parallel),
        "script": str(script.resolve()),
        "sbatch": argv,
        "log": log_pattern(sweep_dir),
        "submitted_at": utc_now(),
    }
    record.write()
    return job_id


def in_queue(job_id: str) -> bool | None:
    """Whether any task of the array is still in the queue (pending, running, requeued,
    completing); None when squeue cannot say (the controller unreachable)."""
    done = subprocess.run(
        [slurm_tool("squeue"), "-h", "-r", "-j", job_id, "-o", "%T"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:  # a job that left the queue long ago: "Invalid job id specified"
        return False if "invalid job id" in done.stderr.lower() else None
    return bool(done.stdout.strip())


def refuse_if_queued(previous: dict[str, Any] | None, sweep_dir: Path) -> None:
    """Refuse to submit while an earlier call's array is still in the queue (two arrays would
    train the same runs), or when squeue cannot say whether it is."""
    slurm = (previous or {}).get("slurm")
    job_id = slurm.get("job_id") if isinstance(slurm, dict) else None
    if not (isinstance(job_id, str) and job_id.isdigit()):
        return
    queued = in_queue(job_id)
    if queued is None:
        raise UserError(
            f"{sweep_dir}: squeue cannot say whether the sweep's job array {job_id} is still "
            "queued; rerun when the SLURM controller answers"
        )
    if queued:
        raise UserError(
            f"{sweep_dir}: the sweep's job array {job_id} is still queued or running "
            f"(squeue -j {job_id}); wait for it or scancel {job_id}, then rerun"
        )


def wait_for_array(job_id: str) -> None:
    """Until every task of the array has left the queue."""
    while in_queue(job_id) is not False:
        time.sleep(POLL_S)


def run_outcome(directory: Path) -> dict[str, Any] | None:
    """A run's end from its own files: its state.json's final status, or failed when a task ended
    without the run finishing (killed: its state still says running); None when it never wrote one."""
    try:
        state = read_contract_json(directory / Files.STATE) or {}
    except ContractError as e:
        return {"status": "failed", "error": printable(str(e))[:500]}
    if not state:
        return None
    status = state.get("status")
    if status in FINAL_STATUSES:
        error = state.get("error") if status == "failed" else None
        return {"status": status, "error": error, **best_fields(state)}
    return {
        "status": "failed",
        "error": f"its task ended while it was {printable(status)} (see the sweep's {LOG_PATTERN})",
        **best_fields(state),
    }


def settle(record: SweepRecord, sweep_dir: Path) -> None:
    """After the array: sweep.json as the trials left it (they may have written it), each run's
    entry from its own files."""
    try:
        latest = read_contract_json(sweep_dir / Files.SWEEP)
    except ContractError:
        latest = None
    if isinstance(latest, dict) and isinstance(latest.get("runs"), list):
        record.doc = {k: v for k, v in latest.items() if k not in ("schema", "version")}
    for entry in record.doc["runs"]:
        ended = run_outcome(sweep_dir / entry["dir"])
        if ended is not None:
            record.update_run(entry["index"], write=False, **ended)


def say(text: str) -> None:
    print(f"sweep: {text}", file=sys.stderr, flush=True)
