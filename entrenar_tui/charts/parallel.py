"""A sweep's parallel coordinates in braille: one vertical axis per hyperparameter and one for the
objective, each run a polyline through its values. Pure (no Textual): the widget
(widgets/parallel_coordinates.py) styles the cells by the layer this module says each belongs to.

Axes: numbers are scaled linearly between the lowest and highest value tried, or on a log scale
when they are all positive and span more than two decades (learning rates); anything else
(strings, booleans, lists) is a category, the categories spread evenly in the grid's order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from entrenar_tui.charts.braille import BRAILLE_BASE, DOT_BITS
from entrenar_tui.model.sweeps import PlotRun, SweepPlot, value_text
from trainer.monitor.values import is_number

LOG_SPAN = 100.0  # more than two decades: a log axis (the trainer's importance uses the same)
MIN_SLOT = 7  # characters an axis needs for its labels: fewer, and the least important go
# Layers, lowest first: a cell shows the highest layer with a dot in it.
AXIS, DIM, LINE, BEST = "axis", "dim", "line", "best"
LAYERS = (AXIS, DIM, LINE, BEST)


@dataclass(frozen=True)
class Axis:
    """One vertical axis: its header, the labels at its top and bottom, each run's position on it
    (0 bottom .. 1 top; None where the run has no value)."""

    key: str
    header: str
    top: str
    bottom: str
    positions: tuple[float | None, ...]
    log: bool = False


def short_number(value: float) -> str:
    return f"{value:.3g}"


def numeric_axis(key: str, header: str, values: Sequence[Any]) -> Axis:
    finite = [float(v) for v in values if is_number(v)]
    if not finite:
        return Axis(key, header, "", "", tuple(None for _ in values))
    low, high = min(finite), max(finite)
    log = low > 0 and high / low > LOG_SPAN

    def scaled(v: float) -> float:
        return math.log10(v) if log else v

    span = scaled(high) - scaled(low)
    positions = tuple(
        None
        if not is_number(v)
        else (0.5 if not span > 0 else (scaled(float(v)) - scaled(low)) / span)
        for v in values
    )
    return Axis(key, header, short_number(high), short_number(low), positions, log)


def category_axis(key: str, header: str, values: Sequence[Any], order: Sequence[Any]) -> Axis:
    """Categories spread evenly, the grid's first at the bottom; a value the grid does not name
    (a hand-edited sweep.json) after them."""
    seen = list(order)
    for v in values:
        if v is not None and v not in seen:
            seen.append(v)
    tried = [c for c in seen if c in values]  # only what some run holds takes a place
    step = 1 / (len(tried) - 1) if len(tried) > 1 else 0.0
    place = {value_text(c): (i * step if len(tried) > 1 else 0.5) for i, c in enumerate(tried)}
    positions = tuple(None if v is None else place.get(value_text(v)) for v in values)
    if not tried:
        return Axis(key, header, "", "", positions)
    return Axis(key, header, value_text(tried[-1]), value_text(tried[0]), positions)


def axes_of(
    plot: SweepPlot, runs: Sequence[PlotRun], headers: dict[str, str], most: int
) -> list[Axis]:
    """The plot's axes: the grid keys (the most important first when not all fit in `most - 1`),
    in the sweep's key order, then the objective."""
    keys = list(plot.keys)
    if len(keys) > most - 1:
        rank = {k: i for i, (k, _share) in enumerate(plot.importance)}
        kept = set(sorted(keys, key=lambda k: (rank.get(k, len(rank)), keys.index(k)))[: most - 1])
        keys = [k for k in keys if k in kept]
    axes = []
    for key in keys:
        at = plot.keys.index(key)
        values = [r.values[at] for r in runs]
        present = [v for v in values if v is not None]
        if present and all(is_number(v) for v in present):
            axes.append(numeric_axis(key, headers.get(key, key), values))
        else:
            axes.append(
                category_axis(key, headers.get(key, key), values, plot.categories.get(key, ()))
            )
    axes.append(numeric_axis(plot.metric, plot.metric, [r.objective for r in runs]))
    return axes


