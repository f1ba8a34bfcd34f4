"""The writer side of the contract: run.json, state.json, steps.jsonl, epochs.json, result.json.

Cost per batch is O(1) whatever the run's length: state.json holds no history (that lives in
steps.jsonl, appended one line per write), and nothing is fsynced per batch (checkpoints are what must
be durable).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from trainer.monitor.atomic import atomic_write_json, dumps
from trainer.monitor.schema import STATUSES, Files, tagged

STATE_DEFAULTS: dict[str, Any] = {
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
    "validation": None,
    "best": None,
    "elapsed_s": 0.0,
    "eta_s": None,
    "error": None,
    "checkpoints": [],
    "world_size": 1,
}


class MonitorWriter:
    """Writes one experiment directory. Only rank 0 of a run makes one."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = {
            **STATE_DEFAULTS,
            "seq": 0,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat": time.time(),
        }
        self._steps_fd: int | None = None

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_run(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.path(Files.RUN), tagged(Files.RUN, info))

    def update_state(self, **changes: Any) -> None:
        """Merge changes into state.json and write it atomically (seq and heartbeat move on)."""
        status = changes.get("status")
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.state.update(changes)
        self.state["seq"] += 1
        self.state["heartbeat"] = time.time()
        atomic_write_json(self.path(Files.STATE), tagged(Files.STATE, self.state), indent=False)

    def append_step(self, record: dict[str, Any]) -> None:
        """One complete line of steps.jsonl per call, in a single write(2) on an O_APPEND descriptor."""
        if self._steps_fd is None:
            self._steps_fd = os.open(
                self.path(Files.STEPS), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
        os.write(self._steps_fd, dumps(record) + b"\n")

    def write_epochs(self, epochs: list[dict[str, Any]], best_epoch: int | None) -> None:
        atomic_write_json(
            self.path(Files.EPOCHS),
            tagged(Files.EPOCHS, {"epochs": epochs, "best_epoch": best_epoch}),
        )

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path(Files.RESULT), tagged(Files.RESULT, result), durable=True)

    def close(self) -> None:
        if self._steps_fd is not None:
            os.close(self._steps_fd)
            self._steps_fd = None


class NullWriter(MonitorWriter):
    """The writer of ranks other than 0: keeps the state in memory, writes nothing."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.state = {**STATE_DEFAULTS, "seq": 0}
        self._steps_fd = None

    def write_run(self, info: dict[str, Any]) -> None:
        pass

    def update_state(self, **changes: Any) -> None:
        self.state.update(changes)
        self.state["seq"] += 1

    def append_step(self, record: dict[str, Any]) -> None:
        pass

    def write_epochs(self, epochs: list[dict[str, Any]], best_epoch: int | None) -> None:
        pass

    def write_result(self, result: dict[str, Any]) -> None:
        pass
