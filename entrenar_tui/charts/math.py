"""The chart controls' arithmetic, as plain numpy functions (no Textual, no RunModel), so that each
can be checked against a hand computation: TensorBoard's smoothing, the log-Y transform, the
outlier-ignoring y range, the zoom window, binning to dot columns and the cursor's lookup."""

from __future__ import annotations

import math

import numpy as np

from entrenar_tui.charts.braille import Point

# (re-exported: the charts' arithmetic is read and tested here, the EMA with it)
from entrenar_tui.smoothing import ema as ema
from entrenar_tui.smoothing import ema_continue as ema_continue


def log10_or_gap(values: np.ndarray) -> np.ndarray:
    """log10 of the values; a value that is not positive (or not finite) becomes NaN: a gap."""
    values = np.asarray(values, np.float64)
    out = np.full(len(values), np.nan)
    ok = np.isfinite(values) & (values > 0)
    out[ok] = np.log10(values[ok])
    return out


def outlier_range(
    values: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0
) -> tuple[float, float] | None:
    """The y range that ignores outliers (TensorBoard's option): from the low to the high
    percentile of the finite values; None when there are none."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return None
    lo, hi = np.percentile(finite, [low_pct, high_pct])
    return float(lo), float(hi)


def zoom_window(n: int, last: int | None) -> tuple[int, int]:
    """(start, stop) indexes of the last `last` of n steps; the whole run when last is None or
    larger than the run."""
    if last is None or last <= 0 or last >= n:
        return 0, n
    return n - last, n


def index_edges(n: int, columns: int) -> np.ndarray:
    """columns + 1 bin edges splitting n values into equal runs (each holds at least one value
    when n >= columns)."""
    return np.arange(columns + 1) * n // columns


def time_edges(t: np.ndarray, columns: int) -> np.ndarray | None:
    """columns + 1 bin edges (indexes into t) that split the span of wall times into equal time
    intervals, so that a pause in the run shows as empty bins (gaps). Missing times are carried
    forward and t made non-decreasing; None when fewer than two times are known."""
    t = np.asarray(t, np.float64)
    good = np.isfinite(t)
    if good.sum() < 2:
        return None
    filled = np.where(good, t, -np.inf)
    filled = np.maximum.accumulate(filled)
    first = t[good][0]
    filled[filled == -np.inf] = first
    lo, hi = filled[0], filled[-1]
    if not hi > lo:
        return None
    cuts = lo + (hi - lo) * np.arange(columns + 1) / columns
    edges = np.searchsorted(filled, cuts, "left")
    edges[-1] = len(t)
    return edges


def bin_minmax(values: np.ndarray, edges: np.ndarray) -> list[Point]:
    """(min, max) of values[edges[j]:edges[j+1]] per bin: spikes survive. A bin holding a NaN/Inf,
    or no value at all, is None (a gap)."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n == 0:
        return [None] * (len(edges) - 1)
    starts = np.minimum(edges[:-1], n - 1)
    good = np.isfinite(values)
    lows = np.minimum.reduceat(np.where(good, values, np.inf), starts)
    highs = np.maximum.reduceat(np.where(good, values, -np.inf), starts)
    bad = np.add.reduceat(~good, starts, dtype=np.int64)
    empty = edges[1:] <= edges[:-1]
    return [
        None if gap or hole else (lo, hi)
        for lo, hi, gap, hole in zip(
            lows.tolist(), highs.tolist(), bad.tolist(), empty.tolist(), strict=True
        )
    ]


def column_at(index: int, edges: np.ndarray) -> int:
    """The bin (dot column) holding value `index`, given bin edges."""
    return max(0, min(len(edges) - 2, int(np.searchsorted(edges, index, "right")) - 1))


def cursor_move(index: int, delta: int, start: int, stop: int) -> int:
    """The cursor moved by delta values, kept inside the window [start, stop)."""
    if stop <= start:
        return start
    return max(start, min(stop - 1, index + delta))


def value_at(values: np.ndarray, index: int) -> float | None:
    """The exact value under the cursor (None outside the data or for NaN/Inf)."""
    if not 0 <= index < len(values):
        return None
    v = float(values[index])
    return v if math.isfinite(v) else None
