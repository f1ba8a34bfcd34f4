"""Per-class precision, recall, F1 and support, and macro-F1, from a confusion matrix: the one
place these are computed. The trainer's epoch records (trainer/run_recorder.py) and `entrenar-train
eval` (trainer/inference.py) both call it, and the monitor can recompute from a file's matrix.
Torch-free, pure Python: the app imports it.

A class never predicted has precision 0 and one never seen recall 0 (and F1 0 either way), as
scikit-learn reports them with `zero_division=0`; macro averages are over all K classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

Cells = Counter[tuple[int, int]]  # (true, predicted) → count: a matrix's non-zero cells

# epochs.json keeps whole confusion matrices up to this many cells in all (about 4 MB of JSON):
# every epoch's while K is small; K = 1024 (10⁶ cells an epoch) keeps the best epoch's and the
# newest's, and older epochs' `confusion` becomes null (their per_class and macro_f1 stay). The
# file stays well under the reader's cap (trainer/monitor/safe_files.py JSON_CAP) and the
# trainer's history in memory stays bounded.
CONFUSION_CELLS_KEPT = 2 << 20


def confusion_cells(labels: Iterable[int], predictions: Iterable[int]) -> Cells:
    """The confusion matrix's non-zero cells; O(samples), whatever K."""
    return Counter(zip(labels, predictions))


def dense(cells: Cells, k: int) -> list[list[int]]:
    """matrix[true][predicted] = count, K × K."""
    matrix = [[0] * k for _ in range(k)]
    for (y, p), n in cells.items():
        matrix[y][p] = n
    return matrix


def cells_of(matrix: list[list[int]]) -> Cells:
    """A dense matrix's non-zero cells."""
    return Counter({(y, p): n for y, row in enumerate(matrix) for p, n in enumerate(row) if n})


def class_scores(cells: Cells, k: int) -> list[dict[str, Any]]:
    """One {precision, recall, f1, support} per class 0..K-1."""
    support, predicted, hits = [0] * k, [0] * k, [0] * k
    for (y, p), n in cells.items():
        support[y] += n
        predicted[p] += n
        if y == p:
            hits[y] = n
    scores = []
    for c in range(k):
        precision = hits[c] / predicted[c] if predicted[c] else 0.0
        recall = hits[c] / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append({"precision": precision, "recall": recall, "f1": f1, "support": support[c]})
    return scores


def macro(scores: list[dict[str, Any]], metric: str) -> float:
    """The unweighted mean of one metric over every class (0 where there are none)."""
    return sum(s[metric] for s in scores) / len(scores) if scores else 0.0


def epoch_class_metrics(matrix: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """An epoch record's macro_f1, per_class (in `labels` order) and confusion, from the
    validation's K × K matrix (rows = true class, columns = predicted)."""
    scores = class_scores(cells_of(matrix), len(labels))
    return {
        "macro_f1": macro(scores, "f1"),
        "per_class": [{"label": label, **s} for label, s in zip(labels, scores)],
        "confusion": matrix,
    }


def trim_confusions(
    history: list[dict[str, Any]], best_epoch: int | None, budget: int = CONFUSION_CELLS_KEPT
) -> None:
    """Null the `confusion` of the oldest epochs (never the best's first) once the records' matrices
    pass `budget` cells in all: the best epoch's is kept first, then the newest ones'."""
    order = sorted(history, key=lambda e: (e.get("epoch") != best_epoch, -(e.get("epoch") or 0)))
    kept = 0
    for record in order:
        matrix = record.get("confusion")
        if not matrix:
            continue
        cells = len(matrix) * len(matrix[0])
        if kept + cells > budget:
            record["confusion"] = None
        else:
            kept += cells
