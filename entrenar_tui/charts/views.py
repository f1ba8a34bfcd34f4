"""What each chart shows, built from the RunModel at the chart's width: points (already binned to
the dot columns, min and max per bin), the current/min/max/best numbers, and the best-epoch marks.
A ChartView (the chart controls: smoothing, log-Y, x axis, outliers, zoom, cursor) changes what the
per-step charts draw; the arithmetic lives in charts/math.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from entrenar_tui.charts import math as cm
from entrenar_tui.charts.braille import Point
from entrenar_tui.model.run import RunModel
from entrenar_tui.output import formatting as fmt
from trainer.monitor.columns import Column
from trainer.monitor.reader import Series
from trainer.monitor.text import duration
from trainer.monitor.values import is_number

SMOOTHING_STEP = 0.05
SMOOTHING_MAX = 0.99
ZOOMS: tuple[int | None, ...] = (None, 10_000, 1_000, 100)  # None: the whole run
X_AXES = ("step", "epoch", "time")


@dataclass
class ChartView:
    """How the per-step charts are drawn (the keys change it; settings.py remembers it). `cursor`
    is an index into the step history, or None when the cursor is off."""

    smoothing: float = 0.0
    log_y: bool = False
    x_axis: str = "step"
    outliers: bool = False
    zoom: int | None = None
    cursor: int | None = None

    def is_plain(self) -> bool:
        """Nothing to transform: the fast path (block summaries) draws it."""
        return (
            self.smoothing <= 0
            and not self.log_y
            and self.x_axis == "step"
            and not self.outliers
            and self.zoom is None
            and self.cursor is None
        )

    def tags(self, smooth: bool = True) -> str:
        """A short note after a chart's title saying which controls are on."""
        parts = []
        if smooth and self.smoothing > 0:
            parts.append(f"~{self.smoothing:.2f}".replace("0.", "."))
        if self.log_y:
            parts.append("log")
        if self.zoom:
            parts.append(f"last {_short_count(self.zoom)}")
        if self.x_axis != "step":
            parts.append(f"by {self.x_axis}")
        if self.outliers:
            parts.append("±1%")
        return " ".join(parts)


class SmoothedCache:
    """The smoothed values of one series, extended by its new values only while the series only
    grows (Series.edits unchanged), redone after any other change or a new weight: a live run of a
    million steps costs the new steps per redraw, not 30 ms. 8 bytes a step while smoothing is on."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.weight = -1.0
        self.edits = -1
        self.out = Column(np.float64)
        self.state, self.count = 0.0, 0

    def values(self, weight: float) -> np.ndarray:
        series, n = self.series, len(self.series)
        if series.edits != self.edits or weight != self.weight or n < len(self.out):
            self.out.clear()
            self.state, self.count = 0.0, 0
            self.edits, self.weight = series.edits, weight
        done = len(self.out)
        if n > done:
            new, self.state, self.count = cm.ema_continue(
                series.values.array[done:n], weight, self.state, self.count
            )
            self.out.extend(new)
        return self.out.array


_SMOOTHED: dict[int, SmoothedCache] = {}
MAX_SMOOTHED = 8  # series (loss and accuracy of the run shown, and a few left behind)


def smoothed(series: Series, weight: float) -> np.ndarray:
    """ema(series values, weight), from the cache."""
    cache = _SMOOTHED.get(id(series))
    if cache is None or cache.series is not series:
        if len(_SMOOTHED) >= MAX_SMOOTHED:
            _SMOOTHED.clear()
        cache = _SMOOTHED[id(series)] = SmoothedCache(series)
    return cache.values(weight)


def _short_count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


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
    background: Sequence[Point] = ()  # the raw curve behind a smoothed one (drawn dim)
    bounds: tuple[float, float] | None = None  # a fixed y range (outliers ignored)
    cursor_column: int | None = None  # the dot column under the cursor
    cursor_text: str | None = None  # what the stats line says while the cursor is on
    tags: str = ""  # which controls are on, after the title


def _finite(v) -> float | None:
    return float(v) if is_number(v) else None


def _chart_data(
    model: RunModel, series, best_key: str, points, start: int, stop: int, format, short
) -> ChartData:
    """The points with the numbers line: current (the last step), min/max over [start, stop), and
    the best epoch's value."""
    lo, hi, _ = series.stats(start, stop)
    best = model.best_record()
    return ChartData(
        points,
        current=series[len(series) - 1],
        minimum=None if math.isnan(lo) else lo,
        maximum=None if math.isnan(hi) else hi,
        best=_finite(best.get(best_key)) if best else None,
        best_epoch=best.get("epoch") if best else None,
        format=format,
        short=short,
    )


def _best_epoch_indexes(model: RunModel) -> tuple[int, int] | None:
    """History indexes (first, last) of the best epoch's steps (first > last if none are known),
    or None without a best epoch."""
    best, spe = model.best_record(), model.steps_per_epoch
    if not (best and spe and isinstance(best.get("epoch"), int)):
        return None
    epoch = best["epoch"]
    return model.history.index_range((epoch - 1) * spe + 1, epoch * spe)


