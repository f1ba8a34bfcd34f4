"""One trial of a sweep as a unit: `entrenar-train sweep-trial SWEEP_DIR --index I`.

What a SLURM array task runs (I = SLURM_ARRAY_TASK_ID, 0-based), and what the local
`entrenar-train sweep` starts for each run of a study sweep. It reads the sweep's saved spec from
sweep.json, takes trial I (a grid or random sweep: the plan's run I+1; a study sweep: the study's
trial marked `index` = I, the same one again while it is unfinished), and runs the trainer as the
local runner does (`entrenar-train CONFIG ... output.dir=<run dir> --auto-resume`, detached, its
output in the run's train.log). After each epoch it reports the objective to the study and, when
the pruner says so, asks the run to stop with reason `pruned` (control.json). SIGTERM or SIGINT is
passed on once to the trainer, which stops cleanly (`stopped`); the trial is then left running in
the study, for a requeued task to continue. At the end the study is told (complete, pruned, fail)
and the run's entry in sweep.json updated under the sweep's lock.

Exit code: 0 when the run completed or was pruned (or was already), 1 when it failed or was
stopped by hand, 128 + the signal when this process was asked to stop.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

from trainer.config import toml_value
from trainer.errors import UserError
from trainer.monitor.control import launch_detached, request_stop, trainer_command
from trainer.monitor.safe_files import UnsafeFile, make_directory
from trainer.monitor.schema import Files
from trainer.monitor.text import printable, utc_now
from trainer.sweep.objective import best_value, epoch_values
from trainer.sweep.record import SweepRecord, sweep_lock, target_reached
from trainer.sweep.runner import outcome
from trainer.sweep.space import Param
from trainer.sweep_tag import tag_environment

POLL_S = 0.5  # how often the trial looks at its run's epochs.json (a signal wakes it at once)
FINISHED = ("completed", "pruned")


def say(text: str) -> None:
    print(f"sweep-trial: {printable(text)}", file=sys.stderr, flush=True)


def run_trial(sweep_dir: Path, index: int) -> int:
    """Run trial `index` (0-based) of the sweep in `sweep_dir`; the exit code."""
    record = SweepRecord.load(sweep_dir / Files.SWEEP)
    doc = record.doc
    runs = doc.get("runs") or []
    if not 0 <= index < len(runs):
        raise UserError(
            f"--index {index}: the sweep in {sweep_dir} has trials 0 to {len(runs) - 1}"
        )
    entry = record.reload_run(index + 1)
    name = entry.get("dir")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise UserError(  # a run's folder is a name inside the sweep's directory, never a path
            f"{sweep_dir / Files.SWEEP}: run {index + 1}'s dir {printable(repr(name))} is not a "
            "folder name"
        )
    run_dir = sweep_dir / name
    if entry.get("status") in FINISHED:
        say(f"trial {index} ({run_dir.name}) is {entry['status']} already; nothing to do")
        return 0
    if entry.get("status") == "pending" and target_reached(doc):
        say(f"trial {index} not started: a run reached the target {doc.get('target')}")
        return 0
    study = trial = None
    space = [Param.from_dict(p) for p in doc.get("space") or []]
    if space:
        from trainer.sweep.study import claim_trial, open_study, trial_values

        study = open_study(sweep_dir, doc, index)
        with sweep_lock(sweep_dir):
            trial, finished = claim_trial(study, index, space)
        if finished is not None:
            say(f"trial {index} is {finished.state.name.lower()} in the study; nothing to do")
            return 0
        values = trial_values(trial, space)
    else:
        values = dict(entry.get("values") or {})
    argv = trainer_command(
        str(doc["config_file"]),
        *doc.get("overrides", []),
        *(f"{k}={toml_value(v)}" for k, v in values.items()),
        f"output.dir={run_dir}",
        "--auto-resume",
    )
    return TrialProcess(record, index, run_dir, argv, values, study, trial).run()


class TrialProcess:
    """The trainer child of one trial, watched epoch by epoch."""

    def __init__(
        self, record: SweepRecord, index: int, run_dir: Path, argv: list[str],
        values: dict[str, Any], study: Any, trial: Any,
    ):  # fmt: skip
        self.record, self.index, self.run_dir, self.argv = record, index, run_dir, argv
        self.values, self.study, self.trial = values, study, trial
        objective = record.doc.get("objective") or {}
        self.metric = objective.get("metric", "val_loss")
        self.direction = objective.get("direction", "minimize")
        self.received: list[int] = []
        self.wake = threading.Event()
        self.pruned_at: int | None = None
        self.reported: set[int] = set()
        self.passed_on = (
            False  # the stop signal was sent to the trainer (once: a second is "force")
        )

    def run(self) -> int:
        name = self.record.doc.get("name") or self.run_dir.parent.name
        try:
            make_directory(self.run_dir, "run not started, nothing written through it")
            proc = launch_detached(
                self.argv, self.run_dir, env=tag_environment(name, self.index + 1, self.values),
                stop_with_parent=True,
            )  # fmt: skip
        except OSError as e:
            error = e.naming() if isinstance(e, UnsafeFile) else f"{self.run_dir}: {e}"
            self._end({"status": "failed", "exit_code": None, "error": printable(error)})
            return 1
        self.record.update_run(
            self.index + 1, status="running", values=self.values, started_at=utc_now(),
            finished_at=None,
        )  # fmt: skip
        say(f"trial {self.index} started: {self.run_dir} (log: {self.run_dir / Files.LOG})")
        if self.study is not None:
            from trainer.sweep.study import intermediate_epochs

            self.reported = intermediate_epochs(self.study, self.trial)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while proc.poll() is None:
                self.wake.wait(POLL_S)
                self.wake.clear()
                if self.received and not self.passed_on:
                    self.passed_on = True
                    if proc.poll() is None:
                        proc.send_signal(self.received[0])
                self._report_epochs()
            self._report_epochs()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        ended = outcome(self.run_dir, proc.returncode, bool(self.received))
        self._end(ended)
        if self.received:
            return 128 + self.received[0]
        return 0 if ended["status"] in FINISHED else 1

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        self.wake.set()

    def _report_epochs(self) -> None:
        """Each new epoch's objective to the study; a stop with reason `pruned` when the pruner
        says so (once)."""
        if self.study is None or self.pruned_at is not None:
            return
        for epoch, value in sorted(epoch_values(self.run_dir, self.metric).items()):
            if epoch in self.reported:
                continue
            self.trial.report(value, epoch)
            self.reported.add(epoch)
            if self.trial.should_prune() and not self.received:
                self.pruned_at = epoch
                request_stop(self.run_dir, reason="pruned")
                say(f"trial {self.index} pruned after epoch {epoch} ({self.metric} {value:.4g})")
                return

    def _end(self, ended: dict[str, Any]) -> None:
        values = epoch_values(self.run_dir, self.metric)
        value = best_value(values, self.direction)
        status = ended["status"]
        pruned_at = None
        if status == "pruned":
            pruned_at = self.pruned_at if self.pruned_at is not None else max(values, default=None)
        self._tell(status, value)
        self.record.update_run(
            self.index + 1, finished_at=utc_now(), value=value, pruned_at_epoch=pruned_at, **ended
        )
        say(
            f"trial {self.index} {status}"
            + (f": {self.metric} {value:.4g}" if value is not None else "")
        )

    def _tell(self, status: str, value: float | None) -> None:
        """The study's verdict; a stopped run's trial stays running (a requeue continues it)."""
        if self.study is None or status == "stopped":
            return
        from optuna.trial import TrialState

        if status == "completed" and value is not None:
            self.study.tell(self.trial, value)
        elif status == "pruned":
            self.study.tell(self.trial, state=TrialState.PRUNED)
        else:
            self.study.tell(self.trial, state=TrialState.FAIL)
