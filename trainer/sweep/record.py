"""sweep.json: what a sweep is (its grid, its mode, its base config) and where each of its runs
stands (status, exit code, best metrics), rewritten atomically as runs start and finish. It is how
a script checks a sweep, and what a rerun of the same command is checked against. Torch-free.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import orjson

from trainer.config import config_differences, flat, toml_value
from trainer.errors import UserError
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.control import directory_flock
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files, tagged
from trainer.monitor.sweep import best_index
from trainer.monitor.text import utc_now
from trainer.sweep.importance import finished_points, importance
from trainer.sweep.plan import Grid, Run
from trainer.sweep.search import DEFAULTS, Search


def sweep_lock(directory: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the sweep's lock (its directory's flock): the sweep and its trial processes update
    sweep.json one at a time, none losing another's change."""
    return directory_flock(directory)


RUN_STATUSES = ("pending", "running", "completed", "stopped", "failed", "pruned")
SWEEP_STATUSES = ("running", "completed", "failed", "stopped")
IDENTITY = ("keys", "grid", "mode", "seed", "samples", "base_config_hash", "search", "space")
IDENTITY += ("trials", "objective", "prune")
SAID_MAX = 10  # differences named when a rerun meets another sweep


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of a resolved config, output.dir left out (a sweep's runs each have their own)."""
    values = {k: v for k, v in flat(config).items() if k != "output.dir"}
    return "sha256:" + hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()


def identity(
    grid: Grid, base_config: dict[str, Any], search: Search | None = None
) -> dict[str, Any]:
    """What makes two calls the same sweep: the grid (keys in order, values), the mode, the seed and
    N of a random draw, the search (a study's space, trials, objective, pruner), and the base config
    (after overrides, output.dir left out). --target may change between calls."""
    searched = (search or Search(grid.mode)).record()
    return {
        **searched,
        "keys": grid.keys,
        "grid": [{"key": a.key, "values": a.values} for a in grid.axes],
        "mode": grid.mode,
        "seed": grid.seed,
        "samples": grid.samples,
        "size": grid.size,
        "base_config": base_config,
        "base_config_hash": config_hash(base_config),
    }


def read_sweep(path: Path) -> dict[str, Any] | None:
    """A sweep.json, checked (schema, version); None if there is none."""
    try:
        return read_contract_json(path)
    except ContractError as e:
        raise UserError(f"{path.parent}/{e}; not a sweep this version can continue") from None


def check_same_sweep(previous: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse (one line naming what differs) to continue another sweep's directory."""

    def earlier(key: str) -> Any:  # a sweep.json from before a field: what it meant
        if key == "search" and key not in previous:
            return previous.get("mode")
        return previous.get(key, DEFAULTS.get(key))

    if all(earlier(k) == now[k] for k in IDENTITY):
        return
    said = [f"{what} ({before} → {after})" for what, before, after in _grid_changes(previous, now)]
    said += [f"{k} ({earlier(k)} → {now[k]})" for k in IDENTITY[6:] if earlier(k) != now[k]]
    base = previous.get("base_config")
    said += config_differences(base if isinstance(base, dict) else {}, now["base_config"], ("output.dir",))  # fmt: skip
    if len(said) > SAID_MAX:  # a damaged sweep.json of 20,000 keys: one readable line still
        said = [*said[:SAID_MAX], f"and {len(said) - SAID_MAX:,} more"]
    said = [x if len(x) <= 200 else f"{x[:150]}...{x[-40:]}" for x in said]
    raise UserError(
        f"{path}: this directory holds another sweep: {'; '.join(said) or 'its grid differs'}; "
        "rerun that sweep's command to continue it, or choose another output.dir"
    )


def _grid_changes(previous: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, str, str]]:
    def shown(values: Any) -> str:
        return ",".join(toml_value(v) for v in values) if isinstance(values, list) else str(values)

    before = {
        a.get("key"): a.get("values") for a in previous.get("grid") or [] if isinstance(a, dict)
    }
    after = {a["key"]: a["values"] for a in now["grid"]}
    changes = []
    if previous.get("keys") != now["keys"]:
        changes.append(("grid keys", shown(previous.get("keys")), shown(now["keys"])))
    for key in now["keys"]:
        if key in before and before[key] != after[key]:
            changes.append((f"--grid {key}", shown(before[key]), shown(after[key])))
    for field in ("mode", "seed", "samples"):
        if previous.get(field) != now[field]:
            changes.append((field, str(previous.get(field)), str(now[field])))
    return changes


class SweepRecord:
    """sweep.json in memory; every change is written at once (atomically)."""

    def __init__(self, path: Path, document: dict[str, Any], *, merge: bool = False):
        self.path, self.doc = path, document
        self._weighed: Any = None  # the finished runs the importances were last computed from
        self.merge = merge  # each write takes the runs from the file first (others update it too)

    @classmethod
    def load(cls, path: Path) -> SweepRecord:
        """The record on disk, for a process that updates one run of it (a trial)."""
        doc = read_sweep(path)
        if doc is None:
            raise UserError(
                f"{path}: no sweep.json; plan the sweep with entrenar-train sweep first"
            )
        return cls(path, doc, merge=True)

    def _take_runs_from_disk(self) -> None:
        try:
            on_disk = read_contract_json(self.path)
        except ContractError:
            return
        runs = (on_disk or {}).get("runs")
        if isinstance(runs, list) and len(runs) == len(self.doc["runs"]):
            self.doc["runs"] = runs

    @classmethod
    def begin(
        cls, path: Path, ident: dict[str, Any], runs: list[Run], about: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> SweepRecord:  # fmt: skip
        """The record of a (continued) sweep: `about` holds who runs it and how (argv, pid,
        parallel...); a previous record's start time is kept."""
        entries = [
            {
                "index": run.index,
                "dir": run.name,
                "values": run.values,
                "status": "pending",
                "exit_code": None,
                "best_epoch": None,
                "best_val_loss": None,
                "best_val_accuracy": None,
                "value": None,
                "pruned_at_epoch": None,
                "error": None,
                "started_at": None,
                "finished_at": None,
            }
            for run in runs
        ]
        started = (previous or {}).get("started_at") or utc_now()
        document = {
            "name": path.parent.name,
            **ident,
            **about,
            "status": "running",
            "started_at": started,
            "updated_at": started,
            "best_run": None,
            "importance": None,
            "runs": entries,
        }
        return cls(path, document)

    def run(self, index: int) -> dict[str, Any]:
        return self.doc["runs"][index - 1]

    def update_run(self, index: int, *, write: bool = True, **fields: Any) -> None:
        status = fields.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        if not write:
            self.run(index).update(fields)
            return
        with sweep_lock(self.path.parent):
            if self.merge:
                self._take_runs_from_disk()
            self.run(index).update(fields)
            self._write()

    def reload_run(self, index: int) -> dict[str, Any]:
        """A run's entry as the file has it now (a trial process wrote it)."""
        with sweep_lock(self.path.parent):
            self._take_runs_from_disk()
        return self.run(index)

    def finish(self, status: str) -> None:
        if status not in SWEEP_STATUSES:
            raise ValueError(f"unknown sweep status {status!r}")
        self.doc["status"] = status
        self.write()

    def best_run(self) -> int | None:
        """The completed run with the best objective (the first of equals). By validation loss
        (the default) it is the rule the runs browser marks its best run by
        (trainer.monitor.sweep.best_index); by a metric to maximize, the highest `value`."""
        objective = self.doc.get("objective") or {}
        if objective.get("metric", "val_loss") == "val_loss":
            runs = self.doc["runs"]
            return best_index((r["index"], r["status"], r.get("best_val_loss")) for r in runs)
        sign = -1 if objective.get("direction") == "maximize" else 1
        return best_index(
            (r["index"], r["status"], sign * r["value"] if number(r.get("value")) else None)
            for r in self.doc["runs"]
        )

    def weigh(self) -> None:
        """sweep.json's `importance`, computed again only when the finished runs changed (a run
        ended): optuna's evaluation is not free, and most writes are a run starting."""
        finished = finished_points(self.doc)
        if finished != self._weighed or "importance" not in self.doc:
            self.doc["importance"] = importance(self.doc) or None
            self._weighed = finished

    def write(self) -> None:
        """Write the whole record (under the sweep's lock; a merging record takes the runs' entries
        from the file first)."""
        with sweep_lock(self.path.parent):
            if self.merge:
                self._take_runs_from_disk()
            self._write()
        self.merge = True  # from now on, trials may write beside this process

    def _write(self) -> None:
        self.doc["best_run"] = self.best_run()
        self.weigh()
        self.doc["updated_at"] = utc_now()
        atomic_write_json(self.path, tagged(Files.SWEEP, self.doc))


def target_reached(doc: dict[str, Any]) -> bool:
    """--target: whether a run's objective value in sweep.json has reached it."""
    target = doc.get("target")
    if not isinstance(target, (int, float)):
        return False
    maximize = (doc.get("objective") or {}).get("direction") == "maximize"
    for r in doc.get("runs") or []:
        value = r.get("value") if isinstance(r, dict) else None
        if isinstance(value, (int, float)) and (value >= target if maximize else value <= target):
            return True
    return False


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
