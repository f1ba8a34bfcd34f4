"""Graceful stop: SIGINT, SIGTERM and a control.json request all set one flag the loop checks per batch.

The first signal asks for a clean stop (finish the batch, write checkpoints/last, status stopped,
exit 0). A SIGINT after an earlier signal exits at once through `on_force` (status says so); a
control.json request followed by one SIGINT (the monitor sends both) is still one clean stop.

control.json is read without blocking and without following a symbolic link (safe_files): a FIFO
or a device put there is ignored, and said once through `on_ignored`, never waited on.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from trainer.monitor.safe_files import UnsafeFile, read_bytes
from trainer.monitor.schema import Files
from trainer.monitor.text import printable

FORCED_EXIT_CODE = 130


class StopSignal:
    """Whether a stop was requested, and why. Cheap to poll: control.json is read only when it changed."""

    def __init__(
        self,
        run_dir: Path,
        started_at: float,
        on_force: Callable[[], None] | None = None,
        on_ignored: Callable[[str], None] | None = None,
    ):
        self.control = run_dir / Files.CONTROL
        self.started_at = started_at
        self.reason: str | None = None
        self.pruned = False  # the request said reason `pruned`: the run ends `pruned`
        self._signalled = False
        self.request_id: Any = None
        self._seen: tuple[int, int, int] | None = None
        self._on_force = on_force
        self._on_ignored = on_ignored
        self._said: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._signalled and signum == signal.SIGINT:  # a second signal, not a monitor's request
            if self._on_force:
                self._on_force()
            os._exit(FORCED_EXIT_CODE)
        self._signalled = True
        self.reason = self.reason or f"{signal.Signals(signum).name} received"

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason

    @property
    def requested(self) -> bool:
        """True once a stop was asked for (signal, or a control.json written after this run started)."""
        if self.reason is None:
            self._poll_control()
        return self.reason is not None

    def _poll_control(self) -> None:
        try:
            st = os.lstat(self.control)
        except OSError:
            return
        version = (st.st_ino, st.st_mtime_ns, st.st_size)  # an atomic write is a new inode
        if version == self._seen:
            return
        self._seen = version
        try:
            request = orjson.loads(read_bytes(self.control))
        except UnsafeFile as e:  # a FIFO, a device, a link, a huge file: ignored, said once
            if self._on_ignored and str(e) != self._said:
                self._said = str(e)
                self._on_ignored(f"warning: {printable(e)}")
            return
        except (OSError, orjson.JSONDecodeError):
            return  # garbage or half-written by hand: ignore, a real request is written atomically
        if not isinstance(request, dict) or request.get("command") != "stop":
            return
        requested_at = request.get("requested_at")
        if isinstance(requested_at, (int, float)) and requested_at < self.started_at:
            return  # a stale request from before this process started (e.g. the stop we are resuming from)
        self.request_id = request.get("id")
        self.pruned = request.get("reason") == "pruned"
        self.reason = (
            "pruned by the sweep" if self.pruned else "stop requested through control.json"
        )

    def consume(self) -> None:
        """Remove the honoured control.json so that a resume does not stop again at once."""
        if self.request_id is not None:
            with contextlib.suppress(FileNotFoundError):
                self.control.unlink()
