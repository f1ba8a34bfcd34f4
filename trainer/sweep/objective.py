"""A run's objective, read from its epochs.json: each epoch's value of the sweep's metric
(val_loss, val_accuracy, macro_f1: read by name), and the best of them. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files
from trainer.monitor.values import is_number


def epoch_values(run_dir: Path, metric: str) -> dict[int, float]:
    """{epoch: value} of every epoch epochs.json holds with a finite value of `metric` ({} when
    it is missing, damaged or has none)."""
    try:
        doc = read_contract_json(run_dir / Files.EPOCHS) or {}
    except ContractError:
        return {}
    epochs = doc.get("epochs") if isinstance(doc.get("epochs"), list) else []
    found: dict[int, float] = {}
    for record in epochs:
        if not isinstance(record, dict):
            continue
        epoch, value = record.get("epoch"), record.get(metric)
        if isinstance(epoch, int) and not isinstance(epoch, bool) and is_number(value):
            found[epoch] = float(value)
    return found


def best_value(values: dict[int, Any], direction: str) -> float | None:
    """The best of a run's epoch values (lowest when minimizing), None when there are none."""
    if not values:
        return None
    return (min if direction == "minimize" else max)(values.values())
