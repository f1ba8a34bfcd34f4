"""Alerts that know the run trains a classifier, from each epoch's validation in epochs.json
(`per_class`, `confusion`, `val_accuracy`): the model predicts one class only, does no better than
always answering the majority class, or never predicts a class. Loss and accuracy alone hide a
model that learned only the class prior: a 300-row CSV ended at chance with no word (issue 28).

Each rule holds over a streak of epochs; a streak is one event, keyed by its first epoch (a model
stuck on one class for ten epochs is told once), and a new streak after a good epoch is another.
The records come checked (model/validation.py: ints ≥ 0, K ≤ 1024, labels printable); the shape
of the matrix is checked here (a record whose `confusion` is not K×K has none)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from entrenar_tui import formatting as fmt
from entrenar_tui.model.alert import Alert
from trainer.monitor.text import printable
from trainer.monitor.values import is_int, is_number

NAMED_MAX = 3  # classes a never_predicted message names; the rest are counted
LABEL_WIDTH = 32  # a label longer than this is cut in the middle in a message


@dataclass(frozen=True)
class EpochClasses:
    """What the rules read of one epoch record: its number, each class's name (printable, cut),
    true count (`support`) and predicted count (the confusion's column sums; None without a
    K×K matrix), and the validation accuracy (None when not a number)."""

    epoch: int
    labels: tuple[str, ...]
    support: np.ndarray | None
    predicted: np.ndarray | None
    accuracy: float | None

    @property
    def classes_present(self) -> int:
        return 0 if self.support is None else int(np.count_nonzero(self.support))


def read_epoch(record: Mapping[str, Any], position: int) -> EpochClasses | None:
    """The record's classes, or None when it says nothing about them (no per_class and no usable
    confusion). `position` (1-based) stands in for an `epoch` that is not a whole number."""
    epoch = record.get("epoch") if is_int(record.get("epoch")) else position
    per_class = record.get("per_class")
    per_class = per_class if isinstance(per_class, list) else []
    matrix = _square(record.get("confusion"))
    k = len(matrix) if matrix is not None else len(per_class)
    if k == 0:
        return None
    support = _supports(per_class, k)
    if support is None and matrix is not None:
        support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0) if matrix is not None else None
    accuracy = record.get("val_accuracy")
    return EpochClasses(
        epoch,
        _labels(per_class, k),
        support,
        predicted,
        float(accuracy) if is_number(accuracy) else None,
    )


def _square(confusion: Any) -> np.ndarray | None:
    """The confusion matrix as a K×K int64 array, or None unless it is K lists of K whole
    numbers ≥ 0."""
    if not isinstance(confusion, list) or not confusion:
        return None
    k = len(confusion)
    if not all(isinstance(row, list) and len(row) == k for row in confusion):
        return None
    if not all(is_int(v) and v >= 0 for row in confusion for v in row):
        return None
    try:
        return np.array(confusion, dtype=np.int64)
    except OverflowError:  # a count past int64: not a matrix any validation set makes
        return None


def _supports(per_class: list[Any], k: int) -> np.ndarray | None:
    """per_class's supports when each of its K entries has a whole support ≥ 0, else None."""
    if len(per_class) != k:
        return None
    values = [c.get("support") if isinstance(c, dict) else None for c in per_class]
    if not all(is_int(v) and 0 <= v < 2**63 for v in values):
        return None
    return np.array(values, dtype=np.int64)


def _labels(per_class: list[Any], k: int) -> tuple[str, ...]:
    """Each class's name as a message shows it: per_class's `label` (printable, cut to
    LABEL_WIDTH), else `class I` (0-based, the order of run.json's data.labels)."""
    names = []
    for i in range(k):
        entry = per_class[i] if i < len(per_class) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        names.append(
            fmt.truncate(printable(label), LABEL_WIDTH) if isinstance(label, str) else f"class {i}"
        )
    return tuple(names)


