"""Issue 29, the sweep view: the browser's panel (`p`) of a sweep's parallel coordinates and its
hyperparameter importances, `--once`'s importances, and a hostile sweep.json `importance`.
Sweeps are scripted (tests/fake_run.py fake_sweep: sweep.json written by the trainer's own
SweepRecord, so its importances are the trainer's)."""

from __future__ import annotations

import math
import time
from importlib.util import find_spec
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.charts import parallel
from entrenar_tui.model.discovery import find_runs
from entrenar_tui.model.validation import clean_sweep
from entrenar_tui.widgets.parallel_coordinates import (
    ImportanceBars,
    ParallelCoordinates,
    SweepPanel,
    bar,
)
from entrenar_tui.widgets.runs_table import RunsTable
from tests.conftest import patience
from tests.fake_run import FakeRun, fake_sweep
from tests.helpers import browse, until
from tests.test_browser_sweep import once, sweep_doc
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.schema import MAX_IMPORTANCE_KEYS, Files

# The trainer's importances need optuna (the `sweep` extra, in `dev`); the rest does not.
needs_optuna = pytest.mark.skipif(find_spec("optuna") is None, reason="optuna (the sweep extra)")

AXES = {"train.learning_rate": [1e-5, 1e-4, 1e-3, 1e-2], "lora.r": [4, 8]}
BEST, PRUNED = 7, 8  # fake_sweep's run 7 has the lowest val loss; run 8 is made pruned here


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Eight runs of a 4×2 grid; the last one pruned with the worst objective of all."""
    directory = tmp_path / "lr-sweep"
    fake_sweep(directory, AXES)
    doc = sweep_doc(directory)
    doc["runs"][PRUNED - 1] |= {"status": "pruned", "best_val_loss": 0.66}
    (directory / Files.SWEEP).write_bytes(orjson.dumps(doc))
    return directory


def panel_of(app) -> SweepPanel:
    return app.screen.query_one(SweepPanel)


@needs_optuna
def test_p_shows_the_sweep_best_run_highlighted_and_pruned_dimmed_and_p_again_hides_it(sweep):
    app = MonitorApp(root=sweep, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        panel = panel_of(app)
        assert not panel.display  # hidden until asked for
        await pilot.press("p")
        plot = panel.query_one(ParallelCoordinates)
        await until(pilot, lambda: plot.drawing is not None, "the plot is drawn")
        assert panel.display and panel.region.height == 12
        drawing, axes = plot.drawing, plot.axes
        assert [a.key for a in axes] == ["train.learning_rate", "lora.r", "val_loss"]
        assert axes[0].log and (axes[0].top, axes[0].bottom) == ("0.01", "1e-05")
        objective = drawing.columns[-1]
        # the best run ends lowest on the val_loss axis: its cell there is the highlighted layer
        assert drawing.layers[-1][objective] == parallel.BEST
        # the pruned run's val loss (0.66) is the axis's top: dimmed, no other line there
        assert drawing.layers[0][objective] == parallel.DIM
        assert axes[-1].top == "0.66"
        assert any(parallel.LINE in row for row in drawing.layers)  # the other completed runs
        assert "★ lr-sweep-7" in panel.border_title and "val_loss ↓" in panel.border_title
        bars = panel.query_one(ImportanceBars).lines(26)
        written = sweep_doc(sweep)["importance"]
        assert [name.strip() for name, _bar, _pct in bars] == [
            "learning_ra…" if k == "train.learning_rate" else k.rsplit(".")[-1] for k in written
        ]
        await pilot.press("p")
        await pilot.pause()
        assert not panel.display

    browse(app, body, size=(80, 24), rows=8)


def test_the_panel_follows_sweep_json_as_runs_end(sweep):
    """A run ending rewrites sweep.json (atomically, as the sweep does): the shown panel redraws
    with the new best run, no key pressed."""
    app = MonitorApp(root=sweep, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        await pilot.press("p")
        panel = panel_of(app)
        await until(pilot, lambda: "★ lr-sweep-7" in panel.border_title, "the first best")
        doc = sweep_doc(sweep)
        doc["runs"][PRUNED - 1] |= {"status": "completed", "best_val_loss": 0.2}
        doc["best_run"] = PRUNED
        atomic_write_json(sweep / Files.SWEEP, doc)
        await until(pilot, lambda: "★ lr-sweep-8" in panel.border_title, "the new best")
        plot = panel.query_one(ParallelCoordinates)
        await until(pilot, lambda: plot.axes and plot.axes[-1].bottom == "0.2", "redrawn")

    browse(app, body, size=(80, 24), rows=8)


@needs_optuna
def test_the_importances_in_sweep_json_are_the_trainers_and_the_panels(sweep):
    """sweep.json's importance, as fake_sweep's SweepRecord wrote it: two keys, summing to 1, the
    panel's bars in that order."""
    written = sweep_doc(sweep)["importance"]
    assert set(written) == set(AXES) and math.isclose(sum(written.values()), 1.0)


