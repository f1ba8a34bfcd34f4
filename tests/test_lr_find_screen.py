"""The monitor on an `entrenar-train lr-find` directory: the curve on a log-x chart with the
suggestion marked and printed (Pilot), `--once`, the log-x arithmetic, and hostile lr_find.json."""

from __future__ import annotations

import asyncio
import math
import os

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.charts.log_x import log_column, log_x_points, log_x_ticks
from entrenar_tui.cli import main as tui_main
from entrenar_tui.model.lr_find import load_lr_find
from entrenar_tui.screens.lr_find import LrFindScreen
from entrenar_tui.widgets.metric_chart import MetricChart
from trainer.lr_curve import SmoothedLoss, lr_schedule, suggest
from trainer.lr_find import Curve, RangeTest, lr_find_record
from trainer.monitor.atomic import dumps
from trainer.monitor.schema import MAX_LR_FIND_POINTS, tagged

SIZE = (100, 30)


def write_lr_find(directory, **changes) -> dict:
    """A real lr_find.json (the trainer's own record) of a synthetic curve that falls around
    1e-3 and climbs past 1e-1; `changes` replace fields (hostile files)."""
    lrs = lr_schedule(1e-7, 1.0, 100)
    losses = [
        0.5 + 1.5 / (1 + (lr / 1e-3) ** 1.5) + max(0.0, math.log10(lr) + 1) ** 2 for lr in lrs
    ]
    smoother = SmoothedLoss()
    smoothed = [smoother.add(v) for v in losses]
    curve = Curve(lrs, losses, smoothed, "diverged")
    record = lr_find_record(RangeTest(), curve, suggest(lrs, smoothed), "cfg.toml", [])
    doc = {**tagged("lr_find.json", record), **changes}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lr_find.json").write_bytes(dumps(doc))
    return doc


def run(app, body):
    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await body(pilot)

    asyncio.run(main())


def test_log_x_places_points_by_their_log_and_fills_between():
    xs = [1e-6, 1e-4, 1e-2]
    points = log_x_points(xs, [3.0, 2.0, 1.0], 21)
    assert points[0] == (3.0, 3.0) and points[10] == (2.0, 2.0) and points[20] == (1.0, 1.0)
    assert points[5] == pytest.approx((2.5, 2.5))  # the line between, on the log axis
    assert log_column(1e-5, (-6.0, -2.0), 21) == 5
    ticks = dict(log_x_ticks(xs, 21))
    assert ticks == {0: "1.0e-06", 5: "1.0e-05", 10: "1.0e-04", 15: "1.0e-03", 20: "1.0e-02"}


def test_a_missing_value_is_a_gap_not_a_line_over_it():
    points = log_x_points([1e-6, 1e-5, 1e-4], [1.0, None, 1.0], 3)
    assert points == [(1.0, 1.0), None, (1.0, 1.0)]


def test_the_screen_draws_the_curve_with_the_suggestion_marked_and_printed(tmp_path):
    doc = write_lr_find(tmp_path / "lf")
    app = MonitorApp(tmp_path / "lf", watch=False)

    async def body(pilot):
        screen = app.screen
        assert isinstance(screen, LrFindScreen)
        chart = screen.query_one(MetricChart)
        data = chart.last_data
        assert data.points and len(data.points) % 2 == 0
        (column,) = data.highlight
        expected = log_column(doc["suggested_lr"], (-7.0, 0.0), len(data.points))
        assert column == expected
        drawn = chart.render().plain
        assert "▲" in drawn.splitlines()[-1] and "1.0e-04" in drawn
        summary = str(screen.query_one("#lr-find-summary").render())
        assert f"suggested learning rate: {doc['suggested_lr']:.2e} (steepest descent" in summary
        assert doc["command"] in summary

    run(app, body)


