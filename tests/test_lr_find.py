"""`entrenar-train lr-find`: the range test's rules on synthetic curves, its refusals, the curve it
writes (lr_find.json) on a tiny model, and on the quickstart a suggestion that then learns."""

from __future__ import annotations

import itertools
import math
import os

import orjson
import pytest

from tests.conftest import REPO, run_cli, write_config
from trainer.cli import main as train_main
from trainer.lr_curve import (
    ALL_STEPS,
    DIVERGE_FACTOR,
    DIVERGED,
    MINIMUM_OVER_10,
    NON_FINITE,
    STEEPEST,
    SmoothedLoss,
    lr_schedule,
    suggest,
)
from trainer.lr_find import train_command
from trainer.monitor.schema import MAX_LR_FIND_POINTS, schema_tag

QUICKSTART = REPO / "examples" / "quickstart.toml"


# ------------------------------------------------------------------------ the rules (unit)


def test_the_schedule_rises_by_one_factor_from_start_to_end():
    lrs = lr_schedule(1e-6, 1e-1, 11)
    assert lrs[0] == 1e-6 and lrs[-1] == pytest.approx(1e-1)
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert all(r == pytest.approx(10**0.5) for r in ratios)


def test_the_smoothed_loss_is_bias_corrected_and_stops_past_4x_its_minimum():
    s = SmoothedLoss()
    assert s.add(2.0) == pytest.approx(2.0)  # without the correction: 0.04
    assert s.add(2.0) == pytest.approx(2.0)
    assert s.stop_reason(2.0, 2.0) is None
    s = SmoothedLoss(beta=0.0)  # no smoothing: the rule alone
    s.add(1.0)
    assert s.stop_reason(4.0, s.add(4.0)) is None  # 4× is not past 4×
    assert s.stop_reason(4.1, s.add(4.1)) == DIVERGED
    assert SmoothedLoss().stop_reason(math.nan, math.nan) == NON_FINITE


def descent(lrs: list[float], centre: float) -> list[float]:
    """A loss that falls from 2 to 0.5 around `centre` (a logistic on log10 LR), then climbs."""
    out = []
    for lr in lrs:
        x = math.log10(lr) - math.log10(centre)
        out.append(0.5 + 1.5 / (1 + math.exp(3 * x)) + (max(0.0, x - 1.5) ** 2))
    return out


def test_the_suggestion_is_the_steepest_descent_of_the_smoothed_loss():
    lrs = lr_schedule(1e-7, 1.0, 100)
    found = suggest(lrs, descent(lrs, 1e-3))
    assert found.rule == STEEPEST
    assert 10**-3.2 < found.lr < 10**-2.8  # the logistic is steepest at its centre
    assert found.minimum_lr > found.lr


def test_a_curve_that_never_falls_gives_the_minimum_over_10():
    lrs = lr_schedule(1e-7, 1.0, 50)
    rising = [1.0 + i * 0.01 for i in range(50)]
    found = suggest(lrs, rising)
    assert found.rule == MINIMUM_OVER_10
    assert found.lr == pytest.approx(lrs[0] / 10)
    assert "never falls" in found.why or "too few" in found.why


def test_a_minimum_too_early_to_read_a_slope_gives_the_minimum_over_10():
    lrs = lr_schedule(1e-5, 1.0, 30)
    curve = [1.0, 0.9, *[1.0 + i for i in range(28)]]  # lowest at the second point
    found = suggest(lrs, curve)
    assert found.rule == MINIMUM_OVER_10 and found.lr == pytest.approx(lrs[1] / 10)
    assert "too few" in found.why


def test_non_finite_points_are_left_out_and_none_at_all_suggests_nothing():
    lrs = lr_schedule(1e-7, 1.0, 100)
    curve = descent(lrs, 1e-3)
    curve[40] = math.nan
    assert suggest(lrs, curve).rule == STEEPEST
    assert suggest(lrs, [math.nan] * 100) is None


def test_the_command_replaces_an_lr_override_and_quotes_for_the_shell():
    cmd = train_command("my cfg.toml", ["train.learning_rate=5", "train.epochs=2"], 2.5e-3)
    assert cmd == "entrenar-train 'my cfg.toml' train.epochs=2 train.learning_rate=2.50e-03"


