"""The run's status as a coloured badge; its colour comes from the `-<status>` class in app.tcss."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

# Text-presentation glyphs only (no emoji variants): they stay one cell wide in every terminal.
ICONS = {
    "waiting": "…",
    "initializing": "○",
    "running": "►",
    "validating": "◆",
    "stopping": "■",
    "stopped": "■",
    "completed": "✓",
    "failed": "✗",
    "crashed": "✗",
}


class StatusBadge(Static):
    DEFAULT_CSS = "StatusBadge { width: auto; padding: 0 1; }"

    status: reactive[str] = reactive("waiting")

    def watch_status(self, old: str, new: str) -> None:
        self.remove_class(f"-{old}")
        self.add_class(f"-{new}")
        self.update(f"{ICONS.get(new, '?')} {new.upper()}")

    def on_mount(self) -> None:
        self.watch_status("", self.status)
