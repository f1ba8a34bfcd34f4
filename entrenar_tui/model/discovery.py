"""Finding run directories under a root and summarizing each one cheaply, for the runs browser.

A summary reads run.json, state.json, epochs.json and result.json, and of a live run the last
16 KB of steps.jsonl, never the whole history (a browser over 200 runs of 10k steps each must open
in well under a second); they are read again only when the JSON files' stat signature (inode,
size, mtime) changes, so polling a large root costs a few stat() calls a run. They are read into
a RunModel (model/loading.py), as the run screen reads its run: values cleaned
(model/validation.py), the status the run screen would show (the same crash rule, with
trainer_liveness). No Textual, no torch.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from entrenar_tui import formatting as fmt
from entrenar_tui.model.loading import load_run_model
from entrenar_tui.model.recoveries import MARK as RECOVERY_MARK
from entrenar_tui.model.run import RunModel
from entrenar_tui.model.sweeps import (
    BEST_MARK,
    SweepFile,
    SweepPlot,
    grid_keys,
    grid_values,
    headers,
    mark_best,
    read_sweep_file,
)
from trainer.monitor.control import trainer_liveness
from trainer.monitor.schema import LIVE_STATUSES, Files
from trainer.monitor.text import duration, printable, rough_age
from trainer.monitor.values import is_number

MAX_DEPTH = 3  # ROOT/a/b/c: a sweep folder holding a group folder holding runs
MARKERS = (Files.RUN, Files.STATE)  # a directory holding either is a run directory
SUMMARY_FILES = (Files.RUN, Files.STATE, Files.EPOCHS, Files.RESULT)
SKIPPED_DIRS = frozenset({Files.CHECKPOINTS, "__pycache__", "node_modules"})

Signature = tuple[tuple[int, int, int] | None, ...]


def is_run_dir(path: str | Path) -> bool:
    """A directory holding run.json or state.json (what the trainer writes first), in any form: one
    that is a FIFO or a link is listed too, with what is wrong with it, not hidden."""
    return any(os.path.lexists(os.path.join(path, name)) for name in MARKERS)


def find_runs(root: str | Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Run directories under root, at most max_depth levels down, sorted (iter_runs)."""
    return sorted(iter_runs(root, max_depth))


