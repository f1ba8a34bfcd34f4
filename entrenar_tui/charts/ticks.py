"""Axis ticks for the charts, as plain functions (no Textual): which values get a label (nice
linear steps, powers of ten on a log axis), how each label reads in its series' own format, and
on which row or column of a chart each one lands. Kept apart from drawing so that the values can
be pinned by tests on known series."""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence

from entrenar_tui import formatting as fmt
from trainer.monitor.text import duration
from trainer.monitor.values import is_number

NICE_MANTISSAS = (1, 2, 5)  # steps are 1, 2 or 5 × 10^k
CROWD_FRACTION = 0.25  # an inner tick closer than this many steps to lo or hi is left out
LABEL_KINDS = ("percent", "sci", "plain", "count", "epoch", "time")


def _decimal(mantissa: int, exponent: int) -> float:
    """mantissa × 10^exponent as the float nearest the decimal (0.3, not 0.30000000000000004)."""
    return float(f"{mantissa}e{exponent}")


def _steps_from(raw: float, integer: bool):
    """Nice steps (1/2/5 × 10^k) in increasing order, the first one at or below `raw`."""
    exponent = math.floor(math.log10(raw)) if raw > 0 else 0
    if integer:
        exponent = max(exponent, 0)
    while True:
        for mantissa in NICE_MANTISSAS:
            yield mantissa, exponent
        exponent += 1


def _inner(lo: float, hi: float, mantissa: int, exponent: int, most: int) -> list[float] | None:
    """The multiples of the step strictly inside (lo, hi), less those crowding an end; None when
    there are more than `most` (+2 that crowding could remove), without listing them."""
    step = _decimal(mantissa, exponent)
    first, last = math.ceil(lo / step), math.floor(hi / step)
    if last - first + 1 > most + 2:
        return None
    values = (_decimal(k * mantissa, exponent) for k in range(first, last + 1))
    margin = CROWD_FRACTION * step
    return [v for v in values if lo + margin <= v <= hi - margin]


def nice_ticks(lo: float, hi: float, max_ticks: int = 5, integer: bool = False) -> list[float]:
    """Tick values for a linear axis from lo to hi, at most max_ticks of them: lo and hi
    themselves (the chart's own range, so its min and max are always labelled), and between them
    the multiples of the smallest nice step (1, 2 or 5 × 10^k) that keeps the count within
    max_ticks; a multiple within a quarter step of lo or hi is left out (its label would crowd the
    end's). With max_ticks >= 3 and lo < hi there is always at least one tick between: where no
    multiple of a fitting step falls inside, the roundest value inside is taken. `integer` keeps
    steps >= 1 (an axis of steps or epochs). lo == hi gives [lo]; NaN/Inf gives []
    (callers leave non-finite values out of the range)."""
    return _linear(lo, hi, max_ticks, integer, lambda span: _steps_from(span / max_ticks, integer))


def time_ticks(lo: float, hi: float, max_ticks: int = 5) -> list[float]:
    """nice_ticks for elapsed seconds: the steps between lo and hi are clock-round (1, 2, 5, 10,
    15, 30 s; 1, 2, 5, 10, 15, 30 min; 1, 2, 3, 6, 12 h; then days), so that a wall-time axis
    reads 0:00, 10:00, 20:00 rather than 0:00, 8:20, 16:40."""
    return _linear(lo, hi, max_ticks, True, lambda span: _time_steps(span / max_ticks))


CLOCK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
DAY_S = 86400


def _time_steps(raw: float):
    """Clock-round steps in seconds, as (mantissa, exponent 0), the first one at or below raw."""
    if raw < DAY_S:
        for seconds in CLOCK_STEPS_S[max(0, bisect.bisect_right(CLOCK_STEPS_S, raw) - 1) :]:
            yield seconds, 0
    for mantissa, exponent in _steps_from(raw / DAY_S, True):  # 1, 2, 5, 10, 20... days
        yield mantissa * 10**exponent * DAY_S, 0


