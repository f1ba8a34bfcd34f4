"""The run watcher: a plain thread that reads one run directory and only posts Messages to the run
screen that owns it.

File events (watchfiles: inotify, FSEvents, ...) wake it within tens of milliseconds; it also polls
once a second whatever happens, because file events do not arrive for writes made on another
machine of a network file system. Every wake-up costs a few stat() calls: RunReader reads only the
files that changed, and steps.jsonl only from where it left off.
"""

from __future__ import annotations

from pathlib import Path

from textual.message_pump import MessagePump

from entrenar_tui.messages import (
    DirectoryChanged,
    EpochsChanged,
    FileProblem,
    FirstReadDone,
    ResultChanged,
    RunInfoChanged,
    StateChanged,
    StepsAppended,
    WatchMode,
)
from entrenar_tui.watch.thread import WatchThread
from trainer.monitor.reader import JSON_FILES, RunReader
from trainer.monitor.schema import Files

WATCHED = frozenset((*JSON_FILES, Files.STEPS))


class RunWatcher(WatchThread):
    """Follows one run directory from a background thread; `start()` on mount, `stop()` on unmount."""

    def __init__(
        self,
        run_dir: str | Path,
        target: MessagePump,
        *,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        debounce_ms: int = 30,
    ):
        self.dir = Path(run_dir)
        self.target = target
        super().__init__(
            f"watch {self.dir.name}",
            poll_interval=poll_interval,
            force_polling=force_polling,
            debounce_ms=debounce_ms,
        )
        self._exists: bool | None = None

    # ------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        reader = RunReader(self.dir)
        first = True
        while not self._stop.is_set():
            self._read(reader)
            if first:
                self._post(FirstReadDone(self.dir))
                first = False
            if not self.dir.is_dir():
                self._stop.wait(self.poll_interval)
                continue
            try:
                self._follow_events(reader)
            except Exception as e:  # no inotify watches left, a vanished directory, ...
                self._post(
                    WatchMode(
                        self.dir, f"polling every {self.poll_interval:g}s ({type(e).__name__})"
                    )
                )
                self._stop.wait(self.poll_interval)

    def _follow_events(self, reader: RunReader) -> None:
        self._post(WatchMode(self.dir, f"{self.kind} + a check every {self.poll_interval:g}s"))
        for _ in self._wakeups(
            self.dir,
            lambda _change, path: Path(path).name in WATCHED,
            recursive=False,
            step_ms=10,
        ):
            self._read(reader)
            if not self.dir.is_dir():
                return

    def _read(self, reader: RunReader) -> None:
        """One poll of the directory, turned into Messages (history in pieces, so it flows)."""
        update = reader.poll()
        if update.exists != self._exists:
            self._exists = update.exists
            self._post(DirectoryChanged(self.dir, update.exists))
        for name, text in update.problems.items():
            self._post(FileProblem(self.dir, name, text))
        if update.run is not None:
            self._post(RunInfoChanged(self.dir, update.run))
        if update.epochs is not None:
            self._post(
                EpochsChanged(
                    self.dir,
                    list(update.epochs.get("epochs") or []),
                    update.epochs.get("best_epoch"),
                )
            )
        if update.state is not None:  # before the history: a long one must not delay the state
            self._post(StateChanged(self.dir, update.state))
        batch = update.steps
        while batch is not None and not self._stop.is_set():
            if not batch.empty() or batch.partial_bytes:
                self._post(StepsAppended(self.dir, batch, reader.steps.offset, self._size(reader)))
            batch = reader.steps.read() if batch.more else None
        if update.result is not None:
            self._post(ResultChanged(self.dir, update.result))

    @staticmethod
    def _size(reader: RunReader) -> int:
        try:
            return reader.steps.path.stat().st_size
        except OSError:
            return 0

    def _post(self, message) -> None:
        self.target.post_message(message)
