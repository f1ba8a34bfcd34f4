"""The run's status as a coloured badge; its colour comes from the `-<status>` class in app.tcss."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual.widgets import Static

from trainer.monitor.text import printable

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


def badge_text(status: str) -> str:
    """`► RUNNING`: what the badge shows for a status (its width is known before it is drawn)."""
    return f"{ICONS.get(status, '?')} {printable(status).upper()}"


class StatusBadge(Static):
    DEFAULT_CSS = "StatusBadge { width: auto; padding: 0 1; }"

    status: reactive[str] = reactive("waiting")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, **kwargs)

    def watch_status(self, old: str, new: str) -> None:
        # The status comes from state.json: only the ones we know become a CSS class (another
        # string is no valid class name), and it is shown as text, not markup.
        self.remove_class(*(f"-{s}" for s in (old,) if s in ICONS))
        if new in ICONS:
            self.add_class(f"-{new}")
        self.update(badge_text(new))

    def on_mount(self) -> None:
        self.watch_status("", self.status)
