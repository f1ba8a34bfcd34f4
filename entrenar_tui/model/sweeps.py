"""What the runs browser shows of a sweep: its grid keys as columns (sweep.json `keys`, in order),
each run's grid values (run.json `sweep.values`) as short printable cells, and its best run.

sweep.json is untrusted input like any run file: it is read through the contract's safe reader (a
FIFO, a huge file or a link is a problem line, never a hang) and its values checked against the
contract's types (model/validation.py). A run's values come from its own run.json, so a sweep whose
sweep.json is unreadable still shows them (keys in the order the runs name them). No Textual.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from entrenar_tui import formatting as fmt
from entrenar_tui.model.validation import clean_sweep
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files
from trainer.monitor.sweep import DEFAULT_OBJECTIVE, best_index, objective_of, objective_value
from trainer.monitor.text import printable
from trainer.monitor.values import is_int

MAX_CELL = 16  # a grid value's cell, in characters: long values end in …
BEST_MARK = "★"  # after the best run's name, in the browser and in --once
# Grid columns at most (a sweep.json's keys, a run's values): a tag of 20,000 keys would be 20,000
# columns to lay out on every change; a real grid has a handful.
MAX_GRID_KEYS = 32
MAX_PLOT_RUNS = 2000  # lines of a parallel-coordinates plot: past this, the first ones


@dataclass(frozen=True)
class PlotRun:
    """One run of a sweep as its parallel-coordinates line: its grid values as sweep.json holds
    them (one a key, in the plot's key order; None where missing), its objective, its status."""

    index: int
    name: str
    values: tuple[Any, ...]
    objective: float | None
    status: str


@dataclass(frozen=True)
class SweepPlot:
    """What the sweep panel draws (`p` in the browser) and --once prints: the runs of one
    sweep.json, its objective, its best run and its importances (computed by the trainer)."""

    folder: Path
    name: str
    keys: tuple[str, ...]
    metric: str
    direction: str  # minimize | maximize
    runs: tuple[PlotRun, ...]
    best: int | None  # the best run's index
    importance: tuple[tuple[str, float], ...]  # (key, share), most important first
    categories: dict[str, tuple[Any, ...]]  # each key's grid values in the grid's order


@dataclass(frozen=True)
class SweepFile:
    """What a sweep.json said, as of one stat signature: its grid keys, or what is wrong with it;
    and what its panel draws (None when it could not be read)."""

    signature: tuple[int, int, int] | None
    keys: tuple[str, ...]
    problem: str | None
    plot: SweepPlot | None = None


def read_sweep_file(sweep_dir: Path, signature: tuple[int, int, int] | None) -> SweepFile:
    """sweep_dir/sweep.json's keys (printable, each once); none and no problem when there is no
    sweep.json; none and a problem when it cannot be read or holds values of the wrong type."""
    try:
        raw = read_contract_json(sweep_dir / Files.SWEEP)
    except ContractError as e:
        return SweepFile(signature, (), printable(e))
    if raw is None:
        return SweepFile(signature, (), None)
    cleaned, problem = clean_sweep(raw)
    keys = tuple(dict.fromkeys(cleaned.get("keys") or []))[:MAX_GRID_KEYS]
    return SweepFile(signature, keys, problem, sweep_plot(sweep_dir, keys, cleaned))


def sweep_plot(folder: Path, keys: tuple[str, ...], sweep: dict[str, Any]) -> SweepPlot:
    """A checked sweep.json (model/validation.py clean_sweep: keys printable, types right) as the
    panel's data. The best run is sweep.json's `best_run` when it names a run, else the rule's."""
    metric, direction = objective_of(sweep)
    runs = []
    for entry in (sweep.get("runs") or [])[:MAX_PLOT_RUNS]:
        if not isinstance(entry, dict) or not is_int(entry.get("index")):
            continue
        values = entry.get("values") if isinstance(entry.get("values"), dict) else {}
        runs.append(
            PlotRun(
                index=entry["index"],
                name=printable(entry.get("dir") or f"run {entry['index']}"),
                values=tuple(values.get(k) for k in keys),
                objective=objective_value(entry, metric),
                status=printable(entry.get("status") or "pending"),
            )
        )
    best = sweep.get("best_run")
    if best not in {r.index for r in runs}:
        sign = 1 if direction == "minimize" else -1
        scored = [(sign * r.objective, r.index, r.status) for r in runs if r.objective is not None]
        best = best_index((i, st, v) for v, i, st in scored)
    importance = sweep.get("importance") or {}
    categories = {
        axis["key"]: tuple(axis["values"])
        for axis in sweep.get("grid") or []
        if isinstance(axis, dict)
        and axis.get("key") in keys
        and isinstance(axis.get("values"), list)
    }
    return SweepPlot(
        folder=folder,
        name=printable(sweep.get("name") or folder.name),
        keys=keys,
        metric=printable(metric),
        direction=direction,
        runs=tuple(runs),
        best=best,
        importance=tuple(sorted(importance.items(), key=lambda kv: -kv[1])),
        categories=categories,
    )


def value_text(value: Any) -> str:
    """A grid value as a cell: lists joined with commas, booleans as TOML writes them, printable,
    at most MAX_CELL characters."""
    if isinstance(value, list):
        text = ",".join(value_text(v) for v in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = fmt.DASH
    else:
        text = str(value)
    text = printable(text)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def grid_values(tag: Any) -> tuple[tuple[str, str], ...]:
    """run.json `sweep.values` (already checked to be an object) as (key, cell text) pairs."""
    values = (tag or {}).get("values") if isinstance(tag, dict) else None
    if not isinstance(values, dict):
        return ()
    kept = itertools.islice(values.items(), MAX_GRID_KEYS)
    return tuple((printable(k), value_text(v)) for k, v in kept)


def grid_keys(sweeps: Iterable[SweepFile], runs: Iterable[Any]) -> tuple[str, ...]:
    """The table's grid columns: each sweep.json's keys in its order, then any key a run names that
    no sweep.json did (a sweep.json that is missing or unreadable)."""
    keys = dict.fromkeys(k for sweep in sweeps for k in sweep.keys)
    for run in runs:
        if len(keys) >= MAX_GRID_KEYS:
            break
        keys.update(dict.fromkeys(k for k, _text in run.grid))
    return tuple(keys)[:MAX_GRID_KEYS]


def headers(keys: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """Each grid key's column header: its last part (`lora.r` → `r`), or the whole key when that
    part is shared by another key or by a column of the table (`taken`)."""
    keys, taken = list(keys), set(taken)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {
        k: part if last.count(part) == 1 and part not in taken else k
        for k, part in zip(keys, last, strict=True)
    }


def mark_best(runs: list[Any], plots: tuple[SweepPlot, ...] = ()) -> list[Any]:
    """The runs with `best` set on the best run of each sweep (runs of one sweep: the same folder
    and sweep name), by trainer.monitor.sweep.best_index, the rule of sweep.json's `best_run`; a
    sweep whose sweep.json has an objective other than the validation loss (a search's
    `--objective`) by that file's best run, the one its panel highlights."""
    groups: dict[tuple[Path, str], list[Any]] = {}
    for run in runs:
        if run.sweep_index is not None:
            groups.setdefault((run.dir.parent, run.sweep_name), []).append(run)
    by_objective = {
        (plot.folder, plot.name): plot.best
        for plot in plots
        if (plot.metric, plot.direction) != DEFAULT_OBJECTIVE
    }
    best = set()
    for where, members in groups.items():
        index = by_objective.get(where)
        if where not in by_objective:
            index = best_index((r.sweep_index, r.status, r.best_val_loss) for r in members)
        best |= {r.key for r in members if r.sweep_index == index}
    return [replace(r, best=r.key in best) if r.best != (r.key in best) else r for r in runs]
