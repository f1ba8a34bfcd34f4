"""What a run file says, checked before the monitor uses it.

The reader (trainer.monitor.reader) checks that a file is JSON with the right schema tag and
version; the values inside are whatever the file holds. A run directory is input like any other
(a copied directory, a half-migrated tool, a hand edit, a hostile file), so every field the monitor
reads is checked here against the type the contract gives it: a value of the wrong type is dropped
(shown as a dash, as if it were not written) and named in one problem line; text is made printable
(`trainer.monitor.text.printable`: no terminal control sequences). Fields the monitor does not use are kept
as they are (the contract allows new ones). Pure functions, no Textual: the app and `--once` share
them. The mechanism (one per TypedDict) is trainer/monitor/typed_checks.py.
"""

from __future__ import annotations

from typing import Any

from trainer.monitor.schema import Epochs, Files, LrFind, Result, RunInfo, State, Sweep
from trainer.monitor.text import printable
from trainer.monitor.typed_checks import checks_for, clean

MAX_SHOWN = 3  # wrong fields named in a problem line; the rest are counted


STATE = checks_for(State)
RUN = checks_for(RunInfo)  # `config` is round-tripped to TOML by `s` (never shown)
RESULT = checks_for(Result)
EPOCHS = checks_for(Epochs)
SWEEP = checks_for(Sweep)
LR_FIND = checks_for(LrFind)  # lr_find.json: the range test's curve (screens/lr_find.py)


def _problem(file_name: str, wrong: list[tuple[str, str]]) -> str | None:
    if not wrong:
        return None
    shown = ", ".join(
        f"{printable(where.lstrip('.'))} ({what})" for where, what in wrong[:MAX_SHOWN]
    )
    more = f" and {len(wrong) - MAX_SHOWN} more" if len(wrong) > MAX_SHOWN else ""
    return f"{file_name}: ignored values of the wrong type: {shown}{more}"


def clean_state(state: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """state.json's fields checked; the problem text (or None)."""
    cleaned, wrong = clean(state, STATE)
    return cleaned, _problem(Files.STATE, wrong)


def clean_run(run: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    cleaned, wrong = clean(run, RUN)
    return cleaned, _problem(Files.RUN, wrong)


def clean_result(result: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    cleaned, wrong = clean(result, RESULT)
    if cleaned.get("epochs"):
        wrong += _unmatched_matrices(result.get("epochs"), cleaned["epochs"])
    return cleaned, _problem(Files.RESULT, wrong)


def clean_epochs(
    epochs: Any, best_epoch: Any
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """epochs.json's records (those that are not objects dropped, fields checked) and best_epoch."""
    cleaned, wrong = clean({"epochs": epochs, "best_epoch": best_epoch}, EPOCHS)
    records = cleaned["epochs"] or []
    wrong += _unmatched_matrices(epochs, records)
    return records, cleaned["best_epoch"], _problem(Files.EPOCHS, wrong)


def _unmatched_matrices(raw: Any, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """An epoch record's confusion matrix (K × K, checked square by its type) whose K is not its
    per_class's length is dropped and named: its rows could not be told apart by label. `raw` is
    the file's list, whose objects the cleaned `records` are, in order."""
    positions = (
        [i for i, e in enumerate(raw) if isinstance(e, dict)] if isinstance(raw, list) else []
    )
    wrong = []
    for i, record in zip(positions, records):
        matrix, classes = record.get("confusion"), record.get("per_class")
        if matrix is not None and classes is not None and len(matrix) != len(classes):
            record["confusion"] = None
            wrong.append(
                (
                    f".epochs[{i}].confusion",
                    f"{len(matrix)} rows, expected {len(classes)} (per_class)",
                )
            )
    return wrong


def clean_sweep(sweep: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """sweep.json's fields checked (the browser reads `keys`, `name` and `runs`)."""
    cleaned, wrong = clean(sweep, SWEEP)
    return cleaned, _problem(Files.SWEEP, wrong)


def clean_lr_find(doc: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """lr_find.json's fields checked (a curve past MAX_LR_FIND_POINTS is dropped whole)."""
    cleaned, wrong = clean(doc, LR_FIND)
    return cleaned, _problem(Files.LR_FIND, wrong)
