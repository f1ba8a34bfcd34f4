"""Values checked against the TypedDict that describes them: one mechanism for every JSON file
that is read as untrusted input. The monitor checks the run's files with it
(entrenar_tui/model/validation.py: a wrong value is dropped and named), the trainer a checkpoint's
(trainer/checkpoint_schema.py: a wrong value is refused in one line).

A check takes a value and returns (the value to use or None, [(where inside it, what is wrong)]).
null is always allowed for a field a record does not require (the writer's "not known", and its
NaN/Inf); a record declared total (every field required, the TypedDict default) also names a field
that is missing or null, unless its type allows None. Fields a record does not declare are kept
as they are (the contract allows new ones). No torch, no Textual.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints, is_typeddict

from trainer.monitor.text import printable
from trainer.monitor.values import is_int, is_number

Check = Callable[[Any], tuple[Any, list[tuple[str, str]]]]

MAX_INT = 2**63 - 1  # what a step counter or pid can be (history columns are int64)


@dataclass(frozen=True)
class AtLeast:
    """A bound a record puts on a number: `Annotated[int, AtLeast(0)]`."""

    low: float


@dataclass(frozen=True)
class Within:
    """A closed range a number must lie in, finite: `Annotated[float, Within(0, 1)]` (a share; NaN,
    which JSON from elsewhere may hold, is outside every range)."""

    low: float
    high: float


@dataclass(frozen=True)
class MaxItems:
    """A bound a record puts on a list's (or an object's) length: `Annotated[list[int],
    MaxItems(1000)]`; a longer one is wrong (not read at all: an untrusted file cannot make the
    monitor hold more)."""

    n: int


@dataclass(frozen=True)
class SquareCounts:
    """A record's count matrix: a list of K lists of K integers >= 0, K at most n
    (`Annotated[list[list[int]], SquareCounts(1024)]`). Checked whole, at C speed (the check of
    one value at a time took seconds for 1024 × 1024); a ragged one, or one holding a wrong value,
    is dropped whole, since dropping a cell would shift the rest of its row."""

    n: int


def short(value: Any) -> str:
    """A value as an error names it: printable, at most 24 characters."""
    text = printable(repr(value))
    return text if len(text) <= 24 else text[:23] + "…"


def scalar(ok: Callable[[Any], bool], expected: str) -> Check:
    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if ok(value):
            return (printable(value) if isinstance(value, str) else value), []
        return None, [("", f"{short(value)}, expected {expected}")]

    return check


INT = scalar(lambda v: is_int(v) and -MAX_INT <= v <= MAX_INT, "an integer")
NUMBER = scalar(lambda v: is_number(v, finite=False), "a number")
TEXT = scalar(lambda v: isinstance(v, str), "a string")
BOOL = scalar(lambda v: isinstance(v, bool), "true/false")
ANY_DICT = scalar(lambda v: isinstance(v, dict), "an object")


def list_of(item: Check) -> Check:
    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if not isinstance(value, list):
            return None, [("", f"{short(value)}, expected a list")]
        cleaned, wrong = [], []
        for i, v in enumerate(value):
            c, bad = item(v)
            if bad:
                wrong.extend((f"[{i}]{where}", what) for where, what in bad)
            if c is not None:
                cleaned.append(c)
        return cleaned, wrong

    return check


def mapping_of(item: Check) -> Check:
    """An object whose keys are names (made printable) and whose values are each `item`: a wrong
    value is dropped and named; a key that printable() changes is kept as it prints."""

    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if not isinstance(value, dict):
            return None, [("", f"{short(value)}, expected an object")]
        cleaned, wrong = {}, []
        for key, v in value.items():
            shown = printable(key)
            c, bad = item(v)
            named = shown if len(shown) <= 24 else shown[:23] + "…"
            wrong.extend((f"[{named}]{where}", what) for where, what in bad)
            if c is not None:
                cleaned[shown] = c
        return cleaned, wrong

    return check


def object_of(fields: dict[str, Check], required: frozenset[str] = frozenset()) -> Check:
    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if not isinstance(value, dict):
            return None, [("", f"{short(value)}, expected an object")]
        return clean(value, fields, required)

    return check


def clean(
    data: dict[str, Any], fields: dict[str, Check], required: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """data with every known field checked; a `required` one that is missing or null is wrong."""
    out = dict(data)
    wrong: list[tuple[str, str]] = []
    for name, check in fields.items():
        value = data.get(name)
        if value is None:
            if name in required:
                wrong.append((f".{name}", "missing" if name not in data else "null"))
            continue
        out[name], bad = check(value)
        wrong.extend((f".{name}{where}", what) for where, what in bad)
    return out, wrong


def checks_for(record: type) -> dict[str, Check]:
    """A check for every field of a TypedDict, from the type it gives it: int, float (any
    number), str, bool, an object, a list of any of these, a nested record, or one of these or
    None. The one source of the field names and types is the TypedDict."""
    hints = get_type_hints(record, include_extras=True)
    return {name: _check_for(t) for name, t in hints.items()}


def required_fields(record: type) -> frozenset[str]:
    """The fields of a total TypedDict that must be there and not null (None not in their type)."""
    hints = get_type_hints(record)
    return frozenset(n for n in record.__required_keys__ if type(None) not in get_args(hints[n]))


def _anything(value: Any) -> tuple[Any, list[tuple[str, str]]]:
    """A value the record leaves open (a grid value: number, string, list...): kept as it is;
    whoever shows it makes it printable."""
    return value, []


def _check_for(t: Any) -> Check:
    if t is Any:
        return _anything
    if get_origin(t) is Annotated:
        square = [b for b in t.__metadata__ if isinstance(b, SquareCounts)]
        if square:
            return square_counts(square[0].n)
        return _bounded(_check_for(t.__origin__), t.__metadata__)
    if is_typeddict(t):
        return object_of(checks_for(t), required_fields(t))
    origin = get_origin(t)
    if origin in (Union, types.UnionType):  # `X | None`: null is allowed anyway
        (inner,) = [a for a in get_args(t) if a is not type(None)]
        return _check_for(inner)
    if origin is list:
        return list_of(_check_for(get_args(t)[0]))
    if origin is dict:
        item = get_args(t)[1] if get_args(t) else Any
        return ANY_DICT if item is Any else mapping_of(_check_for(item))
    return {int: INT, float: NUMBER, str: TEXT, bool: BOOL}[t]


def _bounded(inner: Check, bounds: tuple[Any, ...]) -> Check:
    """`inner`, then the record's bounds (AtLeast, MaxItems) on what it accepted."""

    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        for b in bounds:
            if isinstance(b, MaxItems) and isinstance(value, (list, dict)) and len(value) > b.n:
                return None, [("", f"{len(value)} items, expected at most {b.n}")]
        cleaned, wrong = inner(value)
        for b in bounds:
            if isinstance(b, AtLeast) and is_number(cleaned) and cleaned < b.low:
                return None, [("", f"{short(value)}, expected >= {b.low:g}")]
            if (
                isinstance(b, Within)
                and cleaned is not None
                and not (is_number(cleaned) and b.low <= cleaned <= b.high)
            ):
                return None, [("", f"{short(value)}, expected {b.low:g} to {b.high:g}")]
        return cleaned, wrong

    return check


