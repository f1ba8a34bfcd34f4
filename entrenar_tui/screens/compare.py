"""The comparison of the runs selected in the browser: train loss (per step), val loss and val
accuracy (per epoch) with every run overlaid in its own colour, and the config keys whose values
differ between the runs. The runs are read whole (steps.jsonl included) in a thread worker."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from entrenar_tui import formatting as fmt
from entrenar_tui.model.comparison import ComparedRun, differing_keys, load_comparison, show_value
from entrenar_tui.model.confusion import abbreviate, common_labels
from entrenar_tui.screens.help import HELP
from entrenar_tui.widgets.overlay_chart import OverlayChart, OverlaySeries
from trainer.monitor.text import printable


class CompareScreen(Screen):
    BINDINGS: ClassVar = [
        Binding("escape", "back", "Back", tooltip="back to the runs"),
        Binding("backspace", "back", "Back", show=False, tooltip="back to the runs"),
        Binding("f", "cycle_class", "Class F1", show=False, tooltip="the third chart: val acc → each class's F1 (the classes every run has) → val acc"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip=HELP),
    ]  # fmt: skip
    HELP_NOTES = """\
Train loss per step, val loss and val accuracy per epoch, one colour a run (the legend names them);
below, the config keys whose values differ between the runs. `f` puts one class's F1 per epoch in
place of val acc, class by class (those every run has per-class scores for).
"""

    def __init__(self, dirs: list[Path]) -> None:
        super().__init__()
        self.dirs = list(dirs)
        self.runs: list[ComparedRun] = []
        self.differences: list[tuple[str, list]] = []
        self.loaded = False
        self.f1_class: str | None = None  # the class whose F1 the third chart shows (f), or None
        self.title = "compare"
        self.sub_title = " · ".join(printable(d.name) for d in self.dirs)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        with Horizontal(id="compare-charts"):
            yield OverlayChart("train loss", fmt.metric, id="compare-train-loss")
            with Vertical(id="compare-val-charts"):
                yield OverlayChart("val loss", fmt.metric, id="compare-val-loss")
                yield OverlayChart("val acc", fmt.percent, id="compare-val-acc")
        yield DataTable(id="compare-config", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        runs = load_comparison(self.dirs)
        self.app.call_from_thread(self.show_runs, runs)

    def show_runs(self, runs: list[ComparedRun]) -> None:
        self.runs, self.loaded = runs, True
        self.query_one("#compare-train-loss", OverlayChart).show(
            [OverlaySeries(r.name, r.colour, r.train_loss) for r in runs]
        )
        self.query_one("#compare-val-loss", OverlayChart).show(
            [OverlaySeries(r.name, r.colour, r.val_loss) for r in runs]
        )
        self.show_third_chart()
        self.differences = differing_keys([r.config for r in runs])
        table = self.query_one("#compare-config", DataTable)
        table.clear(columns=True)
        chart = self.query_one("#compare-train-loss", OverlayChart)
        table.add_column(Text("config key"), key="key")
        for i, r in enumerate(runs):
            table.add_column(Text(r.name, style=chart.series_style(r.colour)), key=f"run-{i}")
        if not self.differences:
            table.add_row(Text("the configs are the same"), *(Text("") for _ in runs))
        for key, values in self.differences:
            table.add_row(Text(key), *(Text(show_value(v)) for v in values), key=key)

    def show_third_chart(self) -> None:
        """val acc, or one class's F1 across the runs (`f`)."""
        chart = self.query_one("#compare-val-acc", OverlayChart)
        label = self.f1_class
        if label is None:
            chart.title, chart.format = "val acc", fmt.percent
            chart.show([OverlaySeries(r.name, r.colour, r.val_accuracy) for r in self.runs])
            return
        chart.title, chart.format = f"F1 {abbreviate(label, 24)}", fmt.metric3
        chart.show([OverlaySeries(r.name, r.colour, r.class_f1.get(label, [])) for r in self.runs])

    def action_cycle_class(self) -> None:
        labels = common_labels([list(r.class_f1) for r in self.runs])
        if not labels:
            self.app.notify("no class has per-class F1 in every run compared")
            self.f1_class = None
        elif self.f1_class not in labels:
            self.f1_class = labels[0]
        else:
            at = labels.index(self.f1_class) + 1
            self.f1_class = labels[at] if at < len(labels) else None
        self.show_third_chart()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_help(self) -> None:
        self.app.show_help()

    def system_commands(self):
        yield SystemCommand("Back to the runs", "Leave the comparison (escape)", self.action_back)
        yield SystemCommand(
            "Class F1",
            "One class's F1 across the runs, class by class (f)",
            self.action_cycle_class,
        )