def step_chart(
    model: RunModel,
    name: str,
    best_key: str,
    columns: int,
    format=fmt.metric,
    short=None,
    view: ChartView | None = None,
    smooth: bool = True,
) -> ChartData:
    """A per-step series (loss, lr, accuracy) binned to `columns`; best = the best epoch's value.
    `smooth` False: this series is never smoothed (the learning rate: a schedule, not a noise)."""
    history = model.history
    series = history.series[name]
    n = len(series)
    if n == 0 or columns <= 0:
        return ChartData([], format=format, short=short)
    if view is not None and not view.is_plain():
        return _viewed_step_chart(model, name, best_key, columns, format, short, view, smooth)
    if n < columns:  # fewer steps than dot columns: a line through them rather than a staircase
        points = interpolate([v if math.isfinite(v) else None for v in series.values], columns)
    else:
        points = series.downsample(columns)
    data = _chart_data(model, series, best_key, points, 0, n, format, short)
    best_steps = _best_epoch_indexes(model)
    if best_steps is not None:
        first, last = best_steps
        if first <= last:
            if n < columns:
                data.highlight = set(
                    range(column_of(first, n, columns), column_of(last, n, columns) + 1)
                )
            else:
                data.highlight = set(range(first * columns // n, last * columns // n + 1))
    return data


def _viewed_step_chart(
    model: RunModel,
    name: str,
    best_key: str,
    columns: int,
    format,
    short,
    view: ChartView,
    smooth: bool,
) -> ChartData:
    """step_chart under the chart controls: the zoom window of the (smoothed, log) values, binned
    by step or wall time (min/max per bin, so spikes survive), the raw curve behind a smoothed one."""
    history = model.history
    series = history.series[name]
    n = len(series)
    start, stop = cm.zoom_window(n, view.zoom)
    raw_all = series.values.array
    raw = raw_all[start:stop]
    smooth_values = None
    if smooth and view.smoothing > 0:  # over the whole run, as TensorBoard does, then the window
        smooth_values = smoothed(series, view.smoothing)[start:stop]
    shown_raw = cm.log10_or_gap(raw) if view.log_y else raw
    main = shown_raw
    if smooth_values is not None:
        main = cm.log10_or_gap(smooth_values) if view.log_y else smooth_values
    m = stop - start
    edges = None
    if view.x_axis == "time":
        edges = cm.time_edges(history.series["t"].values.array[start:stop], columns)
    if edges is None and m >= columns:
        edges = cm.index_edges(m, columns)

    def points(values: np.ndarray) -> list[Point]:
        if edges is not None:
            return cm.bin_minmax(values, edges)
        return interpolate([v if math.isfinite(v) else None for v in values.tolist()], columns)

    def column(i: int) -> int:  # the dot column of window index i
        return cm.column_at(i, edges) if edges is not None else column_of(i, m, columns)

    data = _chart_data(model, series, best_key, points(main), start, stop, format, short)
    data.background = points(shown_raw) if smooth_values is not None else ()
    data.bounds = cm.outlier_range(shown_raw) if view.outliers else None
    data.tags = view.tags(smooth)
    best_steps = _best_epoch_indexes(model)
    if best_steps is not None:
        first, last = best_steps
        first, last = max(first, start) - start, min(last, stop - 1) - start
        if first <= last:
            data.highlight = set(range(column(first), column(last) + 1))
    if view.cursor is not None and m:
        i = max(start, min(stop - 1, view.cursor))
        data.cursor_column = column(i - start)
        data.cursor_text = cursor_text(model, i, view, raw_all, smooth_values, start, format)
    return data


def cursor_text(
    model: RunModel,
    i: int,
    view: ChartView,
    raw: np.ndarray,
    smoothed: np.ndarray | None,
    start: int,
    format=fmt.metric,
) -> str:
    """The cursor's readout: where (global step, and epoch or wall time when that is the x axis)
    and the exact value there (and the smoothed one), in the way `format` shows the series (an
    accuracy as a percentage: fmt.exact)."""
    history = model.history
    step = history.global_steps[i]
    where = f"step {step:,}"
    spe = model.steps_per_epoch
    if view.x_axis == "epoch" and spe:
        where = f"ep {step / spe:.2f} {where}"
    elif view.x_axis == "time":
        t = history.series["t"].values.array
        if math.isfinite(t[i]) and math.isfinite(t[0]):
            where = f"{duration(t[i] - t[0])} {where}"
    text = f"{where}: {fmt.exact(cm.value_at(raw, i), format)}"
    if smoothed is not None:
        text += f" ~{fmt.exact(cm.value_at(smoothed, i - start), format)}"
    return text


def epoch_chart(
    model: RunModel,
    key: str,
    columns: int,
    format=fmt.metric,
    short=None,
    view: ChartView | None = None,
) -> ChartData:
    """A per-epoch series (val loss, val accuracy) drawn as a line through the epochs, the best
    epoch marked; an epoch without a value breaks the line. Of the controls, log-Y applies."""
    values = [_finite(e.get(key)) for e in model.epochs]
    good = [v for v in values if v is not None]
    best = model.best_record()
    best_index = next((i for i, e in enumerate(model.epochs) if e is best), None)
    log_y = view is not None and view.log_y
    drawn = [None if v is None or v <= 0 else math.log10(v) for v in values] if log_y else values
    data = ChartData(
        interpolate(drawn, columns),
        current=values[-1] if values else None,
        minimum=min(good) if good else None,
        maximum=max(good) if good else None,
        best=_finite(best.get(key)) if best else None,
        best_epoch=best.get("epoch") if best else None,
        format=format,
        short=short,
        tags="log" if log_y else "",
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
