"""Compact columns for the step history, and the vectorized reading of steps.jsonl that fills them.

A million steps must open in well under a second on a login node. One `orjson.loads` per line (or
one per chunk of lines) builds a dict and a Python number for every value of every step, which is
about a second and a half for a million lines; so for a chunk whose lines all have the same keys, byte for byte and in
the same order (what `MonitorWriter.append_step` writes), the values we need are cut out of the
bytes by position with numpy and parsed by one orjson call per column. Anything else (another
layout line to line, a value that is not a number, a line that is not JSON) returns None and the
caller reads that chunk line by line. numpy is a project dependency and imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson

# ---------------------------------------------------------------------------------------- Column


class Column:
    """A growable 1-D numpy array: 8 bytes a value where a list costs 32 or more. Items come out as
    Python numbers (`col[-1]`, `list(col)`), so callers never meet numpy scalars; `.array` is the
    live view for vectorized work (do not keep it across a change)."""

    def __init__(self, dtype: Any) -> None:
        self._data = np.empty(0, dtype)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> Any:
        return self.array[i].item()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.array.tolist())

    @property
    def array(self) -> np.ndarray:
        return self._data[: self._n]

    def _reserve(self, n: int) -> None:
        if n > len(self._data):  # grow by a quarter: amortized O(1), at most 1.25x the bytes
            grown = np.empty(max(n, len(self._data) * 5 // 4, 1024), self._data.dtype)
            grown[: self._n] = self.array
            self._data = grown

    def extend(self, values: np.ndarray | Iterable[Any], *, take: bool = False) -> None:
        """Append values. take=True: an empty column becomes `values` itself when that is a
        writable 1-D array of its dtype (handed over, not copied: a million steps read whole are
        not held twice)."""
        if (
            take
            and not self._n
            and isinstance(values, np.ndarray)
            and values.dtype == self._data.dtype
            and values.ndim == 1
            and values.flags.writeable
        ):
            self._data, self._n = values, len(values)
            return
        values = np.asarray(values if isinstance(values, np.ndarray) else list(values))
        self._reserve(self._n + len(values))
        self._data[self._n : self._n + len(values)] = values
        self._n += len(values)

    def insert(self, positions: np.ndarray, values: np.ndarray) -> None:
        """np.insert semantics: positions index the column as it was; values go in before them."""
        merged = np.insert(self.array, positions, values)
        self._data, self._n = merged, len(merged)

    def clear(self) -> None:
        self._data, self._n = np.empty(0, self._data.dtype), 0


# ---------------------------------------------------------------------------------------- summaries


def block_summaries(values: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block of `block` values (the last may be short): min and max of the finite values
    (+inf/-inf when there are none) and how many are not finite."""
    finite = np.isfinite(values)
    blocks = -(-len(values) // block)
    pad = blocks * block - len(values)
    lows = np.pad(np.where(finite, values, np.inf), (0, pad), constant_values=np.inf)
    highs = np.pad(np.where(finite, values, -np.inf), (0, pad), constant_values=-np.inf)
    bad = np.pad(~finite, (0, pad)).reshape(blocks, block).sum(axis=1)
    return lows.reshape(blocks, block).min(axis=1), highs.reshape(blocks, block).max(axis=1), bad


# ---------------------------------------------------------------------------------------- parsing

COLON, COMMA, OPEN, CLOSE, NEWLINE, SPACE = b":,{}\n "
PAD = b" " * 64  # so that every window cut out of the buffer stays inside it
MAX_VALUE_BYTES = 40  # a wider value (a number no writer writes) takes the line-by-line path
FIRST_BYTES = np.zeros(256, bool)  # how a JSON number or null begins ...
FIRST_BYTES[list(b"-0123456789n")] = True
LAST_BYTES = np.zeros(256, bool)  # ... and ends (so NaN, Infinity, true, strings and lists do not)
LAST_BYTES[list(b"0123456789l")] = True


def parse_uniform(
    chunk: bytes, names: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(global_step as int64, {name: float64 values}) for the lines of `chunk` (complete lines), or
    None unless the chunk is uniform: every line a flat JSON object whose bytes outside the values
    are the first line's (same keys, same order, same spacing), every value a number or null (a
    leading space allowed), global_step an int64. A name the lines lack reads as NaN.

    The values we do not read are checked by their first and last bytes only (`1.2.3` would pass
    where a JSON parser stops): no writer writes that, and checking them fully costs as much again.
    The values we read are checked so too before numpy sees them (it would take "0.5" or true for
    a number, where the line-by-line reader has no number).
    """
    keys = _first_keys(chunk)
    if not keys or "global_step" not in keys:
        return None
    buf = np.frombuffer(chunk + PAD, np.uint8)
    marks = _marks(buf, len(chunk), len(keys))
    if marks is None or not _same_keys(buf, marks):
        return None
    read = {name: keys.index(name) for name in ("global_step", *names) if name in keys}
    unread = [j for j in range(len(keys)) if j not in read.values()]
    colons, terms = marks[:, 1:-1:2], marks[:, 2::2]
    if unread and not _look_like_numbers(buf, colons[:, unread], terms[:, unread]):
        return None
    try:
        steps = _parse_values(
            buf, colons[:, read["global_step"]], terms[:, read["global_step"]], np.int64
        )
        values = {
            name: _parse_values(buf, colons[:, read[name]], terms[:, read[name]], np.float64)
            if name in read
            else np.full(len(marks), np.nan)
            for name in names
        }
    except ValueError:  # not numbers after all, or a step out of range
        return None
    return steps, values


def _first_keys(chunk: bytes) -> list[str] | None:
    """The keys of the chunk's first line, when that line is a JSON object (else None)."""
    try:
        first = orjson.loads(chunk[: chunk.index(b"\n")])
    except (orjson.JSONDecodeError, ValueError):
        return None
    return list(first) if type(first) is dict else None


def _marks(buf: np.ndarray, size: int, keys: int) -> np.ndarray | None:
    """Per line: where it starts, then its colons and value terminators (`,`, `}` last)
    alternating, then its newline; shape (lines, 2 * keys + 2). None unless every line has exactly
    these, opens with `{` and closes with `}` just before its newline."""
    text = buf[:size]
    found = np.flatnonzero((text == COLON) | (text == COMMA) | (text == CLOSE) | (text == NEWLINE))
    per_line = 2 * keys + 1
    if len(found) % per_line or text[-1] != NEWLINE:
        return None
    found = found.reshape(-1, per_line)
    expected = np.array([COLON, COMMA] * (keys - 1) + [COLON, CLOSE, NEWLINE], np.uint8)
    starts = np.empty(len(found), np.int64)
    starts[0], starts[1:] = 0, found[:-1, -1] + 1
    ok = (
        (buf[found] == expected).all()  # so each row holds exactly its own line's marks
        and (found[:, -2] == found[:, -1] - 1).all()
        and (buf[starts] == OPEN).all()
    )
    return np.column_stack((starts, found)) if ok else None


def _same_keys(buf: np.ndarray, marks: np.ndarray) -> bool:
    """Whether the text before each colon (`{"key"`, `,"key"`) is the first line's in every line:
    the same lengths, then the same bytes, compared 8 at a time in one gather."""
    before, colons = marks[:, 0:-2:2], marks[:, 1:-1:2]  # where each key's text begins; its colon
    lengths = colons - before
    if not (lengths == lengths[0]).all():
        return False
    words = [
        (j, k, min(8, n - k)) for j, n in enumerate(lengths[0].tolist()) for k in range(0, n, 8)
    ]
    at = before[:, [j for j, _, _ in words]] + np.array([k for _, k, _ in words])
    keep = np.array([(1 << (8 * n)) - 1 for _, _, n in words], np.uint64)
    found = np.ndarray((len(buf) - 7,), "<u8", buf, strides=(1,))[at] & keep  # 8 bytes at each
    return bool((found == found[0]).all())


def _look_like_numbers(buf: np.ndarray, colons: np.ndarray, terms: np.ndarray) -> bool:
    """Every value begins and ends like a number or null."""
    first = colons + 1
    first += buf[first] == SPACE
    return bool(
        (first < terms).all() and FIRST_BYTES[buf[first]].all() and LAST_BYTES[buf[terms - 1]].all()
    )


def _parse_values(buf: np.ndarray, colons: np.ndarray, terms: np.ndarray, dtype: Any) -> np.ndarray:
    """The values between each colon and its terminator: cut out into a block of fixed-width rows
    (blank after the value, a comma at the end) that one orjson call reads as a JSON array.
    ValueError when they are not all numbers (or nulls, for floats) that fit the dtype."""
    starts, widths = colons + 1, terms - colons - 1
    width = int(widths.max())
    if width > MAX_VALUE_BYTES or widths.min() <= 0:
        raise ValueError("no value, or too wide")
    cells = np.lib.stride_tricks.sliding_window_view(buf, width + 1)[starts]  # (a copy)
    cells[np.arange(width + 1) >= widths[:, None]] = SPACE
    cells[:, width] = COMMA
    first = np.where(cells[:, 0] == SPACE, cells[:, min(1, width)], cells[:, 0])
    if not (
        FIRST_BYTES[first].all() and LAST_BYTES[cells[np.arange(len(cells)), widths - 1]].all()
    ):
        raise ValueError("not a number or null")
    try:
        parsed = orjson.loads(b"[" + cells.tobytes()[:-1] + b"]")
        values = np.array(parsed, None if dtype is np.int64 else dtype)  # null -> nan
    except (orjson.JSONDecodeError, TypeError, OverflowError) as e:
        raise ValueError(str(e)) from None
    if values.dtype != dtype:  # a float, a null or a step past int64 among the steps
        raise ValueError("not int64 steps")
    if values.shape != starts.shape:  # a list among the values ([] or [1, 2]), not a number
        raise ValueError("not one number a value")
    return values
