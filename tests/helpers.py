"""Helpers shared by the tests, defined once: driving the real app (run_app, browse, until), what
its run screen shows (run_screen, run_model, run_watcher), the fake trainer's command, copying a run,
the outside tools a test needs (needs_tool).
(Fixtures, config and corpus builders live in conftest.py.)"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
import watchfiles

from entrenar_tui.model.run import RunModel
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.watch.run_watcher import RunWatcher
from entrenar_tui.widgets.runs_table import RunsTable
from tests.conftest import patience
from trainer.monitor.reader import RunSnapshot, load_run
from trainer.monitor.schema import Files
from trainer.monitor.step_rows import STEP_FIELDS, step_row
from trainer.monitor.writer import MonitorWriter

FAKE_TRAINER = Path(__file__).parent / "snapshot_apps" / "fake_trainer.py"
SIZE = (100, 32)
REQUIRE_TOOLS = "ENTRENAR_REQUIRE_TOOLS"  # .ci/run sets it to 1: there a missing tool fails

_last_seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_screen(app) -> MonitorScreen | None:
    """The topmost run screen (under a dialog or the help, if one is open); after the app has
    exited, the last one a test looked at (to assert on what it ended with)."""
    screen = next((s for s in reversed(app.screen_stack) if isinstance(s, MonitorScreen)), None)
    if screen is not None:
        _last_seen[app] = screen
    return screen or _last_seen.get(app)


def run_model(app) -> RunModel:
    """The model of the run open on screen."""
    screen = run_screen(app)
    assert screen is not None, "no run screen is open"
    return screen.model


def run_watcher(app) -> RunWatcher | None:
    screen = run_screen(app)
    return None if screen is None else screen.watcher


async def until(pilot, condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Let the app run (Pilot) until condition() holds; fail naming `what` after patience(timeout)
    (60 s with the default scale: as generous as a loaded 2-core box needs)."""
    deadline = time.monotonic() + patience(timeout)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await pilot.pause(0.02)


def wait_until(condition, what: str, watch: Path, timeout: float = 120) -> None:
    """Outside an app: wake on file events in `watch` (or every 100 ms) until condition() holds;
    fail naming `what` after patience(timeout)."""
    deadline = time.monotonic() + patience(timeout)
    watch.mkdir(parents=True, exist_ok=True)
    for _ in watchfiles.watch(
        watch, rust_timeout=100, yield_on_timeout=True, debounce=20, recursive=False
    ):
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")


def run_app(
    app, body: Callable[..., Awaitable[None]], *, size=SIZE, notifications: bool = False
) -> None:
    """Run body(pilot) in the real app (run_test re-raises anything the app raised: a crash fails
    the test). A run screen's watcher is running before the body starts, and still after it: a
    watcher thread that died fails the test. notifications=True draws the toasts too."""

    async def main():
        async with app.run_test(size=size, notifications=notifications) as pilot:
            await until(pilot, lambda: (w := run_watcher(app)) is None or w.running, "it watches")
            await body(pilot)
            watcher = run_watcher(app)
            assert watcher is None or watcher.running, "the watcher thread died"

    asyncio.run(main())


def browse(app, body: Callable[..., Awaitable[None]], *, size=(130, 30), rows: int = 1) -> None:
    """Run body(pilot) in the real app on its runs browser, once at least `rows` runs are listed
    (run_test re-raises anything the app raised). No watcher check as in run_app: a body may open a
    run and come back, and the run screen's watcher stops when it closes."""

    def listed() -> int:
        return len(app.screen.query_one(RunsTable).row_keys())

    async def main():
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: listed() >= rows, f"{rows} runs are listed")
            await pilot.pause()
            await body(pilot)

    asyncio.run(main())


def needs_tool(tool: str, found: bool) -> pytest.MarkDecorator:
    """Skip a test whose outside tool (tmux, Chromium) is not installed, on a developer's machine;
    where the tools are required (ENTRENAR_REQUIRE_TOOLS=1, as .ci/run sets it, after .ci/tools
    installed them) the test runs, and fails without the tool: a CI must never pass by skipping."""
    required = os.environ.get(REQUIRE_TOOLS) == "1"
    return pytest.mark.skipif(
        not found and not required, reason=f"{tool} is not installed (.ci/tools installs it)"
    )


def fake_command(*args: str, step_s: float = 0.05, hold_after: int | None = None) -> list[str]:
    """The fake trainer's command (snapshot_apps/fake_trainer.py). hold_after=N: it waits, alive,
    after its N-th step until a stop (or a kill), so that a slow app still finds it running."""
    hold = ["--hold-after", str(hold_after)] if hold_after is not None else []
    return [sys.executable, str(FAKE_TRAINER), *args, "--step-s", str(step_s), *hold]


def copy_run(src: Path, dst: Path, *, checkpoints: bool = False) -> Path:
    """A copy of a shared (session-scoped) run to change; without its checkpoints unless asked
    (the app reads only the contract files)."""
    ignore = None if checkpoints else shutil.ignore_patterns("checkpoints")
    shutil.copytree(src, dst, symlinks=True, ignore=ignore)
    return dst


def hook_steps(monkeypatch, at_global_step: int, action) -> None:
    """Call action(run_dir) right after the trainer finishes step `at_global_step` (to stop,
    crash or kill a real run at an exact point): on the state.json write that first announces it
    (the step's steps.jsonl line may come later, with the next flush of every log_interval)."""
    original = MonitorWriter.update_state
    fired = []

    def hooked(self, **changes):
        original(self, **changes)
        if (
            changes.get("global_step") == at_global_step
            and changes.get("status") == "running"
            and not fired
        ):
            fired.append(True)
            action(self.dir)

    monkeypatch.setattr(MonitorWriter, "update_state", hooked)


def record_returns(monkeypatch, module, name: str) -> list:
    """Wrap module.name so that every call's return value is appended to the list returned (to
    see that the trainer called a switch, and what it turned)."""
    original, returns = getattr(module, name), []

    def recorded(*args, **kwargs):
        returns.append(original(*args, **kwargs))
        return returns[-1]

    monkeypatch.setattr(module, name, recorded)
    return returns


# ------------------------------------------------------------------------------ step history


def assert_same_history(got: RunSnapshot, want: RunSnapshot) -> None:
    """Equal step histories: the steps, every column (NaN where NaN), the unreadable lines, the
    bytes of a line in flight, and the step timing."""
    a, b = got.history, want.history
    assert a.global_steps.array.tolist() == b.global_steps.array.tolist()
    for name in STEP_FIELDS:
        assert np.array_equal(
            a.series[name].values.array, b.series[name].values.array, equal_nan=True
        ), name
    assert (got.bad_lines, got.partial_bytes) == (want.bad_lines, want.partial_bytes)
    assert a.typical_step_s() == b.typical_step_s()


def assert_history_is_steps_jsonl(run: Path) -> None:
    """The history a reader loads is steps.jsonl's, line by line: the global step and values of
    every complete line (orjson, one line at a time; a later line repeating a step wins, in step
    order, as docs/contract.md's reader rules say), nothing else and nothing more."""
    raw = (run / Files.STEPS).read_bytes()
    rows = dict(step_row(orjson.loads(line)) for line in raw[: raw.rfind(b"\n") + 1].splitlines())
    want = sorted(rows.items())
    history = load_run(run).history
    assert history.global_steps.array.tolist() == [step for step, _ in want]
    for j, name in enumerate(STEP_FIELDS):
        values = np.array([row[j] for _, row in want], np.float64)
        assert np.array_equal(history.series[name].values.array, values, equal_nan=True), name
