"""The reader side of the contract: what the TUI, `--once` and any script use to follow a run.

Rules (docs/contract.md): tail steps.jsonl by byte offset and consume complete lines only; a repeated
global step means a resumed run redid it, so the later line wins; a file that shrank is read again
from the start; a JSON file that is unreadable or of another version is a *problem* to show, never
an exception for the caller. No torch: this runs on login nodes (numpy, yes: a million steps are
columns, not Python objects; see columns.py).
"""

from __future__ import annotations

import math
import os
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from trainer.monitor.columns import Column, block_summaries, parse_uniform
from trainer.monitor.safe_files import UnsafeFile, open_regular, read_bytes
from trainer.monitor.schema import CONTRACT_VERSION, LIVE_STATUSES, Files, schema_tag
from trainer.monitor.step_rows import STEP_FIELDS, as_columns, loads, step_row
from trainer.monitor.text import in_years
from trainer.monitor.values import is_number

NAN = float("nan")
INF = float("inf")

# A live status whose heartbeat is older than this is shown as crashed. "Far older than a typical
# step": STALE_STEPS typical steps, but never less than STALE_MIN_S (checkpoint saves, slow disks).
STALE_MIN_S = 60.0
STALE_STEPS = 20
STALE_UNKNOWN_STEP_S = 300.0  # no step seen yet to know what "typical" is
STALE_INITIALIZING_S = 900.0  # loading a model and tokenizing may write nothing for minutes


class ContractError(ValueError):
    """A file of the run directory that this reader cannot use; the message says which and why."""


# ---------------------------------------------------------------------------------------- JSON files


