"""Which run of a sweep is its best: one rule for sweep.json's `best_run` (trainer/sweep/record.py)
and the runs browser's mark, so a script reading sweep.json and a person reading the table agree.
Torch-free."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trainer.monitor.values import is_number


def best_index(runs: Iterable[tuple[Any, Any, Any]]) -> Any | None:
    """The index of the completed run with the lowest best validation loss (the first of equals by
    index), from (index, status, best_val_loss) triples; None when no completed run has a finite
    one. A run still training is never the best yet: its numbers may still change."""
    scored = [
        (loss, index)
        for index, status, loss in runs
        if status == "completed" and is_number(loss) and is_number(index)
    ]
    return min(scored)[1] if scored else None
