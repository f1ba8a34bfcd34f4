"""steps.cols: an optional binary cache of the step history, so that a long run opens without
parsing its steps.jsonl. steps.jsonl stays the contract; this file is only ever trusted as far as
it agrees with it, and a reader that ignores it loses nothing but time.

The file: a 128-byte text header (magic, version, byte order and the record's fields, compared
byte for byte), then one fixed-width little-endian record per line of steps.jsonl, in file order:
the byte offset in steps.jsonl just past the line's newline (`end`), its global_step, and the
history's float columns (STEP_FIELDS; null and non-numbers as NaN), exactly as the reader makes
them of that line (`step_row`). The writer appends the record after the line, so a record never
runs ahead of steps.jsonl; a record cut short (a kill, a full disk) is not a record.

A run directory is untrusted (safe_files): the reader opens it as it opens any run file (no link,
no FIFO), reads no more records than steps.jsonl could hold lines, and uses it only when the
header is this version's, every `end` rises by at least a shortest line and lies within steps.jsonl,
and a spread sample of records (the first and the last among them) equals the lines of steps.jsonl
they point at. Otherwise it is ignored and steps.jsonl is read.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from trainer.monitor.columns import parse_uniform
from trainer.monitor.safe_files import CHUNK, open_regular, open_writable, write_all
from trainer.monitor.values import is_number

STEP_FIELDS = ("loss", "lr", "accuracy", "t")  # t: wall time, for the charts' time axis
INT64 = (-(2**63), 2**63 - 1)
NAN = float("nan")

RECORD = np.dtype([("end", "<i8"), ("global_step", "<i8"), *((n, "<f8") for n in STEP_FIELDS)])
HEADER_BYTES = 128
HEADER = (
    f"entrenar-tui/steps.cols version 1 little-endian {RECORD.itemsize}-byte records: "
    + " ".join(f"{name}:{RECORD[name].str[1:]}" for name in RECORD.names)
).ljust(HEADER_BYTES - 1).encode() + b"\n"
PACK = struct.Struct("<" + "".join("q" if RECORD[n].kind == "i" else "d" for n in RECORD.names))
MIN_LINE = len(b'{"global_step":0}\n')  # the shortest line that is a step
SAMPLES = 64  # records checked against their lines on every load
PIECE = 1 << 18  # records read at a time (12 MiB): bounds the bytes held besides the columns


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


# ---------------------------------------------------------------------------------------- reading


@dataclass
class Cached:
    """What steps.cols gives for the start of steps.jsonl: `lines` lines up to byte `covered`, and
    their global steps and values (empty when only the extent was asked for)."""

    steps: np.ndarray
    values: dict[str, np.ndarray]
    covered: int
    lines: int


def read_steps_cols(
    path: str | Path, steps_fd: int, steps_size: int, *, columns: bool = True
) -> Cached | None:
    """The history of the first lines of steps.jsonl (open as `steps_fd`, `steps_size` bytes) from
    the steps.cols at `path`, or None when there is none, it covers nothing, or it is not to be
    trusted (then steps.jsonl is read as if it were not there). Never raises for what the file
    holds or is. columns=False checks it all the same but keeps only its extent (the writer's
    check: 8 bytes a record held, not 40)."""
    try:
        fd = open_regular(path)
    except OSError:  # missing, a link, a FIFO, unreadable (safe_files.UnsafeFile is an OSError)
        return None
    try:
        with open(fd, "rb", buffering=0) as f:
            records = _read_records(f, steps_size, columns)
            if records is None or not len(records[0]):
                return None
            ends, steps, values = records
            row = partial(_column_row, steps, values) if columns else partial(_record_at, f)
            if not _agrees(steps_fd, ends, row):
                return None
            return Cached(steps, values, int(ends[-1]), len(ends))
    except (OSError, ValueError, MemoryError):
        return None


Columns = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]  # ends, global steps, values


def _read_records(f: io.FileIO, steps_size: int, columns: bool) -> Columns | None:
    """(ends, steps, values) of the records that lie within steps.jsonl (steps and values empty
    unless `columns`), or None when the header is not this version's or the ends do not rise by a
    line at least."""
    if f.read(HEADER_BYTES) != HEADER:
        return None
    whole = (os.fstat(f.fileno()).st_size - HEADER_BYTES) // RECORD.itemsize
    n = max(0, min(whole, steps_size // MIN_LINE))
    ends = np.empty(n, np.int64)
    kept = n if columns else 0
    steps = np.empty(kept, np.int64)
    values = {name: np.empty(kept, np.float64) for name in STEP_FIELDS}
    last, got = 0, 0
    while got < n:
        piece = np.empty(min(PIECE, n - got), RECORD)
        count = (f.readinto(piece.view(np.uint8)) or 0) // RECORD.itemsize
        piece = piece[:count]
        if not count:
            break
        end = piece["end"]
        if end[0] - last < MIN_LINE or (np.diff(end) < MIN_LINE).any():
            return None
        keep = int(np.searchsorted(end, steps_size, "right"))
        ends[got : got + keep] = end[:keep]
        if columns:
            steps[got : got + keep] = piece["global_step"][:keep]
            for name in STEP_FIELDS:
                values[name][got : got + keep] = piece[name][:keep]
        got += keep
        if keep < count:
            break
        last = int(end[-1])
    got_columns = got if columns else 0
    return ends[:got], steps[:got_columns], {n: v[:got_columns] for n, v in values.items()}


def _column_row(
    steps: np.ndarray, values: dict[str, np.ndarray], i: int
) -> tuple[int, list[float]]:
    return int(steps[i]), [float(values[name][i]) for name in STEP_FIELDS]


def _record_at(f: io.FileIO, i: int) -> tuple[int, list[float]]:
    """(global_step, values) of record i, read from the file."""
    raw = os.pread(f.fileno(), RECORD.itemsize, HEADER_BYTES + i * RECORD.itemsize)
    record = np.frombuffer(raw, RECORD)[0]
    return int(record["global_step"]), [float(record[name]) for name in STEP_FIELDS]


def _agrees(steps_fd: int, ends: np.ndarray, row: Callable[[int], tuple[int, list[float]]]) -> bool:
    """Whether a spread sample of records, the first and the last among them, equal the lines of
    steps.jsonl they point at (row(i): record i's global step and values)."""
    for i in np.unique(np.linspace(0, len(ends) - 1, SAMPLES).astype(np.int64)).tolist():
        start = int(ends[i - 1]) if i else 0
        if not _line_agrees(steps_fd, start, int(ends[i]), *row(i)):
            return False
    return True


def _line_agrees(steps_fd: int, start: int, end: int, step: int, values: list[float]) -> bool:
    """Whether bytes start..end of steps.jsonl are one line whose step_row is (step, values), NaN
    matching NaN."""
    line = os.pread(steps_fd, end - start, start)
    if len(line) != end - start or line.find(b"\n") != len(line) - 1:
        return False
    row = step_row(loads(line))
    return (
        row is not None
        and row[0] == step
        and np.array_equal(np.array(row[1]), np.array(values, np.float64), equal_nan=True)
    )


# ---------------------------------------------------------------------------------------- writing


class StepsColsWriter:
    """The trainer's side: brought up to date with steps.jsonl when opened (cut back to what a
    reader would take of it, then records added for the lines after), then one record appended
    per line. Any trouble (a link in its place, a full disk, a line that is not a step) stops it
    and empties the file, which readers then ignore: steps.jsonl is what counts, and it is never
    held up by this."""

    def __init__(self, path: str | Path, steps_fd: int) -> None:
        self.path = Path(path)
        self.fd: int | None = None
        try:
            self.fd = open_writable(self.path, os.O_RDWR | os.O_APPEND)
        except OSError:  # a link, a FIFO, a second name: left as it is, and never written
            return
        try:
            self._catch_up(steps_fd, self._keep_agreeing(steps_fd))
        except (OSError, ValueError, MemoryError):
            self.stop()

    def append(self, line: bytes, end: int) -> None:
        """The record of `line` (complete, with its newline), which ends at byte `end`."""
        if self.fd is None:
            return
        row = step_row(loads(line))
        if row is None:
            self.stop()
            return
        try:
            write_all(self.fd, PACK.pack(end, row[0], *row[1]))  # RECORD's bytes, in 1 µs
        except OSError:
            self.stop()

    def stop(self) -> None:
        """Empty the file (readers ignore it) and write no more to it."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _keep_agreeing(self, steps_fd: int) -> int:
        """Cut the file back to the records a reader would take (read_steps_cols: those within
        steps.jsonl, if they agree with it), else to the header alone; the byte of steps.jsonl
        they cover."""
        assert self.fd is not None
        size = os.fstat(steps_fd).st_size
        cached = read_steps_cols(self.path, steps_fd, size, columns=False)
        if cached is None:
            os.ftruncate(self.fd, 0)
            write_all(self.fd, HEADER)
            return 0
        os.ftruncate(self.fd, HEADER_BYTES + cached.lines * RECORD.itemsize)
        return cached.covered

    def _catch_up(self, steps_fd: int, covered: int) -> None:
        """Records for the lines of steps.jsonl past byte `covered` (an old run's whole file, or
        the line a kill left between the two writes); ValueError at a line that is not a step."""
        assert self.fd is not None
        offset = covered
        while chunk := os.pread(steps_fd, CHUNK, offset):
            whole = chunk[: chunk.rfind(b"\n") + 1]
            if not whole:  # a line longer than a chunk, or cut short: no record can follow it
                raise ValueError("not a line")
            ends = np.flatnonzero(np.frombuffer(whole, np.uint8) == 10) + 1 + offset
            parsed = parse_uniform(whole, STEP_FIELDS)
            steps, values = parsed if parsed is not None else _parse_lines(whole)
            records = np.empty(len(ends), RECORD)
            records["end"], records["global_step"] = ends, steps
            for name in STEP_FIELDS:
                records[name] = values[name]
            write_all(self.fd, records.tobytes())
            offset += len(whole)


def _parse_lines(chunk: bytes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """step_row of every line, as columns; ValueError at a line that is not a step."""
    rows = [step_row(loads(line)) for line in chunk.split(b"\n")[:-1]]
    if any(row is None for row in rows):
        raise ValueError("a line that is not a step")
    return as_columns(rows)  # type: ignore[arg-type]
