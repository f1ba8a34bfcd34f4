"""What each chart shows, built from the RunModel at the chart's width: points (already binned to
the dot columns, min and max per bin), the current/min/max/best numbers, and the best-epoch marks.
A chart is described by a StepMetric or an EpochMetric (which series, how its numbers read); a
ChartView (the chart controls: smoothing, log-Y, x axis, outliers, zoom, cursor) changes what the
per-step charts draw; the arithmetic lives in charts/math.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from entrenar_tui import formatting as fmt
from entrenar_tui.charts import axes
from entrenar_tui.charts import math as cm
from entrenar_tui.charts import ticks as tk
from entrenar_tui.charts.braille import Point
from entrenar_tui.model.run import RunModel
from trainer.monitor.columns import Column
from trainer.monitor.reader import Series
from trainer.monitor.text import duration
from trainer.monitor.values import is_number

SMOOTHING_STEP = 0.05
SMOOTHING_MAX = 0.99
ZOOMS: tuple[int | None, ...] = (None, 10_000, 1_000, 100)  # None: the whole run
X_AXES = ("step", "epoch", "time")
Format = Callable[[float | None], str]


@dataclass(frozen=True)
class StepMetric:
    """A per-step chart: its series in the step history, the epochs.json key of the best epoch's
    value, how its numbers read (`short`: for a narrow chart), and whether smoothing applies to it
    (not to the learning rate: a schedule, not noise). `title` and `id`: its chart widget's."""

    series: str
    best_key: str
    title: str = ""
    format: Format = fmt.metric
    short: Format | None = None
    smooth: bool = True
    id: str = ""


@dataclass(frozen=True)
class EpochMetric:
    """A per-epoch chart: its epochs.json key and how its numbers read (as StepMetric)."""

    key: str
    title: str = ""
    format: Format = fmt.metric
    short: Format | None = None
    id: str = ""


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


class Smoothed:
    """The smoothed values of the series one widget draws (the run screen's charts and cursor line:
    one run's loss and accuracy), a SmoothedCache per series name, owned by that widget: a
    series that is not the one cached under its name (another history) starts afresh."""

    def __init__(self) -> None:
        self._caches: dict[str, SmoothedCache] = {}

    def __call__(self, name: str, series: Series, weight: float) -> np.ndarray:
        """ema(series values, weight), from the cache."""
        cache = self._caches.get(name)
        if cache is None or cache.series is not series:
            cache = self._caches[name] = SmoothedCache(series)
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
    tags: str = ""  # which controls are on, after the title
    log_y: bool = False  # the points are log10 values (the y labels say the real ones)
    x_ticks: list[tuple[int, str]] = field(default_factory=list)  # (dot column, label)
    x_marks: list[tuple[int, str]] = field(default_factory=list)  # (dot column, axes.*_MARK)


def _finite(v) -> float | None:
    return float(v) if is_number(v) else None


def _chart_data(
    model: RunModel, metric: StepMetric, series: Series, points, start: int, stop: int
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
        best=_finite(best.get(metric.best_key)) if best else None,
        best_epoch=best.get("epoch") if best else None,
        format=metric.format,
        short=metric.short,
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
    metric: StepMetric,
    columns: int,
    view: ChartView | None = None,
    smoothed: Smoothed | None = None,
) -> ChartData:
    """A per-step series (loss, lr, accuracy) binned to `columns`; best = the best epoch's value.
    `smoothed`: the drawing widget's cache of smoothed values (without one, computed afresh)."""
    series = model.history.series[metric.series]
    n = len(series)
    if n == 0 or columns <= 0:
        return ChartData([], format=metric.format, short=metric.short)
    if view is not None and not view.is_plain():
        return _viewed_step_chart(model, metric, columns, view, smoothed or Smoothed())
    if n < columns:  # fewer steps than dot columns: a line through them rather than a staircase
        points = interpolate([v if math.isfinite(v) else None for v in series.values], columns)
    else:
        points = series.downsample(columns)
    data = _chart_data(model, metric, series, points, 0, n)

    def column(i: int) -> int:
        return column_of(i, n, columns) if n < columns else i * columns // n

    best_steps = _best_epoch_indexes(model)
    if best_steps is not None:
        first, last = best_steps
        if first <= last:
            data.highlight = set(range(column(first), column(last) + 1))
    data.x_ticks, data.x_marks = x_decoration(model, "step", 0, n, columns, column)
    return data


