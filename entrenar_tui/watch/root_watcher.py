"""RootWatcher: a plain thread that follows a root holding many run directories and only posts
RunsChanged messages (the browser). File events anywhere below the root wake it; it also rescans
every poll interval whatever happens (network file systems, a missed event, the clock moving a
run to "crashed"). A rescan costs a few stat() calls a run (runs.RunIndex caches by signature).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import watchfiles
from textual.message_pump import MessagePump

from entrenar_tui.messages import RunsChanged
from entrenar_tui.model.discovery import RunIndex, RunSummary
from entrenar_tui.watch.thread import WatchThread
from trainer.monitor.schema import Files

NOISY = frozenset({Files.STEPS, Files.LOG})  # appended every batch; the browser never reads them


def _interesting(_change: watchfiles.Change, path: str) -> bool:
    p = Path(path)
    return p.name not in NOISY and Files.CHECKPOINTS not in p.parts


class RootWatcher(WatchThread):
    """`start()` on mount, `stop()` on unmount, as RunWatcher."""

    def __init__(
        self,
        root: str | Path,
        target: MessagePump,
        *,
        clock: Callable[[], float] = time.time,
        probe: Callable[[Any], str] | None = None,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        debounce_ms: int = 100,
    ):
        self.root = Path(root)
        self.target = target
        self.index = RunIndex(self.root, clock=clock, probe=probe)
        super().__init__(
            "watch runs",
            poll_interval=poll_interval,
            force_polling=force_polling,
            debounce_ms=debounce_ms,
        )
        self.mode = ""
        self._last: tuple[list[RunSummary], tuple[str, ...], tuple[str, ...]] | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.root.is_dir():
                self._set_mode(f"waiting for {self.root} to appear")
                self._scan()
                self._stop.wait(self.poll_interval)
                continue
            self._set_mode(f"{self.kind} + a rescan every {self.poll_interval:g}s")
            self._scan()
            try:
                for _ in self._wakeups(self.root, _interesting, recursive=True, step_ms=20):
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
        listing = (runs, self.index.grid, self.index.problems)
        if listing != self._last:
            self._last = listing
            grid, problems = listing[1:]
            self.target.post_message(RunsChanged(self.root, runs, self.mode, grid, problems))
