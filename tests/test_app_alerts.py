"""The alerts as the user meets them: the real MonitorApp (Pilot) watching scripted runs that grow
while it watches (tests.fake_run.FakeRun through the real MonitorWriter). What happens while the
app watches is told once (a toast, the bell, --notify-cmd: a real child that writes down its argv);
what a run held when it was opened is only shown (problems line, `?`)."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.screens.help import HelpScreen
from entrenar_tui.screens.runs import RunsScreen
from entrenar_tui.widgets.problems_line import ProblemsLine
from tests.fake_run import T0, FakeRun, scenario
from tests.helpers import run_app, run_model, run_screen, until

NOTIFIER = "import json, sys; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + '\\n')"


def notifier(out: Path) -> str:
    """A --notify-cmd whose child appends its arguments (after CMD's own) to `out`, a line each."""
    return shlex.join([sys.executable, "-c", NOTIFIER, str(out)])


def notified(out: Path) -> list[list[str]]:
    return [orjson.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


class Told:
    """What the app told: its toasts (text, severity) and how often it rang the bell."""

    def __init__(self, app: MonitorApp) -> None:
        self.toasts: list[tuple[str, str]] = []
        self.bells = 0
        app.notify = self.toast  # type: ignore[method-assign]
        app.bell = self.bell  # type: ignore[method-assign]

    def toast(self, message: str, *, severity: str = "information", **_kw) -> None:
        self.toasts.append((message, severity))

    def bell(self) -> None:
        self.bells += 1


class TrainerClock:
    """The scripted run's clock: a second after its last step the app has read (its `t`), plus
    `late` seconds, plus under a second that moves with wall time (so that each tick is seen to
    happen). Not the last step written: a burst of writes would put the clock ahead of what the
    app has read, and a tick between the two would see a stall that never happened."""

    def __init__(self, run: FakeRun, read: Callable[[], int | None] = lambda: None) -> None:
        self.run, self.read, self.late = run, read, 0.0
        self.start = time.monotonic()

    def __call__(self) -> float:
        moving = (time.monotonic() - self.start) % 1.0
        steps = self.read()
        steps = self.run.global_step if steps is None else min(steps, self.run.global_step)
        return T0 + steps * self.run.step_s + 1.0 + self.late + moving


def watching(run: FakeRun, **kwargs) -> tuple[MonitorApp, Told, TrainerClock]:
    def read() -> int | None:  # the steps the run screen holds (none open yet: all written)
        screen = run_screen(app)
        return len(screen.model.history) if screen is not None else None

    clock = TrainerClock(run, read)
    app = MonitorApp(run.dir, clock=clock, probe=lambda _s: "alive", tick_interval=0.2, **kwargs)
    return app, Told(app), clock


def problems(app: MonitorApp) -> str:
    return str(app.screen.query_one(ProblemsLine).render())


def loaded(app: MonitorApp, steps: int):
    """The watcher's first read is in (alerts primed) and the history has `steps` steps."""
    return lambda: run_screen(app).alerts.primed and len(run_model(app).history) == steps


async def settle(pilot, app: MonitorApp, run: FakeRun, what: str) -> None:
    """Until the app holds every step written and has ticked since (a late alert would be in)."""
    await until(pilot, lambda: len(run_model(app).history) == run.global_step, what)
    ticked = run_model(app).now
    await until(pilot, lambda: run_model(app).now != ticked, f"{what}: a tick")


def end_epoch(run: FakeRun) -> None:
    """The rest of the epoch in progress, its validation and its end."""
    for _ in range(run.spe - run.step):
        run.train_step()
    for done in range(16, run.n_val + 1, 16):
        run.validate(done)
    run.end_epoch()


def test_a_spike_while_watching_is_shown_toasted_rung_and_notified_once(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    for _ in range(5):
        run.train_step()
    out = tmp_path / "notified.jsonl"
    app, told, _clock = watching(run, notify_cmd=notifier(out))

    async def body(pilot):
        await until(pilot, loaded(app, 25), "the run loads")
        assert told.toasts == [] and told.bells == 0
        run.train_step(loss=9.0)
        await until(pilot, lambda: told.toasts, "the spike is told")
        message, severity = told.toasts[0]
        assert message.startswith("exp: loss spiked to 9.0000 at step 26 (recent average 0.")
        assert severity == "warning"
        assert problems(app) == f"! {message.removeprefix('exp: ')}"
        await until(pilot, lambda: notified(out), "the notify command ran")
        for _ in range(3):  # the run goes on: the same spike is never told again
            run.train_step()
        await settle(pilot, app, run, "the next steps load")
        assert told.toasts == [(message, "warning")] and told.bells == 1
        assert notified(out) == [["spike", message]]

    run_app(app, body)


def test_each_alert_fires_once_as_a_scripted_run_goes_wrong(tmp_path):
    """A spike, a NaN, validation loss rising three epochs, a stall, the end: each once, in order,
    as a toast of its severity, a ring and a --notify-cmd call."""
    run = FakeRun(tmp_path / "exp", epochs=5, val_losses=(0.62, 0.48, 0.51, 0.55, 0.60)).start()
    run.play_epoch()
    out = tmp_path / "notified.jsonl"
    app, told, clock = watching(run, notify_cmd=notifier(out))

    async def told_now(pilot, n: int, what: str) -> None:
        await until(pilot, lambda: len(told.toasts) >= n, what)
        await until(pilot, lambda: len(notified(out)) >= n, f"{what}: notified")

    async def body(pilot):
        await until(pilot, loaded(app, 20), "the run loads")
        run.train_step(loss=9.0)
        await told_now(pilot, 1, "the spike")
        run.train_step(loss=float("nan"))
        await told_now(pilot, 2, "the NaN")
        for _ in range(4):  # epochs 2-5: val loss 0.48, 0.51, 0.55, 0.60
            end_epoch(run)
        await told_now(pilot, 3, "val loss rising")
        clock.late = 120.0  # no step for two minutes (a step takes 0.5 s)
        await told_now(pilot, 4, "the stall")
        run.finish("completed")
        await told_now(pilot, 5, "the end")
        await settle(pilot, app, run, "all is in")
        clock.late += 300.0  # a later look finds nothing new
        await settle(pilot, app, run, "a later tick")
        assert [severity for _, severity in told.toasts] == [
            "warning",
            "error",
            "warning",
            "warning",
            "information",
        ]
        texts = [text for text, _ in told.toasts]
        assert texts[0].startswith("exp: loss spiked to 9.0000 at step 21")
        assert texts[1:3] == [
            "exp: non-finite loss (NaN/Inf) at step 22",
            "exp: validation loss rose 3 epochs in a row, 0.4800 → 0.6000 at epoch 5",
        ]
        stall = r"exp: no step for 2:0\d since step 100 \(a step takes 0\.5 s, median\)"
        assert re.fullmatch(stall, texts[3]), texts[3]
        assert texts[4] == "exp: the run completed at step 100"
        assert told.bells == 5
        kinds = ["spike", "nan", "val_rising", "stalled", "finished"]
        assert notified(out) == [[kind, text] for kind, text in zip(kinds, texts, strict=True)]

    run_app(app, body)


def test_an_already_finished_run_is_shown_but_never_told(tmp_path):
    run = scenario(tmp_path / "exp", "completed")
    out = tmp_path / "notified.jsonl"
    app, told, _clock = watching(run, notify_cmd=notifier(out))

    async def body(pilot):
        await until(pilot, loaded(app, 80), "the run loads")
        await settle(pilot, app, run, "a tick after the first read")
        assert problems(app) == "the run completed at step 80"
        assert told.toasts == [] and told.bells == 0 and not out.exists()

    run_app(app, body)


def test_a_run_stalled_when_opened_is_shown_stalled_but_not_told(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    for _ in range(5):
        run.train_step()
    app, told, clock = watching(run)
    clock.late = 120.0  # its last step two minutes before the app opens it

    async def body(pilot):
        await until(pilot, loaded(app, 25), "the run loads")
        await settle(pilot, app, run, "a tick after the first read")
        assert re.fullmatch(r"! no step for 2:0\d since step 25 \(.*\)", problems(app))
        assert told.toasts == [] and told.bells == 0

    run_app(app, body)


def test_old_alerts_are_on_the_problems_line_most_serious_first_and_all_in_help(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    run.train_step(loss=9.0)
    end_epoch(run)
    run.finish("completed")
    app, told, _clock = watching(run)

    async def body(pilot):
        await until(pilot, loaded(app, 40), "the run loads")
        await settle(pilot, app, run, "a tick after the first read")
        line = problems(app)
        assert line.startswith("! loss spiked to 9.0000 at step 21")
        assert line.endswith("(+1 more, ? for all)")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        shown = [(p.level, p.text) for p in app.screen.problems]
        assert shown[0][0] == "warning" and shown[0][1].startswith("loss spiked to 9.0000")
        assert shown[1:] == [("info", "the run completed at step 40")]
        assert told.toasts == [] and told.bells == 0

    run_app(app, body)


@pytest.mark.parametrize(
    ("alerts", "fires", "notice"),
    [
        ({}, True, None),
        ({"spike_z": 1000}, False, None),  # 9.0 over ~0.4 ± 0.05 is far less than 1000 σ
        ({"spike_z": "high"}, True, "alerts.spike_z (using 6.0)"),  # a bad value: the default
        ({"spike": False}, False, None),
    ],
)
def test_the_thresholds_in_the_settings_decide_whether_a_spike_fires(
    tmp_path, monkeypatch, alerts, fires, notice
):
    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_bytes(orjson.dumps({"alerts": alerts}))
    monkeypatch.setenv("ENTRENAR_TUI_CONFIG_DIR", str(config))
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    app, told, _clock = watching(run)

    async def body(pilot):
        await until(pilot, loaded(app, 20), "the run loads")
        run.train_step(loss=9.0)
        run.train_step()
        await settle(pilot, app, run, "the spike loads")
        spikes = [t for t, _ in told.toasts if "loss spiked" in t]
        assert len(spikes) == (1 if fires else 0)
        assert ("loss spiked" in problems(app)) is fires
        notices = [t for t, severity in told.toasts if severity == "warning" and "settings" in t]
        if notice:
            assert notices == [f"settings: bad values in {config / 'settings.json'}: {notice}"]
        else:
            assert notices == []

    run_app(app, body)


def test_the_browser_tells_runs_that_end_or_crash_while_it_is_open(tmp_path):
    root = tmp_path / "runs"
    scenario(root / "done-before", "completed")
    ending = FakeRun(root / "ending", epochs=2).start()
    ending.play_epoch()
    crashing = FakeRun(root / "crashing", epochs=2, pid=999_999).start()
    crashing.play_epoch()
    opened = FakeRun(root / "opened", epochs=2).start()
    opened.play_epoch()
    gone: set[int] = set()
    out = tmp_path / "notified.jsonl"
    app = MonitorApp(
        root=root,
        probe=lambda state: "gone" if state.get("pid") in gone else "alive",
        notify_cmd=notifier(out),
    )
    told = Told(app)

    def statuses() -> dict[str, str]:
        screen = next(s for s in app.screen_stack if isinstance(s, RunsScreen))
        return {r.name: r.status for r in screen.runs}

    async def body(pilot):
        await until(pilot, lambda: statuses().get("done-before") == "completed", "listed")
        await until(pilot, lambda: len(statuses()) == 4, "all four listed")
        assert told.toasts == [] and told.bells == 0  # "done-before" had ended: primed
        ending.finish("completed")
        gone.add(999_999)
        await until(pilot, lambda: len(told.toasts) == 2, "the end and the crash told")
        assert sorted(told.toasts) == [
            ("crashing: the trainer crashed at step 20", "error"),
            ("ending: the run completed at step 20", "information"),
        ]
        # A run that had ended before it was copied in did not end while the browser watched.
        shutil.copytree(root / "done-before", root / "copied-in")
        await until(pilot, lambda: "copied-in" in statuses(), "the copy is listed")
        assert len(told.toasts) == 2
        # A run open on a run screen is told by that screen alone, not twice.
        app.screen.open_run(opened.dir)
        await until(pilot, lambda: (s := run_screen(app)) and s.alerts.primed, "opened")
        opened.finish("completed")
        await until(pilot, lambda: statuses().get("opened") == "completed", "the browser sees it")
        await until(pilot, lambda: len(told.toasts) == 3, "the opened run's end told")
        await until(pilot, lambda: len(notified(out)) == 3, "notified")
        assert told.toasts[2] == ("opened: the run completed at step 20", "information")
        assert told.bells == 3
        assert sorted(kind for kind, _ in notified(out)) == ["crashed", "finished", "finished"]
        await pilot.press("escape")  # back on the browser: nothing told again
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "back on the browser")
        app.screen._tell_alerts()
        assert len(told.toasts) == 3 and told.bells == 3

    run_app(app, body, size=(130, 30))


def test_a_crash_is_told_only_once_it_has_held_a_few_seconds(tmp_path):
    """A trainer that exits has just written its last state.json: for CRASH_GRACE_S the pid being
    gone is not yet a crash (the watcher may not have delivered the final state); after it, it is
    told once. A run that reads as ended within the grace is never told crashed."""
    from entrenar_tui.model.run import RunModel
    from entrenar_tui.model.run_alerts import CRASH_GRACE_S, RunAlerts
    from trainer.monitor.reader import load_run

    run = FakeRun(tmp_path / "exp", epochs=2).start()
    run.play_epoch()
    snapshot = load_run(run.dir)
    t0 = snapshot.state["heartbeat"] + 1.0
    model = RunModel(run.dir, clock=lambda: t0)
    model.state, model.history = snapshot.state, snapshot.history
    model.set_epochs(snapshot.epochs, snapshot.best_epoch)
    alerts = RunAlerts()
    model.tick(t0, "alive")
    alerts.prime(model)
    model.tick(t0 + 1.0, "gone")
    assert model.status == "crashed"
    assert alerts.update(model) == []  # just gone: not yet
    model.tick(t0 + 1.0 + CRASH_GRACE_S / 2, "gone")
    assert alerts.update(model) == []
    model.tick(t0 + 1.0 + CRASH_GRACE_S, "gone")
    told = alerts.update(model)
    assert [a.kind for a in told] == ["crashed"]
    model.tick(t0 + 10.0, "gone")
    assert alerts.update(model) == []  # once
    # another run whose final state arrives within the grace: never told crashed
    other = RunAlerts()
    model.tick(t0, "alive")
    other.prime(model)
    model.tick(t0 + 1.0, "gone")
    assert other.update(model) == []
    run.finish("stopped")
    model.state = load_run(run.dir).state
    model.tick(t0 + 1.0 + CRASH_GRACE_S, "gone")
    assert [a.kind for a in other.update(model)] == ["finished"]


def test_a_recovery_while_watching_is_told_once_and_one_already_there_is_not(tmp_path):
    """Issue 30: a recovery in run.json when the run is opened is history (the problems line, no
    toast); one the trainer appends while the app watches is told once (toast, bell,
    --notify-cmd) and the problems line counts both."""
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    for _ in range(7):
        run.train_step()
    run.recover(25)  # a NaN at step 28, rolled back to step 25
    for _ in range(7):
        run.train_step()
    out = tmp_path / "notified.jsonl"
    app, told, _clock = watching(run, notify_cmd=notifier(out))

    async def body(pilot):
        await until(pilot, loaded(app, 32), "the run loads")
        await settle(pilot, app, run, "a tick after the first read")
        assert problems(app) == "! recovered 1× (step 28): non-finite loss"
        assert told.toasts == [] and told.bells == 0 and not out.exists()
        run.recover(30, "loss spike", lr_scale=0.25)  # a spike at step 33, rolled back to 30
        await until(pilot, lambda: told.toasts, "the recovery is told")
        message = (
            "exp: recovered from loss spike at step 33: rolled back to step 30, skipped 1 batch, "
            "learning rate ×0.25"
        )
        assert told.toasts == [(message, "warning")]
        await until(pilot, lambda: notified(out), "the notify command ran")
        for _ in range(5):  # the run goes on: the recovery is not told again
            run.train_step()
        await settle(pilot, app, run, "the steps after it load")
        assert problems(app) == "! recovered 2× (steps 28, 33): non-finite loss, loss spike"
        assert told.toasts == [(message, "warning")] and told.bells == 1
        assert notified(out) == [["recovered", message]]

    run_app(app, body)
