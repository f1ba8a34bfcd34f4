"""RootWatcher: a plain thread that follows a root holding many run directories and only posts
RunsChanged messages (the browser). File events anywhere below the root wake it; it also rescans
every poll interval whatever happens (network file systems, a missed event, the clock moving a
run to "crashed"). A rescan costs a few stat() calls a run (runs.RunIndex caches by signature).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import watchfiles
from textual.message_pump import MessagePump

from entrenar_tui.messages import RunsChanged
from entrenar_tui.runs import RunIndex, RunSummary
from trainer.monitor.control import trainer_liveness
from trainer.monitor.schema import Files

NOISY = frozenset({Files.STEPS, Files.LOG})  # appended every batch; the browser never reads them


def _interesting(_change: watchfiles.Change, path: str) -> bool:
    p = Path(path)
    return p.name not in NOISY and Files.CHECKPOINTS not in p.parts


class RootWatcher:
    """`start()` on mount, `stop()` on unmount, as RunWatcher."""

    def __init__(
        self,
        root: str | Path,
        target: MessagePump,
        *,
        clock: Callable[[], float] = time.time,
        probe: Callable[[Any], str] = trainer_liveness,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        debounce_ms: int = 100,
    ):
        self.root = Path(root)
        self.target = target
        self.index = RunIndex(self.root, clock=clock, probe=probe)
        self.poll_interval, self.force_polling, self.debounce_ms = (
            poll_interval,
            force_polling,
            debounce_ms,
        )
        self.mode = ""
        self._last: list[RunSummary] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch runs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.root.is_dir():
                self._set_mode(f"waiting for {self.root} to appear")
                self._scan()
                self._stop.wait(self.poll_interval)
                continue
            kind = "polling" if self.force_polling else "file events"
            self._set_mode(f"{kind} + a rescan every {self.poll_interval:g}s")
            self._scan()
            try:
                for _changes in watchfiles.watch(
                    self.root,
                    watch_filter=_interesting,
                    debounce=self.debounce_ms,
                    step=20,
                    stop_event=self._stop,
                    rust_timeout=int(self.poll_interval * 1000),
                    yield_on_timeout=True,
                    recursive=True,
                    force_polling=self.force_polling or None,
                    poll_delay_ms=int(self.poll_interval * 1000),
                    raise_interrupt=False,
                ):
                    self._scan()
                    if not self.root.is_dir():
                        break
            except Exception as e:  # no inotify watches left, a vanished root, ...
                self._set_mode(f"polling every {self.poll_interval:g}s ({type(e).__name__})")
                self._stop.wait(self.poll_interval)

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self._last = None  # post again so the screen learns the mode

    def _scan(self) -> None:
        try:
            runs = self.index.scan()
        except Exception as e:  # a root that became unreadable: say so, keep the last list
            self._set_mode(f"cannot scan {self.root}: {type(e).__name__}")
            return
        if runs != self._last:
            self._last = runs
            self.target.post_message(RunsChanged(self.root, runs, self.mode))
