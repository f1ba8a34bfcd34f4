"""Braille charts: each terminal cell holds 2×4 dots, so a chart W cells wide and H high has 2W
columns and 4H rows of resolution. Each dot column draws the min–max range of its bin (spikes
survive downsampling) joined to its neighbour; a bin with no value (NaN/Inf) stays blank (a gap)."""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

BRAILLE_BASE = 0x2800
# dot bits by (sub-column, sub-row from the top)
DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

Point = tuple[float, float] | None


@dataclass
class Canvas:
    """The rendered chart: rows of braille text, which cells are highlighted (the best epoch), and
    which hold only background dots (the raw curve behind a smoothed one: drawn dim)."""

    rows: list[str]
    highlighted: list[list[bool]]
    dim: list[list[bool]] = field(default_factory=list)
    bounds: tuple[float, float] | None = None  # the y range drawn (bottom, top): the axis's labels


def value_range(points: Sequence[Point]) -> tuple[float, float] | None:
    """(low, high) over the points, widened when flat so a constant draws mid-height."""
    finite = [p for p in points if p is not None and math.isfinite(p[0]) and math.isfinite(p[1])]
    if not finite:
        return None
    lo, hi = min(p[0] for p in finite), max(p[1] for p in finite)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = max(lo - pad, -sys.float_info.max), min(hi + pad, sys.float_info.max)
    return lo, hi


def fit(points: Sequence[Point], columns: int) -> tuple[list[Point], list[range]]:
    """Map points onto `columns` dot columns: fewer points are spread (each a flat run), more are
    merged (min of lows, max of highs; a gap if any is a gap). Returns each column's point and the
    input indexes it came from."""
    n = len(points)
    if n == 0 or columns <= 0:
        return [], []
    if n <= columns:
        spans = [range(j * n // columns, j * n // columns + 1) for j in range(columns)]
        return [points[s.start] for s in spans], spans
    spans = [range(n * j // columns, n * (j + 1) // columns) for j in range(columns)]
    merged: list[Point] = []
    for span in spans:
        chunk = points[span.start : span.stop]
        if any(p is None for p in chunk):
            merged.append(None)
        else:
            merged.append((min(p[0] for p in chunk), max(p[1] for p in chunk)))  # type: ignore[index]
    return merged, spans


def render(
    points: Sequence[Point],
    width: int,
    height: int,
    *,
    highlight: Collection[int] = (),
    background: Sequence[Point] = (),
    bounds: tuple[float, float] | None = None,
) -> Canvas:
    """Draw `points` into width×height cells (see `fit` for more or fewer points than columns).
    `highlight` holds indexes of input points whose cells are marked. `background` (same length
    as points, or empty) is drawn on the same scale behind them; `bounds` fixes the y range
    (values outside it are clamped to the edge), else it spans both sets of points."""
    blank = chr(BRAILLE_BASE)
    bits = [[0] * width for _ in range(height)]
    back = [[0] * width for _ in range(height)]
    marks = [[False] * width for _ in range(height)]
    columns, spans = fit(points, 2 * width)
    behind, _ = fit(background, 2 * width)
    if bounds is None:
        bounds = value_range([*columns, *behind])
    elif not bounds[1] > bounds[0]:
        bounds = value_range([bounds, bounds])
    if bounds is None or height <= 0 or width <= 0:
        return Canvas([blank * width for _ in range(max(height, 0))], marks, marks)
    _draw(behind, bounds, back, 4 * height)
    _draw(columns, bounds, bits, 4 * height)
    if highlight:
        for x, span in enumerate(spans):
            if columns[x] is not None and any(i in highlight for i in span):
                for row in marks:
                    row[x // 2] = True
    rows = [
        "".join(chr(BRAILLE_BASE + (b | c)) for b, c in zip(row, brow, strict=True))
        for row, brow in zip(bits, back, strict=True)
    ]
    dim = [
        [not b and bool(c) for b, c in zip(row, brow, strict=True)]
        for row, brow in zip(bits, back, strict=True)
    ]
    return Canvas(rows, marks, dim, bounds)


def _draw(
    columns: Sequence[Point], bounds: tuple[float, float], bits: list[list[int]], rows_of_dots: int
) -> None:
    """Set the dots of each column's min–max range, joined to its neighbour, into `bits`."""
    for row, cell, bit in dots(columns, bounds, rows_of_dots):
        bits[row][cell] |= bit


def dot_level(value: float, bounds: tuple[float, float], rows_of_dots: int) -> int:
    """The dot row (from the bottom) where `value` is drawn on the scale `bounds` (lo < hi)."""
    lo, hi = bounds
    # Halved when the range itself overflows (values near ±1.8e308 in a file): still a finite scale.
    k = 1.0 if math.isfinite(hi - lo) else 0.5
    scale = (rows_of_dots - 1) / (hi * k - lo * k)
    return min(rows_of_dots - 1, max(0, round((value * k - lo * k) * scale)))


def dots(
    columns: Sequence[Point], bounds: tuple[float, float], rows_of_dots: int
) -> Iterator[tuple[int, int, int]]:
    """(text row, character column, dot bit) of every dot of a series: each column its min–max
    range on the scale `bounds`, joined to its neighbour so a line reads as a line; a None or
    non-finite column is a gap. One drawing for the single charts and the overlaid ones."""

    def level(v: float) -> int:
        return dot_level(v, bounds, rows_of_dots)

    previous: tuple[int, int] | None = None
    for x, point in enumerate(columns):
        if point is None or not (math.isfinite(point[0]) and math.isfinite(point[1])):
            previous = None
            continue
        a, b = level(point[0]), level(point[1])
        here = (a, b)
        if previous is not None:
            a, b = min(a, previous[1] + 1), max(b, previous[0] - 1)
        previous = here
        cell, sub = divmod(x, 2)
        for r in range(a, b + 1):
            top = rows_of_dots - 1 - r
            yield top // 4, cell, DOT_BITS[sub][top % 4]
