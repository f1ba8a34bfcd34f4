"""Issue 29: which hyperparameter of a sweep mattered (trainer/sweep/importance.py), written into
sweep.json's `importance` by the sweep's own record as runs end."""

from __future__ import annotations

import math
import random
import sys

import orjson
import pytest

from trainer.monitor.schema import Files
from trainer.sweep.importance import importance
from trainer.sweep.plan import build_grid
from trainer.sweep.record import SweepRecord, identity

pytest.importorskip("optuna")

LRS = [1e-5, 1e-4, 1e-3, 1e-2]


def entry(index: int, values: dict, loss: float | None, status: str = "completed") -> dict:
    return {"index": index, "values": values, "status": status, "best_val_loss": loss}


def lr_decides(seed: int = 7) -> dict:
    """A 4×3×2 grid: the loss is the learning rate's distance from 1e-3 in decades; lora.r and the
    optimizer add noise of a hundredth at most."""
    noise = random.Random(seed)
    runs = []
    for lr in LRS:
        for r in (4, 8, 16):
            for optim in ("adamw", "sgd"):
                values = {"optim.lr": lr, "lora.r": r, "optim.name": optim}
                loss = abs(math.log10(lr) + 3) + 0.01 * noise.random()
                runs.append(entry(len(runs) + 1, values, loss))
    return {"keys": ["optim.lr", "lora.r", "optim.name"], "runs": runs}


def test_the_key_that_decides_the_objective_dominates_the_noise():
    found = importance(lr_decides())
    assert next(iter(found)) == "optim.lr"  # most important first
    assert found["optim.lr"] > 0.9
    assert found["lora.r"] < 0.05 and found["optim.name"] < 0.05
    assert math.isclose(sum(found.values()), 1.0)


def test_the_same_runs_give_the_same_importances():
    assert importance(lr_decides()) == importance(lr_decides())


def test_a_maximized_objective_uses_each_runs_value_and_the_direction():
    """A search's sweep.json: `objective` {metric, direction} and each run's `value`; the
    best_val_loss left there says the opposite and must not be used."""
    sweep = lr_decides()
    for run in sweep["runs"]:
        lr_is_right = run["values"]["optim.lr"] == 1e-3
        run["value"] = (0.9 if lr_is_right else 0.5) + 0.001 * run["values"]["lora.r"]
        run["best_val_loss"] = 0.001 * run["index"]  # r and the order decide this one
    sweep["objective"] = {"metric": "val_accuracy", "direction": "maximize"}
    found = importance(sweep)
    assert next(iter(found)) == "optim.lr" and found["optim.lr"] > 0.5


@pytest.mark.parametrize(
    "runs",
    [
        [entry(1, {"a": 1, "b": "x"}, 0.5)],  # one finished run
        [entry(1, {"a": 1, "b": "x"}, 0.5), entry(2, {"a": 2, "b": "x"}, 0.4)],  # one key varies
        [entry(1, {"a": 1, "b": "x"}, 0.5), entry(2, {"a": 2, "b": "y"}, 0.5)],  # equal values
        [
            entry(1, {"a": 1, "b": "x"}, 0.5),
            entry(2, {"a": 2, "b": "y"}, None, "pruned"),
            entry(3, {"a": 3, "b": "z"}, 0.3, "failed"),
        ],  # one completed: the pruned and failed runs are no finished trials
    ],
)
def test_nothing_to_weigh_gives_no_importances(runs):
    assert importance({"keys": ["a", "b"], "runs": runs}) == {}


def test_booleans_lists_and_strings_are_categories():
    noise = random.Random(3)
    runs = [
        entry(
            i + 1,
            {"mods": mods, "flag": flag, "r": r},
            (0.2 if flag else 0.6) + 0.01 * noise.random(),
        )
        for i, (mods, flag, r) in enumerate(
            (m, f, r) for m in (["q", "v"], ["q"]) for f in (True, False) for r in (4, 8, 16)
        )
    ]
    found = importance({"keys": ["mods", "flag", "r"], "runs": runs})
    assert set(found) == {"mods", "flag", "r"} and next(iter(found)) == "flag"


def test_sweep_json_gains_the_importances_as_runs_end(tmp_path):
    grid = build_grid({}, ["train.learning_rate=1e-5,1e-4,1e-3,1e-2", "lora.r=4,8"], None, None)
    runs = grid.runs("sw")
    path = tmp_path / Files.SWEEP
    record = SweepRecord.begin(path, identity(grid, {}), runs, {}, None)
    record.write()
    assert orjson.loads(path.read_bytes())["importance"] is None  # nothing finished yet
    for run in runs:
        loss = abs(math.log10(run.values["train.learning_rate"]) + 3) + 0.001 * run.values["lora.r"]
        record.update_run(run.index, status="completed", best_val_loss=loss)
    written = orjson.loads(path.read_bytes())["importance"]
    assert (
        list(written) == ["train.learning_rate", "lora.r"] and written["train.learning_rate"] > 0.5
    )
    assert math.isclose(sum(written.values()), 1.0)


def test_without_optuna_a_sweep_has_no_importances_and_still_records(tmp_path, monkeypatch):
    """optuna is the optional `sweep` extra: without it sweep.json says null, nothing fails."""
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    assert importance(lr_decides()) == {}
    grid = build_grid({}, ["lora.r=4,8", "lora.alpha=8,16"], None, None)
    runs = grid.runs("sw")
    record = SweepRecord.begin(tmp_path / Files.SWEEP, identity(grid, {}), runs, {}, None)
    for run in runs:
        record.update_run(run.index, status="completed", best_val_loss=0.1 * run.index)
    assert orjson.loads((tmp_path / Files.SWEEP).read_bytes())["importance"] is None