def test_p_does_nothing_where_the_root_holds_no_sweep(tmp_path):
    FakeRun(tmp_path / "root" / "exp-1").start().finish("completed")
    app = MonitorApp(root=tmp_path / "root", probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        assert "p" not in app.screen.active_bindings  # not on the footer
        await pilot.press("p")
        await pilot.pause()
        assert not panel_of(app).display

    browse(app, body, size=(100, 24))


@pytest.mark.parametrize(("width", "on_footer"), [(80, False), (100, True)])
def test_p_is_on_the_footer_where_it_leaves_room_for_quit(sweep, width, on_footer):
    app = MonitorApp(root=sweep, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: app.screen.plots, "the sweep is read")
        await pilot.pause()
        active = app.screen.active_bindings
        assert active["p"].binding.show is on_footer
        assert active["q"].binding.show  # Quit stays on the footer
        await pilot.press("p")
        await until(pilot, lambda: panel_of(app).display, "p works at any width")

    browse(app, body, size=(width, 24), rows=8)


@needs_optuna
def test_snapshot_sweep_panel_at_80_columns(sweep, monkeypatch, snap_compare):
    monkeypatch.chdir(sweep.parent)
    now = max(orjson.loads((d / Files.STATE).read_bytes())["heartbeat"] for d in find_runs(sweep))
    app = MonitorApp(
        root=Path(sweep.name), clock=lambda: now + 2.0, probe=lambda _s: "gone", tick_interval=3600
    )

    async def shown(pilot):
        deadline = time.monotonic() + patience(10)
        while (
            len(pilot.app.screen.query_one(RunsTable).row_keys()) < 8 or not pilot.app.screen.plots
        ):
            assert time.monotonic() < deadline, "the runs did not load"
            await pilot.pause(0.02)
        await pilot.press("p")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=shown)


# ------------------------------------------------------------------------------ --once


@needs_optuna
def test_once_prints_each_keys_importance_most_important_first(sweep):
    done = once(sweep)
    assert done.returncode == 0, done.stderr
    written = sweep_doc(sweep)["importance"]
    lines = done.stdout.split("\n\n")[1].splitlines()
    assert lines[0] == "importance  lr-sweep (val_loss ↓, 7 of 8 runs completed)"
    shown = [line.split() for line in lines[1:]]
    assert [row[0] for row in shown] == list(written)
    assert [row[-1] for row in shown] == [f"{100 * v:.1f}%" for v in written.values()]


def test_once_says_when_there_are_no_importances_yet(tmp_path):
    directory = tmp_path / "one"
    fake_sweep(directory, {"lora.r": [4, 8]})  # one key: nothing to weigh it against
    done = once(directory)
    assert done.returncode == 0, done.stderr
    assert "importance  one (val_loss ↓, 2 of 2 runs completed): none yet" in done.stdout


# ------------------------------------------------------------------------------ hostile


def test_hostile_importance_values_are_dropped_named_and_keys_printed_as_text(sweep):
    doc = sweep_doc(sweep)
    doc["importance"] = {
        "\x1b]0;pwned\x07lora.r": 0.6,
        "train.learning_rate": 0.4,
        "negative": -0.5,
        "more than all": 7.0,
        "text": "0.3",
        "\x9b2J" * 5000: 0.1,  # a key of 10,000 characters
    }
    (sweep / Files.SWEEP).write_bytes(orjson.dumps(doc))
    done = once(sweep)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    problem = next(line for line in out.splitlines() if line.startswith("problem"))
    assert "importance[negative] (-0.5, expected 0 to 1)" in problem
    assert "importance[more than all] (7.0, expected 0 to 1)" in problem
    rows = out.split("\n\n")[1].splitlines()[1:]
    assert rows[0].split()[0] == "\\x1b]0;pwned\\x07lora.r" and rows[0].endswith("60.0%")
    assert rows[1].split()[0] == "train.learning_rate"
    assert max(len(line) for line in rows) < 120  # the long key cut


