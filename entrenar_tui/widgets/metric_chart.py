"""One metric as a titled braille chart: a line of numbers (current, min, max, best) over the
chart. Binning happens at render time at the widget's own width, so a million steps cost the same
as a thousand. Under the chart controls it also draws the raw curve dim behind a smoothed one, the
cursor's column, and the cursor's readout in place of the numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from entrenar_tui.charts import braille
from entrenar_tui.charts.views import ChartData
from entrenar_tui.output import formatting as fmt


class MetricChart(Widget):
    COMPONENT_CLASSES: ClassVar = {
        "metric-chart--title",
        "metric-chart--label",
        "metric-chart--line",
        "metric-chart--best",
        "metric-chart--raw",
        "metric-chart--cursor",
    }
    DEFAULT_CSS = "MetricChart { height: 1fr; min-height: 2; }"

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
        data = self.source(2 * width) if self.source and width > 0 else ChartData([])
        self.last_data = data
        text = self._stats_line(data, width)
        if height <= 1:
            return text
        canvas = braille.render(
            data.points,
            width,
            height - 1,
            highlight=data.highlight,
            background=data.background,
            bounds=data.bounds,
        )
        styles = {
            "line": self._style("line"),
            "best": self._style("best"),
            "raw": self._style("raw"),
            "cursor": self._style("cursor"),
        }
        cursor = None if data.cursor_column is None else data.cursor_column // 2
        for y, row in enumerate(canvas.rows):
            marks = canvas.highlighted[y]
            dim = canvas.dim[y] if canvas.dim else [False] * len(row)

            def kind(x: int, marks=marks, dim=dim) -> str:
                if x == cursor:
                    return "cursor"
                return "best" if marks[x] else ("raw" if dim[x] else "line")

            text.append("\n")
            start = 0
            for x in range(1, len(row) + 1):  # one span per run of equal style, not per cell
                if x == len(row) or kind(x) != kind(start):
                    text.append(row[start:x], styles[kind(start)])
                    start = x
        return text

    def _style(self, part: str):
        return self.get_component_rich_style(f"metric-chart--{part}")

    def _stats_line(self, data: ChartData, width: int) -> Text:
        """Title and numbers (current, min, max, best), dropping detail until it fits."""
        if not data.points:
            return self._assemble([("", "no data yet")], "  ", width, data.tags)
        if data.cursor_text is not None:
            return self._assemble([("▏", data.cursor_text)], " ", width, data.tags)
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
