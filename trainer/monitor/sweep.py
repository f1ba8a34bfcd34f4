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


# A sweep's objective, as sweep.json names it ({metric, direction}; before searches had one, the
# best validation loss, minimized: the rule of `best_run` above). The run entry's field that holds
# each metric's best when the entry has no `value` of its own.
DEFAULT_OBJECTIVE = ("val_loss", "minimize")
ENTRY_FIELDS = {"val_loss": "best_val_loss", "val_accuracy": "best_val_accuracy"}
DIRECTIONS = {"minimize": "minimize", "min": "minimize", "maximize": "maximize", "max": "maximize"}


def objective_of(sweep: dict[str, Any]) -> tuple[str, str]:
    """(metric, direction: minimize|maximize) of a sweep.json: its `objective` when that is
    well formed, else the best validation loss, minimized."""
    named = sweep.get("objective")
    if isinstance(named, dict):
        metric, direction = named.get("metric"), DIRECTIONS.get(str(named.get("direction")))
        if isinstance(metric, str) and metric and direction:
            return metric, direction
    return DEFAULT_OBJECTIVE


def objective_value(entry: dict[str, Any], metric: str) -> float | None:
    """A run entry's objective: its `value` (a search's), else the best of the metric the entry
    records (best_val_loss, best_val_accuracy); None unless a finite number."""
    value = entry.get("value")
    if not is_number(value):
        value = entry.get(ENTRY_FIELDS.get(metric, ""))
    return float(value) if is_number(value) else None