def _streak_starts(
    epochs: Sequence[EpochClasses], finding: Callable[[EpochClasses], str | None]
) -> list[tuple[EpochClasses, str]]:
    """(epoch, message) at the first epoch of each streak of epochs that have a finding; an epoch
    the rule cannot judge (finding None) ends a streak."""
    starts, inside = [], False
    for e in epochs:
        message = finding(e)
        if message is not None and not inside:
            starts.append((e, message))
        inside = message is not None
    return starts


def _single_class(e: EpochClasses) -> str | None:
    """Every validation sample predicted as one class, though two or more were there."""
    if e.predicted is None or len(e.predicted) < 2 or e.classes_present < 2:
        return None
    used = np.flatnonzero(e.predicted)
    if len(used) != 1:
        return None
    total = int(e.predicted.sum())
    return (
        f"epoch {e.epoch}: the model predicted one class only, {e.labels[int(used[0])]!r}, "
        f"for all {fmt.count(total)} validation samples"
    )


def _below_baseline(e: EpochClasses) -> str | None:
    """Validation accuracy no better than always answering the majority class (its support over
    all the supports); a half-sample margin, so that the same count of right answers is equal
    whatever the float rounding."""
    if e.support is None or e.accuracy is None or e.classes_present < 2:
        return None
    total = int(e.support.sum())
    majority = int(np.argmax(e.support))
    baseline = int(e.support[majority]) / total
    if e.accuracy > baseline + 0.5 / total:
        return None
    return (
        f"epoch {e.epoch}: validation accuracy {fmt.percent(e.accuracy)} is no better than always "
        f"predicting the majority class {e.labels[majority]!r} ({fmt.percent(baseline)})"
    )


def _never_predicted(e: EpochClasses) -> str | None:
    """Classes present in validation that the model never predicted (their confusion column is
    all 0); a model that predicts one class only is single_class's, not this rule's."""
    if e.predicted is None or e.support is None or len(e.predicted) < 2:
        return None
    missing = np.flatnonzero((e.predicted == 0) & (e.support > 0)).tolist()
    if not missing or np.count_nonzero(e.predicted) <= 1:
        return None
    named = ", ".join(repr(e.labels[i]) for i in missing[:NAMED_MAX])
    more = f" and {len(missing) - NAMED_MAX} more" if len(missing) > NAMED_MAX else ""
    return (
        f"epoch {e.epoch}: the model never predicted {named}{more} "
        f"({len(missing)} of {len(e.predicted)} classes) on validation"
    )


class ClassAlerts:
    """The three rules over a run's epochs. Each record is read once (a 1024×1024 matrix is
    ~50 ms): the reading is kept while the epochs list holds the very same record object."""

    def __init__(self) -> None:
        self._read: list[tuple[Mapping[str, Any], EpochClasses | None]] = []

    def epochs(self, records: Sequence[Mapping[str, Any]]) -> list[EpochClasses]:
        read = []
        for i, record in enumerate(records):
            cached = self._read[i] if i < len(self._read) else None
            if cached is None or cached[0] is not record:
                cached = (record, read_epoch(record, i + 1))
            read.append(cached)
        self._read = read
        return [e for _, e in read if e is not None]

    def detect(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        after: int,
        single_class: bool = True,
        below_baseline: bool = True,
        never_predicted: bool = True,
    ) -> list[Alert]:
        """single_class from the first epoch on; below_baseline and never_predicted from the
        epoch numbered `after` on (an epoch or two to learn is fair). Oldest first."""
        epochs = self.epochs(records)
        late = [e for e in epochs if e.epoch >= after]
        rules = (
            ("single_class", single_class, epochs, _single_class),
            ("below_baseline", below_baseline, late, _below_baseline),
            ("never_predicted", never_predicted, late, _never_predicted),
        )
        found = []  # (epoch, rule's place, alert): in the order they happened
        for place, (kind, on, chosen, rule) in enumerate(rules):
            if on:
                found += [
                    (e.epoch, place, Alert(f"{kind}@epoch:{e.epoch}", kind, message))
                    for e, message in _streak_starts(chosen, rule)
                ]
        return [alert for *_, alert in sorted(found, key=lambda f: f[:2])]
