"""Several runs' values of one metric overlaid on one braille chart (the comparison screen), on a
shared value range and a shared x axis (step or epoch: a shorter run covers the left part). Each run
draws in its own colour (component classes overlay-chart--series-0..7); where runs cross in a cell,
the one listed later is on top. The title line is also the legend: each run's name and last value
in its colour. The frame (y labels, the x axis line with step or epoch labels) is charts/axes.py's,
as on the run screen.

charts/braille.py draws one series on its own scale; the multi-series drawing is here, on braille's
public pieces (fit, value_range, the dot bits), so the monitor's charts stay as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from entrenar_tui import formatting as fmt
from entrenar_tui.charts import axes, braille
from entrenar_tui.charts import ticks as tk
from entrenar_tui.model.comparison import PALETTE_SIZE
from trainer.monitor.reader import Series

Point = braille.Point


@dataclass
class OverlaySeries:
    """One run on the chart: a step Series (binned at draw time) or per-epoch values."""

    name: str
    colour: int  # palette slot
    data: Series | Sequence[float | None]

    def __len__(self) -> int:
        return len(self.data)

    def values(self) -> list[float | None]:
        if isinstance(self.data, Series):
            return self.data.values.array.tolist()
        return list(self.data)

    def last(self) -> float | None:
        if isinstance(self.data, Series):
            v = self.data[len(self.data) - 1] if len(self.data) else None
            return v if v is not None and math.isfinite(v) else None
        return next((v for v in reversed(self.data) if v is not None and math.isfinite(v)), None)

    def points(self, columns: int) -> list[Point]:
        """Exactly `columns` points: binned (min–max) when there are more values, joined by
        straight lines when there are fewer."""
        if isinstance(self.data, Series):
            raw = self.data.downsample(columns)
        else:
            raw = [(v, v) if v is not None and math.isfinite(v) else None for v in self.data]
        if len(raw) >= columns:
            return braille.fit(raw, columns)[0]
        return _interpolate(raw, columns)


def _interpolate(raw: list[Point], columns: int) -> list[Point]:
    n = len(raw)
    if n <= 1 or columns <= 1:
        return [raw[0] if raw else None] * columns
    out: list[Point] = []
    for j in range(columns):
        x = j * (n - 1) / (columns - 1)
        i = min(int(x), n - 2)
        a, b, t = raw[i], raw[i + 1], x - i
        if a is None or b is None:
            out.append(a if t < 0.5 else b)
            continue
        v = a[1] + (b[1] - a[1]) * t
        out.append(a if t == 0 else (v, v))
    return out


class OverlayChart(Widget):
    COMPONENT_CLASSES: ClassVar = {
        "overlay-chart--title",
        "overlay-chart--label",
        *(f"overlay-chart--series-{i}" for i in range(PALETTE_SIZE)),
    }
    DEFAULT_CSS = "OverlayChart { height: 1fr; min-height: 4; }"

    def __init__(
        self, title: str, format: Callable[[object], str] = fmt.metric, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.title, self.format = title, format
        self.series: list[OverlaySeries] = []
        self.message = "loading…"

    def show(self, series: list[OverlaySeries]) -> None:
        self.series = series
        self.message = "no data" if not any(len(s) for s in series) else ""
        self.refresh()

    def series_style(self, colour: int):
        return self.get_component_rich_style(f"overlay-chart--series-{colour % PALETTE_SIZE}")

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        text = self._legend()
        if height <= 1 or width <= 0 or self.message:
            return text
        framed = height >= 4  # a frame: y labels and an x axis line under 2+ plot rows
        rows = height - 2 if framed else height - 1
        canvas, bounds = self._canvas(width, rows)
        y = axes.y_axis(bounds, rows, fraction=self.format is fmt.percent)
        gutter = y.width
        framed = framed and y.width > 0 and width - gutter - 1 >= axes.MIN_PLOT_CELLS
        if framed:
            canvas, bounds = self._canvas(width - gutter - 1, rows)
            y = axes.y_axis(bounds, rows, fraction=self.format is fmt.percent)
        muted = self.get_component_rich_style("overlay-chart--label")
        for r, row in enumerate(canvas):
            text.append("\n")
            if framed:
                label = y.labels[r][-gutter:].rjust(gutter)
                text.append(label + ("┤" if label.strip() else "│"), muted)
            for chunk, colour in row:
                text.append(chunk, self.series_style(colour) if colour >= 0 else None)
        if framed:
            plot = width - gutter - 1
            text.append("\n" + " " * gutter + "└", muted)
            for chunk, _kind in axes.x_axis(plot, self._x_ticks(2 * plot)):
                text.append(chunk, muted)
        return text

    def _x_ticks(self, columns: int) -> list[tuple[int, str]]:
        """Labels for the shared x axis: step (or epoch) 1 to the longest run's length."""
        longest = max((len(s) for s in self.series), default=0)
        if not longest:
            return []
        values = tk.nice_ticks(1, longest, axes.x_label_count(columns // 2), integer=True)
        return [
            (round((v - 1) * (columns - 1) / max(longest - 1, 1)), tk.tick_label(v, "count"))
            for v in values
        ]

    def _legend(self) -> Text:
        text = Text(self.title, style=self.get_component_rich_style("overlay-chart--title"))
        if self.message:
            text.append(f"  {self.message}", self.get_component_rich_style("overlay-chart--label"))
            return text
        # Names and last values; where that does not fit, names only, then cut names.
        room = self.size.width - len(self.title)
        n = max(1, len(self.series))
        variants = [
            [f"{s.name} {self.format(s.last())}" for s in self.series],
            [s.name for s in self.series],
            [fmt.truncate(s.name, max(1, room // n - 3)) for s in self.series],
        ]
        labels = next((v for v in variants if sum(len(x) + 3 for x in v) <= room), variants[-1])
        for s, label in zip(self.series, labels, strict=True):
            text.append(" ■ ", self.series_style(s.colour))
            text.append(label, self.series_style(s.colour))
        text.no_wrap = True
        return text

    def _canvas(
        self, width: int, height: int
    ) -> tuple[list[list[tuple[str, int]]], tuple[float, float] | None]:
        """Rows of (braille text, palette slot or -1) runs, and the y range they are drawn on."""
        columns = 2 * width
        longest = max(len(s) for s in self.series)
        placed: list[tuple[OverlaySeries, list[Point]]] = []
        for s in self.series:
            if not len(s):
                continue
            span = 1 + round((len(s) - 1) * (columns - 1) / max(longest - 1, 1))
            placed.append((s, s.points(span)))
        bounds = braille.value_range([p for _, pts in placed for p in pts])
        bits = [[0] * width for _ in range(height)]
        owner = [[-1] * width for _ in range(height)]
        if bounds is not None:
            for s, pts in placed:
                _draw(pts, bounds, bits, owner, s.colour)
        rows = []
        for bit_row, owner_row in zip(bits, owner, strict=True):
            row: list[tuple[str, int]] = []
            start = 0
            for x in range(1, width + 1):
                if x == width or owner_row[x] != owner_row[start]:
                    chunk = "".join(chr(braille.BRAILLE_BASE + b) for b in bit_row[start:x])
                    row.append((chunk, owner_row[start]))
                    start = x
            rows.append(row)
        return rows, bounds


def _draw(
    points: list[Point],
    bounds: tuple[float, float],
    bits: list[list[int]],
    owner: list[list[int]],
    colour: int,
) -> None:
    """One series' dots onto the shared grid, on the shared scale (braille.dots: as the single
    charts draw), each dot owned by the series' colour."""
    for row, cell, bit in braille.dots(points, bounds, 4 * len(bits)):
        bits[row][cell] |= bit
        owner[row][cell] = colour
