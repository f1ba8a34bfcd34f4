"""The trainer's own output (train.log, written when entrenar-tui started the trainer), tailed
while the pane is shown: a light timer reads only the bytes appended since the last read
(log_tail.LogTail) and Textual's Log widget shows them as plain text, escape sequences spelled out."""

from __future__ import annotations

import os
from pathlib import Path

from textual.widgets import Log

from trainer.monitor.log_tail import LogTail
from trainer.monitor.text import printable

MAX_LINES = 2000


class LogPane(Log):
    def __init__(self, *, interval: float = 0.5, id: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, auto_scroll=True, id=id)
        self.interval = interval
        self.tail: LogTail | None = None
        self.border_title = "train.log"

    def on_mount(self) -> None:
        self.set_interval(self.interval, self.poll)

    def follow(self, path: Path) -> None:
        """Tail this file (the run directory may change after `s`); a new file starts afresh."""
        if self.tail is None or self.tail.path != path:
            self.tail = LogTail(path)
            self.clear()
            self.poll()

    def poll(self) -> None:
        """Read what was appended; nothing while hidden (the offset waits, so showing catches up)."""
        if self.tail is None or not self.display:
            return
        reset, lines = self.tail.read()
        if reset:
            self.clear()
        if lines:
            self.write_lines(lines)
        if self.tail.problem:
            self.border_subtitle = printable(self.tail.problem)
        elif os.path.lexists(self.tail.path):
            self.border_subtitle = ""
        else:
            self.border_subtitle = "not written (trainer not started here)"
