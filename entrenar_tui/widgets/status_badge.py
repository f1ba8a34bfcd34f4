"""The run's status as a coloured badge; its colour comes from the `-<status>` class in app.tcss."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
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
    "pruned": "⊘",  # a sweep's pruner stopped it: final, dimmed
    "failed": "✗",
    "crashed": "✗",
}


def badge_label(status: str) -> str:
    """What the badge says for `status`: its icon and the status in capitals (shown as text)."""
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
        self.update(badge_label(new))

    def cells(self) -> int:
        """Its width with the status it has now: outer_size says so only after the next layout,
        and the row beside it is fitted before that (RunProgress)."""
        return cell_len(badge_label(self.status)) + self.styles.padding.width

    def on_mount(self) -> None:
        self.watch_status("", self.status)
