"""The learning-rate range test's curve (`entrenar-tui monitor DIR` on a directory `entrenar-train
lr-find` wrote): the smoothed loss against the LR on a log x axis, the suggested LR marked (▲
on the axis, its column highlighted) and printed with its rule and the command that trains with
it. The file is re-read when it is replaced (a test still running)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from entrenar_tui.charts import axes
from entrenar_tui.charts.braille import value_range
from entrenar_tui.charts.log_x import log_column, log_span, log_x_points, log_x_ticks
from entrenar_tui.charts.views import ChartData
from entrenar_tui.model.lr_find import LrFindCurve, load_lr_find, signature, summary_lines
from entrenar_tui.screens.help import HELP
from entrenar_tui.widgets.metric_chart import MetricChart
from trainer.monitor.text import printable

RELOAD_S = 1.0  # how often the file's signature is looked at


def lr_find_chart(curve: LrFindCurve, columns: int) -> ChartData:
    """The chart's data at `columns` dot columns: the smoothed loss over log LR (the raw loss is
    one batch's, too noisy to read beside it), the suggestion's column marked."""
    points = log_x_points(curve.lrs, curve.smoothed, columns)
    if not points:
        return ChartData([])
    smoothed = [v for v in curve.smoothed if v is not None]
    data = ChartData(
        points,
        current=smoothed[-1] if smoothed else None,
        minimum=min(smoothed, default=None),
        maximum=max(smoothed, default=None),
        bounds=value_range(points),
        x_ticks=log_x_ticks(curve.lrs, columns),
    )
    span = log_span(curve.lrs)
    if curve.suggested_lr is not None and span is not None:
        lo, hi = 10.0 ** span[0], 10.0 ** span[1]
        if lo <= curve.suggested_lr <= hi:
            column = log_column(curve.suggested_lr, span, columns)
            data.highlight = {column}
            data.x_marks = [(column, axes.SUGGESTION_MARK)]
    return data


class LrFindScreen(Screen):
    BINDINGS: ClassVar = [
        Binding("question_mark", "help", "Help", key_display="?", tooltip=HELP),
    ]
    HELP_NOTES = """\
The learning-rate range test (entrenar-train lr-find): the smoothed training loss against the
learning rate on a log axis. ▲ marks the suggested rate: where the smoothed loss falls
fastest, or the minimum's rate ÷ 10 where no descent reads. The command above trains with it.
"""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.curve = LrFindCurve()
        self.seen: tuple[int, int, int] | None = None
        self.title = "lr-find"
        self.sub_title = printable(self.directory.name)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="↗")
        yield Static(id="lr-find-summary", markup=False)
        yield MetricChart("loss (smoothed) vs learning rate, log", id="lr-find-chart")
        yield Footer()

    def on_mount(self) -> None:
        self.reload(force=True)
        self.set_interval(RELOAD_S, self.reload)

    def reload(self, force: bool = False) -> None:
        """Read lr_find.json again when it was replaced (cheap: one lstat a second)."""
        seen = signature(self.directory)
        if seen == self.seen and not force:
            return
        self.seen = seen
        self.curve = load_lr_find(self.directory)
        self.query_one("#lr-find-summary", Static).update(
            "\n".join(summary_lines(self.curve, str(self.directory)))
        )
        curve = self.curve
        self.query_one("#lr-find-chart", MetricChart).show(lambda c: lr_find_chart(curve, c))

    def action_help(self) -> None:
        self.app.show_help()
