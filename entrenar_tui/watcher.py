"""The watcher: a plain thread that reads the run directory and only posts Messages to the app.

File events (watchfiles: inotify, FSEvents, ...) wake it within tens of milliseconds; it also polls
once a second whatever happens, because file events do not arrive for writes made on another
machine of a network file system. Every wake-up costs a few stat() calls: RunReader reads only the
files that changed, and steps.jsonl only from where it left off.
"""

from __future__ import annotations

import threading
from pathlib import Path

import watchfiles
from textual.message_pump import MessagePump

from entrenar_tui.messages import (
    DirectoryChanged,
    EpochsChanged,
    FileProblem,
    ResultChanged,
    RunInfoChanged,
    StateChanged,
    StepsAppended,
    WatchMode,
)
from trainer.monitor.reader import JSON_FILES, RunReader
from trainer.monitor.schema import Files

WATCHED = frozenset((*JSON_FILES, Files.STEPS))


class RunWatcher:
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
        self.poll_interval = poll_interval
        self.force_polling = force_polling
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watch {self.dir.name}", daemon=True
        )
        self._exists: bool | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        reader = RunReader(self.dir)
        while not self._stop.is_set():
            self._read(reader)
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
        mode = "polling" if self.force_polling else "file events"
        self._post(WatchMode(self.dir, f"{mode} + a check every {self.poll_interval:g}s"))
        for _changes in watchfiles.watch(
            self.dir,
            watch_filter=lambda _change, path: Path(path).name in WATCHED,
            debounce=self.debounce_ms,
            step=10,
            stop_event=self._stop,
            rust_timeout=int(self.poll_interval * 1000),
            yield_on_timeout=True,
            recursive=False,
            force_polling=self.force_polling or None,
            poll_delay_ms=int(self.poll_interval * 1000),
            raise_interrupt=False,
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
