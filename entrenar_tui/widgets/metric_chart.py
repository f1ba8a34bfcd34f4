"""One metric as a titled braille chart in a frame: a line of numbers (current, min, max, best)
over the chart, y labels down its left side, and the x axis under it with its labels, the epoch
boundaries (┴), the resume points (↻) and the steps recoveries rolled back to (↺). Binning happens at render time at the plot's own width,
so a million steps cost the same as a thousand. Under the chart controls it also draws the raw
curve dim behind a smoothed one and the cursor's column (its readout is the screen's cursor line)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from entrenar_tui import formatting as fmt
from entrenar_tui.charts import axes, braille
from entrenar_tui.charts.views import ChartData

GUESSED_LABEL_CELLS = 5  # y labels such as `0.573`, `43.2%`, `1.5e-04`: measured, then redrawn


class MetricChart(Widget):
    COMPONENT_CLASSES: ClassVar = {
        "metric-chart--title",
        "metric-chart--label",
        "metric-chart--line",
        "metric-chart--best",
        "metric-chart--raw",
        "metric-chart--cursor",
        "metric-chart--axis",
        "metric-chart--resume",
        "metric-chart--recovery",
    }
    DEFAULT_CSS = "MetricChart { height: 1fr; min-height: 4; }"

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.source: Callable[[int], ChartData] | None = None
        self.last_data: ChartData | None = None  # what the last render drew (tests read it)

    def show(self, source: Callable[[int], ChartData]) -> None:
        """Set what to draw: `source(dot_columns)` builds the data when the chart renders."""
        self.source = source
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        if not (self.source and width > 0):
            self.last_data = ChartData([])
            return self._stats_line(self.last_data, width)
        rows = height - 2 if height >= 4 else height - 1  # the axis line needs 2 plot rows
        gutter, y = GUESSED_LABEL_CELLS, axes.YAxis([], 0)
        for _ in range(3):  # the labels' width depends on the range drawn, which on the width
            framed = rows > 0 and width - gutter - 1 >= axes.MIN_PLOT_CELLS
            plot = width - gutter - 1 if framed else width
            data = self.source(2 * plot)
            framed = framed and bool(data.points)
            if not framed:
                plot = width
                data = data if len(data.points) == 2 * width else self.source(2 * width)
            canvas = braille.render(
                data.points,
                plot,
                max(rows, 0),
                highlight=data.highlight,
                background=data.background,
                bounds=data.bounds,
            )
            if not framed:
                break
            y = self._y_labels(data, rows, canvas.bounds)
            if y.width <= gutter:  # (a wider gutter each time: this ends)
                break
            gutter = y.width
        self.last_data = data
        text = self._stats_line(data, width)
        if rows <= 0:
            return text
        styles = {part: self._style(part) for part in ("line", "best", "raw", "cursor", "axis")}
        cursor = None if data.cursor_column is None else data.cursor_column // 2
        for r, row in enumerate(canvas.rows):
            marks = canvas.highlighted[r]
            dim = canvas.dim[r] if canvas.dim else [False] * len(row)

            def kind(x: int, marks=marks, dim=dim) -> str:
                if x == cursor:
                    return "cursor"
                return "best" if marks[x] else ("raw" if dim[x] else "line")

            text.append("\n")
            if framed:
                label = y.labels[r].rjust(gutter)[-gutter:]
                text.append(label + ("┤" if label.strip() else "│"), styles["axis"])
            start = 0
            for x in range(1, len(row) + 1):  # one span per run of equal style, not per cell
                if x == len(row) or kind(x) != kind(start):
                    text.append(row[start:x], styles[kind(start)])
                    start = x
        if framed and height >= 4:
            text.append("\n" + " " * gutter + "└", styles["axis"])
            part = {axes.AXIS: "axis", axes.LABEL: "label", axes.EPOCH_MARK: "axis",
                    axes.SUGGESTION_MARK: "best"}  # fmt: skip
            for chunk, kind_ in axes.x_axis(plot, data.x_ticks, data.x_marks):
                text.append(chunk, self._style(part.get(kind_, kind_)))
        return text

    def _y_labels(self, data: ChartData, rows: int, bounds) -> axes.YAxis:
        return axes.y_axis(bounds, rows, log=data.log_y, fraction=data.format is fmt.percent)

    def _style(self, part: str):
        return self.get_component_rich_style(f"metric-chart--{part}")

    def _stats_line(self, data: ChartData, width: int) -> Text:
        """Title and numbers (current, min, max, best), dropping detail until it fits."""
        if not data.points:
            return self._assemble([("", "no data yet")], "  ", width, data.tags)
        variants = []
        for f in (data.format, data.short or data.format):
            best = f(data.best) if data.best is not None else ""
            cur, lo, hi = f(data.current), f(data.minimum), f(data.maximum)
            epoch = f" (ep {data.best_epoch})" if data.best_epoch else ""
            variants += [
                ("  ", [("", cur), ("min ", lo), ("max ", hi), ("★ best ", best + epoch)]),
                ("  ", [("", cur), ("min ", lo), ("max ", hi), ("★", best)]),
                (" ", [("", cur), ("↓", lo), ("↑", hi), ("★", best)]),
            ]
        variants += [(" ", [("", cur), ("★", best)]), (" ", [("", cur)])]
        title = len(self.title) + (len(data.tags) + 1 if data.tags else 0)
        for sep, parts in variants:
            chosen = [(label, value) for label, value in parts if value and value != fmt.DASH]
            if title + sum(len(sep) + len(label) + len(value) for label, value in chosen) <= width:
                break
        return self._assemble(chosen, sep, width, data.tags)

    def _assemble(self, parts: list[tuple[str, str]], sep: str, width: int, tags: str = "") -> Text:
        text = Text(self.title, style=self._style("title"), no_wrap=True)
        if tags:
            text.append(" " + tags, self._style("label"))
        for label, value in parts:
            text.append(sep)
            if label:
                text.append(label, self._style("best") if "★" in label else self._style("label"))
            text.append(value)
        text.truncate(width, overflow="ellipsis")
        return text
