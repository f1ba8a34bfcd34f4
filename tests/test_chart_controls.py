"""The run screen's chart controls: the pure arithmetic against hand computations, then the real
app over a run the real trainer wrote (tiny BERT, 150 steps), where a key changes what is drawn."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.charts import braille
from entrenar_tui.charts import math as cm
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.widgets.cursor_line import CursorLine
from entrenar_tui.widgets.metric_chart import MetricChart
from tests.helpers import run_model, until
from trainer.monitor.text import duration

NAN = float("nan")

# ------------------------------------------------------------------------------------ pure functions


def ema_by_hand(values, w):
    """TensorBoard's loop, written out: non-finite points skipped, debiased."""
    s, k, out = 0.0, 0, []
    for x in values:
        if not math.isfinite(x):
            out.append(x)
            continue
        s = w * s + (1 - w) * x
        k += 1
        out.append(s / (1 - w**k))
    return out


def test_ema_equals_a_hand_computation():
    got = cm.ema(np.array([1.0, 2.0, NAN, 4.0]), 0.5)
    # s1 = 0.5 -> 0.5/0.5 = 1; s2 = 0.25 + 1 = 1.25 -> 1.25/0.75; NaN skipped; s3 = 0.625 + 2 -> /0.875
    assert got[0] == pytest.approx(1.0)
    assert got[1] == pytest.approx(1.25 / 0.75)
    assert math.isnan(got[2])
    assert got[3] == pytest.approx(2.625 / 0.875)


@pytest.mark.parametrize("w", [0.05, 0.6, 0.99])
def test_ema_of_a_long_series_equals_the_loop(w):
    rng = np.random.default_rng(0)
    values = rng.normal(size=5000)
    values[[7, 300, 4999]] = [NAN, np.inf, NAN]
    np.testing.assert_allclose(cm.ema(values, w), ema_by_hand(values, w), rtol=1e-12, atol=1e-12)


def test_ema_weight_zero_is_off():
    values = np.array([3.0, NAN, 1.0])
    np.testing.assert_array_equal(cm.ema(values, 0.0), values)


def test_log_y_turns_zero_and_negatives_into_gaps():
    got = cm.log10_or_gap(np.array([100.0, 0.0, -1.0, 1.0, np.inf]))
    assert got[0] == 2.0 and got[3] == 0.0
    assert all(math.isnan(v) for v in got[[1, 2, 4]])


def test_outlier_range_ignores_one_huge_spike():
    values = np.linspace(0.0, 1.0, 1001)
    values[500] = 1e6
    lo, hi = cm.outlier_range(values)
    assert 0.0 <= lo < 0.02 and 0.98 < hi <= 1.0
    assert cm.outlier_range(np.array([NAN])) is None


def test_zoom_window():
    assert cm.zoom_window(150, None) == (0, 150)
    assert cm.zoom_window(150, 100) == (50, 150)
    assert cm.zoom_window(50, 1000) == (0, 50)


def test_binning_keeps_a_spike_and_gaps():
    values = np.ones(1000)
    values[777] = 50.0
    values[10] = NAN
    points = cm.bin_minmax(values, cm.index_edges(1000, 100))
    assert points[77] == (1.0, 50.0)  # the spike survives downsampling
    assert points[1] is None  # a NaN makes its bin a gap
    assert max(p[1] for p in points if p) == 50.0


def test_time_edges_leave_a_pause_empty():
    t = np.array([0.0, 1.0, 2.0, 3.0, 100.0, 101.0, 102.0])  # a 97 s pause (stopped, resumed)
    edges = cm.time_edges(t, 10)
    points = cm.bin_minmax(np.arange(7.0), edges)
    assert points[0] == (0.0, 3.0) and points[-1] == (4.0, 6.0)
    assert all(p is None for p in points[1:9])


def test_cursor_lookup_and_moves():
    edges = cm.index_edges(150, 50)
    assert cm.column_at(0, edges) == 0 and cm.column_at(149, edges) == 49
    assert cm.column_at(3, edges) == 1
    assert cm.cursor_move(5, -10, 0, 150) == 0 and cm.cursor_move(140, 20, 50, 150) == 149
    values = np.array([0.5, NAN])
    assert cm.value_at(values, 0) == 0.5 and cm.value_at(values, 1) is None
    assert cm.value_at(values, 5) is None


def test_fixed_bounds_clamp_and_the_background_is_dim():
    canvas = braille.render([(0.0, 0.0), (1e6, 1e6)], 1, 2, bounds=(0.0, 1.0))
    assert canvas.rows[0] != chr(braille.BRAILLE_BASE)  # the spike is clamped to the top row
    canvas = braille.render([None, None], 1, 1, background=[(1.0, 1.0), (1.0, 1.0)])
    assert canvas.dim == [[True]]


