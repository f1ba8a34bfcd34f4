"""One epoch's per-class validation as the confusion view, --once and the comparison read it: the
K×K matrix (rows = true class, columns = predicted), each class's precision, recall, F1 and
support, the most-confused pairs, the weakest classes. Plain Python, no Textual.

The epoch records come checked (model/validation.py: wrong types dropped, text printable, K
bounded); what a check of single values cannot see is seen here: a matrix that is not square, or
whose side is not the number of labels, is not drawn (`Confusion.problem` says why), so a hostile
epochs.json never makes the view index out of range or draw a ragged grid."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from trainer.monitor.text import printable
from trainer.monitor.values import is_int, is_number

GRID_MAX_CLASSES = 30  # above this the view lists the top confusions instead of the grid
TOP_PAIRS = 10  # the most-confused pairs the view lists


@dataclass(frozen=True)
class ClassScores:
    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int | None


@dataclass(frozen=True)
class Pair:
    """`count` samples of class `true` predicted as `predicted` (indices into the labels)."""

    true: int
    predicted: int
    count: int
    share: float | None  # of the true class's samples (its row)


@dataclass
class Confusion:
    """One epoch's matrix and scores; `matrix` is None where the epoch has none (or a bad one)."""

    epoch: int | None
    labels: list[str]
    matrix: list[list[int]] | None
    scores: list[ClassScores] = field(default_factory=list)
    macro_f1: float | None = None
    problem: str | None = None
    _top: dict[int, list[Pair]] = field(default_factory=dict, repr=False)
    _max: int | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return len(self.matrix) if self.matrix is not None else len(self.scores)

    @property
    def large(self) -> bool:
        """Too many classes for a grid: the view shows the top confusions and their classes."""
        return self.k > GRID_MAX_CLASSES

    def row_total(self, row: int) -> int:
        return sum(self.matrix[row]) if self.matrix is not None else 0

    def row_share(self, row: int, column: int) -> float | None:
        """The cell's share of its true class (row-normalized), None for an empty row."""
        total = self.row_total(row)
        return self.matrix[row][column] / total if total else None

    def max_count(self) -> int:
        if self._max is None:
            self._max = max((max(row, default=0) for row in self.matrix or []), default=0)
        return self._max

    def top_pairs(self, n: int = TOP_PAIRS) -> list[Pair]:
        """The off-diagonal cells with the most samples, most first (ties: in label order).
        Remembered per n: a 1024-class matrix has a million cells and the view asks on redraws."""
        if self.matrix is None:
            return []
        if n not in self._top:
            cells = (
                (-count, t, p)
                for t, row in enumerate(self.matrix)
                for p, count in enumerate(row)
                if p != t and count > 0
            )
            top = heapq.nsmallest(n, cells)
            self._top[n] = [Pair(t, p, -neg, self.row_share(t, p)) for neg, t, p in top]
        return self._top[n]

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else str(index)


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _square(matrix: Any, k: int | None) -> tuple[list[list[int]] | None, str | None]:
    """The matrix if it is K lists of K non-negative ints (K = the labels' count when known)."""
    if not isinstance(matrix, list) or not matrix:
        return None, None
    side = len(matrix)
    if any(not isinstance(r, list) or len(r) != side for r in matrix):
        return None, "the confusion matrix is not square"
    if any(not (is_int(c) and c >= 0) for r in matrix for c in r):
        return None, "the confusion matrix holds values that are not counts"
    if k is not None and side != k:
        return None, f"the confusion matrix is {side}×{side} for {k} labels"
    return [[int(c) for c in r] for r in matrix], None


def run_labels(run: dict[str, Any] | None) -> list[str] | None:
    """run.json's data.labels (checked and printable), or None."""
    data = (run or {}).get("data")
    labels = data.get("labels") if isinstance(data, dict) else None
    if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
        return [printable(x) for x in labels]
    return None


def confusion_of(record: dict[str, Any], run_labels_: list[str] | None = None) -> Confusion:
    """An epoch record's per-class validation. Labels: per_class's, else run.json's, else the
    class indices."""
    per_class = [c for c in record.get("per_class") or [] if isinstance(c, dict)]
    scores = [
        ClassScores(
            label=printable(c["label"]) if isinstance(c.get("label"), str) else str(i),
            precision=_number(c.get("precision")),
            recall=_number(c.get("recall")),
            f1=_number(c.get("f1")),
            support=c.get("support") if is_int(c.get("support")) else None,
        )
        for i, c in enumerate(per_class)
    ]
    labels = [s.label for s in scores] if scores else list(run_labels_ or [])
    matrix, problem = _square(record.get("confusion"), len(labels) if labels else None)
    if matrix is not None and not labels:
        labels = [str(i) for i in range(len(matrix))]
    epoch = record.get("epoch") if is_int(record.get("epoch")) else None
    return Confusion(epoch, labels, matrix, scores, _number(record.get("macro_f1")), problem)


def weakest(confusion: Confusion, n: int = 3) -> list[ClassScores]:
    """The classes with the lowest F1 (those with support first among equals), at most n."""
    known = [s for s in confusion.scores if s.f1 is not None]
    return sorted(known, key=lambda s: (s.f1, -(s.support or 0)))[:n]


def abbreviate(label: str, width: int) -> str:
    """A label cut to `width` cells with an ellipsis (never empty)."""
    if width <= 0:
        return ""
    return label if len(label) <= width else label[: max(width - 1, 0)] + "…"


def axis_labels(labels: list[str], width: int) -> list[str] | None:
    """Labels abbreviated to `width`, or None where two would come out the same: then the axis
    numbers its classes (class names on a narrow axis must still tell the columns apart)."""
    short = [abbreviate(x, width) for x in labels]
    return short if len(set(short)) == len(short) else None


def common_labels(label_lists: list[list[str]]) -> list[str]:
    """The labels every run has, in the first run's order (the comparison's F1 overlay)."""
    if not label_lists:
        return []
    rest = [set(x) for x in label_lists[1:]]
    return [x for x in label_lists[0] if all(x in s for s in rest)]


def class_f1(record: dict[str, Any], label: str) -> float | None:
    """One class's F1 in an epoch record (by label), or None."""
    for c in record.get("per_class") or []:
        if isinstance(c, dict) and c.get("label") == label:
            return _number(c.get("f1"))
    return None


def has_per_class(epochs: list[dict[str, Any]]) -> bool:
    """Whether any epoch carries per-class validation (a trainer from before it writes none)."""
    return any(e.get("confusion") or e.get("per_class") for e in epochs)