@dataclass
class Drawing:
    """The canvas: rows of braille text and, per cell, the layer it shows (None: blank)."""

    rows: list[str]
    layers: list[list[str | None]]
    columns: list[int]  # each axis's character column


def axis_columns(n: int, width: int) -> list[int]:
    """Each of n axes' dot column, spread over 2·width dot columns (the first at the left edge,
    the last at the right)."""
    dots = 2 * width
    if n == 1:
        return [dots // 2]
    return [round(i * (dots - 1) / (n - 1)) for i in range(n)]


def draw(axes: Sequence[Axis], layers: Sequence[str], width: int, height: int) -> Drawing:
    """Each run (one layer name each, in the axes' run order) a polyline through its positions;
    segments where both ends have a value, a lone dot where neither neighbour has."""
    width, height = max(width, 1), max(height, 1)
    bits = {layer: [[0] * width for _ in range(height)] for layer in LAYERS}
    xs = axis_columns(len(axes), width)
    rows_of_dots = 4 * height

    def y_of(p: float) -> int:
        return round((1 - min(1.0, max(0.0, p))) * (rows_of_dots - 1))

    def dot(layer: str, x: int, y: int) -> None:
        cell, sub = divmod(x, 2)
        bits[layer][y // 4][cell] |= DOT_BITS[sub][y % 4]

    for x in xs:
        for y in range(rows_of_dots):
            dot(AXIS, x, y)
    for r, layer in enumerate(layers):
        points = [a.positions[r] for a in axes]
        for i, p in enumerate(points):
            if p is None:
                continue
            nxt = points[i + 1] if i + 1 < len(points) else None
            if nxt is not None:
                _segment(
                    lambda x, y, layer=layer: dot(layer, x, y), xs[i], y_of(p), xs[i + 1], y_of(nxt)
                )
            elif i == 0 or points[i - 1] is None:
                dot(layer, xs[i], y_of(p))
    rows, shown = [], []
    for row in range(height):
        text, where = [], []
        for cell in range(width):
            mask = 0
            top = None
            for layer in LAYERS:
                b = bits[layer][row][cell]
                if b:
                    mask |= b
                    top = layer
            text.append(chr(BRAILLE_BASE + mask))
            where.append(top)
        rows.append("".join(text))
        shown.append(where)
    return Drawing(rows, shown, [x // 2 for x in xs])


def _segment(dot, x0: int, y0: int, x1: int, y1: int) -> None:
    """The dots from (x0, y0) to (x1, y1), x0 < x1: one a dot column, joined vertically so a
    steep segment reads as a line."""
    previous = y0
    for x in range(x0, x1 + 1):
        y = round(y0 + (y1 - y0) * (x - x0) / (x1 - x0)) if x1 > x0 else y1
        for between in range(min(previous, y), max(previous, y) + 1):
            dot(x, between)
        previous = y


def labels_row(texts: Sequence[str], columns: Sequence[int], width: int) -> str:
    """One row of labels, each centred on its axis's column where it fits, never overlapping the
    one before (cut to the room between axes), the first flush left and the last flush right."""
    n = len(texts)
    room = max(3, width // max(n, 1) - 1)
    line = [" "] * width
    end = 0  # the first free column
    for i, (text, column) in enumerate(zip(texts, columns, strict=True)):
        text = text if len(text) <= room else text[: room - 1] + "…"
        if i == 0:
            start = 0
        elif i == n - 1:
            start = width - len(text)
        else:
            start = column - len(text) // 2
        start = min(max(start, end + (1 if i else 0)), width - len(text))
        if start < end:
            continue
        line[start : start + len(text)] = text
        end = start + len(text)
    return "".join(line)


def max_axes(width: int) -> int:
    """How many axes fit `width` characters with room for their labels (at least 2)."""
    return max(2, width // MIN_SLOT)