def _viewed_step_chart(
    model: RunModel, metric: StepMetric, columns: int, view: ChartView, smoothed: Smoothed
) -> ChartData:
    """step_chart under the chart controls: the zoom window of the (smoothed, log) values, binned
    by step or wall time (min/max per bin, so spikes survive), the raw curve behind a smoothed one."""
    history = model.history
    series = history.series[metric.series]
    n = len(series)
    start, stop = cm.zoom_window(n, view.zoom)
    raw = series.values.array[start:stop]
    smooth_values = None
    if metric.smooth and view.smoothing > 0:  # the whole run, as TensorBoard does, then the window
        smooth_values = smoothed(metric.series, series, view.smoothing)[start:stop]
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

    data = _chart_data(model, metric, series, points(main), start, stop)
    data.background = points(shown_raw) if smooth_values is not None else ()
    data.bounds = cm.outlier_range(shown_raw) if view.outliers else None
    data.tags = view.tags(metric.smooth)
    data.log_y = view.log_y
    data.x_ticks, data.x_marks = x_decoration(model, view.x_axis, start, stop, columns, column)
    best_steps = _best_epoch_indexes(model)
    if best_steps is not None:
        first, last = best_steps
        first, last = max(first, start) - start, min(last, stop - 1) - start
        if first <= last:
            data.highlight = set(range(column(first), column(last) + 1))
    if view.cursor is not None and m:
        data.cursor_column = column(max(start, min(stop - 1, view.cursor)) - start)
    return data


def cursor_readout(
    model: RunModel,
    view: ChartView,
    metrics: Sequence[StepMetric],
    smoothed: Smoothed,
    width: int = 0,
) -> str:
    """The cursor line: where the cursor is (global step, and the epoch or wall time when that is
    the x axis) and each step series' exact value there, the smoothed one after `~` while
    smoothing is on; `metrics` in the order they are drawn. Where the titles make it longer than
    `width`, the series' own short names (loss, lr, accuracy as acc) are used, so that a value is
    not wrapped away from its name."""
    history = model.history
    n = len(history)
    if view.cursor is None or not n:
        return ""
    i = max(0, min(n - 1, view.cursor))
    step = int(history.global_steps.array[i])
    where = f"step {step:,}"
    spe = model.steps_per_epoch
    if view.x_axis == "epoch" and spe:
        where = f"epoch {step / spe:.2f} · {where}"
    elif view.x_axis == "time":
        t = history.series["t"].values.array
        if math.isfinite(t[i]) and math.isfinite(t[0]):
            where = f"{duration(t[i] - t[0])} · {where}"
    parts: list[tuple[str, str, str]] = []
    for metric in metrics:
        name = metric.series
        series = history.series[name]
        exact = exact_value(name, cm.value_at(series.values.array, i))
        if metric.smooth and view.smoothing > 0:
            smooth = smoothed(name, series, view.smoothing)
            exact += " ~" + exact_value(name, cm.value_at(smooth, i))
        parts.append((metric.title, SHORT_NAMES.get(name, name), exact))
    text = " · ".join([where, *(f"{title} {exact}" for title, _, exact in parts)])
    if width and len(text) > width:
        text = " · ".join([where, *(f"{short} {exact}" for _, short, exact in parts)])
    return text


SHORT_NAMES = {"accuracy": "acc"}


def exact_value(name: str, value: float | None) -> str:
    """A value as the cursor reads it (fmt.exact): 6 significant digits; an accuracy in %."""
    return fmt.exact(value, fmt.percent if name == "accuracy" else fmt.metric)


