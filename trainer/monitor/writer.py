"""The writer side of the contract: run.json, state.json, steps.jsonl, epochs.json, result.json.

Cost per batch is O(1) whatever the run's length: state.json holds no history (that lives in
steps.jsonl, appended one line per write), and nothing is fsynced per batch (checkpoints are what must
be durable).

A write that fails (a full disk, a quota, an I/O error) raises WriteFailed, which names the file:
the trainer ends the run `failed` with that reason rather than a traceback. steps.jsonl is opened
without following a symbolic link (safe_files.open_append), and a last line that a full disk cut
short is cut back before the first new line is appended, so that the two are never glued.

steps.jsonl is the step history's only record: no cache is kept beside it (a `steps.cols` that an
older version wrote is neither read nor written).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.monitor.atomic import atomic_write_json, dumps
from trainer.monitor.safe_files import open_writable, write_all
from trainer.monitor.schema import (
    STATUSES,
    EpochRecord,
    Files,
    Result,
    RunInfo,
    State,
    Step,
    tagged,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # (typing's own from Python 3.11)

STATE_DEFAULTS: State = {
    "status": "initializing",
    "epoch": 0,
    "total_epochs": 0,
    "step": 0,
    "steps_per_epoch": 0,
    "global_step": 0,
    "total_steps": 0,
    "loss": None,
    "train_loss": None,
    "train_accuracy": None,
    "lr": None,
    "grad_norm": None,
    "samples_per_sec": None,
    "tokens_per_sec": None,
    "flops_per_sec": None,
    "mfu": None,
    "validation": None,
    "best": None,
    "elapsed_s": 0.0,
    "eta_s": None,
    "error": None,
    "checkpoints": [],
    "world_size": 1,
}


class WriteFailed(OSError):
    """A file of the run directory could not be written; the text names it and says why."""

    def __str__(self) -> str:
        return str(self.args[0])


def _failed(name: str, e: OSError) -> WriteFailed:
    if isinstance(e, WriteFailed):
        return e
    why = e.strerror or str(e)
    return WriteFailed(f"cannot write {name}: {why}" + (f" (errno {e.errno})" if e.errno else ""))


class MonitorWriter:
    """Writes one experiment directory. Only rank 0 of a run makes one."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state: State = {
            **STATE_DEFAULTS,
            "seq": 0,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat": time.time(),
        }
        self._steps_fd: int | None = None

    def path(self, name: str) -> Path:
        return self.dir / name

    def _write_json(self, name: str, payload: dict[str, Any], **options: Any) -> None:
        try:
            atomic_write_json(self.path(name), tagged(name, payload), **options)
        except OSError as e:
            raise _failed(name, e) from None

    def write_run(self, info: RunInfo) -> None:
        self._write_json(Files.RUN, info)

    def update_state(self, **changes: Unpack[State]) -> None:
        """Merge changes into state.json and write it atomically (seq and heartbeat move on)."""
        status = changes.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.state.update(changes)
        self.state["seq"] += 1
        self.state["heartbeat"] = time.time()
        self._write_json(Files.STATE, self.state, indent=False)

    def append_step(self, record: Step) -> None:
        """One complete line of steps.jsonl per call, in a single write(2) on an O_APPEND descriptor
        (a short write, which only a full disk makes, is completed or raises)."""
        try:
            if self._steps_fd is None:
                self._steps_fd = open_writable(self.path(Files.STEPS), os.O_RDWR | os.O_APPEND)
                cut_partial_line(self._steps_fd)
            line = dumps(record) + b"\n"
            write_all(self._steps_fd, line)
        except OSError as e:
            raise _failed(Files.STEPS, e) from None

    def write_epochs(self, epochs: list[EpochRecord], best_epoch: int | None) -> None:
        self._write_json(Files.EPOCHS, {"epochs": epochs, "best_epoch": best_epoch})

    def write_result(self, result: Result) -> None:
        self._write_json(Files.RESULT, result, durable=True)

    def close(self) -> None:
        if self._steps_fd is not None:
            os.close(self._steps_fd)
            self._steps_fd = None


def cut_partial_line(fd: int, block: int = 1 << 16) -> None:
    """Truncate the file after its last newline (to nothing if it has none): what a full disk
    left of a line is not a line, and the next one must start on its own."""
    end = os.fstat(fd).st_size
    if not end or os.pread(fd, 1, end - 1) == b"\n":
        return
    pos = end
    while pos > 0:
        start = max(0, pos - block)
        newline = os.pread(fd, pos - start, start).rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


class NullWriter(MonitorWriter):
    """The writer of ranks other than 0: keeps the state in memory, writes nothing."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.state = {**STATE_DEFAULTS, "seq": 0}
        self._steps_fd = None

    def write_run(self, info: RunInfo) -> None:
        pass

    def update_state(self, **changes: Any) -> None:
        self.state.update(changes)
        self.state["seq"] += 1

    def append_step(self, record: Step) -> None:
        pass

    def write_epochs(self, epochs: list[EpochRecord], best_epoch: int | None) -> None:
        pass

    def write_result(self, result: Result) -> None:
        pass
