"""The validation pass in progress: done/total, running loss and accuracy, speed. Shown only while
the trainer validates."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, Static

from entrenar_tui import formatting as fmt


class ValidationBar(Widget):
    DEFAULT_CSS = "ValidationBar { height: 1; layout: horizontal; }"

    def compose(self) -> ComposeResult:
        yield Label("validating", id="validation-label")
        yield ProgressBar(show_eta=False, id="validation-progress")
        yield Static(id="validation-stats", markup=False)

    def show(self, validation: dict[str, Any] | None) -> None:
        self.display = bool(validation)
        if not validation:
            return
        done, total = validation.get("done") or 0, validation.get("total") or 0
        self.query_one(ProgressBar).update(total=total or None, progress=done)
        self.query_one("#validation-stats", Static).update(
            f"{fmt.count(done)}/{fmt.count(total)} · loss {fmt.metric(validation.get('loss'))} · "
            f"acc {fmt.percent(validation.get('accuracy'))} · {fmt.rate(validation.get('samples_per_sec'))}/s"
        )