def x_decoration(
    model: RunModel,
    x_axis: str,
    start: int,
    stop: int,
    columns: int,
    column: Callable[[int], int],
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The x labels and marks of a step chart showing history indexes [start, stop) on `columns`
    dot columns (`column` maps an index in the window to its dot column): ticks in the x unit
    (global step, epoch, or wall time since the run's first step), the epoch boundaries (when
    there are not too many to read), the resume points (run.json resumed_from) and the steps
    recoveries rolled back to (run.json recoveries, checked: model/recoveries.py), each on the
    first step after it: on any x axis, since a mark goes where its step is drawn."""
    history = model.history
    if stop <= start or columns <= 0:
        return [], []
    steps = history.global_steps.array[start:stop]
    spe = model.steps_per_epoch
    count = axes.x_label_count(columns // 2)
    where = steps.astype(np.float64)  # each index's x value, non-decreasing
    if x_axis == "time":
        t = history.series["t"].values.array
        first = t[np.isfinite(t)]
        if len(first):
            window = t[start:stop]
            filled = np.maximum.accumulate(np.where(np.isfinite(window), window, -np.inf))
            where = np.where(np.isfinite(filled), filled, first[0]) - first[0]
        else:
            x_axis = "step"
    if x_axis == "epoch" and not spe:
        x_axis = "step"
    if x_axis == "epoch":
        where = where / spe
    lo, hi = float(where[0]), float(where[-1])
    if x_axis == "time":
        values, kind = tk.time_ticks(lo, hi, count), "time"
    elif x_axis == "epoch":
        values, kind = tk.nice_ticks(lo, hi, count), "epoch"
    else:
        values, kind = tk.nice_ticks(lo, hi, count, integer=True), "count"

    def index_of(x: float) -> int:
        return min(len(where) - 1, int(np.searchsorted(where, x - 1e-9 * max(1.0, abs(x)))))

    ticks = [(column(index_of(v)), tk.tick_label(v, kind)) for v in values]
    marks: list[tuple[int, str]] = []
    first_step, last_step = int(steps[0]), int(steps[-1])
    if spe:
        boundaries = range((first_step // spe + 1) * spe, last_step, spe)
        if 0 < len(boundaries) <= columns // 4:
            for b in boundaries:  # between an epoch's last step and the next one's first
                i = int(np.searchsorted(steps, b, "right"))
                marks.append((column(min(i, len(steps) - 1)), axes.EPOCH_MARK))
    for resume in (model.run or {}).get("resumed_from") or []:
        at = resume.get("global_step") if isinstance(resume, dict) else None
        if is_number(at) and first_step <= at <= last_step:
            i = int(np.searchsorted(steps, at, "right"))
            marks.append((column(min(i, len(steps) - 1)), axes.RESUME_MARK))
    for recovery in model.recoveries:
        at = recovery["rolled_back_to"]
        if first_step <= at <= last_step:
            i = int(np.searchsorted(steps, at, "right"))
            marks.append((column(min(i, len(steps) - 1)), axes.RECOVERY_MARK))
    return ticks, marks


def epoch_chart(
    model: RunModel, metric: EpochMetric, columns: int, view: ChartView | None = None
) -> ChartData:
    """A per-epoch series (val loss, val accuracy) drawn as a line through the epochs, the best
    epoch marked; an epoch without a value breaks the line. Of the controls, log-Y applies."""
    key = metric.key
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
        format=metric.format,
        short=metric.short,
        tags="log" if log_y else "",
        log_y=log_y,
    )
    n = len(values)
    if n and columns > 0:
        count = axes.x_label_count(columns // 2)
        data.x_ticks = [
            (column_of(int(e) - 1, n, columns), tk.tick_label(e, "epoch"))
            for e in tk.nice_ticks(1, n, count, integer=True)
        ]
    if best_index is not None and columns > 0:
        x = column_of(best_index, len(values), columns)
        cell = x - x % 2  # both dot columns of its terminal cell
        data.highlight = {cell, cell + 1} & set(range(columns))
    return data


def column_of(i: int, n: int, columns: int) -> int:
    """The dot column of point i of n spread over the width (first at the left edge, last at the
    right; a lone point in the middle)."""
    return (columns - 1) // 2 if n <= 1 else round(i * (columns - 1) / (n - 1))


def interpolate(values: Sequence[float | None], columns: int) -> list[Point]:
    """Few values as a line over `columns` dot columns: straight segments between neighbours, a
    gap next to a missing value."""
    n = len(values)
    if n == 0 or columns <= 0:
        return []
    if n == 1:  # a marker (one cell's two dot columns) where column_of puts it, not a line
        out: list[Point] = [None] * columns
        middle = column_of(0, 1, columns)
        for x in (middle - middle % 2, middle - middle % 2 + 1):
            if 0 <= x < columns and values[0] is not None:
                out[x] = (values[0], values[0])
        return out
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