def test_the_screen_follows_the_file_when_it_is_replaced(tmp_path):
    directory = tmp_path / "lf"
    write_lr_find(directory, suggested_lr=None, command=None)
    app = MonitorApp(directory, watch=False)

    async def body(pilot):
        screen = app.screen
        assert "suggested learning rate: –" in str(screen.query_one("#lr-find-summary").render())
        doc = write_lr_find(directory)
        screen.reload()  # (what its one-second timer calls)
        await pilot.pause()
        text = str(screen.query_one("#lr-find-summary").render())
        assert f"{doc['suggested_lr']:.2e}" in text

    run(app, body)


def test_once_prints_the_suggestion_and_the_command(tmp_path, capsys):
    doc = write_lr_find(tmp_path / "lf")
    assert tui_main(["monitor", str(tmp_path / "lf"), "--once"]) == 0
    out = capsys.readouterr().out
    assert f"suggested learning rate: {doc['suggested_lr']:.2e} (steepest descent:" in out
    assert f"train with it: {doc['command']}" in out
    assert "curve: 100 points, LR 1.0e-07 to 1.0e+00; diverged" in out


# ------------------------------------------------------------------------ hostile lr_find.json

HUGE = [1e-3] * (MAX_LR_FIND_POINTS + 1)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"lrs": HUGE, "losses": HUGE, "smoothed": HUGE}, f"expected at most {MAX_LR_FIND_POINTS}"),
        ({"suggested_lr": "1e-3; rm -rf ~"}, "suggested_lr"),
        ({"lrs": "all of them"}, "expected a list"),
        ({"steps": -3}, "steps"),
    ],
)
def test_a_hostile_file_is_a_problem_line_not_a_crash(tmp_path, capsys, changes, problem):
    write_lr_find(tmp_path / "lf", **changes)
    curve = load_lr_find(tmp_path / "lf")
    assert any(problem in p for p in curve.problems), curve.problems
    assert tui_main(["monitor", str(tmp_path / "lf"), "--once"]) == 0
    assert "problem  lr_find.json: ignored values of the wrong type" in capsys.readouterr().out
    app = MonitorApp(tmp_path / "lf", watch=False)

    async def body(pilot):
        assert isinstance(app.screen, LrFindScreen)
        app.screen.query_one(MetricChart).render()  # draws whatever is left

    run(app, body)


def test_nan_strings_and_escapes_inside_the_curve_keep_the_points_aligned(tmp_path):
    doc = write_lr_find(tmp_path / "lf")
    losses = list(doc["smoothed"])
    losses[3], losses[4] = "NaN", None
    lrs = list(doc["lrs"])
    lrs[10] = -1.0  # not a learning rate: that point is left out
    write_lr_find(
        tmp_path / "lf",
        smoothed=losses,
        lrs=lrs,
        command="entrenar-train x \x1b[2J\x1b]0;pwned\x07",
        rule="\x1b[31msteepest",
    )
    curve = load_lr_find(tmp_path / "lf")
    assert len(curve.lrs) == len(curve.smoothed) == 99
    assert curve.smoothed[3] is None and curve.smoothed[4] is None
    assert curve.smoothed[10] == doc["smoothed"][11]  # after the dropped point: still aligned
    assert "\x1b" not in curve.command and "\x07" not in curve.command
    assert "\x1b" not in curve.rule


def test_a_file_that_is_not_json_or_another_schema_is_said(tmp_path, capsys):
    (tmp_path / "lf").mkdir()
    (tmp_path / "lf" / "lr_find.json").write_bytes(orjson.dumps({"schema": "entrenar-tui/run"}))
    assert tui_main(["monitor", str(tmp_path / "lf"), "--once"]) == 0
    assert "problem  lr_find.json: schema is 'entrenar-tui/run'" in capsys.readouterr().out


def test_a_fifo_in_place_of_the_file_is_said_without_a_hang(tmp_path, capsys):
    (tmp_path / "lf").mkdir()
    os.mkfifo(tmp_path / "lf" / "lr_find.json")
    assert tui_main(["monitor", str(tmp_path / "lf"), "--once"]) == 0
    out = capsys.readouterr().out
    assert "problem  lr_find.json" in out and "FIFO" in out.upper()
