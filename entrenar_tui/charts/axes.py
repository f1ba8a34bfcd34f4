"""A chart's frame as plain text (no Textual): the y labels down its left side, on the text rows
where braille draws those values, and the bottom axis line carrying the x labels and the marks
(epoch boundaries, resume points, recoveries). The tick values come from charts/ticks.py; both the run
screen's charts and the comparison's overlays draw their frame here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from entrenar_tui.charts import braille
from entrenar_tui.charts import ticks as tk
from entrenar_tui.model import recoveries

AXIS, LABEL, EPOCH_MARK, RESUME_MARK, RECOVERY_MARK = "axis", "label", "epoch", "resume", "recovery"
SUGGESTION_MARK = "suggestion"  # the LR range test's suggested LR (screens/lr_find.py)
MARK_CHARS = {
    EPOCH_MARK: "┴",
    RESUME_MARK: "↻",
    RECOVERY_MARK: recoveries.MARK,
    SUGGESTION_MARK: "▲",
}
KEPT_MARKS = (
    RESUME_MARK,
    RECOVERY_MARK,
    SUGGESTION_MARK,
)  # never hidden by a label or an epoch mark
MIN_PLOT_CELLS = 8  # narrower than this beside its labels, a chart drops its frame
X_LABEL_CELLS = 10  # about one x label per this many cells


@dataclass
class YAxis:
    """One label per text row of the plot (top row first; "" where none), right-aligned to `width`."""

    labels: list[str]
    width: int


def y_axis(
    bounds: tuple[float, float] | None, rows: int, *, log: bool = False, fraction: bool = False
) -> YAxis:
    """Labels for a plot of `rows` text rows drawn on `bounds` (braille's range; log10 values when
    `log`): the range's ends and nice values between (powers of ten on a log axis), each on the
    row where braille puts that value, the extremes first where two fall on one row."""
    labels = [""] * max(rows, 0)
    if bounds is None or rows <= 0 or not all(math.isfinite(b) for b in bounds):
        return YAxis(labels, 0)
    lo, hi = bounds
    if log:
        values = [math.log10(v) for v in tk.log_ticks(10.0**lo, 10.0**hi) if v > 0]
        shown = [10.0**v for v in values]
    else:
        values = tk.nice_ticks(lo, hi, max_ticks=max(2, min(5, rows)))
        shown = values
    if not values:
        return YAxis(labels, 0)
    real = [10.0**lo, 10.0**hi] if log else [lo, hi]
    kind = tk.y_label_kind(min(real), max(real), fraction)
    if log and not fraction and hi - lo >= 2:  # powers of ten across decades read as 1.0e-04
        kind = "sci"
    order = sorted(range(len(values)), key=lambda i: values[i])
    order = list(dict.fromkeys([order[0], order[-1], *order[1:-1]]))  # the extremes win a row
    for i in order:
        row = text_row(values[i], bounds, rows)
        if row is not None and not labels[row]:
            labels[row] = tk.tick_label(shown[i], kind)
    width = max(len(label) for label in labels)
    return YAxis([label.rjust(width) for label in labels], width)


def text_row(value: float, bounds: tuple[float, float], rows: int) -> int | None:
    """The text row (from the top) where braille.dots draws `value` on a plot of `rows` rows."""
    lo, hi = bounds
    dots = 4 * rows
    if not (hi > lo) or not math.isfinite(value) or not lo <= value <= hi:
        return None
    return (dots - 1 - braille.dot_level(value, bounds, dots)) // 4


def x_axis(
    cells: int, ticks: Sequence[tuple[int, str]], marks: Sequence[tuple[int, str]] = ()
) -> list[tuple[str, str]]:
    """The bottom line of a plot `cells` wide: `─` with the x labels (ticks are (dot column,
    label); the first and the last tick win a collision, a label never runs past either end) and
    the marks ((dot column, EPOCH_MARK, RESUME_MARK or RECOVERY_MARK); a resume or a recovery
    mark is never hidden by a label, an epoch mark is; of two on one cell the later wins).
    Returns runs of (text, kind), kind AXIS, LABEL or a mark's, for the widget to style."""
    if cells <= 0:
        return []
    chars = ["─"] * cells
    kinds = [AXIS] * cells
    kept = {column // 2 for column, kind in marks if kind in KEPT_MARKS and column // 2 < cells}
    for column, kind in marks:
        cell = column // 2
        if 0 <= cell < cells and (kind in KEPT_MARKS or cell not in kept):
            chars[cell], kinds[cell] = MARK_CHARS[kind], kind
    taken: list[range] = [range(cell, cell + 1) for cell in kept]
    if ticks:
        order = list(dict.fromkeys([0, len(ticks) - 1, *range(1, len(ticks) - 1)]))
        for i in order:
            column, label = ticks[i]
            span = _label_span(
                column // 2, len(label), cells, first=i == 0, last=i == len(ticks) - 1
            )
            if span is None or any(_near(span, other) for other in taken):
                continue
            taken.append(span)
            for cell, char in zip(span, label, strict=False):
                chars[cell], kinds[cell] = char, LABEL
    runs: list[tuple[str, str]] = []
    for char, kind in zip(chars, kinds, strict=True):
        if runs and runs[-1][1] == kind:
            runs[-1] = (runs[-1][0] + char, kind)
        else:
            runs.append((char, kind))
    return runs


def _label_span(cell: int, length: int, cells: int, *, first: bool, last: bool) -> range | None:
    """Where a label goes: the first starts at its tick, the last ends at it, others centre on it;
    shifted inside the line; None when it does not fit at all."""
    if length > cells:
        return None
    start = cell if first and not last else cell - length + 1 if last else cell - length // 2
    start = max(0, min(cells - length, start))
    return range(start, start + length)


def _near(a: range, b: range) -> bool:
    """Overlapping or touching (labels keep one cell of axis between them)."""
    return a.start <= b.stop and b.start <= a.stop


def x_label_count(cells: int) -> int:
    """How many x ticks to ask for on a plot `cells` wide."""
    return max(2, min(8, cells // X_LABEL_CELLS))
