"""The validation pass in progress: done/total, running loss and accuracy, speed. Shown only while
the trainer validates."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, Static

from entrenar_tui import formatting as fmt
from entrenar_tui.model.run import RunModel


class ValidationBar(Widget):
    DEFAULT_CSS = "ValidationBar { height: 1; layout: horizontal; }"

    def __init__(self) -> None:
        super().__init__()
        self.bar = ProgressBar(show_eta=False, id="validation-progress")
        self.stats = Static(id="validation-stats", markup=False)

    def compose(self) -> ComposeResult:
        yield Label("validating", id="validation-label")
        yield from (self.bar, self.stats)

    def show(self, model: RunModel) -> None:
        """state.json's validation pass while the run validates; hidden otherwise."""
        validation = (model.state or {}).get("validation") if model.status == "validating" else None
        self.display = bool(validation)
        if not validation:
            return
        done, total = validation.get("done") or 0, validation.get("total") or 0
        self.bar.update(total=total or None, progress=done)
        self.stats.update(
            f"{fmt.count(done)}/{fmt.count(total)} · loss {fmt.metric(validation.get('loss'))} · "
            f"acc {fmt.percent(validation.get('accuracy'))} · {fmt.rate(validation.get('samples_per_sec'))}/s"
        )
