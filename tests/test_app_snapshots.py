"""Snapshots of the key screens (pytest-textual-snapshot). Deterministic: scripted run data
(tests.fake_run.scenario), a clock pinned to 2 s after the last heartbeat, a fixed answer from
the process check. Regenerate with `pytest tests/test_app_snapshots.py --snapshot-update`."""

from __future__ import annotations

import time

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from tests.conftest import patience
from tests.fake_run import FakeRun, scenario
from tests.helpers import run_model, run_screen
from trainer.monitor.schema import Files

# The screens a user meets, at the 80×24 floor, one in the room of 200×60.
CASES = {
    "running": ("running", "alive", (80, 24)),
    "validating": ("validating", "alive", (80, 24)),
    "completed": ("completed", "gone", (80, 24)),
    "completed_wide": ("completed", "gone", (200, 60)),
    "failed": ("failed", "gone", (100, 30)),
    "crashed": ("crashed", "gone", (80, 24)),
}


def pinned_app(run: FakeRun, probe: str) -> MonitorApp:
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
    name, probe, size = CASES[case]
    run = scenario(tmp_path / "exp-001", name) if name != "crashed" else None
    if run is None:
        run = FakeRun(tmp_path / "exp-001", pid=999_999).start()
        run.play_epoch()
        for _ in range(12):
            run.train_step()
    app = pinned_app(run, probe)
    app.expected_steps = run.global_step
    assert snap_compare(app, terminal_size=size, run_before=loaded)


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