# ------------------------------------------------------------------------ refusals (exit 2)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--end-lr", "0"], "--end-lr 0.0: must be a positive number"),
        (["--start-lr", "1e-2", "--end-lr", "1e-3"], "must be above --start-lr"),
        (["--num-steps", "1"], f"must be 2 to {MAX_LR_FIND_POINTS}"),
        (["--num-steps", str(MAX_LR_FIND_POINTS + 1)], "--num-steps"),
    ],
)
def test_bad_flags_are_one_line_each_and_exit_2(tiny_run_config, capsys, flags, said):
    assert train_main(["lr-find", str(tiny_run_config), *flags]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_a_bad_config_is_said_before_anything_is_written(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "lf"
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, tmp_path / "missing.jsonl", tmp_path / "run"
    )
    assert train_main(["lr-find", str(cfg), "train.batch_sise=3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train.batch_sise" in err and "missing.jsonl" in err
    assert not out.exists()


def test_out_inside_the_configured_run_or_holding_a_run_is_refused(
    tiny_run_config, tmp_path, capsys
):
    run = tmp_path / "run"  # tiny_run_config's output.dir
    assert train_main(["lr-find", str(tiny_run_config), "--out", str(run / "lf")]) == 2
    assert "inside output.dir" in capsys.readouterr().err
    assert not run.exists()
    held = tmp_path / "held"
    held.mkdir()
    (held / "run.json").write_text("{}")
    assert train_main(["lr-find", str(tiny_run_config), "--out", str(held)]) == 2
    assert "holds a run" in capsys.readouterr().err
    assert sorted(os.listdir(held)) == ["run.json"]


# ------------------------------------------------------------------------ the curve it writes


def test_lr_find_writes_its_curve_beside_the_run_and_touches_nothing_of_it(
    tiny_run_config, tmp_path, capsys
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")  # the configured run's directory, with something in it
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    code = train_main(["lr-find", str(tiny_run_config), "--start-lr", "1e-4", "--end-lr", "1e4",
                       "--num-steps", "60"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    out = tmp_path / "run-lr-find"
    doc = orjson.loads((out / "lr_find.json").read_bytes())
    assert doc["schema"] == schema_tag("lr_find.json") and doc["version"] == 1
    lrs, losses, smoothed = doc["lrs"], doc["losses"], doc["smoothed"]
    assert len(lrs) == len(losses) == len(smoothed) == doc["steps"] <= 60
    assert lrs[0] == 1e-4 and all(b > a for a, b in itertools.pairwise(lrs))
    assert lrs == pytest.approx(lr_schedule(1e-4, 1e4, 60)[: len(lrs)])
    # the stop rule: it went on while the smoothed loss stayed within 4× its minimum
    for i in range(1, len(smoothed) - 1):
        assert smoothed[i] <= DIVERGE_FACTOR * min(smoothed[: i + 1])
    if doc["stopped_because"] == DIVERGED:
        assert smoothed[-1] > DIVERGE_FACTOR * min(smoothed)
    elif doc["stopped_because"] == NON_FINITE:
        assert losses[-1] is None or smoothed[-1] is None
    else:
        assert doc["stopped_because"] == ALL_STEPS and doc["steps"] == 60
    assert doc["stopped_because"] in (DIVERGED, NON_FINITE)  # up to 1e4 a model blows up
    found = suggest(lrs, [math.nan if s is None else s for s in smoothed])
    assert doc["suggested_lr"] == found.lr and doc["rule"] == found.rule
    assert f"suggested learning rate: {found.lr:.2e} ({found.rule}:" in printed
    assert doc["command"] in printed
    assert doc["command"].endswith(f"train.learning_rate={found.lr:.2e}")
    assert sorted(os.listdir(out)) == ["lr_find.json"]  # no checkpoint, no run files


# ------------------------------------------------------------------------ it suggests a rate that learns


def val_accuracy(run) -> float:
    epochs = orjson.loads((run / "epochs.json").read_bytes())["epochs"]
    return epochs[-1]["val_accuracy"]


@pytest.mark.slow
def test_on_the_quickstart_the_suggested_rate_learns_where_1e_6_does_not(tmp_path):
    run = tmp_path / "quickstart"
    short = ["train.epochs=1", "train.lr_min=0", "train.warmup_fraction=0"]
    r = run_cli("lr-find", str(QUICKSTART), f"output.dir={run}", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not run.exists()  # nothing of the configured run
    doc = orjson.loads((tmp_path / "quickstart-lr-find" / "lr_find.json").read_bytes())
    assert f"train.learning_rate={doc['suggested_lr']:.2e}" in r.stdout
    accuracy = {}
    for name, lr in (("suggested", f"{doc['suggested_lr']:.2e}"), ("tiny", "1e-6")):
        out = tmp_path / name
        r = run_cli(str(QUICKSTART), f"output.dir={out}", f"train.learning_rate={lr}", *short,
                    timeout=900)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        accuracy[name] = val_accuracy(out)
    assert accuracy["suggested"] > accuracy["tiny"] + 0.15, (accuracy, doc["suggested_lr"])