# ------------------------------------------------------------------------------------ the real app


def test_the_chart_keys_rules_without_a_terminal():
    """ChartControls: smoothing in steps of 0.05 within [0, 0.99], the x axis and the zoom cycle,
    the cursor starts on the last step and moves one dot column (at least a step) inside the zoom
    window; what settings.json remembers comes back, the cursor off."""
    from entrenar_tui.charts.controls import ChartControls
    from entrenar_tui.settings import Settings

    controls = ChartControls()
    view = controls.view
    for _ in range(25):
        controls.smooth(1)
    assert view.smoothing == 0.99
    controls.smooth(-1)
    assert view.smoothing == pytest.approx(0.94)
    for _ in range(25):
        controls.smooth(-1)
    assert view.smoothing == 0.0
    axes, zooms = [], []
    for _ in range(4):
        controls.cycle_x_axis()
        controls.cycle_zoom()
        axes.append(view.x_axis)
        zooms.append(view.zoom)
    assert axes == ["epoch", "time", "step", "epoch"]
    assert zooms == [10_000, 1_000, 100, None]
    controls.toggle_cursor(0)
    assert view.cursor is None  # no steps: nothing to point at
    controls.toggle_cursor(500)
    assert view.cursor == 499
    controls.move_cursor(-1, 500, 100)  # 500 steps on 100 dot columns: 5 steps a move
    assert view.cursor == 494
    controls.move_cursor(1, 500, 100)
    controls.move_cursor(1, 500, 100)
    assert view.cursor == 499  # kept inside the window
    controls.move_cursor(-1, 500, 1000)  # more columns than steps: still one step
    assert view.cursor == 498
    controls.toggle_log_y()
    controls.toggle_outliers()
    controls.smooth(1)
    settings = Settings()
    controls.remember(settings)
    again = ChartControls.remembered(settings).view
    assert (again.smoothing, again.log_y, again.x_axis, again.outliers, again.zoom) == (
        0.05,
        True,
        "epoch",
        True,
        None,
    )
    assert again.cursor is None


def test_a_charts_widget_smooths_each_of_its_series_in_its_own_cache():
    """Smoothed (the cache a RunCharts owns): by series name; another history's series under the
    same name (another run) is smoothed afresh, never served the first one's values."""
    from entrenar_tui.charts.views import Smoothed
    from trainer.monitor.reader import Series

    first, second = Series(), Series()
    first.extend(np.arange(10.0))
    second.extend(np.arange(10.0) * -3)
    cache = Smoothed()
    np.testing.assert_allclose(cache("loss", first, 0.5), ema_by_hand(np.arange(10.0), 0.5))
    np.testing.assert_allclose(cache("loss", second, 0.5), ema_by_hand(np.arange(10.0) * -3, 0.5))
    np.testing.assert_allclose(cache("accuracy", first, 0.5), ema_by_hand(np.arange(10.0), 0.5))


def test_the_palette_is_read_from_the_screens_bindings(tmp_path):
    """Every key of the run screen that has a name is a command of the palette (under its
    `title` where it has one), with its tooltip's first sentence and its key, and runs the key's
    action; the cursor's arrows only while the cursor is on (check_action), as the keys."""
    from entrenar_tui.screens.help import Command
    from tests.fake_run import scenario

    run = scenario(tmp_path / "exp", "running")
    app = MonitorApp(run.dir, tick_interval=3600)

    async def main():
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: len(run_model(app).history) == run.global_step, "loaded")
            screen = app.screen
            assert isinstance(screen, MonitorScreen)
            commands = {c.title: c for c in screen.system_commands()}
            named = [b for b in MonitorScreen.BINDINGS if b.description]
            expected = {
                b.title if isinstance(b, Command) else b.description
                for b in named
                if not b.action.startswith("move_cursor") and b.action not in ("stop", "confusion")
            }
            # (no trainer is alive behind this scripted run: x does not apply, as in the footer;
            # its epochs have no per-class data: m is offered where they have, test_confusion_view)
            assert set(commands) == expected
            assert commands["Resume the run"].help.startswith("Resume a stopped, failed or crashed")
            assert commands["Resume the run"].help.endswith("(r)")
            assert commands["Smooth less"].help.endswith("([)")
            commands["Smooth more"].callback()
            assert screen.view.smoothing == pytest.approx(0.05)
            commands["Log-Y scale"].callback()
            assert screen.view.log_y
            commands["Cursor"].callback()
            assert screen.view.cursor is not None
            titles = {c.title for c in screen.system_commands()}
            assert {"Cursor left", "Cursor right"} <= titles  # the arrows act now
            at = screen.view.cursor
            next(c for c in screen.system_commands() if c.title == "Cursor left").callback()
            assert screen.view.cursor < at

    asyncio.run(main())


