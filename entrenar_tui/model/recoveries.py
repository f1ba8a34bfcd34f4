"""run.json `recoveries` (where a run healed: a non-finite loss or a loss spike rolled back,
the batches skipped, the learning rate lowered), checked as untrusted input before the monitor
draws, lists or tells them.

A run directory can hold anything: the list is bounded (the first MAX_KEPT entries are kept: a
trainer stops after a few recoveries, so more is a broken or hostile file), an entry without a
whole number ≥ 0 (< 2⁶³) for `step` and `rolled_back_to` or without a text `reason` is dropped, and each
drop is named on one problem line; text is made printable. Kept apart from model/validation.py's
typed checks (trainer/monitor/schema.py is the trainer's), which only know a field's type, not
an entry's. Pure functions, no Textual: the run screen, `--once` and export share them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from entrenar_tui.formatting import plural
from trainer.monitor.schema import Files
from trainer.monitor.text import printable
from trainer.monitor.typed_checks import MAX_INT
from trainer.monitor.values import is_int, is_number

MARK = "↺"  # a recovery, on the charts' x axis and after a status in the runs browser
MAX_KEPT = 1000  # recoveries entries kept; the rest counted, never looked at
MAX_SKIPPED = 1000  # batches / samples named per entry
MAX_REASON = 200  # characters of a reason kept
MAX_NAMED = 3  # dropped entries named in the problem line; the rest counted
MAX_STEPS_SHOWN = 5  # steps listed on the problems line


def _count(value: Any) -> bool:
    """A whole number ≥ 0 that a step column holds (a step, an epoch, a sample index)."""
    return is_int(value) and 0 <= value <= MAX_INT


def _entry(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    """One entry cleaned, or None and why it was dropped; optional fields of the wrong kind
    become None / [] (the entry still says where the run healed)."""
    if not isinstance(raw, dict):
        return None, "not an object"
    if not _count(raw.get("step")):
        return None, "step not a whole number ≥ 0"
    if not _count(raw.get("rolled_back_to")):
        return None, "rolled_back_to not a whole number ≥ 0"
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        return None, "reason not text"
    batches = raw.get("batches_skipped")
    samples = raw.get("samples_skipped")
    scale = raw.get("lr_scale")
    at = raw.get("at")
    return {
        "step": raw["step"],
        "reason": printable(reason[:MAX_REASON]),
        "rolled_back_to": raw["rolled_back_to"],
        "batches_skipped": [
            list(b)
            for b in (batches if isinstance(batches, list) else [])[:MAX_SKIPPED]
            if isinstance(b, list) and len(b) == 2 and all(_count(x) for x in b)
        ],
        "samples_skipped": [
            s for s in (samples if isinstance(samples, list) else [])[:MAX_SKIPPED] if _count(s)
        ],
        "lr_scale": float(scale) if is_number(scale) and scale > 0 else None,
        "at": printable(at[:64]) if isinstance(at, str) else None,
    }, None


def clean_recoveries(value: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The entries of run.json `recoveries` worth showing (absent or null: none) and the problem
    line naming what was dropped (None when nothing was)."""
    if value is None:
        return [], None
    if not isinstance(value, list):
        return [], f"{Files.RUN}: ignored recoveries (not a list)"
    kept: list[dict[str, Any]] = []
    dropped: list[str] = []
    for i, raw in enumerate(value[:MAX_KEPT]):
        entry, why = _entry(raw)
        if entry is None:
            dropped.append(f"[{i}] ({why})")
        else:
            kept.append(entry)
    parts = []
    if dropped:
        more = f" and {len(dropped) - MAX_NAMED} more" if len(dropped) > MAX_NAMED else ""
        parts.append(f"ignored recoveries {', '.join(dropped[:MAX_NAMED])}{more}")
    if len(value) > MAX_KEPT:
        parts.append(f"read the first {MAX_KEPT:,} of {len(value):,} recoveries")
    return kept, f"{Files.RUN}: {'; '.join(parts)}" if parts else None


def steps_text(recoveries: Sequence[dict[str, Any]]) -> str:
    """`step 5`, `steps 5, 6`, `steps 5, 6, 9, 12, 15 … 90`: the steps where faults were seen."""
    steps = [str(r["step"]) for r in recoveries]
    listed = ", ".join(steps)
    if len(steps) > MAX_STEPS_SHOWN:
        listed = f"{', '.join(steps[: MAX_STEPS_SHOWN - 1])} … {steps[-1]}"
    return ("step " if len(steps) == 1 else "steps ") + listed


def reasons_text(recoveries: Sequence[dict[str, Any]]) -> str:
    """The distinct reasons, first seen first: `non-finite loss, loss spike`."""
    return ", ".join(dict.fromkeys(r["reason"] for r in recoveries))


def problem_text(recoveries: Sequence[dict[str, Any]]) -> str | None:
    """The problems line's entry: `recovered 2× (steps 5, 6): non-finite loss`; None when none."""
    if not recoveries:
        return None
    return f"recovered {len(recoveries)}× ({steps_text(recoveries)}): {reasons_text(recoveries)}"


def describe(recovery: dict[str, Any]) -> str:
    """One recovery as an alert tells it: `recovered from non-finite loss at step 5: rolled back
    to step 4, skipped 1 batch, learning rate ×0.5`."""
    skipped = len(recovery["batches_skipped"])
    parts = [f"rolled back to step {recovery['rolled_back_to']}"]
    if skipped:
        parts.append(f"skipped {skipped} batch{'es' if skipped != 1 else ''}")
    scale = recovery["lr_scale"]
    if scale is not None and math.isfinite(scale):
        parts.append(f"learning rate ×{scale:.3g}")
    return f"recovered from {recovery['reason']} at step {recovery['step']}: {', '.join(parts)}"


def once_text(recoveries: Sequence[dict[str, Any]]) -> str | None:
    """`--once`'s line: `recovered 2 times (steps 5, 6), last: non-finite loss at step 6`."""
    if not recoveries:
        return None
    n, last = len(recoveries), recoveries[-1]
    return (
        f"recovered {plural(n, 'time')} ({steps_text(recoveries)}), last: {last['reason']} at step "
        f"{last['step']}, rolled back to step {last['rolled_back_to']}"
    )
