"""What a run file says, checked before the monitor uses it.

The reader (trainer.monitor.reader) checks that a file is JSON with the right schema tag and
version; the values inside are whatever the file holds. A run directory is input like any other
(a copied directory, a half-migrated tool, a hand edit, a hostile file), so every field the monitor
reads is checked here against the type the contract gives it: a value of the wrong type is dropped
(shown as a dash, as if it were not written) and named in one problem line; text is made printable
(`trainer.monitor.text.printable`: no terminal control sequences). Fields the monitor does not use are kept
as they are (the contract allows new ones). Pure functions, no Textual: the app and `--once` share
them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args, get_origin, get_type_hints, is_typeddict

from trainer.monitor.schema import Epochs, Files, Result, RunInfo, State, Sweep
from trainer.monitor.text import printable
from trainer.monitor.values import is_int, is_number

# value -> (the value to use or None, [(where inside it, what is wrong)])
Check = Callable[[Any], tuple[Any, list[tuple[str, str]]]]

MAX_SHOWN = 3  # wrong fields named in a problem line; the rest are counted
MAX_INT = 2**63 - 1  # what a step counter or pid can be (history columns are int64)


def _short(value: Any) -> str:
    text = printable(repr(value))
    return text if len(text) <= 24 else text[:23] + "…"


def _scalar(ok: Callable[[Any], bool], expected: str) -> Check:
    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if ok(value):
            return (printable(value) if isinstance(value, str) else value), []
        return None, [("", f"{_short(value)}, expected {expected}")]

    return check


_int = _scalar(
    lambda v: is_int(v) and -MAX_INT <= v <= MAX_INT,
    "an integer",
)
_number = _scalar(lambda v: is_number(v, finite=False), "a number")
_text = _scalar(lambda v: isinstance(v, str), "a string")
_bool = _scalar(lambda v: isinstance(v, bool), "true/false")
_any_dict = _scalar(lambda v: isinstance(v, dict), "an object")


def _list_of(item: Check) -> Check:
    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if not isinstance(value, list):
            return None, [("", f"{_short(value)}, expected a list")]
        cleaned, wrong = [], []
        for i, v in enumerate(value):
            c, bad = item(v)
            if bad:
                wrong.extend((f"[{i}]{where}", what) for where, what in bad)
            if c is not None:
                cleaned.append(c)
        return cleaned, wrong

    return check


def _object(fields: dict[str, Check]) -> Check:
    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if not isinstance(value, dict):
            return None, [("", f"{_short(value)}, expected an object")]
        return _clean(value, fields)

    return check


def _clean(
    data: dict[str, Any], fields: dict[str, Check]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """data with every known field checked. null is always allowed (the writer's "not known",
    and its NaN/Inf); unknown fields are kept as they are."""
    out = dict(data)
    wrong: list[tuple[str, str]] = []
    for name, check in fields.items():
        value = data.get(name)
        if value is None:
            continue
        out[name], bad = check(value)
        wrong.extend((f".{name}{where}", what) for where, what in bad)
    return out, wrong


def checks_for(record: type) -> dict[str, Check]:
    """A check for every field of a contract TypedDict (trainer/monitor/schema.py), from the type
    the contract gives it: int, float (any number), str, bool, an object, a list of any of these,
    or a nested record. The one source of the field names and types is the schema."""
    return {name: _check_for(t) for name, t in get_type_hints(record).items()}


def _anything(value: Any) -> tuple[Any, list[tuple[str, str]]]:
    """A value the contract leaves open (a grid value: number, string, list...): kept as it is;
    whoever shows it makes it printable."""
    return value, []


def _check_for(t: Any) -> Check:
    if t is Any:
        return _anything
    if is_typeddict(t):
        return _object(checks_for(t))
    origin = get_origin(t)
    if origin is list:
        return _list_of(_check_for(get_args(t)[0]))
    if origin is dict:
        return _any_dict
    return {int: _int, float: _number, str: _text, bool: _bool}[t]


STATE = checks_for(State)
RUN = checks_for(RunInfo)  # `config` is round-tripped to TOML by `s` (never shown)
RESULT = checks_for(Result)
EPOCHS = checks_for(Epochs)
SWEEP = checks_for(Sweep)


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
    cleaned, wrong = _clean(state, STATE)
    return cleaned, _problem(Files.STATE, wrong)


def clean_run(run: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    cleaned, wrong = _clean(run, RUN)
    return cleaned, _problem(Files.RUN, wrong)


def clean_result(result: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    cleaned, wrong = _clean(result, RESULT)
    return cleaned, _problem(Files.RESULT, wrong)


def clean_epochs(
    epochs: Any, best_epoch: Any
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """epochs.json's records (those that are not objects dropped, fields checked) and best_epoch."""
    cleaned, wrong = _clean({"epochs": epochs, "best_epoch": best_epoch}, EPOCHS)
    return cleaned["epochs"] or [], cleaned["best_epoch"], _problem(Files.EPOCHS, wrong)


def clean_sweep(sweep: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """sweep.json's fields checked (the browser reads `keys`, `name` and `runs`)."""
    cleaned, wrong = _clean(sweep, SWEEP)
    return cleaned, _problem(Files.SWEEP, wrong)
