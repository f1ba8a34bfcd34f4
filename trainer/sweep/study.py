"""The optuna study of a tpe (or random-over-ranges) sweep, in the sweep's directory.

Its storage is `JournalStorage(JournalFileBackend(<sweep dir>/study.journal))`: an append-only
log made for a file system several nodes share, so a rerun of the command continues the study and
the tasks of a job array ask the same one. Each process builds its sampler seeded by (seed, trial
index): every trial process is a fresh one, and a sampler seeded by the seed alone would draw the
same first values in each; this way the same seed gives the same values for the same index.

Each run is one optuna trial marked with the user attribute `index` (0-based, as a SLURM array's
task id). Asking again for an index whose trial is still running (a requeued task) returns that
trial, not a new one; a failed one is asked again with the same values (its run directory holds a
run of those values, which --auto-resume continues). optuna is imported here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from trainer.sweep.space import Param

JOURNAL = "study.journal"
INDEX_ATTR = "index"


def _category(value: Any) -> Any:
    """optuna's categories are None, bool, int, float or str: a list choice travels as its JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return "json:" + orjson.dumps(value).decode()


def _value(category: Any) -> Any:
    if isinstance(category, str) and category.startswith("json:"):
        return orjson.loads(category[5:])
    return category


def distributions(space: list[Param]) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    made: dict[str, Any] = {}
    for p in space:
        if p.type == "choice":
            made[p.key] = CategoricalDistribution([_category(c) for c in p.choices])
        elif p.type == "int":
            made[p.key] = IntDistribution(int(p.low), int(p.high))
        else:
            made[p.key] = FloatDistribution(float(p.low), float(p.high), log=p.type == "loguniform")
    return made


def open_study(sweep_dir: Path, doc: dict[str, Any], index: int) -> Any:
    """The sweep's study (made on first use), its sampler seeded for trial `index`."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = (doc.get("seed") or 0) * 1_000_003 + index
    if doc.get("search") == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    prune = doc.get("prune")
    if prune == "median":  # judged from the first finished trial on: sweeps here are small
        pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    elif prune == "asha":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    else:
        pruner = optuna.pruners.NopPruner()
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))
    return optuna.create_study(
        study_name=doc.get("name") or sweep_dir.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=(doc.get("objective") or {}).get("direction", "minimize"),
        load_if_exists=True,
    )


def claim_trial(study: Any, index: int, space: list[Param]) -> tuple[Any, Any]:
    """(trial to run, None) for the sweep's trial `index`, or (None, its finished FrozenTrial)
    when an earlier task completed or pruned it. Call it under the sweep's lock: two tasks of one
    index must not both ask."""
    import optuna
    from optuna.trial import TrialState

    dists = distributions(space)
    failed = None
    for frozen in study.get_trials(deepcopy=False):
        if frozen.user_attrs.get(INDEX_ATTR) != index:
            continue
        if frozen.state == TrialState.RUNNING:
            return optuna.trial.Trial(study, frozen._trial_id), None
        if frozen.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return None, frozen
        failed = frozen
    if failed is not None:  # the same values again: its run directory holds a run of them
        study.enqueue_trial(failed.params, user_attrs={INDEX_ATTR: index})  # (asked under the lock:
    trial = study.ask(dists)  # no other task takes the enqueued one first)
    trial.set_user_attr(INDEX_ATTR, index)
    return trial, None


def trial_values(trial: Any, space: list[Param]) -> dict[str, Any]:
    """The trial's values in the space's key order, as the config takes them."""
    params = trial.params
    return {p.key: _value(params[p.key]) for p in space if p.key in params}


def intermediate_epochs(study: Any, trial: Any) -> set[int]:
    """The epochs already reported for the trial (a requeued task reports only the new ones)."""
    return set(study._storage.get_trial(trial._trial_id).intermediate_values)