def _linear(lo: float, hi: float, max_ticks: int, integer: bool, steps) -> list[float]:
    """lo, hi and the multiples of the first of steps(span) that keeps within max_ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    lo, hi = min(lo, hi), max(lo, hi)
    if lo == hi:
        return [float(lo)]
    if max_ticks <= 2 or not math.isfinite(hi - lo):  # a span past the float range: its ends
        return [float(lo), float(hi)]
    for mantissa, exponent in steps(hi - lo):
        inner = _inner(lo, hi, mantissa, exponent, max_ticks - 2)
        if inner is not None and len(inner) + 2 <= max_ticks:
            break
    if not inner:
        roundest = _roundest_inside(lo, hi, integer)
        inner = [] if roundest is None else [roundest]
    return [float(lo), *inner, float(hi)]


def _roundest_inside(lo: float, hi: float, integer: bool) -> float | None:
    """The value strictly inside (lo, hi) with the fewest significant digits, nearest the middle;
    None when there is none (an integer axis of two adjacent integers)."""
    exponent = math.floor(math.log10(hi - lo)) + 1
    middle = (lo + hi) / 2
    while not integer or exponent >= 0:
        step = _decimal(1, exponent)
        inside = [
            _decimal(k, exponent)
            for k in range(math.floor(lo / step), math.ceil(hi / step) + 1)
            if lo < _decimal(k, exponent) < hi
        ]
        if inside:
            return min(inside, key=lambda v: abs(v - middle))
        exponent -= 1
    return None


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis from lo to hi (lo > 0): the powers of ten inside, and lo and hi
    themselves unless a power lies within a quarter decade of them (so the min and max are
    labelled, as on a linear axis, without crowding 1e-04 with 9e-05). A range that spans less
    than a decade gets its two bounding values and the power inside, if any. lo == hi gives [lo];
    a non-positive or non-finite bound gives []."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or min(lo, hi) <= 0:
        return []
    lo, hi = min(lo, hi), max(lo, hi)
    if lo == hi:
        return [float(lo)]
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    powers = [p for p in (_decimal(1, k) for k in range(first, last + 1)) if lo <= p <= hi]
    ends = [
        end
        for end in (float(lo), float(hi))
        if all(abs(math.log10(end / p)) >= CROWD_FRACTION for p in powers)
    ]
    return sorted({*powers, *ends})


def tick_label(value: float, kind: str) -> str:
    """A tick's label in its series' own format. kind:
    - percent: an accuracy (a fraction 0..1) as fmt.percent shows it, `43.2%`, `50%` (a
      trailing .0 dropped: a tick is a round number);
    - sci: a small magnitude such as a learning rate, as fmt.lr shows it, `1.5e-04`;
    - plain: a loss-like value with 3 significant digits, `0.573`, `2.37`, `12.5`;
    - count: steps on the x axis, `950`, `1.2k`, `15k`, `2.5M` (fmt.params, in lower-case k);
    - epoch: an epoch position on the x axis, `2`, `2.5`;
    - time: elapsed wall time on the x axis, as trainer.monitor.text.duration shows it (the
      trainer's lines and the monitor alike), `1:30`, `2:05:00`, `2d03h`."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown tick label kind {kind!r} (one of {', '.join(LABEL_KINDS)})")
    if not is_number(value):
        return fmt.metric(value)  # NaN/Inf spelled out, a dash for anything else
    if kind == "percent":
        return re.sub(r"\.0%$", "%", fmt.percent(value))
    if kind == "sci":
        return fmt.lr(value)
    if kind == "count":
        if value != int(value):
            return f"{value:.3g}"
        sign = "-" if value < 0 else ""
        return sign + re.sub(r"\.0(?=[KMB]$)", "", fmt.params(abs(value))).replace("K", "k")
    if kind == "time":
        return duration(value)
    return _plain(value)


def _plain(value: float) -> str:
    """3 significant digits without an exponent below 1000 (`0.573`, `12.5`, `1e+03` above)."""
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text


def y_label_kind(lo: float, hi: float, fraction: bool = False) -> str:
    """The label kind for a y axis from lo to hi: percent for an accuracy (`fraction`), sci where
    the values are too small or too large for 3 significant digits to read well (a learning rate,
    1e-05..3e-04), plain otherwise (a loss)."""
    if fraction:
        return "percent"
    largest = max(abs(lo), abs(hi)) if math.isfinite(lo) and math.isfinite(hi) else 0.0
    return "sci" if largest and (largest < 1e-2 or largest >= 1e4) else "plain"


def place(
    ticks: Sequence[float], lo: float, hi: float, cells: int, gap: int = 1
) -> list[int | None]:
    """The row (or column) each tick falls on in a chart of `cells` rows (or columns) spanning lo
    to hi: round((value - lo) / (hi - lo) × (cells - 1)), counted from the low end (a y axis drawn
    top-down puts it on row cells - 1 - index). A list as long as `ticks`: None for a tick that is
    not drawn — outside [lo, hi], not finite, or colliding with one already placed. Two ticks
    collide when fewer than `gap` cells apart (1: on the same row; for x labels, the label's width
    plus a space); the extremes (the lowest and highest tick) are placed first, so they win, then
    the rest in order. lo == hi puts every tick in range on cell 0."""
    out: list[int | None] = [None] * len(ticks)
    if cells <= 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return out
    lo, hi = min(lo, hi), max(lo, hi)
    index: dict[int, int] = {}
    for i, value in enumerate(ticks):
        if not math.isfinite(value) or not lo <= value <= hi:
            continue
        index[i] = 0 if hi == lo else round((value - lo) / (hi - lo) * (cells - 1))
    if not index:
        return out
    by_value = sorted(index, key=lambda i: ticks[i])
    order = [by_value[0], by_value[-1], *by_value[1:-1]]
    taken: list[int] = []
    for i in dict.fromkeys(order):  # the lowest and highest first, no tick twice
        if all(abs(index[i] - cell) >= gap for cell in taken):
            taken.append(index[i])
            out[i] = index[i]
    return out
