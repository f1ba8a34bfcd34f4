"""`entrenar-train sweep CONFIG --grid KEY=V1,V2 [...]`: check the whole sweep, then run it.

Everything is checked before the first run starts, every problem named at once: every grid key
(did you mean), every run's config (one line naming the run and the key), every distinct data
section's files, every run's model and LoRA keys against the model folder, and, when the directory
holds an earlier call's sweep.json, that this is the same sweep. `--dry-run` runs the same checks.
Rerunning the same command continues it: completed runs are kept, the others are started with
--auto-resume (which resumes an unfinished run and starts a missing one).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trainer.config import (
    Config,
    check_config_from_raw,
    config_from_raw,
    parse_override,
    read_config_file,
    split_sweep_table,
    toml_value,
)
from trainer.errors import UserError, gather
from trainer.inputs import check_data_too
from trainer.sweep.plan import Grid, Run, build_grid


@dataclass
class SweepPlan:
    config_path: Path
    overrides: list[str]
    grid: Grid
    base: Config
    directory: Path
    runs: list[Run]
    configs: list[Config]  # each run's, checked

    def command(self, run: Run, config: Config) -> list[str]:
        """The run's `entrenar-train` command: the sweep's config and overrides, the run's values
        (as resolved: a relative path means what it meant to the sweep), its directory."""
        from trainer.monitor.control import trainer_command

        values = [f"{key}={toml_value(config_value(config, key))}" for key in self.grid.keys]
        return trainer_command(
            str(self.config_path.resolve()),
            *self.overrides,
            *values,
            f"output.dir={self.directory / run.name}",
            "--auto-resume",
        )


def config_value(config: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def shown(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={toml_value(v)}" for k, v in values.items())


def plan_sweep(args: Any) -> SweepPlan:
    """The sweep the arguments describe, every run's config checked; nothing written."""
    if args.parallel < 1:
        raise UserError(f"--parallel {args.parallel}: must be at least 1")
    config_path = Path(args.config)
    raw, table = split_sweep_table(read_config_file(config_path), str(config_path))
    grid = build_grid(table, args.grid, args.random, args.seed)
    overridden = {".".join(parse_override(text)[:2]) for text in args.overrides}
    for key in grid.keys:
        if key in overridden:
            raise UserError(f"{key}: both swept and overridden; give its values with --grid only")
    base_check = check_config_from_raw(raw, config_path, args.overrides)
    if base_check.problems:  # the base config's mistakes, and its data's, all at once
        check_data_too(base_check)
    base = base_check.valid()
    directory = Path(base.output.dir)
    runs = grid.runs(directory.name)
    problems: list[str] = []
    configs = [
        gather(problems, run_config, raw, config_path, args.overrides, grid, run, directory)
        for run in runs
    ]
    built = [(run, config) for run, config in zip(runs, configs) if config is not None]
    gather(problems, check_data, built)
    gather(problems, check_models, built)
    if problems:
        raise UserError(*problems)
    return SweepPlan(config_path, list(args.overrides), grid, base, directory, runs, configs)


def run_config(
    raw: dict[str, Any], path: Path, overrides: list[str], grid: Grid, run: Run, directory: Path
) -> Config:
    """One run's config, checked: a [sweep] value as if written in the file (its paths relative
    to it), a --grid value as an override (relative to the working directory)."""
    raw = {s: dict(v) if isinstance(v, dict) else v for s, v in raw.items()}
    for axis in grid.axes:
        if axis.from_file:
            section, key = axis.key.split(".")
            raw.setdefault(section, {})[key] = run.values[axis.key]
    given = [f"{a.key}={toml_value(run.values[a.key])}" for a in grid.axes if not a.from_file]
    try:
        return config_from_raw(
            raw, path, [*overrides, *given, f"output.dir={directory / run.name}"]
        )
    except UserError as e:
        raise UserError(
            *(f"sweep run {run.index} ({shown(run.values)}): {p}" for p in e.problems)
        ) from None


def check_data(runs: list[tuple[Run, Config]]) -> None:
    """Each distinct data section's files read and checked, as a run's start would, before any run
    starts; every problem of every one raised together (named by run where the grid varies them)."""
    from trainer.data import load_corpus

    sections = {}
    for run, config in runs:
        sections.setdefault(orjson.dumps(config.to_dict()["data"]), (run, config))
    problems: list[str] = []
    for run, config in sections.values():
        found: list[str] = []
        gather(found, load_corpus, config.data, config.train.seed)
        named = len(sections) > 1
        problems += [
            f"sweep run {run.index} ({shown(run.values)}): {p}" if named else p for p in found
        ]
    if problems:
        raise UserError(*problems)


def check_models(runs: list[tuple[Run, Config]]) -> None:
    """Each distinct model + LoRA section against its model folder (lora.r, target modules,
    max_length), as a run's start would, before any run starts."""
    from trainer.model import inspect_model

    seen: set[bytes] = set()
    problems: list[str] = []
    for run, config in runs:
        key = orjson.dumps([config.to_dict()["model"], config.to_dict()["lora"]])
        if key in seen:
            continue
        seen.add(key)
        found: list[str] = []
        gather(found, inspect_model, config.model, config.lora)
        problems += [f"sweep run {run.index} ({shown(run.values)}): {p}" for p in found]
    if problems:
        raise UserError(*problems)


def describe(plan: SweepPlan) -> str:
    grid, n = plan.grid, len(plan.runs)
    how = f"a grid of {' × '.join(str(len(a.values)) for a in grid.axes)} ({', '.join(grid.keys)})"
    if grid.mode == "random":
        how = f"drawn with seed {grid.seed} from {how} = {grid.size}"
    return f"sweep of {n} run{'s' if n != 1 else ''}: {how}, in {plan.directory}"


def print_table(keys: list[str], rows: list[dict[str, Any]], best: int | None = None) -> None:
    """The runs as a table on stdout: directory, the grid values, and status and best metrics
    when the rows have them (the best run starred)."""
    status = any("status" in r for r in rows)
    header = ["run", *keys] + (["status", "best val loss", "val acc"] if status else [])
    lines = [header]
    for r in rows:
        cells = [r["dir"], *(toml_value(r["values"][k]) for k in keys)]
        if status:
            loss, acc = r.get("best_val_loss"), r.get("best_val_accuracy")
            cells += [
                r["status"],
                f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                f"{acc:.3f}" if isinstance(acc, (int, float)) else "-",
            ]
        lines.append(cells)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        mark = "*" if best is not None and i > 0 and rows[i - 1].get("index") == best else " "
        print(mark + " " + "  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    sys.stdout.flush()


def usable_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = [x.strip() for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    listed = [x for x in listed if x]
    return listed[:count] if listed else [str(i) for i in range(count)]
