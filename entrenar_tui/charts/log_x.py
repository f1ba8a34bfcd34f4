"""A curve over a log x axis (the learning-rate range test: loss against LR), as the braille
chart's dot columns and x ticks. Each column holds the min–max of the points whose log10 x falls
in it; an empty column between two drawn ones gets the straight line between them (a curve of
fewer points than columns reads as a line); a column holding only missing values is a gap."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from entrenar_tui.charts import ticks as tk
from entrenar_tui.charts.braille import Point


def log_span(xs: Sequence[float]) -> tuple[float, float] | None:
    """(log10 min, log10 max) of the positive, finite xs; None when there is none."""
    logs = [math.log10(x) for x in xs if math.isfinite(x) and x > 0]
    return (min(logs), max(logs)) if logs else None


def log_column(x: float, span: tuple[float, float], columns: int) -> int:
    """The dot column of x (> 0) on a log axis from 10**span[0] to 10**span[1]."""
    lo, hi = span
    if not hi > lo:
        return (columns - 1) // 2
    where = (math.log10(x) - lo) / (hi - lo) * (columns - 1)
    return max(0, min(columns - 1, round(where)))


def log_x_points(xs: Sequence[float], ys: Sequence[float | None], columns: int) -> list[Point]:
    """ys placed at their xs on a log axis of `columns` dot columns (xs positive and finite; a
    None or non-finite y is a missing value)."""
    span = log_span(xs)
    if span is None or columns <= 0:
        return []
    bins: list[list[float] | None] = [None] * columns  # None: no point falls there
    for x, y in zip(xs, ys, strict=False):
        column = log_column(x, span, columns)
        found = bins[column] if bins[column] is not None else []
        if y is not None and math.isfinite(y):
            found.append(y)
        bins[column] = found
    out: list[Point] = [None] * columns
    drawn = [c for c, b in enumerate(bins) if b]
    for c in drawn:
        out[c] = (min(bins[c]), max(bins[c]))
    for a, b in itertools.pairwise(drawn):
        if any(bins[c] is not None for c in range(a + 1, b)):
            continue  # a column between holds only missing values: a gap, not a line over it
        start, end = out[a][1], out[b][0]  # type: ignore[index]
        for c in range(a + 1, b):
            v = start + (end - start) * (c - a) / (b - a)
            out[c] = (v, v)
    return out


def log_x_ticks(xs: Sequence[float], columns: int) -> list[tuple[int, str]]:
    """(dot column, label) of the powers of ten in the xs' range (and its ends where no power is
    near them), labelled as a learning rate is (`1.0e-04`)."""
    span = log_span(xs)
    if span is None or columns <= 0:
        return []
    values = tk.log_ticks(10.0 ** span[0], 10.0 ** span[1])
    return [(log_column(v, span, columns), tk.tick_label(v, "sci")) for v in values]
