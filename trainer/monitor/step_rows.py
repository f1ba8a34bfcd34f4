"""A line of steps.jsonl as the step history holds it: its global step and the float columns the
charts draw. One place for what "a step" is, so that the reader's fast and slow paths and the
alerts agree on it."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from trainer.monitor.values import is_number

STEP_FIELDS = ("loss", "lr", "accuracy", "t")  # t: wall time, for the charts' time axis
INT64 = (-(2**63), 2**63 - 1)
NAN = float("nan")


def finite(value: Any) -> float:
    """A step value as a float: JSON null (the writer's NaN/Inf) and non-numbers become NaN."""
    return float(value) if is_number(value, finite=False) else NAN


def step_row(record: Any) -> tuple[int, list[float]] | None:
    """(global_step, the STEP_FIELDS values) of a parsed steps.jsonl line, or None when the line
    is not a step (not a JSON object, or no global_step that is an int64)."""
    step = record.get("global_step") if type(record) is dict else None
    if type(step) is not int or not INT64[0] <= step <= INT64[1]:
        return None
    return step, [finite(record.get(name)) for name in STEP_FIELDS]


def as_columns(rows: list[tuple[int, list[float]]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """step_rows as columns: int64 global steps and a float64 array per STEP_FIELDS name."""
    steps = np.array([step for step, _ in rows], np.int64)
    table = np.array([values for _, values in rows], np.float64).reshape(-1, len(STEP_FIELDS))
    return steps, {name: table[:, j].copy() for j, name in enumerate(STEP_FIELDS)}


def loads(line: bytes) -> Any:
    """A line's JSON value, or None when it is not JSON."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
