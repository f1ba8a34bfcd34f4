"""One trainer per run directory: a lock file holding the owner's pid, host and process start time.

A second trainer (or a resume) on a directory whose owner is alive is refused; a lock left by a dead
process (SIGKILL, a crash) is detected by checking the pid's start time, not just the number (pids
get reused), and taken over.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import orjson
import psutil

from trainer.errors import UserError
from trainer.monitor.schema import Files


def identity() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "pid_create_time": psutil.Process().create_time(),
    }


def holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process a lock (or state.json) names still runs. Another host's is assumed alive."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        proc = psutil.Process(int(holder["pid"]))
        return abs(proc.create_time() - float(holder["pid_create_time"])) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):
        return False


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / Files.LOCK
        self.me = identity()
        self.held = False

    def acquire(self) -> RunLock:
        payload = orjson.dumps(self.me)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self.check_free()
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # stale: its owner is gone
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            self.held = True
            return self
        raise UserError(f"{self.path}: could not take the run lock")

    def check_free(self) -> None:
        """Raise if a live trainer holds this directory (without taking the lock)."""
        holder = self._read() if self.path.exists() else None
        if holder is not None and holder_alive(holder):
            raise UserError(
                f"{self.path.parent}: a trainer is already running on it (pid {holder.get('pid')} on "
                f"{holder.get('host')}); stop it first"
            )

    def _read(self) -> dict[str, Any] | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def release(self) -> None:
        if self.held and self._read() == self.me:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.held = False
