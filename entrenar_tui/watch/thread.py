"""WatchThread: what the run watcher and the root watcher share — a daemon thread started on
mount and stopped on unmount, and watchfiles' event loop set up to wake on a file event or once a
poll interval whatever happens (file events do not arrive for writes made on another machine of a
network file system). Subclasses implement `_run` and only post Messages from it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import watchfiles


class WatchThread:
    def __init__(
        self, name: str, *, poll_interval: float, force_polling: bool, debounce_ms: int
    ) -> None:
        self.poll_interval = poll_interval
        self.force_polling = force_polling
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def kind(self) -> str:
        """How changes are seen, for the status line."""
        return "polling" if self.force_polling else "file events"

    def _run(self) -> None:
        raise NotImplementedError

    def _wakeups(
        self,
        path: Path,
        watch_filter: Callable[[watchfiles.Change, str], bool],
        *,
        recursive: bool,
        step_ms: int,
    ) -> Iterator[object]:
        """Yields on every burst of file events under `path` and at least once a poll interval,
        until stop() is called."""
        interval_ms = int(self.poll_interval * 1000)
        yield from watchfiles.watch(
            path,
            watch_filter=watch_filter,
            debounce=self.debounce_ms,
            step=step_ms,
            stop_event=self._stop,
            rust_timeout=interval_ms,
            yield_on_timeout=True,
            recursive=recursive,
            force_polling=self.force_polling or None,
            poll_delay_ms=interval_ms,
            raise_interrupt=False,
        )
