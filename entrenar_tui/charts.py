"""What each chart shows, built from the RunModel at the chart's width: points (already binned to
the dot columns, min and max per bin), the current/min/max/best numbers, and the best-epoch marks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from entrenar_tui import formatting as fmt
from entrenar_tui.braille import Point
from entrenar_tui.run_model import RunModel


@dataclass
class ChartData:
    points: Sequence[Point]
    current: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    best: float | None = None
    best_epoch: int | None = None
    highlight: set[int] = field(default_factory=set)
    format: Callable[[float | None], str] = fmt.metric
    short: Callable[[float | None], str] | None = None  # a shorter format for narrow charts


def _finite(v) -> float | None:
    return float(v) if fmt.is_number(v) else None


def step_chart(
    model: RunModel, name: str, best_key: str, columns: int, format=fmt.metric, short=None
) -> ChartData:
    """A per-step series (loss, lr, accuracy) binned to `columns`; best = the best epoch's value."""
    history = model.history
    series = history.series[name]
    n = len(series)
    if n == 0 or columns <= 0:
        return ChartData([], format=format, short=short)
    if n < columns:  # fewer steps than dot columns: a line through them rather than a staircase
        points = interpolate([v if math.isfinite(v) else None for v in series.values], columns)
    else:
        points = series.downsample(columns)
    lo, hi, _ = series.stats()
    best = model.best_record()
    data = ChartData(
        points,
        current=series[n - 1],
        minimum=None if math.isnan(lo) else lo,
        maximum=None if math.isnan(hi) else hi,
        best=_finite(best.get(best_key)) if best else None,
        best_epoch=best.get("epoch") if best else None,
        format=format,
        short=short,
    )
    spe = model.steps_per_epoch
    if best and spe and isinstance(best.get("epoch"), int):
        first, last = history.index_range((best["epoch"] - 1) * spe + 1, best["epoch"] * spe)
        if first <= last:
            if n < columns:
                data.highlight = set(
                    range(column_of(first, n, columns), column_of(last, n, columns) + 1)
                )
            else:
                data.highlight = set(range(first * columns // n, last * columns // n + 1))
    return data


def epoch_chart(
    model: RunModel, key: str, columns: int, format=fmt.metric, short=None
) -> ChartData:
    """A per-epoch series (val loss, val accuracy) drawn as a line through the epochs, the best
    epoch marked; an epoch without a value breaks the line."""
    values = [_finite(e.get(key)) for e in model.epochs]
    good = [v for v in values if v is not None]
    best = model.best_record()
    best_index = next((i for i, e in enumerate(model.epochs) if e is best), None)
    data = ChartData(
        interpolate(values, columns),
        current=values[-1] if values else None,
        minimum=min(good) if good else None,
        maximum=max(good) if good else None,
        best=_finite(best.get(key)) if best else None,
        best_epoch=best.get("epoch") if best else None,
        format=format,
        short=short,
    )
    if best_index is not None and columns > 0:
        x = column_of(best_index, len(values), columns)
        cell = x - x % 2  # both dot columns of its terminal cell
        data.highlight = {cell, cell + 1} & set(range(columns))
    return data


def column_of(i: int, n: int, columns: int) -> int:
    """The dot column of point i of n spread over the width (first at the left edge, last at the right)."""
    return 0 if n <= 1 else round(i * (columns - 1) / (n - 1))


def interpolate(values: Sequence[float | None], columns: int) -> list[Point]:
    """Few values as a line over `columns` dot columns: straight segments between neighbours, a
    gap next to a missing value."""
    n = len(values)
    if n == 0 or columns <= 0:
        return []
    if n == 1:
        v = values[0]
        return [None if v is None else (v, v)] * columns
    out: list[Point] = []
    for x in range(columns):
        pos = x * (n - 1) / (columns - 1) if columns > 1 else 0.0
        i = min(int(pos), n - 2)
        a, b = values[i], values[i + 1]
        frac = pos - i
        if a is None or b is None:
            out.append(None)
            continue
        d = b - a  # overflows for values near ±1.8e308 (a file can say anything)
        v = a + d * frac if math.isfinite(d) else a * (1 - frac) + b * frac
        out.append((v, v))
    return out
