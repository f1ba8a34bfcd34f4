"""The run screen at the sizes people use (80×24, 120×34), with and without the log pane, on a
10-epoch run resumed once: every chart keeps at least 2 plot rows with its frame (y labels, the x
axis line, the epoch and resume marks), the epoch table shows its last rows, the problems line
and the footer stay on screen, and the cursor readout is whole."""

from __future__ import annotations

import orjson
import pytest
from rich.cells import cell_len
from textual.widgets import Static

from entrenar_tui.app import MonitorApp
from entrenar_tui.widgets.cursor_line import CursorLine
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.log_pane import LogPane
from entrenar_tui.widgets.metric_chart import MetricChart
from entrenar_tui.widgets.problems_line import ProblemsLine
from tests.fake_run import FakeRun, scenario
from tests.helpers import run_app, run_model, run_screen, until
from trainer.monitor.schema import Files

CHART_IDS = ("train-loss", "lr", "train-acc", "val-loss", "val-acc")


def pinned(run_dir, probe: str = "alive") -> MonitorApp:
    heartbeat = orjson.loads((run_dir / Files.STATE).read_bytes())["heartbeat"]
    return MonitorApp(
        run_dir, clock=lambda: heartbeat + 2.0, probe=lambda _s: probe, tick_interval=3600
    )


@pytest.mark.parametrize("size", [(80, 24), (120, 34)])
@pytest.mark.parametrize("log", [False, True])
def test_every_chart_keeps_its_frame_and_rows(tmp_path, size, log):
    run = scenario(tmp_path / "exp-001", "long_running")
    (run.dir / Files.LOG).write_text("".join(f"line {i}\n" for i in range(30)), encoding="utf-8")
    app = pinned(run.dir)

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) == 147, "the run loads")
        await until(pilot, lambda: len(run_model(app).epochs) == 7, "the epochs load")
        if log:
            await pilot.press("l")
        await pilot.pause()
        screen = run_screen(app)
        for chart_id in CHART_IDS:
            chart = screen.query_one(f"#{chart_id}", MetricChart)
            assert chart.size.height >= 4, (chart_id, chart.size)
            lines = str(chart.render()).split("\n")
            assert len(lines) == chart.size.height
            plot = lines[1:-1]
            assert all("┤" in line or "│" in line for line in plot)
            assert sum("┤" in line for line in plot) >= 2  # at least the range's two ends
            assert lines[-1].lstrip().startswith("└")
        step_axis = str(screen.query_one("#train-loss", MetricChart).render()).split("\n")[-1]
        assert "↻" in step_axis and "┴" in step_axis and step_axis.endswith("147")
        table = screen.query_one(EpochTable)
        pane = screen.query_one(LogPane)
        assert pane.display == log  # asked for, and there is room for it at both sizes
        if table.display:  # it shows its last rows: the epoch in progress is on screen
            await pilot.pause()
            assert table.scroll_y == table.max_scroll_y
        bottom = app.screen.size.height
        problems = screen.query_one(ProblemsLine)
        assert problems.region.y + problems.region.height <= bottom - 1  # above the footer
        if size == (120, 34) or not log:  # room for the table's last rows too
            assert table.display and table.size.height >= 3

    run_app(app, body, size=size)


@pytest.mark.parametrize("size", [(80, 24), (120, 34)])
def test_the_cursor_line_shows_every_value_whole(tmp_path, size):
    run = scenario(tmp_path / "exp-001", "long_running")
    app = pinned(run.dir)
    steps = [orjson.loads(line) for line in (run.dir / Files.STEPS).read_bytes().splitlines()]

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) == 147, "the run loads")
        await pilot.press("c", "left")
        await pilot.pause()
        line = run_screen(app).query_one(CursorLine)
        cursor = run_screen(app).view.cursor
        assert cursor < len(steps) - 1  # moved left by a dot column's steps
        step = steps[cursor]
        expected = (
            f"step {step['global_step']} · train loss {step['loss']:.6g} · learning rate "
            f"{step['lr']:.6g} · train acc {step['accuracy'] * 100:.6g}%"
        )
        if size[0] < 100:  # the short names, so that no value wraps away from its name
            expected = (
                f"step {step['global_step']} · loss {step['loss']:.6g} · lr "
                f"{step['lr']:.6g} · acc {step['accuracy'] * 100:.6g}%"
            )
        assert line.text == expected
        shown = "".join(str(line.render()).split("\n"))
        assert "…" not in shown and shown.replace(" ", "") == ("▏" + expected).replace(" ", "")
        assert line.size.height == 1

    run_app(app, body, size=size)


def test_the_status_row_gives_way_at_once_when_the_badge_grows(tmp_path):
    """At 80 columns the status row is fitted as the epoch table is: when the status changes to a
    longer badge (► RUNNING → ■ STOPPING, ◆ VALIDATING, ✓ COMPLETED) the FLOP/s and MFU give way in
    the same redraw, never the position (issue 25: it was cut, `global 150/7…`, because the room
    was reckoned from the badge's width at the last layout, before its new status was drawn)."""
    flops = {"step_flops": int(19.05e9), "peak_flops": 52.9e9}  # MFU 69.9% (last 10 steps)
    run = FakeRun(tmp_path / "quickstart", epochs=10, steps_per_epoch=75, **flops).start()
    run.play_epoch()
    run.play_epoch()
    for _ in range(17):  # `epoch 3/10 · step 17/75 · global 167/750`: the MFU just fits beside it
        run.train_step()
    app = pinned(run.dir)

    def shown(selector: str) -> Static:
        return run_screen(app).query_one(selector, Static)

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) == 167, "the run loads")
        await pilot.pause()
        assert shown("#throughput").display  # the MFU is beside the position while it runs
        for status in ("stopping", "validating", "completed"):
            run.writer.update_state(status="running")
            await until(pilot, lambda: run_model(app).status == "running", "it runs again")
            run.writer.update_state(status=status)
            await until(pilot, lambda s=status: run_model(app).status == s, f"it is {status}")
            await pilot.pause()
            position = shown("#position")
            text = str(position.render())
            assert text.endswith("global 167/750")
            assert position.size.width >= cell_len(text), (status, position.size, text)

    run_app(app, body, size=(80, 24))


def test_the_header_gives_way_model_names_first():
    """header_titles (the run header's fitting): the run's name keeps up to half the room, then
    the model names give way (all of them, then the first, then the first cut in the middle);
    the world size always stays. The rest of the header is the icon and its padding."""
    from entrenar_tui.widgets.run_header import header_titles

    names = ["Qwen2-0.5B-instruct", "Qwen2ForSequenceClassification"]
    both = "Qwen2-0.5B-instruct · Qwen2ForSequenceClassification · world 1"
    assert header_titles("exp-001", names, 1, 120) == ("exp-001", both)
    assert header_titles("exp-001", names, 1, 80) == ("exp-001", "Qwen2-0.5B-instruct · world 1")
    title, sub_title = header_titles("a-very-long-run-name-" * 4, names, 8, 80)
    assert (title, sub_title) == ("a-very-long-ru…-long-run-name-", "Qwen2-0.…instruct · world 8")
    assert len(title) + 3 + len(sub_title) <= 80 - 20  # within the header's room