def iter_runs(root: str | Path, max_depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Run directories under root, at most max_depth levels down, as they are found (folder by
    folder, each folder's by name): a caller can show the first ones before the walk of a large
    root ends. Never descends into a run directory (its checkpoints are not runs), into
    checkpoints/ or into dot-directories. Each directory is visited once, by (device, inode): a
    symlink back up the tree (a loop) or a second link to the same run lists that run once, under
    its first name (real folders before symlinks, then by name)."""
    seen: set[tuple[int, int]] = set()

    def first_visit(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return False
        seen.add(key)
        return True

    def walk(folder: str, depth: int) -> Iterator[Path]:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        entries.sort(key=lambda e: (e.is_symlink(), e.name))
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in SKIPPED_DIRS:
                continue
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            if not first_visit(entry.path):
                continue
            if is_run_dir(entry.path):
                yield Path(entry.path)
            elif depth < max_depth:
                yield from walk(entry.path, depth + 1)

    first_visit(os.fspath(root))
    yield from walk(os.fspath(root), 1)


def holds_runs(root: str | Path) -> bool:
    """root is no run itself but has run directories below it, or is a sweep's directory (its
    sweep.json is written before its first run starts): the browser's case."""
    if not os.path.isdir(root) or is_run_dir(root):
        return False
    return os.path.lexists(os.path.join(root, Files.SWEEP)) or bool(find_runs(root))


@dataclass(frozen=True)
class RunSummary:
    """One row of the browser. `name` is the run's path under the root (`exp-3`, `sweep/exp-3`).
    Text fields are printable; numbers are None when not known."""

    dir: Path
    name: str
    status: str
    reason: str | None
    model: str
    epoch: int | None
    total_epochs: int | None
    best_val_accuracy: float | None
    best_val_loss: float | None
    started: str
    duration_s: float | None
    problem: str | None = None
    sweep_name: str = ""  # run.json `sweep`: the sweep that started the run, its index, its values
    sweep_index: int | None = None
    grid: tuple[tuple[str, str], ...] = ()  # (grid key, the value's cell text)
    best: bool = False  # the best run of its sweep (model/sweeps.py mark_best)
    global_step: int | None = None  # state.json's: where the run is, or ended (its alerts' key)
    error: str | None = None  # state.json's or result.json's error text
    recoveries: int = 0  # run.json's (checked): how often the trainer healed the run

    @property
    def key(self) -> str:
        return str(self.dir)

    @property
    def live(self) -> bool:
        """Its status may change with the clock alone (RunIndex.refresh works it out again)."""
        return self.status in LIVE_STATUSES

    def cells(self, now: float | None = None) -> tuple[str, ...]:
        """The row's texts, one per column of SORT_KEYS (the browser and --once show the same)."""
        epoch = fmt.DASH if self.epoch is None else str(self.epoch)
        if self.epoch is not None and self.total_epochs:
            epoch = f"{self.epoch}/{self.total_epochs}"
        return (
            f"{self.name} {BEST_MARK}" if self.best else self.name,
            f"{self.status} {RECOVERY_MARK}{self.recoveries}" if self.recoveries else self.status,
            self.model or fmt.DASH,
            epoch,
            fmt.percent(self.best_val_accuracy),
            fmt.metric(self.best_val_loss),
            started_text(self.started, now),
            duration(self.duration_s),
        )


@dataclass
class _Files:
    """What the four files said, read into a RunModel (model/loading.py), as of one stat signature;
    `problem` joins their problems, the files' own first."""

    signature: Signature
    model: RunModel
    problem: str | None


def _signature(run_dir: Path) -> Signature:
    out = []
    for name in SUMMARY_FILES:
        try:
            st = os.stat(run_dir / name)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


PROBLEM_ORDER = (
    *SUMMARY_FILES,
    *(f"{name} values" for name in SUMMARY_FILES),
    f"{Files.RUN} recoveries",
)


def _read(run_dir: Path, signature: Signature) -> _Files:
    """The JSON files, and of a live run the last lines of steps.jsonl: its typical step time,
    for the crash rule the run screen applies too (trainer/monitor/liveness.py)."""
    model = load_run_model(run_dir, steps="recent")
    problems = [model.file_problems[k] for k in PROBLEM_ORDER if model.file_problems.get(k)]
    return _Files(signature, model, printable("; ".join(problems)) or None)


def _model_name(run: dict[str, Any]) -> str:
    """The model folder's name, as the monitor's header shows it first."""
    path = str((run.get("model") or {}).get("path") or "")
    return printable(fmt.model_folder_name(path)) if path else ""


def _number(value: Any) -> float | None:
    return value if is_number(value, finite=False) else None


def _summarize(
    run_dir: Path, name: str, f: _Files, now: float, probe: Callable[[Any], str] | None
) -> RunSummary:
    model = f.model
    state, run, result = model.state or {}, model.run or {}, model.result or {}
    # Only a live status needs the process table (psutil) and the run's lock: a finished run is
    # what it says.
    trainer = "unknown"
    if state.get("status") in LIVE_STATUSES:
        trainer = probe(state) if probe is not None else trainer_liveness(state, run_dir)
    model.tick(now, trainer)
    status, reason = model.status_and_reason
    elapsed, step = _number(state.get("elapsed_s")), state.get("global_step")
    best = state.get("best") or result.get("best") or model.best_record() or {}
    sweep = run.get("sweep") or {}
    return RunSummary(
        dir=run_dir,
        name=printable(name),
        status=status,
        reason=reason,
        model=_model_name(run),
        epoch=state.get("epoch") if isinstance(state.get("epoch"), int) else None,
        total_epochs=state.get("total_epochs") or run.get("epochs"),
        best_val_accuracy=_number(best.get("val_accuracy")),
        best_val_loss=_number(best.get("val_loss")),
        started=str(run.get("started_at") or ""),
        duration_s=elapsed if elapsed is not None else _number(result.get("total_time_s")),
        problem=f.problem,
        sweep_name=str(sweep.get("name") or ""),
        sweep_index=sweep.get("index"),
        grid=grid_values(sweep),
        global_step=step if isinstance(step, int) else None,
        error=printable(state.get("error") or result.get("error") or "") or None,
        recoveries=len(model.recoveries),
    )


class RunIndex:
    """Summaries of the runs under a root, re-read per run only when a file of it changed.
    `clock` and `probe` are the app's (injected in tests and snapshots; without a probe, each
    run's trainer is looked up through its own lock: control.trainer_liveness).

    A sweep's directory (the root, or any folder holding runs) gives the table its grid columns:
    after a scan, `grid` holds every sweep's keys (model/sweeps.py grid_keys) and `problems` what
    is wrong with a sweep.json (its folder under the root first); the best run of each sweep is
    marked (RunSummary.best)."""

    def __init__(
        self,
        root: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        probe: Callable[[Any], str] | None = None,
        max_depth: int = MAX_DEPTH,
    ):
        self.root = Path(root)
        self.clock, self.probe, self.max_depth = clock, probe, max_depth
        # Both bounded by the runs under the root: a run that goes is dropped from them.
        self._files: dict[Path, _Files] = {}
        self._summaries: dict[Path, RunSummary] = {}
        self._sweeps: dict[Path, SweepFile] = {}
        self.reads = 0  # run directories (re)read: what the cache saves
        self.scans = 0  # full scans (walks of the whole root)
        self.grid: tuple[str, ...] = ()
        self.problems: tuple[str, ...] = ()
        self.plots: tuple[SweepPlot, ...] = ()  # each sweep.json's panel data, by folder

    # A scan in progress shows what it found after PROGRESS_RUNS runs or PROGRESS_S seconds,
    # whichever comes first, then each time the count has doubled: the browser lays out every row
    # again for each (20,000 rows take seconds), so the rows shown cost at most twice the last.
    PROGRESS_S = 0.2
    PROGRESS_RUNS = 500

    def scan(self) -> list[RunSummary]:
        """Every run under the root, walked again (a full scan)."""
        (runs, _done), *_ = deque(self.scan_progressively(), maxlen=1)  # the last: all of them
        return runs

    def scan_progressively(self) -> Iterator[tuple[list[RunSummary], bool]]:
        """A full scan that yields (the runs found so far, sorted by directory, False) as it goes
        (PROGRESS_RUNS, PROGRESS_S), then (all of them, True) with `grid` and `problems` set:
        20,000 runs take seconds to read, and the first rows should not wait for the last."""
        self.scans += 1
        now, last, shown = self.clock(), time.monotonic(), 0
        summaries: dict[Path, RunSummary] = {}
        for run_dir in iter_runs(self.root, self.max_depth):
            summaries[run_dir] = self._summary(run_dir, now)
            n = len(summaries)
            if n >= max(self.PROGRESS_RUNS, 2 * shown) or (
                n >= 2 * shown and time.monotonic() - last >= self.PROGRESS_S
            ):
                yield [summaries[d] for d in sorted(summaries)], False
                last, shown = time.monotonic(), n
        for gone in set(self._files) - set(summaries):
            del self._files[gone]
        self._summaries = summaries
        yield self._finish(), True

    def refresh(self, dirs: Iterable[Path] = ()) -> list[RunSummary] | None:
        """Without walking the root: the runs in `dirs` re-read if a file of theirs changed (or
        dropped if they are no run any more), and the live ones worked out again at the clock's
        time (a heartbeat that stopped makes one crashed). What the watcher does when no file
        event says that a run appeared or went: its cost is the live runs', not the root's.
        None when no run's row changed (nothing to show again)."""
        now, changed = self.clock(), False
        for run_dir in dirs:
            if is_run_dir(run_dir) and os.path.isdir(run_dir):
                summary = self._summary(run_dir, now)
                changed |= self._summaries.get(run_dir) != summary
                self._summaries[run_dir] = summary
            else:
                changed |= self._summaries.pop(run_dir, None) is not None
                self._files.pop(run_dir, None)
        for run_dir, old in self._summaries.items():
            if old.live:
                summary = self._summaries[run_dir] = self._summary(run_dir, now)
                changed |= summary != old
        return self._finish() if changed else None

    def run_dir_of(self, path: str | Path) -> Path | None:
        """The run directory known to the last scan that holds `path` (a file in it or below),
        or None: then what changed is not inside a known run (a run appeared, or went, or a
        sweep.json changed), and only a full scan tells."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        if rel.startswith(os.pardir):
            return None
        folder = self.root
        for part in Path(rel).parts[:-1]:  # the folders holding it, from the root down
            folder = folder / part
            if folder in self._summaries:
                return folder
        return None

    def _summary(self, run_dir: Path, now: float) -> RunSummary:
        signature = _signature(run_dir)
        cached = self._files.get(run_dir)
        if cached is None or cached.signature != signature:
            cached = self._files[run_dir] = _read(run_dir, signature)
            self.reads += 1
        name = run_dir.relative_to(self.root).as_posix()  # unique: sweeps reuse names
        return _summarize(run_dir, name, cached, now, self.probe)

    def _finish(self) -> list[RunSummary]:
        dirs = sorted(self._summaries)
        out = [self._summaries[d] for d in dirs]
        sweeps = self._scan_sweeps({self.root, *(d.parent for d in dirs)})
        self.grid = grid_keys(sweeps.values(), out)
        self.problems = tuple(
            printable(f"{folder.relative_to(self.root).as_posix()}/{s.problem}")
            if folder != self.root
            else s.problem
            for folder, s in sorted(sweeps.items())
            if s.problem
        )
        self.plots = tuple(s.plot for _folder, s in sorted(sweeps.items()) if s.plot is not None)
        return mark_best(out, self.plots)

    def _scan_sweeps(self, folders: set[Path]) -> dict[Path, SweepFile]:
        """The sweep.json of each folder that holds one, re-read only when its signature changed."""
        found = {}
        for folder in folders:
            try:
                st = os.lstat(folder / Files.SWEEP)
            except OSError:
                continue
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._sweeps.get(folder)
            if cached is None or cached.signature != signature:
                cached = read_sweep_file(folder, signature)
            found[folder] = cached
        self._sweeps = found
        return found


# ------------------------------------------------------------------------------ filter and sort


def name_filter(pattern: str) -> Callable[[str], bool]:
    """`re:EXPR` searches a regular expression in the name; anything else is a case-insensitive
    glob (`exp-*`, `*lr?e-4*`) matched against the whole name (the path under the root, e.g.
    `sweep/exp-3`) or its last part, and a glob with no wildcard matches anywhere in the name.
    An empty pattern matches all. Raises re.error for a bad expression."""
    pattern = pattern.strip()
    if not pattern:
        return lambda _name: True
    if pattern.startswith("re:"):
        expr = re.compile(pattern[3:])
        return lambda name: expr.search(name) is not None
    glob = pattern.lower()
    if not any(c in glob for c in "*?["):
        glob = f"*{glob}*"
    return lambda name: (
        fnmatchcase(name.lower(), glob) or fnmatchcase(name.rsplit("/", 1)[-1].lower(), glob)
    )


SORT_KEYS: dict[str, Callable[[RunSummary], Any]] = {
    "name": lambda s: s.name.lower(),
    "status": lambda s: s.status,
    "model": lambda s: s.model.lower() or None,
    "epoch": lambda s: s.epoch,
    "best val acc": lambda s: s.best_val_accuracy,
    "best val loss": lambda s: s.best_val_loss,
    "started": lambda s: s.started or None,
    "duration": lambda s: s.duration_s,
}


def _grid_sort_key(key: str) -> Callable[[RunSummary], Any]:
    """A grid column's order: numbers by value (4 < 8 < 16), before any text; a dash is unknown."""

    def value(run: RunSummary) -> Any:
        text = dict(run.grid).get(key)
        if text is None or text == fmt.DASH:
            return None
        try:
            return (0, float(text), "")
        except ValueError:
            return (1, 0.0, text.lower())

    return value


def sort_runs(runs: Iterable[RunSummary], column: str, reverse: bool = False) -> list[RunSummary]:
    """Sorted by a column of SORT_KEYS or a grid column (`grid:` and its key), ties by name; runs
    without a value go last either way."""
    runs, grid = list(runs), column.startswith(GRID_ID)
    key = _grid_sort_key(column[len(GRID_ID) :]) if grid else SORT_KEYS[column]
    known = [r for r in runs if key(r) is not None]
    unknown = [r for r in runs if key(r) is None]
    known.sort(key=lambda r: r.name.lower())
    known.sort(key=key, reverse=reverse)
    return known + sorted(unknown, key=lambda r: r.name.lower())


# ------------------------------------------------------------------------------ --once


RECENT_S = 180 * 86400  # as `ls -l`: a start within half a year shows its time, else its year


def _utc(text: str) -> datetime:
    """An ISO 8601 time in UTC (one without a zone is taken as UTC). Raises ValueError for text
    that is no date, OverflowError or OSError for one past what datetime holds in UTC."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def started_text(text: str, now: float | None = None) -> str:
    """run.json's ISO started_at in UTC as `ls -l` dates a file (12 columns, the same on every
    machine): `Nov 14 22:13` within half a year of `now`, else `Nov 14  2023`. Other text as it
    is, printable and short; a dash when there is none. A date that cannot be put in UTC (year 1
    at +14:00, year 9999 at -01:00: past what datetime holds) is shown as the text it is, never
    an exception."""
    if not text:
        return "–"
    try:
        when = _utc(text)
        age = abs((time.time() if now is None else now) - when.timestamp())
    except (ValueError, OverflowError, OSError):
        return printable(text)[:12]
    if age < RECENT_S:
        return when.strftime("%b %d %H:%M")
    return when.strftime("%b %d  %Y")


def started_age(text: str, now: float | None = None) -> str:
    """run.json's started_at as an age, the short form of `started` where the browser is narrow:
    `now`, `5m ago`, `3h ago`, `2d ago`, `6w ago`, `2y ago` (7 columns at most, a whole number of
    the largest unit that fits). A date in the future (another machine's clock) is `now`; text that
    is no date is shown as started_text shows it."""
    if not text:
        return "–"
    try:
        age = (time.time() if now is None else now) - _utc(text).timestamp()
    except (ValueError, OverflowError, OSError):
        return started_text(text, now)
    return rough_age(age)


GRID_ID = "grid:"  # a grid column's key: the prefix and the grid key (never a SORT_KEYS name)
RIGHT_ALIGNED = frozenset({"epoch", "best val acc", "best val loss", "duration"})


def table_columns(grid: Iterable[str] = ()) -> dict[str, str]:
    """The table's columns, id → header: SORT_KEYS, with a sweep's grid keys after `status`
    (headers: model/sweeps.py headers). The browser and --once show the same."""
    base = {name: name for name in SORT_KEYS}
    cols = {f"{GRID_ID}{k}": label for k, label in headers(grid, taken=base).items()}
    names = list(base)
    return {**{n: n for n in names[:2]}, **cols, **{n: n for n in names[2:]}}


def row_texts(run: RunSummary, columns: Iterable[str], now: float | None = None) -> list[str]:
    """The run's text in each of `columns` (ids of table_columns); a dash where its run.json has
    no value for a grid key."""
    base = dict(zip(SORT_KEYS, run.cells(now), strict=True))
    values = dict(run.grid)
    return [
        values.get(c[len(GRID_ID) :], fmt.DASH) if c.startswith(GRID_ID) else base[c]
        for c in columns
    ]


def plain_table(runs: list[RunSummary], now: float | None = None, grid: Iterable[str] = ()) -> str:
    """The browser's table as plain text (`entrenar-tui monitor ROOT --once`, cron, CI): every
    column, a sweep's grid keys included, the best run of a sweep marked."""
    columns = table_columns(grid)
    rows = [tuple(columns.values()), *(row_texts(r, columns, now) for r in runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    right = {i for i, c in enumerate(columns) if c in RIGHT_ALIGNED}
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
