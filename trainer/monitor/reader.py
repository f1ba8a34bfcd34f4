"""The reader side of the contract: what the TUI, `--once` and any script use to follow a run.

Rules (docs/contract.md): tail steps.jsonl by byte offset and consume complete lines only; a repeated
global step means a resumed run redid it, so the later line wins; a file that shrank is read again
from the start; a JSON file that is unreadable or of another version is a *problem* to show, never
an exception for the caller. No torch: this runs on login nodes.

This module polls a run directory (RunReader) and reads one whole (load_run); the pieces live in a
module each, and their names are importable from here as before: the JSON files' envelope
(contract_json.py), steps.jsonl (step_tail.py), the history in memory (history.py), the crash rule
(liveness.py), an age as text (text.format_age).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.monitor.contract_json import ContractError, parse_contract_json, read_contract_json
from trainer.monitor.history import Series, StepHistory
from trainer.monitor.liveness import (
    STALE_INITIALIZING_S,
    STALE_MIN_S,
    STALE_STEPS,
    STALE_UNKNOWN_STEP_S,
    effective_status,
    stale_after_s,
)
from trainer.monitor.schema import Files
from trainer.monitor.step_tail import StepBatch, StepTail
from trainer.monitor.text import format_age

__all__ = [  # what scripts and tests import from here (each defined in the module named above)
    "JSON_FILES",
    "STALE_INITIALIZING_S",
    "STALE_MIN_S",
    "STALE_STEPS",
    "STALE_UNKNOWN_STEP_S",
    "ContractError",
    "RunReader",
    "RunSnapshot",
    "RunUpdate",
    "Series",
    "StepBatch",
    "StepHistory",
    "StepTail",
    "best_of",
    "effective_status",
    "format_age",
    "load_run",
    "parse_contract_json",
    "read_contract_json",
    "stale_after_s",
]


@dataclass
class RunUpdate:
    """What changed in a run directory since the last poll. A JSON field is None when that file did
    not change; `problems` maps a file name to its problem text, or None when it has gone away."""

    exists: bool = True
    run: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    epochs: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    steps: StepBatch | None = None
    problems: dict[str, str | None] = field(default_factory=dict)


JSON_FILES = (Files.RUN, Files.STATE, Files.EPOCHS, Files.RESULT)


class RunReader:
    """Polls one experiment directory: stats every file and reads only what changed. Cheap enough
    to call on every file event and once a second as the fallback where events do not arrive."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.steps = StepTail(self.dir / Files.STEPS)
        self._seen: dict[str, tuple[int, int, int] | None] = {}
        self._problems: dict[str, str] = {}

    def poll(self, *, steps: bool = True) -> RunUpdate:
        """What changed; with steps=False the JSON files only (steps.jsonl left where it was)."""
        update = RunUpdate(exists=self.dir.is_dir())
        if not update.exists:
            return update
        for name in JSON_FILES:
            path = self.dir / name
            try:
                st = path.lstat()
                sig: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:
                sig = None
            if sig == self._seen.get(name, ()):
                continue
            self._seen[name] = sig
            try:
                data = read_contract_json(path)
            except ContractError as e:
                self._set_problem(update, name, str(e))
                continue
            self._set_problem(update, name, None)
            if data is not None:
                setattr(update, name.split(".")[0], data)
        if steps:
            update.steps = self.steps.read()
            self._set_problem(update, Files.STEPS, update.steps.problem)
        return update

    def _set_problem(self, update: RunUpdate, name: str, text: str | None) -> None:
        if self._problems.get(name) != text:
            update.problems[name] = text
            if text is None:
                self._problems.pop(name, None)
            else:
                self._problems[name] = text


@dataclass
class RunSnapshot:
    """Everything known about a run at one moment, read once (for scripts, `--once` and tests)."""

    dir: Path
    exists: bool
    run: dict[str, Any] | None
    state: dict[str, Any] | None
    epochs: list[dict[str, Any]]
    best_epoch: int | None
    result: dict[str, Any] | None
    history: StepHistory
    problems: dict[str, str]
    bad_lines: list[int]
    partial_bytes: int


def load_run(run_dir: str | Path) -> RunSnapshot:
    """Read a whole run directory once."""
    reader = RunReader(run_dir)
    first = reader.poll()
    history, bad, problems = StepHistory(), [], {k: v for k, v in first.problems.items() if v}
    batch = first.steps
    while batch is not None:
        history.add(batch)
        bad.extend(batch.bad_lines)
        if not batch.more:
            break
        batch = reader.steps.read()
    epochs = first.epochs or {}
    return RunSnapshot(
        dir=Path(run_dir),
        exists=first.exists,
        run=first.run,
        state=first.state,
        epochs=list(epochs.get("epochs") or []),
        best_epoch=epochs.get("best_epoch"),
        result=first.result,
        history=history,
        problems=problems,
        bad_lines=bad,
        partial_bytes=batch.partial_bytes if batch is not None else 0,  # (an empty batch is falsy)
    )


def best_of(epochs: Sequence[dict[str, Any]], best_epoch: int | None) -> dict[str, Any] | None:
    """The epoch record marked best (by best_epoch, else by is_best)."""
    for e in epochs:
        if (best_epoch is not None and e.get("epoch") == best_epoch) or (
            best_epoch is None and e.get("is_best")
        ):
            return e
    return None