def steps_of(run_dir):
    """steps.jsonl as the reader keeps it: the later of repeated global steps, in step order."""
    by_step = {}
    for line in (run_dir / "steps.jsonl").read_bytes().splitlines():
        rec = orjson.loads(line)
        by_step[rec["global_step"]] = rec
    return [by_step[k] for k in sorted(by_step)]


def bins_by_hand(values, columns):
    """min/max per equal run of values, None where a bin holds a NaN."""
    n, out = len(values), []
    for j in range(columns):
        chunk = values[n * j // columns : n * (j + 1) // columns]
        out.append(None if any(not math.isfinite(v) for v in chunk) else (min(chunk), max(chunk)))
    return out


def drawn(app) -> tuple:
    """(chart data, stats line) of the train loss chart, rendered now."""
    chart = app.screen.query_one("#train-loss", MetricChart)
    text = str(chart.render())
    return chart.last_data, text.split("\n")[0], len(chart.last_data.points)


def run_on(trained_run, body, size=(100, 32)):
    app = MonitorApp(trained_run, probe=lambda _s: "gone", tick_interval=3600)

    async def main():
        async with app.run_test(size=size) as pilot:
            await until(
                pilot,
                lambda: len(run_model(app).history) == 150 and len(run_model(app).epochs) == 2,
                "the run loads",
            )
            await pilot.pause()
            await body(pilot, app)

    asyncio.run(main())


def approx_points(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert (g is None) == (e is None), (g, e)
        if g is not None:
            assert g == pytest.approx(e, rel=1e-9, abs=1e-12)


def test_smoothing_draws_the_ema_over_the_dim_raw_curve(trained_run):
    loss = [r["loss"] for r in steps_of(trained_run)]

    async def body(pilot, app):
        data, _, columns = drawn(app)
        assert not data.background and len(loss) > columns  # binned: more steps than columns
        for _ in range(4):
            await pilot.press("right_square_bracket")
        await pilot.press("left_square_bracket")
        await pilot.press("right_square_bracket")
        assert app.screen.view.smoothing == pytest.approx(0.2)
        data, stats, columns = drawn(app)
        approx_points(data.points, bins_by_hand(ema_by_hand(loss, 0.2), columns))
        approx_points(data.background, bins_by_hand(loss, columns))
        assert "~.20" in stats
        lr = app.screen.query_one("#lr", MetricChart)
        lr.render()
        assert not lr.last_data.background  # the learning rate is a schedule: never smoothed
        for _ in range(30):
            await pilot.press("right_square_bracket")
        assert app.screen.view.smoothing == 0.99
        for _ in range(30):
            await pilot.press("left_square_bracket")
        assert app.screen.view.smoothing == 0.0

    run_on(trained_run, body)


def test_log_y_draws_log10_of_the_values(trained_run):
    loss = [r["loss"] for r in steps_of(trained_run)]

    async def body(pilot, app):
        await pilot.press("y")
        data, stats, columns = drawn(app)
        approx_points(data.points, bins_by_hand([math.log10(v) for v in loss], columns))
        assert "log" in stats
        await pilot.press("y")
        data, _, columns = drawn(app)
        assert max(p[1] for p in data.points) == pytest.approx(max(loss))

    run_on(trained_run, body)


def test_the_cursor_names_the_exact_loss_and_global_step(trained_run):
    steps = steps_of(trained_run)

    def readout(app) -> str:
        line = app.screen.query_one(CursorLine)
        assert line.display
        return line.text

    async def body(pilot, app):
        await pilot.press("c")
        _, stats, columns = drawn(app)
        last = steps[-1]
        text = readout(app)
        assert text.startswith(f"step {last['global_step']} · train loss {last['loss']:.6g} · ")
        assert f"train acc {last['accuracy'] * 100:.6g}%" in text  # accuracy in %, every digit
        assert f"learning rate {last['lr']:.6g}" in text
        assert "▏" not in stats and "★" in stats  # the chart keeps its numbers
        stride = max(1, len(steps) // columns)
        await pilot.press("left", "left", "left")
        rec = steps[-1 - 3 * stride]
        assert readout(app).startswith(f"step {rec['global_step']} · train loss {rec['loss']:.6g}")
        data, _, _ = drawn(app)
        assert data.cursor_column is not None
        await pilot.press("a")  # x axis: epoch; the cursor says which epoch as well
        assert readout(app).startswith(f"epoch {rec['global_step'] / 75:.2f} · step ")
        await pilot.press("right_square_bracket")  # smoothing on: the smoothed value after ~
        assert f"loss {rec['loss']:.6g} ~" in readout(app)  # (short names: it is long now)
        await pilot.press("left_square_bracket", "c")
        assert not app.screen.query_one(CursorLine).display  # off: the line goes
        assert not app.screen.check_action("move_cursor", ())  # arrows go back to the widgets

    run_on(trained_run, body)


def test_zoom_last_100_shows_only_the_last_100_steps(trained_run):
    loss = [r["loss"] for r in steps_of(trained_run)]

    async def body(pilot, app):
        for _ in range(3):  # all -> 10k -> 1k -> 100
            await pilot.press("z")
        assert app.screen.view.zoom == 100
        data, stats, columns = drawn(app)
        approx_points(data.points, bins_by_hand(loss[-100:], columns))
        assert min(p[0] for p in data.points) == pytest.approx(min(loss[-100:]))
        assert max(p[1] for p in data.points) == pytest.approx(max(loss[-100:]))
        assert "last 100" in stats
        await pilot.press("z")
        assert app.screen.view.zoom is None

    run_on(trained_run, body)


def test_outliers_and_the_time_axis(trained_run):
    steps = steps_of(trained_run)
    loss = np.array([r["loss"] for r in steps])

    async def body(pilot, app):
        await pilot.press("o")
        data, stats, _ = drawn(app)
        assert data.bounds == pytest.approx(tuple(np.percentile(loss, [1, 99])))
        assert "±1%" in stats
        await pilot.press("a", "a")
        assert app.screen.view.x_axis == "time"
        data, stats, columns = drawn(app)
        assert "by time" in stats
        edges = cm.time_edges(np.array([r["t"] for r in steps]), columns)
        approx_points(data.points, cm.bin_minmax(loss, edges))
        elapsed = duration(steps[-1]["t"] - steps[0]["t"])
        assert data.x_ticks[0] == (0, "0:00")  # the x axis reads wall time from the first step
        await pilot.press("c")
        text = app.screen.query_one(CursorLine).text
        assert text.startswith(f"{elapsed} · step {steps[-1]['global_step']} · train loss ")

    run_on(trained_run, body)


def test_every_new_action_is_in_the_command_palette(trained_run):
    async def body(pilot, app):
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        titles = {c.title for c in app.get_system_commands(screen)}
        for title in (
            "Log pane",
            "Smooth more",
            "Smooth less",
            "Log-Y scale",
            "X axis",
            "Ignore outliers",
            "Zoom",
            "Cursor",
            "Export metrics",
        ):
            assert title in titles
        zoom = next(c for c in app.get_system_commands(screen) if c.title == "Zoom")
        zoom.callback()
        assert screen.view.zoom == 10_000

    run_on(trained_run, body)


def test_ema_continues_a_growing_series_and_restarts_after_an_edit():
    from entrenar_tui.charts.views import Smoothed
    from trainer.monitor.reader import Series

    cache = Smoothed()  # a widget's own cache: it extends a series it has smoothed before

    def smoothed(series, weight):
        return cache("loss", series, weight)

    rng = np.random.default_rng(2)
    values = rng.normal(size=3000)
    series = Series()
    series.extend(values[:1000])
    np.testing.assert_allclose(
        smoothed(series, 0.9), ema_by_hand(values[:1000], 0.9), rtol=1e-12, atol=1e-12
    )
    series.extend(values[1000:])  # appended: only the new values are smoothed
    np.testing.assert_allclose(
        smoothed(series, 0.9), ema_by_hand(values, 0.9), rtol=1e-12, atol=1e-12
    )
    values[10] = 100.0
    series.set(10, 100.0)  # a resumed run redid a step: smoothed again from the start
    np.testing.assert_allclose(
        smoothed(series, 0.9), ema_by_hand(values, 0.9), rtol=1e-12, atol=1e-12
    )
    a, s, k = cm.ema_continue(values[:5], 0.5)
    b, _, _ = cm.ema_continue(values[5:9], 0.5, s, k)
    np.testing.assert_allclose(
        np.concatenate((a, b)), ema_by_hand(values[:9], 0.5), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        smoothed(series, 0.5), ema_by_hand(values, 0.5), rtol=1e-12, atol=1e-12
    )
