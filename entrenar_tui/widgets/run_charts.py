"""The run screen's charts: train loss, learning rate and train accuracy per step on the left,
val loss and val accuracy per epoch on the right, drawn under the chart controls' ChartView. It
owns the cache of smoothed values (charts/views.py Smoothed) that its charts and the cursor line
share, so a redraw while smoothing costs the new steps only."""

from __future__ import annotations

from functools import partial

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from entrenar_tui import formatting as fmt
from entrenar_tui.charts.views import (
    ChartView,
    EpochMetric,
    Smoothed,
    StepMetric,
    cursor_readout,
    epoch_chart,
    step_chart,
)
from entrenar_tui.model.run import RunModel
from entrenar_tui.widgets.metric_chart import MetricChart

STEP_METRICS = (
    StepMetric("loss", "train_loss", "train loss", fmt.metric, fmt.metric3, id="train-loss"),
    StepMetric("lr", "lr", "learning rate", fmt.lr, fmt.lr, smooth=False, id="lr"),
    StepMetric("accuracy", "train_accuracy", "train acc", fmt.percent, fmt.percent, id="train-acc"),
)
EPOCH_METRICS = (
    EpochMetric("val_loss", "val loss", fmt.metric, fmt.metric3, id="val-loss"),
    EpochMetric("val_accuracy", "val acc", fmt.percent, fmt.percent, id="val-acc"),
)


class RunCharts(Horizontal):
    def __init__(self) -> None:
        super().__init__(id="charts")
        self.step_charts = [(m, MetricChart(m.title, id=m.id)) for m in STEP_METRICS]
        self.epoch_charts = [(m, MetricChart(m.title, id=m.id)) for m in EPOCH_METRICS]
        self.smoothed = Smoothed()

    def compose(self) -> ComposeResult:
        with Vertical(id="train-charts"):
            yield from (chart for _, chart in self.step_charts)
        with Vertical(id="val-charts"):
            yield from (chart for _, chart in self.epoch_charts)

    def show(self, model: RunModel, view: ChartView, *, steps: bool, epochs: bool) -> None:
        """Redraw what changed: the step charts for new steps or another view, the epoch charts
        for new epochs (each builds its data at its own width when it renders)."""
        if steps or epochs:
            for metric, chart in self.step_charts:
                chart.show(partial(step_chart, model, metric, view=view, smoothed=self.smoothed))
        if epochs:
            for metric, chart in self.epoch_charts:
                chart.show(partial(epoch_chart, model, metric, view=view))

    def cursor_text(self, model: RunModel, view: ChartView, width: int) -> str:
        """The cursor line's text (empty while the cursor is off)."""
        return cursor_readout(model, view, STEP_METRICS, self.smoothed, width)

    def cursor_columns(self) -> int:
        """The dot columns of the first step chart: a cursor move is one of them."""
        chart = self.step_charts[0][1]
        return len(chart.last_data.points) if chart.last_data else 2 * chart.size.width
