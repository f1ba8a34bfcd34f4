"""Which hyperparameter of a sweep mattered: optuna's importance of each grid key for the sweep's
objective, from the runs that finished, written into sweep.json's `importance`.

Any search (grid, random, tpe) gets the same treatment: an in-memory optuna study holds one trial
per completed run (its grid values, its objective value), each key's distribution spanning the
values tried (numbers: an int or float range, log when they span more than two decades; anything
else: categories). optuna 5's default evaluator is PED-ANOVA (PedAnovaImportanceEvaluator): it
fits Parzen estimators, draws nothing at random, so the same runs give the same importances. It
weighs what it takes to reach the best `target_quantile` of the trials (0.1 by default); optuna
advises at least 5 trials there, and a sweep of 12 runs would have 1 (then whichever key the single
best run has a rare value of looks important: noise). So the quantile is raised to hold 5 runs
(at most half of them); from 50 runs on it is optuna's default.

optuna is the optional `sweep` extra and is imported here only: without it a sweep runs as before
and its sweep.json has no importances. Torch-free.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import orjson

from trainer.monitor.sweep import objective_of, objective_value
from trainer.monitor.values import is_int, is_number

LOG_SPAN = 100.0  # numbers spanning more than two decades are a log range (learning rates)
TARGET_RUNS = 5  # runs PED-ANOVA's target quantile should hold (optuna's advice)
DEFAULT_QUANTILE, MAX_QUANTILE = 0.1, 0.5


def finished_points(sweep: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    """(grid values, objective value) of each completed run whose objective is a finite number. A
    pruned or failed run has no final value: it is not a finished trial."""
    metric, _direction = objective_of(sweep)
    points = []
    for entry in sweep.get("runs") or []:
        if not isinstance(entry, dict) or entry.get("status") != "completed":
            continue
        value = objective_value(entry, metric)
        if value is not None and isinstance(entry.get("values"), dict):
            points.append((entry["values"], value))
    return points


def importance(sweep: dict[str, Any]) -> dict[str, float]:
    """{"section.key": importance} of a sweep.json's keys, most important first, summing to 1.
    Empty when there is nothing to weigh: fewer than two finished runs, fewer than two keys whose
    value differs between them, objective values all equal, or optuna not installed."""
    points = finished_points(sweep)
    keys = [k for k in sweep.get("keys") or [] if isinstance(k, str)]
    varied = [k for k in keys if len({_label(v.get(k)) for v, _ in points}) > 1]
    if len(points) < 2 or len(varied) < 2 or len({value for _, value in points}) < 2:
        return {}
    try:
        import optuna
    except ImportError:
        return {}
    _metric, direction = objective_of(sweep)
    return _evaluate(optuna, points, varied, direction)


def _evaluate(
    optuna: Any, points: list[tuple[dict[str, Any], float]], keys: list[str], direction: str
) -> dict[str, float]:
    from optuna.importance import PedAnovaImportanceEvaluator

    distributions = {k: _distribution(optuna, [v.get(k) for v, _ in points]) for k in keys}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" per run end
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature and few-trials notes
            study = optuna.create_study(direction=direction)
            for values, value in points:
                params = {k: _param(distributions[k], values.get(k)) for k in keys}
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=distributions, value=value
                    )
                )
            sign = 1.0 if direction == "minimize" else -1.0  # PED-ANOVA: lower is better
            found = optuna.importance.get_param_importances(
                study,
                evaluator=PedAnovaImportanceEvaluator(target_quantile=target_quantile(len(points))),
                target=lambda trial: sign * trial.value,
            )
    except (ValueError, RuntimeError):  # a degenerate study: no importances rather than no sweep
        return {}
    finally:
        optuna.logging.set_verbosity(verbosity)
    cleaned = {k: float(v) for k, v in found.items() if math.isfinite(v) and v >= 0}
    total = sum(cleaned.values())
    if not total > 0:
        return {}
    return {k: v / total for k, v in sorted(cleaned.items(), key=lambda kv: -kv[1])}


def target_quantile(runs: int) -> float:
    """The share of the best runs PED-ANOVA weighs: enough to hold TARGET_RUNS of them."""
    return min(MAX_QUANTILE, max(DEFAULT_QUANTILE, TARGET_RUNS / runs))


def _numbers(values: Iterable[Any]) -> list[float] | None:
    values = list(values)
    return values if all(is_number(v) for v in values) else None


def _distribution(optuna: Any, values: list[Any]) -> Any:
    """The range a key's tried values span: integers, floats (log over two decades) or, for
    anything else (strings, booleans, lists), the categories seen."""
    numbers = _numbers(values)
    dists = optuna.distributions
    if numbers is not None:
        low, high = min(numbers), max(numbers)
        if all(is_int(v) for v in numbers):
            return dists.IntDistribution(int(low), int(high))
        log = low > 0 and high / low > LOG_SPAN
        return dists.FloatDistribution(float(low), float(high), log=log)
    return dists.CategoricalDistribution(sorted({_label(v) for v in values}))


def _param(distribution: Any, value: Any) -> Any:
    if type(distribution).__name__ == "CategoricalDistribution":
        return _label(value)
    return value if type(distribution).__name__ == "IntDistribution" else float(value)


def _label(value: Any) -> str:
    """A category's name: its JSON text, so `true`, `1` and `"1"` stay three categories and a list
    of target modules is one."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
