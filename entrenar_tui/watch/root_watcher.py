"""RootWatcher: a plain thread that follows a root holding many run directories and only posts
RunsChanged messages (the browser). The first scan posts what it has found as it goes ("scanning…
N runs"): 20,000 runs take seconds to read. Then it idles: a file event inside a known run
re-reads that run alone; one anywhere else (a run that appeared or went, a sweep.json) walks the
root again; once a poll interval with no event, only the live runs are worked out again (the clock
alone turns a run whose heartbeat stopped into "crashed"). No walk of the root without a file
event: with --poll, watchfiles' own polling of the tree is what makes the events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import watchfiles
from textual.message_pump import MessagePump

from entrenar_tui import formatting as fmt
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
        self.wakeups = 0  # file-event bursts and poll intervals seen (tests count them)
        self._last: tuple | None = None  # (runs, grid, problems, mode, plots) last posted

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.root.is_dir():
                self._set_mode(f"waiting for {self.root} to appear")
                self._scan()
                self._stop.wait(self.poll_interval)
                continue
            self._set_mode(f"{self.kind} + live runs every {self.poll_interval:g}s")
            self._scan()
            try:
                for changes in self._wakeups(self.root, _interesting, recursive=True, step_ms=20):
                    if not self.root.is_dir():
                        break
                    self._on_changes(changes)
            except Exception as e:  # no inotify watches left, a vanished root, ...
                self._set_mode(f"polling every {self.poll_interval:g}s ({type(e).__name__})")
                self._stop.wait(self.poll_interval)

    def _on_changes(self, changes: Any) -> None:
        """A wakeup: nothing changed (the poll interval passed), files of known runs changed, or
        something else did (only a full scan tells what)."""
        self.wakeups += 1
        dirs = {self.index.run_dir_of(path) for _change, path in changes or ()}
        if None in dirs:
            self._scan()
        else:
            self._post(self._guarded(lambda: self.index.refresh(dirs)))

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self._last = None  # post again so the screen learns the mode

    def _guarded(self, work: Callable[[], list[RunSummary]]) -> list[RunSummary] | None:
        try:
            return work()
        except Exception as e:  # a root that became unreadable: say so, keep the last list
            self._set_mode(f"cannot scan {self.root}: {type(e).__name__}")
            return None

    def _scan(self) -> None:
        """A full scan; the first one posts its progress (later ones keep the last list shown
        until they end: rows must not vanish and come back)."""
        progressive = self._last is None or self._last[0] == []
        scan = self.index.scan_progressively()
        while not self._stop.is_set():
            step = self._guarded(lambda: next(scan, None))  # type: ignore[arg-type]
            if step is None:
                return
            runs, done = step
            if done:
                self._post(runs)
                return
            if progressive:
                self._post(runs, f"scanning… {fmt.plural(len(runs), 'run')} so far")

    def _post(self, runs: list[RunSummary] | None, mode: str | None = None) -> None:
        if runs is None:
            return
        index = self.index
        listing = (runs, index.grid, index.problems, mode or self.mode, index.plots)
        if listing != self._last:
            self._last = listing
            grid, problems, shown_mode, plots = listing[1:]
            self.target.post_message(
                RunsChanged(self.root, runs, shown_mode, grid, problems, plots)
            )