def test_a_million_importance_keys_are_not_read(sweep):
    doc = sweep_doc(sweep)
    doc["importance"] = {f"k{i}": 1e-6 for i in range(1_000_000)}
    (sweep / Files.SWEEP).write_bytes(orjson.dumps(doc))
    started = time.monotonic()
    done = once(sweep)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < patience(60)
    assert "importance (1000000 items, expected at most 256)" in done.stdout
    assert "importance  lr-sweep (val_loss ↓, 7 of 8 runs completed): none yet" in done.stdout


def test_nan_and_infinite_importances_are_dropped():
    """A sweep.json read by Python's json (not orjson: the monitor's reader refuses NaN) may hold
    them; the schema check drops them all the same."""
    cleaned, problem = clean_sweep({"importance": {"a": math.nan, "b": math.inf, "c": 0.5}})
    assert cleaned["importance"] == {"c": 0.5}
    assert "importance[a] (nan" in problem and "importance[b] (inf" in problem
    limit = {f"k{i}": 0.0 for i in range(MAX_IMPORTANCE_KEYS)}
    assert clean_sweep({"importance": limit}) == ({"importance": limit}, None)


def test_the_panel_draws_a_hostile_sweep_json_without_a_crash(sweep):
    doc = sweep_doc(sweep)
    doc["importance"] = {"\x1b[2J": 0.9, "x": -1}
    doc["runs"][0]["values"] = {"train.learning_rate": "\x1b[31mfast", "lora.r": [1, {"a": None}]}
    doc["runs"][1]["values"] = {"train.learning_rate": 1e-5, "lora.r": -1e308}
    (sweep / Files.SWEEP).write_bytes(orjson.dumps(doc))
    app = MonitorApp(root=sweep, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        await pilot.press("p")
        plot = panel_of(app).query_one(ParallelCoordinates)
        await until(pilot, lambda: plot.drawing is not None, "the plot is drawn")
        text = plot.render().plain
        assert "\x1b" not in text
        learning_rate, r, _objective = plot.axes
        assert learning_rate.top == "\\x1b[31mfast"  # a category after the grid's values
        assert (r.bottom, r.top) == ("4", "-1e+308")  # numbers and a list: categories
        bars = panel_of(app).query_one(ImportanceBars).lines(26)
        assert [name.strip() for name, _b, _p in bars] == ["\\x1b[2J"]

    browse(app, body, size=(80, 24), rows=8)


# ------------------------------------------------------------------------------ the plot's math


def test_a_number_axis_goes_log_past_two_decades_and_linear_below():
    log = parallel.numeric_axis("lr", "lr", [1e-5, 1e-3, 1e-1])
    assert log.log and log.positions == (0.0, 0.5, 1.0)
    linear = parallel.numeric_axis("r", "r", [4, 8, 16, None])
    assert not linear.log and linear.positions == (0.0, 1 / 3, 1.0, None)
    assert parallel.numeric_axis("r", "r", [8, 8]).positions == (0.5, 0.5)  # flat: mid-height


def test_categories_are_evenly_spaced_in_the_grids_order():
    axis = parallel.category_axis("m", "m", ["b", "a", "c", "a"], order=["a", "b", "c"])
    assert axis.positions == (0.5, 0.0, 1.0, 0.0) and (axis.bottom, axis.top) == ("a", "c")


def test_labels_never_overlap_and_fit_the_width():
    row = parallel.labels_row(["learning_rate", "weight_decay", "val_loss"], [0, 10, 29], 30)
    assert len(row) == 30 and row.startswith("learning") and row.endswith("val_loss")
    words = row.split()
    assert len(words) == 3 and all(len(w) <= 9 for w in words)


def test_a_bar_is_a_share_in_eighths():
    assert bar(1.0) == "█" * 8 and bar(0.0) == " " * 8 and bar(0.5).strip() == "████"
    assert bar(1 / 16) == "▌" + " " * 7


def test_the_browsers_star_follows_a_searchs_objective_not_the_val_loss(sweep):
    """A search by val_accuracy: sweep.json's best run (by that objective) is the one starred in
    the table, as on the panel, though another run has the lowest validation loss."""
    from entrenar_tui.model.discovery import RunIndex

    assert [r.sweep_index for r in RunIndex(sweep).scan() if r.best] == [BEST]  # by val loss
    doc = sweep_doc(sweep)
    doc |= {"objective": {"metric": "val_accuracy", "direction": "maximize"}, "best_run": 2}
    (sweep / Files.SWEEP).write_bytes(orjson.dumps(doc))
    assert [r.sweep_index for r in RunIndex(sweep).scan() if r.best] == [2]
