"""steps.jsonl followed by byte offset (StepTail), complete lines only, parsed into numpy columns
(StepBatch); and its last lines alone (read_recent_steps), for what needs only the recent pace.
A file that shrank or was replaced is read again from the start; a line that is not a step is
counted by its number, never an exception (docs/contract.md, Reader rules)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.monitor.columns import parse_uniform
from trainer.monitor.safe_files import UnsafeFile, open_regular
from trainer.monitor.step_rows import STEP_FIELDS, as_columns, loads, step_row
from trainer.monitor.values import is_number

NAN = float("nan")


RECENT_LINES = 64  # the `t` of this many last lines times the steps


class StepBatch:
    """New complete lines of steps.jsonl, as numpy columns: `steps` (int64 global steps) and
    `values` (a float64 array per STEP_FIELDS name). `reset`: the file shrank or was replaced, so
    this batch starts the history again. `more`: there is more to read right away. `problem`: the
    file could not be read. `global_step` and `columns` give plain lists (for scripts and tests)."""

    def __init__(
        self,
        *,
        reset: bool = False,
        global_step: Sequence[int] | np.ndarray = (),
        columns: dict[str, Sequence[float]] | None = None,
        recent_t: Sequence[float] = (),
        bad_lines: Sequence[int] = (),
        partial_bytes: int = 0,
        more: bool = False,
        problem: str | None = None,
    ) -> None:
        self.reset, self.more, self.problem = reset, more, problem
        self.global_step = global_step
        self.columns = columns or {}
        self.recent_t = list(recent_t)  # `t` of the last lines (for step timing)
        self.bad_lines = list(bad_lines)  # 1-based line numbers that did not parse
        self.partial_bytes = partial_bytes  # bytes after the last newline: a line in flight, or cut

    @property
    def global_step(self) -> list[int]:
        return self.steps.tolist()

    @global_step.setter
    def global_step(self, steps: Sequence[int] | np.ndarray) -> None:
        self.steps = np.asarray(steps, np.int64)

    @property
    def columns(self) -> dict[str, list[float]]:
        return {name: v.tolist() for name, v in self.values.items()}

    @columns.setter
    def columns(self, columns: dict[str, Sequence[float]]) -> None:
        """Missing names read as NaN."""
        self.values = {
            name: np.asarray(columns[name], np.float64)
            if name in columns
            else np.full(len(self.steps), NAN)
            for name in STEP_FIELDS
        }

    def __len__(self) -> int:
        return len(self.steps)

    def empty(self) -> bool:
        return not (self.reset or len(self.steps) or self.bad_lines)


class StepTail:
    """Follows steps.jsonl by byte offset; `read()` returns what was appended since the last call.
    steps.jsonl is the only source of the history: no cache beside it (a planted one could show
    steps the file does not hold, and checking a cache in full costs what parsing does)."""

    CHUNK = 8 << 20  # bytes per read: bounds memory and lets a huge history arrive in pieces
    SPLIT_BELOW = (
        256  # a chunk that is not uniform is halved down to this many lines, then read line by line
    )

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self.lines = 0  # complete lines consumed so far
        self._ino: int | None = None
        self._skipping = False  # inside a line longer than CHUNK, already counted as bad

    def read(self) -> StepBatch:
        batch = StepBatch()
        data = self._read_chunk(batch)
        if self._skipping and data:
            data = self._skip_rest_of_long_line(data, batch)
            if data is None:
                return batch
        end = data.rfind(b"\n") + 1
        batch.partial_bytes = 0 if batch.more else len(data) - end
        if end:
            first = self.lines + 1
            self.lines += data.count(b"\n", 0, end)
            steps, values, batch.bad_lines, batch.recent_t = _parse_chunk(
                data[:end], first, self.SPLIT_BELOW
            )
            batch.steps, batch.values = steps, values
            self.offset += end
        elif batch.more:  # one line longer than CHUNK: skip it rather than stall forever
            self.offset += len(data)
            self.lines += 1
            batch.bad_lines.append(self.lines)
            self._skipping = True  # its next pieces are the same bad line, not more of them
        return batch

    def _skip_rest_of_long_line(self, data: bytes, batch: StepBatch) -> bytes | None:
        """The data after the end of the long line being skipped (counted once, when it began),
        or None when the whole chunk is still inside it."""
        newline = data.find(b"\n")
        if newline < 0:
            if batch.more:
                self.offset += len(data)
            else:  # its writer is still at it (or died mid-line): wait for its end
                batch.partial_bytes = len(data)
            return None
        self.offset += newline + 1
        self._skipping = False
        rest = data[newline + 1 :]
        if b"\n" not in rest:  # a line that began after it: read from its start next time
            batch.partial_bytes = 0 if batch.more else len(rest)
            return None
        return rest

    def _read_chunk(self, batch: StepBatch) -> bytes:
        """Up to CHUNK bytes from the offset, starting again from 0 when the file shrank or was
        replaced (batch.reset); b"" when there is no file or it cannot be read (batch.problem)."""
        try:
            with open(open_regular(self.path), "rb") as f:  # never a FIFO, device or link
                st = os.fstat(f.fileno())
                if st.st_size < self.offset or (self._ino is not None and st.st_ino != self._ino):
                    batch.reset = True
                    self.offset, self.lines, self._skipping = 0, 0, False
                self._ino = st.st_ino
                f.seek(self.offset)
                data = f.read(self.CHUNK)
        except FileNotFoundError:
            batch.reset = bool(self.offset)
            self.offset, self.lines, self._ino, self._skipping = 0, 0, None, False
            return b""
        except UnsafeFile as e:
            batch.problem = str(e)
            return b""
        except OSError as e:
            batch.problem = f"{self.path.name}: cannot read ({e.strerror or e})"
            return b""
        batch.more = self.offset + len(data) < st.st_size
        return data


Parsed = tuple[np.ndarray, dict[str, np.ndarray], list[int], list[float]]


def _parse_chunk(chunk: bytes, first_line: int, split_below: int) -> Parsed:
    """(steps, values, bad line numbers, recent t) of complete lines. A uniform chunk (what the
    writer writes) is cut into columns at C speed; one that is not is halved, so that a few odd
    lines cost a few small line-by-line reads, not the whole chunk's."""
    fast = parse_uniform(chunk, STEP_FIELDS)
    if fast is not None:
        tail = chunk[:-1].rsplit(b"\n", RECENT_LINES)[-RECENT_LINES:]
        return *fast, [], _recent_t([loads(line) for line in tail])
    lines = chunk.count(b"\n")
    if lines < split_below:
        return _parse_lines(chunk.split(b"\n")[:-1], first_line)
    middle = chunk.index(b"\n", len(chunk) // 2 - 1) + 1 if lines > 1 else len(chunk)
    head = _parse_chunk(chunk[:middle], first_line, split_below)
    rest = _parse_chunk(chunk[middle:], first_line + chunk.count(b"\n", 0, middle), split_below)
    steps = np.concatenate((head[0], rest[0]))
    values = {n: np.concatenate((head[1][n], rest[1][n])) for n in STEP_FIELDS}
    return steps, values, head[2] + rest[2], (head[3] + rest[3])[-RECENT_LINES:]


def _parse_lines(lines: list[bytes], first_line: int) -> Parsed:
    """One orjson call per line: a step is a JSON object with an int64 global_step (step_row);
    anything else is an unreadable line (its number kept)."""
    good, rows, bad = [], [], []
    for n, line in enumerate(lines, first_line):
        rec = loads(line)
        row = step_row(rec)
        if row is None:
            bad.append(n)
        else:
            good.append(rec)
            rows.append(row)
    return *as_columns(rows), bad, _recent_t(good[-RECENT_LINES:])


def _recent_t(records: list[Any]) -> list[float]:
    return [
        t for rec in records if type(rec) is dict and is_number(t := rec.get("t"), finite=False)
    ]


RECENT_BYTES = (
    16 << 10
)  # the end of steps.jsonl read_recent_steps reads: ~80 lines the writer writes


def read_recent_steps(path: str | Path, max_bytes: int = RECENT_BYTES) -> StepBatch:
    """The complete lines among the last `max_bytes` of steps.jsonl (the first, cut, line left
    out), as a batch: what the browser reads of a live run, for its recent step times (the crash
    rule's typical step, StepHistory.typical_step_s), at the cost of one bounded read however
    long the run. Never a FIFO, device or link (safe_files); an unreadable file is an empty batch
    with its problem. Line numbers of bad lines are not known here and not kept."""
    batch = StepBatch()
    try:
        with open(open_regular(path), "rb") as f:
            start = max(0, os.fstat(f.fileno()).st_size - max_bytes)
            f.seek(start)
            data = f.read(max_bytes)
    except FileNotFoundError:
        return batch
    except UnsafeFile as e:
        batch.problem = str(e)
        return batch
    except OSError as e:
        batch.problem = f"{Path(path).name}: cannot read ({e.strerror or e})"
        return batch
    first = data.find(b"\n") + 1 if start else 0  # a line cut by the start is no line
    end = data.rfind(b"\n") + 1
    if end > first:
        batch.steps, batch.values, _, batch.recent_t = _parse_chunk(
            data[first:end], 1, StepTail.SPLIT_BELOW
        )
    return batch
