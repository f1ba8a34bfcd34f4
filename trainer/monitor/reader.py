"""The reader side of the contract: what the TUI, `--once` and any script use to follow a run.

Rules (DESIGN.md): tail steps.jsonl by byte offset and consume complete lines only; a repeated
global step means a resumed run redid it, so the later line wins; a file that shrank is read again
from the start; a JSON file that is unreadable or of another version is a *problem* to show, never
an exception for the caller. No torch, no numpy: this runs on login nodes.
"""

from __future__ import annotations

import math
import os
import statistics
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

from trainer.monitor.schema import CONTRACT_VERSION, LIVE_STATUSES, Files, schema_tag

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
    return data


def read_contract_json(path: str | Path) -> dict[str, Any] | None:
    """The checked contents of a contract JSON file; None when it does not exist (yet)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ContractError(f"{path.name}: cannot read ({e.strerror})") from None
    return parse_contract_json(raw, path.name)


# ---------------------------------------------------------------------------------------- series


def finite(value: Any) -> float:
    """A step value as a float: JSON null (the writer's NaN/Inf) and non-numbers become NaN."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return NAN


class Series:
    """A float column with per-block min/max so that any range's min/max costs O(range / BLOCK).

    Non-finite values (NaN, Inf) are kept as they are and counted per block, so charts can draw them
    as gaps and the summary can say they happened.
    """

    BLOCK = 128

    def __init__(self) -> None:
        self.values = array("d")
        self._lo = array("d")  # per block: min of its finite values (+inf when none)
        self._hi = array("d")  # per block: max of its finite values (-inf when none)
        self._bad = array("l")  # per block: how many non-finite values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> float:
        return self.values[i]

    def _summarize(self, block: int) -> None:
        chunk = self.values[block * self.BLOCK : (block + 1) * self.BLOCK]
        good = [v for v in chunk if math.isfinite(v)]
        lo, hi, bad = (
            (min(good), max(good), len(chunk) - len(good)) if good else (INF, -INF, len(chunk))
        )
        if block < len(self._lo):
            self._lo[block], self._hi[block], self._bad[block] = lo, hi, bad
        else:
            self._lo.append(lo)
            self._hi.append(hi)
            self._bad.append(bad)

    def _resummarize_from(self, index: int) -> None:
        first = index // self.BLOCK
        blocks = -(-len(self.values) // self.BLOCK)
        del self._lo[blocks:], self._hi[blocks:], self._bad[blocks:]
        for b in range(first, blocks):
            self._summarize(b)

    def extend(self, values: Iterable[float]) -> None:
        start = len(self.values)
        self.values.extend(values)
        self._resummarize_from(start)

    def set(self, index: int, value: float) -> None:
        self.values[index] = value
        self._summarize(index // self.BLOCK)

    def insert(self, index: int, value: float) -> None:
        self.values.insert(index, value)
        self._resummarize_from(index)

    def clear(self) -> None:
        for a in (self.values, self._lo, self._hi, self._bad):
            del a[:]

    def stats(self, start: int = 0, stop: int | None = None) -> tuple[float, float, int]:
        """(min, max, non-finite count) over values[start:stop]; min/max are NaN if nothing is finite."""
        stop = len(self.values) if stop is None else min(stop, len(self.values))
        lo, hi, bad = INF, -INF, 0
        first_full, last_full = -(-start // self.BLOCK), stop // self.BLOCK
        if first_full >= last_full:
            spans = [(start, stop)]
        else:
            spans = [(start, first_full * self.BLOCK), (last_full * self.BLOCK, stop)]
            lo, hi = min(self._lo[first_full:last_full]), max(self._hi[first_full:last_full])
            bad = sum(self._bad[first_full:last_full])
        for a, b in spans:
            if a >= b:
                continue
            chunk = self.values[a:b]
            good = [v for v in chunk if math.isfinite(v)]
            bad += len(chunk) - len(good)
            if good:
                lo, hi = min(lo, *good), max(hi, *good)
        if lo > hi:
            return NAN, NAN, bad
        return lo, hi, bad

    def downsample(self, bins: int) -> list[tuple[float, float] | None]:
        """At most `bins` (min, max) pairs covering the whole series in order; None for a bin that
        holds a non-finite value (drawn as a gap). Spikes survive: each bin keeps its extremes.
        Long series are binned on whole blocks, from the block summaries alone."""
        n = len(self.values)
        if n <= bins:
            return [(v, v) if math.isfinite(v) else None for v in self.values]
        blocks = len(self._lo)
        if blocks >= bins:
            edges = [blocks * i // bins for i in range(bins + 1)]
            lo, hi, bad = self._lo, self._hi, self._bad
            return [
                None if any(bad[a:b]) else (min(lo[a:b]), max(hi[a:b])) for a, b in pairwise(edges)
            ]
        out: list[tuple[float, float] | None] = []
        for i in range(bins):
            chunk = self.values[n * i // bins : n * (i + 1) // bins]
            out.append(None if not all(map(math.isfinite, chunk)) else (min(chunk), max(chunk)))
        return out


STEP_FIELDS = ("loss", "lr", "accuracy")


class StepHistory:
    """Per-step history in columns (about 32 bytes a step): global steps sorted, a repeated global
    step replaced by its later line."""

    def __init__(self) -> None:
        self.global_steps = array("q")
        self.series: dict[str, Series] = {name: Series() for name in STEP_FIELDS}
        self._recent_t: deque[float] = deque(maxlen=33)

    def __len__(self) -> int:
        return len(self.global_steps)

    def clear(self) -> None:
        del self.global_steps[:]
        for s in self.series.values():
            s.clear()
        self._recent_t.clear()

    def add(self, batch: StepBatch) -> None:
        """Apply a batch of step lines in file order (later lines win)."""
        if batch.reset:
            self.clear()
        steps = batch.global_step
        if not steps:
            return
        cols = batch.columns
        i, n = 0, len(steps)
        while i < n:  # runs of increasing new steps extend the columns at C speed; the rest replace
            if not self.global_steps or steps[i] > self.global_steps[-1]:
                j = i + 1
                while j < n and steps[j] > steps[j - 1]:
                    j += 1
                self.global_steps.extend(steps[i:j])
                for name, s in self.series.items():
                    s.extend(cols[name][i:j])
                i = j
            else:
                self._put(steps[i], {name: cols[name][i] for name in STEP_FIELDS})
                i += 1
        self._recent_t.extend(batch.recent_t)

    def _put(self, global_step: int, values: dict[str, float]) -> None:
        i = bisect_left(self.global_steps, global_step)
        if i < len(self.global_steps) and self.global_steps[i] == global_step:
            for name, s in self.series.items():
                s.set(i, values[name])
        else:
            self.global_steps.insert(i, global_step)
            for name, s in self.series.items():
                s.insert(i, values[name])

    def typical_step_s(self) -> float | None:
        """The median wall time between recent step lines, or None before there are two."""
        ts = list(self._recent_t)
        gaps = [b - a for a, b in pairwise(ts) if b >= a]
        return statistics.median(gaps) if gaps else None

    def last(self, name: str) -> float:
        s = self.series[name]
        return s[len(s) - 1] if len(s) else NAN


# ---------------------------------------------------------------------------------------- steps.jsonl


@dataclass
class StepBatch:
    """New complete lines of steps.jsonl, as columns. `reset`: the file shrank or was replaced, so
    this batch starts the history again. `more`: there is more to read right away."""

    reset: bool = False
    global_step: list[int] = field(default_factory=list)
    columns: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in STEP_FIELDS})
    recent_t: list[float] = field(default_factory=list)  # `t` of the last lines (for step timing)
    bad_lines: list[int] = field(default_factory=list)  # 1-based line numbers that did not parse
    partial_bytes: int = 0  # bytes after the last newline: a line still being written, or cut short
    more: bool = False

    def __len__(self) -> int:
        return len(self.global_step)

    def empty(self) -> bool:
        return not (self.reset or self.global_step or self.bad_lines)


class StepTail:
    """Follows steps.jsonl by byte offset; `read()` returns what was appended since the last call."""

    CHUNK = 8 << 20  # bytes per read: bounds memory and lets a huge history arrive in pieces

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self.lines = 0  # complete lines consumed so far
        self._ino: int | None = None

    def read(self) -> StepBatch:
        batch = StepBatch()
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_size < self.offset or (self._ino is not None and st.st_ino != self._ino):
                    batch.reset = True
                    self.offset, self.lines = 0, 0
                self._ino = st.st_ino
                f.seek(self.offset)
                data = f.read(self.CHUNK)
                batch.more = self.offset + len(data) < st.st_size
        except FileNotFoundError:
            if self.offset:
                batch.reset = True
            self.offset, self.lines, self._ino = 0, 0, None
            return batch
        end = data.rfind(b"\n") + 1
        batch.partial_bytes = 0 if batch.more else len(data) - end
        if end:
            self._parse(data[:end].splitlines(), batch)
            self.offset += end
        elif batch.more:  # one line longer than CHUNK: skip it rather than stall forever
            self.offset += len(data)
            self.lines += 1
            batch.bad_lines.append(self.lines)
            batch.more = True
        return batch

    def _parse(self, lines: list[bytes], batch: StepBatch) -> None:
        first = self.lines + 1
        self.lines += len(lines)
        try:  # one C call for the whole chunk; fall back line by line when some line is bad
            records = orjson.loads(b"[" + b",".join(lines) + b"]")
            numbered = list(enumerate(records, first))
        except orjson.JSONDecodeError:
            numbered = []
            for n, line in enumerate(lines, first):
                try:
                    numbered.append((n, orjson.loads(line)))
                except orjson.JSONDecodeError:
                    batch.bad_lines.append(n)
        good = [
            rec
            for n, rec in numbered
            if (type(rec) is dict and type(rec.get("global_step")) is int)
            or batch.bad_lines.append(n)  # (append returns None: the line is left out)
        ]
        batch.global_step = [rec["global_step"] for rec in good]
        batch.recent_t = [t for rec in good[-64:] if isinstance(t := rec.get("t"), (int, float))]
        for name in STEP_FIELDS:
            column = [rec.get(name) for rec in good]
            try:  # C speed when every value is a number or null (the writer's NaN/Inf)
                batch.columns[name] = array("d", [NAN if v is None else v for v in column]).tolist()
            except TypeError:
                batch.columns[name] = [finite(v) for v in column]


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
                st = path.stat()
                sig: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
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
        partial_bytes=batch.partial_bytes if batch else 0,
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
    if trainer == "gone":
        return "crashed", f"trainer pid {pid} is gone (status still said {status})"
    heartbeat = state.get("heartbeat")
    if isinstance(heartbeat, (int, float)):
        age = now - heartbeat
        limit = stale_after_s(status, typical_step_s)
        if age > limit:
            return "crashed", f"no heartbeat for {format_age(age)} (status still says {status})"
    return status, None


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
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
