"""Snapshots of the key screens (pytest-textual-snapshot). Deterministic: scripted run data
(tests.fake_run.scenario), a clock pinned to 2 s after the last heartbeat, a fixed answer from
the process check. Regenerate with `pytest tests/test_app_snapshots.py --snapshot-update`."""

from __future__ import annotations

import time

import orjson
import pytest

from entrenar_tui import settings
from entrenar_tui.app import MonitorApp
from entrenar_tui.model.alerts import AlertSettings
from entrenar_tui.widgets.log_pane import LogPane
from tests.conftest import patience
from tests.fake_run import FakeRun, scenario
from tests.helpers import run_model, run_screen
from trainer.monitor.schema import Files

# The screens a user meets, at the 80×24 floor and at 120×34 (the long runs: 10 epochs, resumed
# once, more epochs than the table has rows), with and without the log pane, one in 200×60; a run
# healed twice (issue 30's ↺ marks and the problems line).
CASES = {
    "running": ("long_running", "alive", (80, 24), False),
    "running_log": ("long_running", "alive", (80, 24), True),
    "running_120": ("long_running", "alive", (120, 34), False),
    "running_120_log": ("long_running", "alive", (120, 34), True),
    "completed": ("long_completed", "gone", (80, 24), False),
    "completed_120_log": ("long_completed", "gone", (120, 34), True),
    "validating": ("validating", "alive", (80, 24), False),
    "completed_wide": ("completed", "gone", (200, 60), False),
    "failed": ("failed", "gone", (100, 30), False),
    "crashed": ("crashed", "gone", (80, 24), False),
    "recovered": ("recovered", "alive", (80, 24), False),  # ↺ twice on the step charts' x axis
}
LOG_LINES = "".join(
    f"epoch {e}/10 done: train loss 0.{60 - e}21 | val loss 0.4{e}0\n" for e in range(1, 8)
)


def pinned_app(run: FakeRun, probe: str) -> MonitorApp:
    # The scripted steps' `t` is on 2023's clock and the heartbeat on today's: left on, the stall
    # alert would say no step for years (a real trainer's `t` and heartbeat agree).
    settings.save(settings.Settings(alerts=AlertSettings(stalled=False)))
    heartbeat = orjson.loads((run.dir / Files.STATE).read_bytes())["heartbeat"]
    return MonitorApp(
        run.dir, clock=lambda: heartbeat + 2.0, probe=lambda _s: probe, tick_interval=3600
    )


async def loaded(pilot) -> None:
    """Wait (bounded) until the watcher has delivered everything on disk."""
    app = pilot.app
    deadline = time.monotonic() + patience(10)
    while not (
        run_model(app).state
        and run_model(app).watch_mode
        and len(run_model(app).history) == app.expected_steps
    ):
        assert time.monotonic() < deadline, "the run did not load"
        await pilot.pause(0.02)
    run_screen(app).tick()
    await pilot.pause()


@pytest.mark.parametrize("case", CASES)
def test_screen(case, tmp_path, snap_compare):
    name, probe, size, log = CASES[case]
    run = scenario(tmp_path / "exp-001", name) if name != "crashed" else None
    if run is None:
        run = FakeRun(tmp_path / "exp-001", pid=999_999).start()
        run.play_epoch()
        for _ in range(12):
            run.train_step()
    app = pinned_app(run, probe)
    app.expected_steps = run.global_step
    if log:
        (run.dir / Files.LOG).write_text(LOG_LINES, encoding="utf-8")

    async def shown(pilot):
        await loaded(pilot)
        if log:
            await pilot.press("l")
            pane = pilot.app.screen.query_one(LogPane)
            deadline = time.monotonic() + patience(10)
            while len(pane.lines) < 7:
                assert time.monotonic() < deadline, "the log did not show"
                await pilot.pause(0.02)
            await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=shown)


@pytest.mark.parametrize("case", ["running", "completed"])
def test_screen_with_the_model_flops(case, tmp_path, snap_compare):
    """The FLOP/s and MFU on the status row at 80×24: the last 10 steps' while running, the whole
    run's once completed."""
    run = scenario(tmp_path / "exp-001", case, step_flops=int(19.05e9), peak_flops=52.9e9)
    app = pinned_app(run, "alive" if case == "running" else "gone")
    app.expected_steps = run.global_step
    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded)


def test_stop_confirmation(tmp_path, snap_compare):
    run = scenario(tmp_path / "exp-001", "running")
    app = pinned_app(run, "alive")
    app.expected_steps = run.global_step

    async def ask(pilot):
        await loaded(pilot)
        app.controller.send_signal = lambda *a: (
            False
        )  # the dialog only: never signal from a snapshot
        await pilot.press("x")

    assert snap_compare(app, terminal_size=(80, 24), run_before=ask)


def test_confusion_view(tmp_path, snap_compare):
    """`m` at 80×24 (issue 28): five classes with names too alike for a 4-cell column (the axis
    numbers them), the best epoch (2 of 3, ★) in counts, per-class P/R/F1, the most-confused pairs."""
    from entrenar_tui.screens.confusion import ConfusionScreen
    from tests.conftest import LABELS

    run = FakeRun(tmp_path / "exp-001", classes=LABELS).start()
    for _ in range(3):
        run.play_epoch()
    app = pinned_app(run, "alive")
    app.expected_steps = run.global_step

    async def opened(pilot):
        await loaded(pilot)
        await pilot.press("m")
        deadline = time.monotonic() + patience(10)
        while not isinstance(pilot.app.screen, ConfusionScreen):
            assert time.monotonic() < deadline, "m did not open the view"
            await pilot.pause(0.02)
        await pilot.press("left")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=opened)
