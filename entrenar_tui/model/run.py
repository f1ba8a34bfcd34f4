"""Everything the monitor knows about its run, and what follows from it (status, problems).

Plain Python, no Textual: its run screen feeds it what the watcher saw (RunModel.apply_*, the one
way a run's files get in: --once, the browser and the comparison read through it too) and what the
clock and the process table say; widgets draw what the screen hands them from it. The two things
it asks of the world, when a problem needs them, are inputs like the clock: train.log's last line
(`last_log_line`, by default trainer.monitor.log_tail.LastLine) and a launched trainer's exit
status (Request.exit_code, its Popen's poll). Given those it is deterministic; tests inject them.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrenar_tui.formatting import model_folder_name, plural
from entrenar_tui.model.alerts import Alert, level
from entrenar_tui.model.recoveries import clean_recoveries, problem_text
from entrenar_tui.model.validation import clean_epochs, clean_result, clean_run, clean_state
from trainer.monitor.history import StepHistory
from trainer.monitor.liveness import effective_status
from trainer.monitor.log_tail import LastLine
from trainer.monitor.reader import RunUpdate, best_of
from trainer.monitor.schema import FINAL_STATUSES, LIVE_STATUSES, Files
from trainer.monitor.step_tail import StepBatch
from trainer.monitor.text import format_age, printable
from trainer.monitor.values import is_int, is_number

LEVEL_RANK = {"error": 0, "warning": 1, "info": 2}
PARTIAL_GRACE_S = 3.0  # an incomplete last line older than this is a problem, not a write in flight


@dataclass
class Problem:
    level: str  # "error" | "warning" | "info"
    text: str
    kind: str = ""  # "recovered": the recoveries' line (--once writes its own)


@dataclass
class Request:
    """A control request on its way: shown ("stopping…") until the run shows its effect."""

    kind: str  # "stop" | "force-stop" | "resume" | "start"
    label: str
    at: float
    process: subprocess.Popen | None = None  # the trainer a resume or start launched

    def exit_code(self) -> int | None:
        """The launched trainer's exit status once it has ended (Popen.poll), else None."""
        return self.process.poll() if self.process is not None else None