def parse_contract_json(raw: bytes, file_name: str) -> dict[str, Any]:
    """Parse one contract JSON file and check its schema tag and version, or raise ContractError."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ContractError(f"{file_name}: not valid JSON ({e.msg} at byte {e.pos})") from None
    if not isinstance(data, dict):
        raise ContractError(f"{file_name}: expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if schema != schema_tag(file_name):
        raise ContractError(
            f"{file_name}: schema is {schema!r}, expected {schema_tag(file_name)!r}"
        )
    version = data.get("version")
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"{file_name}: contract version {version!r}; this monitor reads version {CONTRACT_VERSION}"
        )
    if file_name == Files.EPOCHS and not isinstance(data.get("epochs") or [], list):
        raise ContractError(f"{file_name}: epochs is {type(data['epochs']).__name__}, not a list")
    return data


def read_contract_json(path: str | Path) -> dict[str, Any] | None:
    """The checked contents of a contract JSON file; None when it does not exist (yet). A file
    that is not a regular one (a FIFO, a device, a symbolic link) or is too large is a
    ContractError saying so: never a hang, never a read without bound (safe_files)."""
    path = Path(path)
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return None
    except UnsafeFile as e:
        raise ContractError(str(e)) from None
    except OSError as e:
        raise ContractError(f"{path.name}: cannot read ({e.strerror})") from None
    return parse_contract_json(raw, path.name)


# ---------------------------------------------------------------------------------------- series


class Series:
    """A float column (8 bytes a value) with per-block min/max, so that any range's min/max costs
    O(range / BLOCK) and a chart of a million steps bins 8k block summaries, not the steps.

    Non-finite values (NaN, Inf) are kept as they are and counted per block, so charts can draw them
    as gaps and the summary can say they happened.
    """

    BLOCK = 128

    def __init__(self) -> None:
        self.values = Column(np.float64)
        self._lo = np.empty(0)  # per block: min of its finite values (+inf when none)
        self._hi = np.empty(0)  # per block: max of its finite values (-inf when none)
        self._bad = np.empty(0, np.int64)  # per block: how many non-finite values
        # Changes other than appends (put, insert, clear): a cache of something computed over the
        # values (the charts' smoothing) may be extended while this stays the same, else redone.
        self.edits = 0

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> float:
        return self.values[i]

    def _resummarize(self, first: int, last: int | None = None) -> None:
        """Summaries of blocks first..last (to the end when last is None) from the values."""
        stop = len(self.values) if last is None else min(len(self.values), (last + 1) * self.BLOCK)
        lo, hi, bad = block_summaries(self.values.array[first * self.BLOCK : stop], self.BLOCK)
        if last is None:
            self._lo = np.concatenate((self._lo[:first], lo))
            self._hi = np.concatenate((self._hi[:first], hi))
            self._bad = np.concatenate((self._bad[:first], bad))
        else:
            self._lo[first : last + 1], self._hi[first : last + 1] = lo, hi
            self._bad[first : last + 1] = bad

    def extend(self, values: np.ndarray | Iterable[float], *, take: bool = False) -> None:
        """Append values (take: Column.extend's, the array handed over)."""
        start = len(self.values)
        self.values.extend(values, take=take)
        self._resummarize(start // self.BLOCK)

    def put(self, positions: np.ndarray, values: np.ndarray) -> None:
        """Replace the values at these (existing) positions."""
        if len(positions):
            self.edits += 1
            self.values.array[positions] = values
            self._resummarize(
                int(positions.min()) // self.BLOCK, int(positions.max()) // self.BLOCK
            )

    def insert(self, positions: np.ndarray | int, values: np.ndarray | float) -> None:
        """Insert before these positions (np.insert's meaning)."""
        self.edits += 1
        self.values.insert(positions, values)
        self._resummarize(int(np.min(positions)) // self.BLOCK)

    def set(self, index: int, value: float) -> None:
        self.put(np.array([index]), np.array([value]))

    def clear(self) -> None:
        self.edits += 1
        self.values.clear()
        self._lo, self._hi, self._bad = self._lo[:0], self._hi[:0], self._bad[:0]

    def stats(self, start: int = 0, stop: int | None = None) -> tuple[float, float, int]:
        """(min, max, non-finite count) over values[start:stop]; min/max are NaN if nothing is finite."""
        stop = len(self.values) if stop is None else min(stop, len(self.values))
        first_full, last_full = -(-start // self.BLOCK), stop // self.BLOCK
        values = self.values.array
        if first_full >= last_full:
            return _scan(values[start:stop])
        parts = [
            _scan(values[start : first_full * self.BLOCK]),
            _scan(values[last_full * self.BLOCK : stop]),
            (
                float(self._lo[first_full:last_full].min()),
                float(self._hi[first_full:last_full].max()),
                int(self._bad[first_full:last_full].sum()),
            ),
        ]
        lo = min((p[0] for p in parts if p[0] == p[0]), default=NAN)
        hi = max((p[1] for p in parts if p[1] == p[1]), default=NAN)
        lo, hi = (NAN, NAN) if lo > hi or math.isinf(lo) else (lo, hi)
        return lo, hi, sum(p[2] for p in parts)

    def downsample(self, bins: int) -> list[tuple[float, float] | None]:
        """At most `bins` (min, max) pairs covering the whole series in order; None for a bin that
        holds a non-finite value (drawn as a gap). Spikes survive: each bin keeps its extremes.
        Long series are binned on whole blocks, from the block summaries alone."""
        n = len(self.values)
        if n <= bins:
            return [(v, v) if math.isfinite(v) else None for v in self.values]
        blocks = len(self._lo)
        if blocks >= bins:
            edges = np.arange(bins) * blocks // bins
            lo, hi, bad = self._lo, self._hi, self._bad
        else:
            edges = np.arange(bins) * n // bins
            values = self.values.array
            good = np.isfinite(values)
            lo, hi, bad = np.where(good, values, INF), np.where(good, values, -INF), ~good
        lows, highs = np.minimum.reduceat(lo, edges), np.maximum.reduceat(hi, edges)
        gaps = np.add.reduceat(bad, edges, dtype=np.int64)
        return [
            None if gap else (low, high)
            for low, high, gap in zip(lows.tolist(), highs.tolist(), gaps.tolist(), strict=True)
        ]


def _scan(values: np.ndarray) -> tuple[float, float, int]:
    """(min, max, non-finite count) of a few values; NaN min/max when none is finite."""
    good = values[np.isfinite(values)]
    bad = len(values) - len(good)
    return (float(good.min()), float(good.max()), bad) if len(good) else (NAN, NAN, bad)


class StepHistory:
    """Per-step history in columns (40 bytes a step: int64 steps, four float64 series), global
    steps sorted, a repeated global step replaced by its later line."""

    def __init__(self) -> None:
        self.global_steps = Column(np.int64)
        self.series: dict[str, Series] = {name: Series() for name in STEP_FIELDS}
        self._recent_t: deque[float] = deque(maxlen=33)

    def __len__(self) -> int:
        return len(self.global_steps)

    def clear(self) -> None:
        self.global_steps.clear()
        for s in self.series.values():
            s.clear()
        self._recent_t.clear()

    def add(self, batch: StepBatch) -> None:
        """Apply a batch of step lines in file order (later lines win). The batch is handed over:
        an empty history takes its arrays rather than copying them."""
        if batch.reset:
            self.clear()
        steps = batch.steps
        breaks = np.flatnonzero(steps[1:] <= steps[:-1]) + 1  # runs of increasing steps
        for a, b in pairwise([0, *breaks.tolist(), len(steps)]):
            self._add_run(steps[a:b], {name: batch.values[name][a:b] for name in STEP_FIELDS})
        self._recent_t.extend(batch.recent_t)

    def _add_run(self, steps: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Steps in increasing order: past the last known one they are appended; the others
        replace a known step (a resumed run redid it) or fill a gap."""
        known = self.global_steps.array
        k = int(np.searchsorted(steps, known[-1], "right")) if len(known) else 0
        if k:
            self._merge(steps[:k], {name: v[:k] for name, v in values.items()})
        if k < len(steps):
            self.global_steps.extend(steps[k:], take=True)
            for name, s in self.series.items():
                s.extend(values[name][k:], take=True)

    def _merge(self, steps: np.ndarray, values: dict[str, np.ndarray]) -> None:
        at = np.searchsorted(self.global_steps.array, steps)  # every step <= the last known one
        known = self.global_steps.array[at] == steps
        for name, s in self.series.items():
            s.put(at[known], values[name][known])
        if not known.all():
            new = ~known
            self.global_steps.insert(at[new], steps[new])
            for name, s in self.series.items():
                s.insert(at[new], values[name][new])

    def index_range(self, first_step: int, last_step: int) -> tuple[int, int]:
        """Indexes (first, last) of the steps within [first_step, last_step]; first > last if none."""
        steps = self.global_steps.array
        first = int(np.searchsorted(steps, first_step, "left"))
        return first, int(np.searchsorted(steps, last_step, "right")) - 1

    def typical_step_s(self) -> float | None:
        """The median wall time between recent step lines, or None before there are two."""
        ts = list(self._recent_t)
        gaps = [b - a for a, b in pairwise(ts) if b >= a]
        return statistics.median(gaps) if gaps else None

    def last(self, name: str) -> float:
        s = self.series[name]
        return s[len(s) - 1] if len(s) else NAN


# ---------------------------------------------------------------------------------------- steps.jsonl

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


# ---------------------------------------------------------------------------------------- the run


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

    def poll(self) -> RunUpdate:
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


# ---------------------------------------------------------------------------------------- liveness


def stale_after_s(status: str, typical_step_s: float | None) -> float:
    """How old a heartbeat may get before a live status is not believed any more."""
    if status == "initializing":
        return STALE_INITIALIZING_S
    if typical_step_s is None or typical_step_s <= 0:
        return STALE_UNKNOWN_STEP_S
    return max(STALE_MIN_S, STALE_STEPS * typical_step_s)


def effective_status(
    state: dict[str, Any] | None,
    now: float,
    *,
    trainer: str = "unknown",
    typical_step_s: float | None = None,
) -> tuple[str, str | None]:
    """(status, why) where status is the written one, or "crashed" when the state says the run is
    live but its trainer is gone on this host (`trainer` == "gone") or the heartbeat is far older
    than a typical step. `trainer` is what control.trainer_liveness says: alive, gone, remote,
    unknown."""
    if not state:
        return "waiting", None
    status = str(state.get("status") or "unknown")
    if status not in LIVE_STATUSES:
        return status, None
    pid = state.get("pid")
    if trainer == "gone":  # proven by the kernel (control.trainer_liveness); its proof, if given
        proof = getattr(trainer, "why", "")
        if not proof or proof.startswith(("no process", f"pid {pid} has exited")):
            return "crashed", f"trainer pid {pid} is gone (status still said {status})"
        if "another process now" in proof:  # the trainer is gone, its pid reused
            return "crashed", f"trainer pid {pid} is gone: {proof} (status still said {status})"
        # the named process lives, but the run's lock proves it is not the trainer
        return (
            "crashed",
            f"pid {pid} is not this run's trainer: {proof} (status still said {status})",
        )
    heartbeat = state.get("heartbeat")
    if isinstance(heartbeat, (int, float)):
        age = now - heartbeat
        limit = stale_after_s(status, typical_step_s)
        if age > limit:
            return "crashed", f"no heartbeat for {format_age(age)} (status still says {status})"
    return status, None


def format_age(seconds: float) -> str:
    """An age as `45s`, `3m05s`, `2h07m`, `4d03h`, past a year `1y045d` (text.in_years)."""
    if not seconds > 0:  # (NaN too)
        return "0s"
    years = in_years(seconds)
    if years:
        return years
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def best_of(epochs: Sequence[dict[str, Any]], best_epoch: int | None) -> dict[str, Any] | None:
    """The epoch record marked best (by best_epoch, else by is_best)."""
    for e in epochs:
        if (best_epoch is not None and e.get("epoch") == best_epoch) or (
            best_epoch is None and e.get("is_best")
        ):
            return e
    return None