def square_counts(n: int) -> Check:
    """The check of a SquareCounts(n) matrix: the first wrong thing found is named."""

    def wrong_row(i: int, row: Any, k: int) -> tuple[str, str] | None:
        if type(row) is not list:
            return f"[{i}]", f"{short(row)}, expected a list"
        if len(row) != k:
            return f"[{i}]", f"{len(row)} items, expected {k} (a square matrix)"
        if not set(map(type, row)) <= {int}:  # bool is not int here: type, not isinstance
            j = next(j for j, v in enumerate(row) if type(v) is not int)
            return f"[{i}][{j}]", f"{short(row[j])}, expected an integer"
        if row and (min(row) < 0 or max(row) > MAX_INT):
            j = next(j for j, v in enumerate(row) if not 0 <= v <= MAX_INT)
            return f"[{i}][{j}]", f"{short(row[j])}, expected a count >= 0"
        return None

    def check(value: Any) -> tuple[Any, list[tuple[str, str]]]:
        if not isinstance(value, list):
            return None, [("", f"{short(value)}, expected a list")]
        if len(value) > n:
            return None, [("", f"{len(value)} items, expected at most {n}")]
        for i, row in enumerate(value):
            if (bad := wrong_row(i, row, len(value))) is not None:
                return None, [bad]
        return value, []

    return check
