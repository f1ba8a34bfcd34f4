"""The comparison: runs selected in the browser, their charts overlaid (one series a run, each in
its own colour, the runs' own values) and the config keys that differ. Over runs the real trainer
wrote (`runs_root`), plus a snapshot of scripted runs."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from rich.text import Text

from entrenar_tui.app import MonitorApp
from entrenar_tui.model.comparison import MISSING, differing_keys, flatten, show_value
from entrenar_tui.screens.compare import CompareScreen
from entrenar_tui.screens.runs import RunsScreen
from entrenar_tui.widgets.overlay_chart import OverlayChart, OverlaySeries, _interpolate
from entrenar_tui.widgets.runs_table import RunsTable
from tests.conftest import patience
from tests.fake_run import FakeRun
from tests.helpers import until
from trainer.monitor.reader import load_run
from trainer.monitor.schema import Files

SIZE = (140, 40)


@pytest.fixture
def root(runs_root, tmp_path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(runs_root, copy, ignore=shutil.ignore_patterns(Files.CHECKPOINTS))
    return copy


async def compare(pilot, app: MonitorApp, runs: list[str]) -> CompareScreen:
    """Select `runs` (in this order) with space, press c, wait until the comparison has loaded."""
    table = app.screen.query_one(RunsTable)
    await until(pilot, lambda: len(table.row_keys()) == 4, "all four runs are listed")
    for run in runs:
        table.move_cursor(row=table.row_keys().index(str(app.root / run)))
        await pilot.press("space")
    await pilot.press("c")
    await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the comparison opens")
    screen = app.screen
    await until(pilot, lambda: screen.loaded, "the runs are loaded")
    await pilot.pause()
    return screen


def chart(screen: CompareScreen, chart_id: str) -> OverlayChart:
    return screen.query_one(f"#compare-{chart_id}", OverlayChart)


def config_rows(screen: CompareScreen) -> dict[str, list[str]]:
    table = screen.query_one("#compare-config")
    return {
        row[0].plain: [c.plain for c in row[1:]]
        for row in (table.get_row_at(i) for i in range(table.row_count))
    }


def test_two_runs_overlaid_with_their_own_values_and_the_keys_that_differ(root):
    app = MonitorApp(root=root)

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            screen = await compare(pilot, app, ["exp-lr-low", "exp-lr-high"])
            for chart_id in ("train-loss", "val-loss", "val-acc"):
                series = chart(screen, chart_id).series
                assert [s.name for s in series] == ["exp-lr-low", "exp-lr-high"]  # selection order
                assert [s.colour for s in series] == [0, 1]
            for s in chart(screen, "train-loss").series:
                expected = load_run(root / s.name).history.series["loss"].values.array
                assert len(s) == len(expected) > 0
                assert np.array_equal(np.asarray(s.values(), float), expected, equal_nan=True)
            for key, chart_id in (("val_loss", "val-loss"), ("val_accuracy", "val-acc")):
                for s in chart(screen, chart_id).series:
                    epochs = orjson.loads((root / s.name / Files.EPOCHS).read_bytes())["epochs"]
                    assert s.values() == [e[key] for e in epochs]
            train = chart(screen, "train-loss")
            colours = {train.series_style(s.colour).color for s in train.series}
            assert len(colours) == 2 and None not in colours  # distinct, and really coloured
            rendered = train.render()
            assert isinstance(rendered, Text)
            drawn = {span.style for span in rendered.spans}
            assert all(train.series_style(s.colour) in drawn for s in train.series)
            assert "exp-lr-low" in rendered.plain and "exp-lr-high" in rendered.plain  # the legend
            rows = config_rows(screen)
            assert rows == {"train.learning_rate": ["0.001", "0.005"]}
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, RunsScreen), "back on the browser")

    asyncio.run(main())


def test_runs_of_different_lengths_share_the_axes_and_list_every_difference(root):
    app = MonitorApp(root=root)

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            screen = await compare(pilot, app, ["exp-lr-low", "sweep/exp-3ep", "exp-crashed"])
            assert [len(s) for s in chart(screen, "val-loss").series] == [2, 3, 0]
            crashed = chart(screen, "train-loss").series[2]
            assert len(crashed) == len(load_run(root / "exp-crashed").history) >= 3
            rows = config_rows(screen)
            assert set(rows) == {"train.epochs", "train.learning_rate", "train.log_interval"}
            assert rows["train.epochs"] == ["2", "3", "1000"]
            assert rows["train.learning_rate"] == ["0.001", "0.005", "0.005"]
            titles = [c.title for c in app.get_system_commands(screen)]
            assert "Back to the runs" in titles

    asyncio.run(main())


# ------------------------------------------------------------------------------ pure parts


def test_differing_keys_are_dotted_and_name_what_is_missing():
    a = {"train": {"learning_rate": 1e-3, "epochs": 2}, "lora": {"r": 8}, "output": {"dir": "a"}}
    b = {"train": {"learning_rate": 1e-3, "epochs": 3}, "output": {"dir": "b"}}
    assert flatten(a)["train.learning_rate"] == 1e-3
    assert differing_keys([a, b]) == [("lora.r", [8, MISSING]), ("train.epochs", [2, 3])]
    assert differing_keys([a, a]) == []
    assert differing_keys([{"x": 1}, {"x": 1.0}]) == [("x", [1, 1.0])]  # TOML tells them apart
    assert [show_value(v) for v in (MISSING, True, "q\x1b", [1, 2], 1e-4)] == [
        "–",
        "true",
        "q\\x1b",
        "[1, 2]",
        "0.0001",
    ]


def test_fewer_points_than_columns_are_joined_by_straight_lines():
    assert _interpolate([(0.0, 0.0), (1.0, 1.0)], 5) == [
        (0.0, 0.0),
        (0.25, 0.25),
        (0.5, 0.5),
        (0.75, 0.75),
        (1.0, 1.0),
    ]
    assert _interpolate([(1.0, 1.0)], 3) == [(1.0, 1.0)] * 3
    series = OverlaySeries("x", 0, [0.5, None, 0.25])
    assert series.last() == 0.25
    assert len(series.points(7)) == 7


# ------------------------------------------------------------------------------ snapshot


def test_snapshot_compare(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    for name, epochs, losses in (
        ("exp-short", 3, (0.62, 0.48, 0.51)),
        ("exp-long", 5, (0.7, 0.55, 0.45, 0.41, 0.43)),
    ):
        run = FakeRun(root / name, epochs=epochs, val_losses=losses).start()
        for _ in range(epochs):
            run.play_epoch()
        run.finish("completed")

    async def open_comparison(pilot):
        app = pilot.app
        table = app.screen.query_one(RunsTable)
        deadline = time.monotonic() + patience(10)
        while len(table.row_keys()) < 2:
            assert time.monotonic() < deadline, "the runs did not load"
            await pilot.pause(0.02)
        await pilot.press("space", "down", "space", "c")
        while not (isinstance(app.screen, CompareScreen) and app.screen.loaded):
            assert time.monotonic() < deadline, "the comparison did not load"
            await pilot.pause(0.02)
        await pilot.pause()

    app = MonitorApp(root=Path("runs"), probe=lambda _s: "gone", tick_interval=3600)
    assert snap_compare(app, terminal_size=(100, 30), run_before=open_comparison)
