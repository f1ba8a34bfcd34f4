"""The fault switch: ENTRENAR_FAULT_NAN_STEPS=5,6 makes those optimizer steps' loss NaN (the
batch's loss times NaN before backward, so the gradients are NaN too), for tests and for users
who want to see recovery work (docs/reliability.md). It never triggers unless set. Torch-free:
the CLI checks it before any rank starts."""

from __future__ import annotations

import os
from typing import Any

from trainer.errors import UserError

FAULT_ENV = "ENTRENAR_FAULT_NAN_STEPS"  # optimizer steps (global, 1-based) whose loss is made NaN


def fault_steps(environ: Any = os.environ) -> frozenset[int]:
    """The optimizer steps ENTRENAR_FAULT_NAN_STEPS poisons (none unless it is set)."""
    text = environ.get(FAULT_ENV, "").strip()
    if not text:
        return frozenset()
    try:
        steps = frozenset(int(part) for part in text.split(","))
    except ValueError:
        steps = frozenset({0})
    if min(steps) < 1:
        raise UserError(
            f"{FAULT_ENV}={text[:80]!r}: expected optimizer step numbers >= 1 separated by commas, e.g. 5,6"
        )
    return steps
