"""A sweep's runs as child processes, P at a time, each in a slot of its own.

Each run is `entrenar-train CONFIG ... output.dir=<run dir> --auto-resume`, started detached with
its output in its run directory's train.log, and it gets SIGTERM (its clean stop) if the sweep
dies. A slot's environment splits the machine: on a CPU each run gets max(1, cores // P) threads
(OMP_NUM_THREADS, which torch reads at start); with at least P GPUs each slot gets its own
(CUDA_VISIBLE_DEVICES), else the runs share them. SIGINT or SIGTERM to the sweep is passed on
once to every running run (the same signal: a batch scheduler that signals every process of a job
must not make it two, which the trainer takes as "force"), no run is started after it, and the
sweep ends when they have stopped. Torch-free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.monitor.control import launch_detached
from trainer.monitor.log_tail import last_line
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.safe_files import UnsafeFile, make_directory
from trainer.monitor.schema import FINAL_STATUSES, Files
from trainer.monitor.text import duration, printable, utc_now
from trainer.sweep.plan import Run
from trainer.sweep.record import SweepRecord, target_reached

POLL_S = 0.5  # how often the sweep looks at its running children (a signal wakes it at once)


@dataclass
class Launch:
    run: Run
    directory: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # the run's sweep tag
    trial: bool = False  # argv is `sweep-trial`: it writes the run's entry in sweep.json itself


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this job may use (a cgroup, taskset, SLURM)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def slot_environments(parallel: int, gpus: list[str]) -> tuple[list[dict[str, str]], str]:
    """Each slot's environment, and how the machine was split (said at the start)."""
    envs: list[dict[str, str]] = [{} for _ in range(parallel)]
    cores = usable_cores()
    threads = max(1, cores // parallel)
    said = []
    if parallel > 1:
        for env in envs:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        said.append(
            f"{threads} CPU thread{'s' if threads > 1 else ''} each "
            f"({cores} core{'s' if cores > 1 else ''} / {parallel})"
        )
    if gpus and parallel > 1 and len(gpus) >= parallel:
        for env, gpu in zip(envs, gpus):
            env["CUDA_VISIBLE_DEVICES"] = gpu
        said.append("one GPU each (CUDA_VISIBLE_DEVICES " + ",".join(gpus[:parallel]) + ")")
    elif gpus and parallel > 1:
        said.append(
            f"sharing {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} (fewer GPUs than runs at a time)"
        )
    return envs, "; ".join(said)


def last_log_line(directory: Path) -> str | None:
    """The last line of a run's train.log (what a trainer that refused to start said), printable,
    at most 500 characters (trainer.monitor.log_tail.last_line, as the monitor reads it)."""
    line = last_line(directory / Files.LOG)
    return line[:500] if line else None


def read_state(directory: Path) -> dict[str, Any]:
    try:
        return read_contract_json(directory / Files.STATE) or {}
    except ContractError:
        return {}


def best_fields(state: dict[str, Any]) -> dict[str, Any]:
    """sweep.json's best_* of a run, from its state.json's `best` (numbers only)."""
    best = state.get("best") if isinstance(state.get("best"), dict) else {}
    fields = {
        "best_epoch": "epoch",
        "best_val_loss": "val_loss",
        "best_val_accuracy": "val_accuracy",
    }
    return {name: number(best.get(key)) for name, key in fields.items()}


def number(value: Any) -> int | float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if ok and value == value else None  # (NaN: none)


def outcome(directory: Path, returncode: int, stopping: bool) -> dict[str, Any]:
    """How a run ended: its status and error from state.json when its trainer ended normally
    (exit 0 or 1), else stopped (the sweep asked) or failed (a refusal, a crash)."""
    state = read_state(directory)
    written = state.get("status")
    if returncode in (0, 1) and written in FINAL_STATUSES:
        status = written
    else:
        status = "stopped" if stopping else "failed"
    error = None
    if status == "failed":
        error = state.get("error") if returncode == 1 and state.get("error") else None
        error = error or last_log_line(directory) or f"exit code {returncode}"
    return {"status": status, "exit_code": returncode, "error": error, **best_fields(state)}


class SweepRunner:
    def __init__(
        self, record: SweepRecord, launches: list[Launch], slots: list[dict[str, str]], total: int
    ):
        self.record, self.slots, self.total = record, slots, total
        self.queue = deque(launches)
        self.active: dict[int, tuple[Launch, subprocess.Popen, float]] = {}
        self.received: list[int] = []  # the stop signals the sweep received, in order
        self._passed_on: dict[int, int] = {}  # pid → how many of them it was sent
        self._wake = threading.Event()
        self._said_target = False

    @property
    def signal(self) -> int | None:
        """The first stop signal received, if any."""
        return self.received[0] if self.received else None

    def say(self, text: str) -> None:
        print(f"sweep: {text}", file=sys.stderr, flush=True)

    def run(self) -> int | None:
        """Run every launch; the stop signal received (None if none)."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                self._fill_slots()
                if not self.active:
                    return self.signal
                self._wake.wait(POLL_S)
                self._wake.clear()
                self._pass_signals_on()
                self._reap()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received.append(signum)  # passed on by the loop, which the wake-up runs at once
        self._wake.set()

    def _pass_signals_on(self) -> None:
        """Send each running run every stop signal it has not been sent yet (a second Ctrl-C
        reaches it as a second: forced)."""
        if not self.received:
            return
        if not self._passed_on:
            name = signal.Signals(self.received[0]).name
            self.say(f"{name} received: stopping the {len(self.active)} running run(s) cleanly")
        for _, proc, _ in self.active.values():
            sent = self._passed_on.get(proc.pid, 0)
            for signum in self.received[sent:]:
                if proc.poll() is None:
                    proc.send_signal(signum)
            self._passed_on[proc.pid] = len(self.received)

    def _target_reached(self) -> bool:
        """--target: a run's objective reached it; no new run starts (said once)."""
        reached = target_reached(self.record.doc)
        if reached and self.queue and not self._said_target:
            self._said_target = True
            self.say(f"a run reached the target {self.record.doc.get('target')}: "
                     f"{len(self.queue)} run(s) not started")  # fmt: skip
        return reached

    def _fill_slots(self) -> None:
        while (
            self.queue
            and self.signal is None
            and len(self.active) < len(self.slots)
            and not self._target_reached()
        ):
            slot = next(i for i in range(len(self.slots)) if i not in self.active)
            self._start(slot, self.queue.popleft())

    def _start(self, slot: int, launch: Launch) -> None:
        run = launch.run
        try:
            # Made and checked now, not only when the sweep started: a link planted for this run
            # while earlier ones trained would have it written elsewhere.
            make_directory(launch.directory, "run not started, nothing written through it")
            proc = launch_detached(
                launch.argv, launch.directory, env={**self.slots[slot], **launch.env},
                stop_with_parent=True,
            )  # fmt: skip
        except OSError as e:  # its folder or train.log a link, a FIFO...: it fails, the others run
            error = e.naming() if isinstance(e, UnsafeFile) else f"{launch.directory}: {e}"
            ended = {"status": "failed", "exit_code": None, "error": printable(error)}
            self.record.update_run(run.index, started_at=utc_now(), finished_at=utc_now(), **ended)
            self.say(f"run {run.index}/{self.total} {said(ended)}")
            return
        self.active[slot] = (launch, proc, time.monotonic())
        if launch.trial:  # (the trial says which values the study gave it)
            self.say(f"run {run.index}/{self.total} started: {launch.directory} "
                     f"(log: {launch.directory / Files.LOG})")  # fmt: skip
            return
        self.record.update_run(run.index, status="running", started_at=utc_now(), finished_at=None)
        values = " ".join(f"{k}={v}" for k, v in describe_values(run.values).items())
        self.say(
            f"run {run.index}/{self.total} started ({values}): {launch.directory} "
            f"(log: {launch.directory / Files.LOG})"
        )

    def _reap(self) -> None:
        for slot, (launch, proc, started) in list(self.active.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.active[slot]
            if launch.trial:
                ended = self.record.reload_run(launch.run.index)
                if ended.get("status") in ("pending", "running"):  # it refused, or died
                    ended = outcome(launch.directory, code, self.signal is not None)
                    self.record.update_run(launch.run.index, finished_at=utc_now(), **ended)
            else:
                ended = outcome(launch.directory, code, self.signal is not None)
                ended["value"] = run_value(launch.directory, self.record.doc)
                self.record.update_run(launch.run.index, finished_at=utc_now(), **ended)
            self.say(
                f"run {launch.run.index}/{self.total} {said(ended)} after {duration(time.monotonic() - started, '?')}"
            )


def run_value(directory: Path, doc: dict[str, Any]) -> float | None:
    """sweep.json's `value` of a run: its objective's best over its epochs."""
    from trainer.sweep.objective import best_value, epoch_values

    objective = doc.get("objective") or {}
    values = epoch_values(directory, objective.get("metric", "val_loss"))
    return best_value(values, objective.get("direction", "minimize"))


def describe_values(values: dict[str, Any]) -> dict[str, str]:
    from trainer.config import toml_value

    return {k: toml_value(v) for k, v in values.items()}


def said(ended: dict[str, Any]) -> str:
    """A run's end in words: `completed: best val loss 0.4123, acc 0.875 (epoch 3)`."""
    text = ended.get("status") or "?"
    if ended.get("best_val_loss") is not None and ended.get("best_val_accuracy") is not None:
        text += (
            f": best val loss {ended['best_val_loss']:.4f}, acc {ended['best_val_accuracy']:.3f} "
            f"(epoch {ended['best_epoch']})"
        )
    if ended.get("error"):
        code = ended.get("exit_code")
        text += f" ({f'exit {code}: ' if code is not None else ''}{ended['error']})"
    return printable(text)