class RunModel:
    def __init__(
        self,
        run_dir: str | Path,
        clock: Callable[[], float] = time.time,
        last_log_line: Callable[[], str | None] | None = None,
    ):
        self.dir = Path(run_dir)
        self.clock = clock
        # train.log's last line (why a trainer died), asked for only when a problem quotes it
        self.last_log_line = last_log_line or LastLine(self.dir / Files.LOG)
        self.now = clock()
        self.exists: bool | None = None
        self.run: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None
        self.epochs: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.result: dict[str, Any] | None = None
        self.recoveries: list[dict[str, Any]] = []  # run.json's, checked (model/recoveries.py)
        self.history = StepHistory()
        self.file_problems: dict[str, str] = {}
        self.bad_lines = 0
        self.first_bad_line: int | None = None
        self.partial_bytes = 0
        self.partial_since: float | None = None
        self.loaded_bytes = 0
        self.total_bytes = 0
        self.trainer = "unknown"  # control.trainer_liveness of the state's pid
        self.request: Request | None = None
        self.launch_error: str | None = None
        self.watch_mode = ""
        self.alerts: list[Alert] = []  # active now, newest first (the run screen's RunAlerts)

    # ------------------------------------------------------------------------ what the run's files say
    # The one way a run's files get into a model: the run screen (its watcher's messages), --once,
    # the browser and the comparison (model/loading.py) all come through here. Every value is
    # checked first (model/validation.py): one of the wrong type is dropped and named on the
    # problems line ("<file> values"), text made printable.

    def apply(self, update: RunUpdate) -> None:
        """One RunReader poll, in the order the run watcher posts it (the state before the
        history, the result last)."""
        self.exists = update.exists
        for file, text in update.problems.items():
            self.set_problem(file, text)
        if update.run is not None:
            self.apply_run_info(update.run)
        if update.epochs is not None:
            self.apply_epochs(update.epochs.get("epochs") or [], update.epochs.get("best_epoch"))
        if update.state is not None:
            self.apply_state(update.state)
        if update.steps is not None:
            self.add_steps(update.steps)
        if update.result is not None:
            self.apply_result(update.result)

    def apply_run_info(self, run: dict[str, Any]) -> None:
        # `recoveries` is checked entry by entry (model/recoveries.py: the first entries of a long
        # list kept, each bad one named), not dropped whole by the schema's bound
        rest = {k: v for k, v in run.items() if k != "recoveries"}
        self.run, problem = clean_run(rest)
        self.set_problem(f"{Files.RUN} values", problem)
        self.recoveries, problem = clean_recoveries(run.get("recoveries"))
        self.run["recoveries"] = self.recoveries
        self.set_problem(f"{Files.RUN} recoveries", problem)

    def apply_state(self, state: dict[str, Any]) -> bool:
        """True when the state names another trainer process than before (pid, host, start
        time): its liveness is then looked up now, not at the next tick."""
        previous = self.state or {}
        cleaned, problem = clean_state(state)
        self.set_problem(f"{Files.STATE} values", problem)
        self.set_state(cleaned)
        return any(previous.get(k) != cleaned.get(k) for k in ("pid", "host", "pid_create_time"))

    def apply_epochs(self, epochs: Any, best_epoch: Any) -> None:
        cleaned, best, problem = clean_epochs(epochs, best_epoch)
        self.set_problem(f"{Files.EPOCHS} values", problem)
        self.set_epochs(cleaned, best)

    def apply_result(self, result: dict[str, Any]) -> None:
        self.result, problem = clean_result(result)
        self.set_problem(f"{Files.RESULT} values", problem)

    def set_state(self, state: dict[str, Any]) -> None:
        self.state = state
        self._settle_request()

    def set_epochs(self, epochs: list[dict[str, Any]], best_epoch: int | None) -> None:
        self.epochs, self.best_epoch = epochs, best_epoch

    def add_steps(self, batch: StepBatch, loaded: int = 0, size: int = 0) -> None:
        if batch.reset:
            self.bad_lines, self.first_bad_line = 0, None
        self.history.add(batch)
        if batch.bad_lines:
            self.bad_lines += len(batch.bad_lines)
            self.first_bad_line = self.first_bad_line or batch.bad_lines[0]
        if batch.partial_bytes and not self.partial_bytes:
            self.partial_since = self.clock()
        self.partial_bytes = batch.partial_bytes
        if not batch.partial_bytes:
            self.partial_since = None
        self.loaded_bytes, self.total_bytes = loaded, size

    def set_problem(self, file: str, text: str | None) -> None:
        if text is None:
            self.file_problems.pop(file, None)
        else:
            self.file_problems[file] = text

    # ------------------------------------------------------------------------ time and processes

    def tick(self, now: float, trainer: str) -> None:
        """Called about once a second: the clock moved, the trainer's process was looked up."""
        self.now, self.trainer = now, trainer
        self._settle_request()

    def begin(self, request: Request) -> None:
        self.request, self.launch_error = request, None

    def _settle_request(self) -> None:
        """Clear a request once the run shows its effect; a launch that died says why."""
        r = self.request
        if r is None:
            return
        status = self.status
        if r.kind in ("stop", "force-stop"):
            if status in FINAL_STATUSES or status == "crashed":
                self.request = None
            return
        if r.process is not None:
            pid = (self.state or {}).get("pid")
            code = r.exit_code()
            if pid == r.process.pid and status in LIVE_STATUSES | FINAL_STATUSES:
                self.request = None
            elif code is not None:
                self.request = None
                if code != 0:
                    tail = self.last_log_line()
                    self.launch_error = f"{r.kind} failed (exit {code})" + (
                        f": {tail}" if tail else ""
                    )

    # ------------------------------------------------------------------------ derived

    @property
    def status(self) -> str:
        return self.status_and_reason[0]

    @property
    def status_and_reason(self) -> tuple[str, str | None]:
        """The written status, or crashed (and why), or waiting (no state.json yet)."""
        return effective_status(
            self.state, self.now, trainer=self.trainer, typical_step_s=self.history.typical_step_s()
        )

    @property
    def live(self) -> bool:
        """The trainer is (believed) running: stop makes sense, start and resume do not."""
        return self.status in LIVE_STATUSES or self.trainer == "alive"

    @property
    def name(self) -> str:
        """run.json's name, else the directory's: either may hold anything, so printable."""
        return printable((self.run or {}).get("name") or self.dir.name)

    @property
    def model_names(self) -> list[str]:
        """[the model folder's name, its architecture], what is known of them."""
        model = (self.run or {}).get("model") or {}
        path = str(model.get("path") or "")
        names = [
            printable(model_folder_name(path)) if path else "",
            printable(model.get("architecture") or ""),
        ]
        return [n for n in names if n] or ["model not loaded yet"]

    @property
    def model_name(self) -> str:
        return " · ".join(self.model_names)

    @property
    def world_size(self) -> int:
        return int((self.state or {}).get("world_size") or (self.run or {}).get("world_size") or 1)

    @property
    def steps_per_epoch(self) -> int:
        return int(
            (self.state or {}).get("steps_per_epoch")
            or (self.run or {}).get("steps_per_epoch")
            or 0
        )

    @property
    def warmup_steps(self) -> int:
        """The LR warm-up's steps, by the trainer's rule (ceil(train.warmup_fraction × total
        steps), run.json's config and state.json's total_steps); 0 where either is unknown."""
        train = ((self.run or {}).get("config") or {}).get("train")
        fraction = train.get("warmup_fraction") if isinstance(train, dict) else None
        total = (self.state or {}).get("total_steps")
        if is_number(fraction) and 0 <= fraction < 1 and is_int(total) and 0 < total < 2**53:
            return math.ceil(fraction * total)
        return 0

    def best_record(self) -> dict[str, Any] | None:
        return best_of(self.epochs, self.best_epoch)

    @property
    def error(self) -> str | None:
        """The run's error text (state.json's, else result.json's), if it has one."""
        return (self.state or {}).get("error") or (self.result or {}).get("error") or None

    def heartbeat_age(self) -> float | None:
        hb = (self.state or {}).get("heartbeat")
        return self.now - hb if isinstance(hb, (int, float)) else None

    def elapsed_s(self) -> float | None:
        """Elapsed as written, moved on by the time since the heartbeat while the run is live."""
        state = self.state or {}
        elapsed = state.get("elapsed_s")
        if not isinstance(elapsed, (int, float)):
            return None
        age = self.heartbeat_age()
        if self.status in LIVE_STATUSES and age is not None and age > 0:
            elapsed += age
        return elapsed

    def problems(self) -> list[Problem]:
        """What is wrong now, most serious first: the status's, the files', then the active alerts
        (newest first) at their level, each level in that order."""
        out: list[Problem] = []
        status, reason = self.status_and_reason
        state = self.state or {}
        if self.launch_error:
            out.append(Problem("error", self.launch_error))
        if status == "failed":
            error = self.error or "no error text"
            out.append(Problem("error", f"failed: {error}"))
        elif status == "crashed":
            tail = self.last_log_line()
            out.append(
                Problem("error", f"crashed: {reason}" + (f" · train.log: {tail}" if tail else ""))
            )
        elif status == "stopped" and state.get("error"):
            out.append(Problem("warning", f"stopped: {state['error']}"))
        out.extend(Problem("error", text) for _, text in sorted(self.file_problems.items()))
        for name, label in (("loss", "loss"), ("accuracy", "accuracy")):
            series = self.history.series[name]
            _, _, bad = series.stats()
            if bad:
                out.append(
                    Problem("error", f"{label} NaN/Inf at {bad} step{'s' if bad > 1 else ''}")
                )
        if self.bad_lines:
            out.append(
                Problem(
                    "warning",
                    f"{Files.STEPS}: {plural(self.bad_lines, 'unreadable line')}, first at line {self.first_bad_line}",
                )
            )
        if self.partial_bytes and self.partial_since is not None:
            waited = self.now - self.partial_since
            if waited >= PARTIAL_GRACE_S or status not in LIVE_STATUSES:
                out.append(
                    Problem(
                        "warning",
                        f"{Files.STEPS}: incomplete last line ({self.partial_bytes} bytes) for {format_age(waited)}",
                    )
                )
        if self.exists is False:
            out.append(Problem("info", f"waiting for {self.dir} to appear"))
        elif self.exists and self.state is None and Files.STATE not in self.file_problems:
            out.append(Problem("info", f"waiting for the trainer to write {Files.STATE}"))
        healed = problem_text(self.recoveries)
        if healed:
            out.append(Problem("warning", healed, kind="recovered"))
        # A crash or a failure is already the status's problem (with its reason), the recoveries
        # are one line above: not twice.
        out.extend(
            Problem(level(a), a.message)
            for a in self.alerts
            if not (a.kind in ("crashed", "recovered") or a.key.startswith("finished:failed"))
        )
        return sorted(out, key=lambda p: LEVEL_RANK.get(p.level, len(LEVEL_RANK)))
