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
from trainer.sweep.plan import Axis, Grid, Run, build_grid
from trainer.sweep.search import Search, choose_search, study_space
from trainer.sweep.space import parse_param, parse_param_option


@dataclass
class SweepPlan:
    config_path: Path
    overrides: list[str]
    grid: Grid
    base: Config
    directory: Path
    runs: list[Run]
    configs: list[Config]  # each run's, checked (a study sweep: its space's corners')
    search: Search

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
    """The sweep the arguments describe, every run's config checked; nothing written. A study
    sweep's runs get their values when they start, so its configs are checked at the corners of
    its space (each range's ends, each choice)."""
    if args.parallel < 1:
        raise UserError(f"--parallel {args.parallel}: must be at least 1")
    config_path = Path(args.config)
    raw, table = split_sweep_table(read_config_file(config_path), str(config_path))
    lists = {key: values for key, values in table.items() if isinstance(values, list)}
    params = [
        parse_param(key, spec, f"{config_path}: [sweep] {key}", from_file=True)
        for key, spec in table.items()
        if isinstance(spec, str)
    ]
    params += [parse_param_option(text) for text in args.param]
    search = choose_search(args, len(lists) + len(args.grid), params)
    if search.study:
        grid = build_grid(lists, args.grid, None, None, ranges=True)
        search.params = study_space(grid, params)
        grid = Grid([Axis(p.key, p.corners(), p.from_file) for p in search.params], search.search)
        grid.seed, grid.samples = search.seed, search.trials
    else:
        samples = args.random if args.random is not None else search.trials
        grid = build_grid(lists, args.grid, samples, args.seed)
    overridden = {".".join(parse_override(text)[:2]) for text in args.overrides}
    for key in grid.keys:
        if key in overridden:
            raise UserError(f"{key}: both swept and overridden; give its values with --grid only")
    base_check = check_config_from_raw(raw, config_path, args.overrides)
    if base_check.problems:  # the base config's mistakes, and its data's, all at once
        check_data_too(base_check)
    base = base_check.valid()
    directory = Path(base.output.dir)
    runs = study_runs(directory.name, search) if search.study else grid.runs(directory.name)
    checked = corner_runs(search) if search.study else runs
    problems: list[str] = []
    configs = [
        gather(problems, run_config, raw, config_path, args.overrides, grid, run, directory)
        for run in checked
    ]
    built = [(run, config) for run, config in zip(checked, configs) if config is not None]
    gather(problems, check_data, built)
    gather(problems, check_models, built)
    if problems:
        raise UserError(*problems)
    return SweepPlan(
        config_path, list(args.overrides), grid, base, directory, runs, configs, search
    )


def study_runs(name: str, search: Search) -> list[Run]:
    """A study sweep's N runs, named as a grid's; their values come from the study."""
    width = len(str(search.trials))
    return [Run(i, f"{name}-{i:0{width}d}", {}) for i in range(1, (search.trials or 0) + 1)]


def corner_runs(search: Search) -> list[Run]:
    """Runs (index 0: not real) at the corners of a study's space: every key at its first corner,
    then each key's every corner in turn; a value no config takes is found before any run."""
    first = {p.key: p.corners()[0] for p in search.params}
    seen, runs = set(), []
    for param in search.params:
        for value in param.corners():
            values = {**first, param.key: value}
            token = orjson.dumps(values, default=repr)
            if token not in seen:
                seen.add(token)
                runs.append(Run(0, "", values))
    return runs


def run_label(run: Run) -> str:
    """How an error names a run: `sweep run 3 (lora.r=0)`, or a study's `search space (...)`."""
    return f"{'sweep run ' + str(run.index) if run.index else 'search space'} ({shown(run.values)})"


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
        raise UserError(*(f"{run_label(run)}: {p}" for p in e.problems)) from None


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
        problems += [f"{run_label(run)}: {p}" if named else p for p in found]
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
        problems += [f"{run_label(run)}: {p}" for p in found]
    if problems:
        raise UserError(*problems)


def describe(plan: SweepPlan) -> str:
    grid, n = plan.grid, len(plan.runs)
    how = f"a grid of {' × '.join(str(len(a.values)) for a in grid.axes)} ({', '.join(grid.keys)})"
    if grid.mode == "random":
        how = f"drawn with seed {grid.seed} from {how} = {grid.size}"
    if plan.search.study:
        space = ", ".join(f"{p.key}={p.shown()}" for p in plan.search.params)
        how = f"{plan.search.search} search (seed {plan.search.seed}) over {space}"
        how += f", {plan.search.direction[:3]} {plan.search.metric}"
        how += f", pruner {plan.search.prune}" if plan.search.prune != "none" else ""
    return f"sweep of {n} run{'s' if n != 1 else ''}: {how}, in {plan.directory}"


def print_table(keys: list[str], rows: list[dict[str, Any]], best: int | None = None) -> None:
    """The runs as a table on stdout: directory, the grid values, and status and best metrics
    when the rows have them (the best run starred)."""
    status = any("status" in r for r in rows)
    header = ["run", *keys] + (["status", "best val loss", "val acc"] if status else [])
    lines = [header]
    for r in rows:
        values = r.get("values") or {}  # (a study's run not started yet has none)
        cells = [r["dir"], *(toml_value(values[k]) if k in values else "-" for k in keys)]
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
