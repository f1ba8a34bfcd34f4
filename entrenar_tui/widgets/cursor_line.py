"""The chart cursor's readout on a line of its own under the charts: where the cursor is and every
step series' exact value there. It wraps rather than cuts (a value is never shown in part), and is
hidden while the cursor is off."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from trainer.monitor.text import printable


class CursorLine(Static):
    DEFAULT_CSS = "CursorLine { height: auto; display: none; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, **kwargs)
        self.text = ""  # what it says (tests read it)

    def show(self, text: str) -> None:
        self.text = printable(text)
        self.display = bool(text)
        self.update("▏" + self.text if text else "")
