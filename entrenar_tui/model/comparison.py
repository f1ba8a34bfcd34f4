"""What the comparison screen shows, worked out without Textual: each run's series (train loss per
step, val loss and val accuracy per epoch) and the config keys whose values differ between runs.

Colours are by position in the comparison (the order the runs were selected), so a run keeps its
colour on every chart and across redraws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrenar_tui.model.confusion import class_f1
from entrenar_tui.model.loading import load_run_model
from entrenar_tui.model.run import RunModel
from trainer.monitor.history import Series
from trainer.monitor.text import printable
from trainer.monitor.values import is_number

PALETTE_SIZE = 8  # overlay-chart--series-0 .. -7 in app.tcss
MISSING = object()  # a key one run's config does not have
IGNORED_KEYS = frozenset({"output.dir"})  # always differs: it is the run (the column header)


@dataclass
class ComparedRun:
    """One run of a comparison: its name, colour slot, and the values its charts draw."""

    dir: Path
    name: str
    colour: int
    train_loss: Series
    val_loss: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    # each class's F1 per epoch (the F1 overlay, `f`), keyed by label in the run's order
    class_f1: dict[str, list[float | None]] = field(default_factory=dict)


def _value(v: Any) -> float | None:
    return float(v) if is_number(v, finite=False) else None


def compared_run(model: RunModel, position: int) -> ComparedRun:
    """The run as the comparison draws it, from what RunModel.apply made of its files."""
    run = model.run or {}
    epochs = sorted(
        (e for e in model.epochs if isinstance(e.get("epoch"), int)), key=lambda e: e["epoch"]
    )
    return ComparedRun(
        dir=model.dir,
        name=model.name,
        colour=position % PALETTE_SIZE,
        train_loss=model.history.series["loss"],
        val_loss=[_value(e.get("val_loss")) for e in epochs],
        val_accuracy=[_value(e.get("val_accuracy")) for e in epochs],
        config=run.get("config") if isinstance(run.get("config"), dict) else {},
        class_f1={label: [class_f1(e, label) for e in epochs] for label in _labels(epochs)},
    )


def _labels(epochs: list[dict[str, Any]]) -> list[str]:
    """Every label the epochs' per_class name, in the order they first appear."""
    seen = (c.get("label") for e in epochs for c in e.get("per_class") or [] if isinstance(c, dict))
    return list(dict.fromkeys(x for x in seen if isinstance(x, str)))


def load_comparison(dirs: list[Path]) -> list[ComparedRun]:
    """Read every run whole (steps included): slow for long runs, so call it off the UI thread."""
    return [compared_run(load_run_model(d), i) for i, d in enumerate(dirs)]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"learning_rate": 1e-4}} -> {"train.learning_rate": 1e-4}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def differing_keys(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """(dotted key, each run's value or MISSING) for every key whose values are not all equal,
    sorted by key; output.dir left out (it only says where each run is)."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f} - IGNORED_KEYS)
    out = []
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        if any(v is MISSING or v != values[0] or type(v) is not type(values[0]) for v in values):
            out.append((key, values))
    return out


def show_value(value: Any) -> str:
    """A config value as TOML would spell it, short and printable; a dash when missing."""
    if value is MISSING:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return printable(value)
    try:
        return printable(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return printable(repr(value))
