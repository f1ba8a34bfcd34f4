"""The real MonitorApp driven by Textual's Pilot over run directories that the real MonitorWriter
writes while the app watches (tests.fake_run.FakeRun plays a run batch by batch), and over a
fake trainer *process* that obeys the control contract (tests/snapshot_apps/fake_trainer.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.controller import Controller, StartSpec
from entrenar_tui.model.run import RunModel
from entrenar_tui.screens.confirm import ConfirmScreen
from entrenar_tui.screens.help import HelpScreen
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.metric_chart import MetricChart
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.status_badge import StatusBadge
from entrenar_tui.widgets.validation_bar import ValidationBar
from tests.conftest import patience
from tests.fake_run import FakeRun, scenario
from tests.helpers import fake_command, run_app, run_model, run_screen, until
from trainer.monitor.control import launch_detached
from trainer.monitor.schema import Files

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SIZE = (100, 32)


def alive(_state) -> str:
    """The trainer is taken to be alive (the test process wrote the state: its pid is no trainer)."""
    return "alive"


class Clock:
    """Wall time, or a fixed time once set: heartbeat ages, "crashed" and elapsed follow it."""

    def __init__(self) -> None:
        self.fixed: float | None = None

    def __call__(self) -> float:
        return time.time() if self.fixed is None else self.fixed


def text(app: MonitorApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


def problems(app: MonitorApp) -> str:
    return str(app.screen.query_one(ProblemsLine).render())


def status(app: MonitorApp) -> str:
    return app.screen.query_one(StatusBadge).status


# ------------------------------------------------------------------------------------ live updates


def test_values_update_when_a_batch_lands(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    for _ in range(3):
        run.train_step()
    app = MonitorApp(run.dir, probe=alive)

    async def body(pilot):
        await until(pilot, lambda: "step 3/20" in text(app, "#position"), "step 3 shows")
        assert status(app) == "running"
        assert len(run_model(app).history) == 3
        run.train_step()
        await until(pilot, lambda: "step 4/20" in text(app, "#position"), "step 4 shows")
        assert "global 4/80" in text(app, "#position")
        assert app.screen.query_one("#overall").progress == 4
        await until(
            pilot, lambda: len(run_model(app).history) == 4, "the 4th step is in the history"
        )
        loss = f"{run.loss_at(4):.4f}"
        await until(
            pilot,
            lambda: loss in str(app.screen.query_one("#train-loss", MetricChart).render()),
            "the loss chart shows the new loss",
        )

    run_app(app, body)


def test_the_validation_bar_appears_while_validating_and_goes(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch(validate=False)
    app = MonitorApp(run.dir, probe=alive)

    async def body(pilot):
        bar = app.screen.query_one(ValidationBar)
        await until(pilot, lambda: "step 20/20" in text(app, "#position"), "the epoch's steps show")
        assert not bar.display
        run.validate(16)
        await until(pilot, lambda: bar.display, "the validation bar appears")
        assert status(app) == "validating"
        assert "16/64" in text(app, "#validation-stats")
        run.validate(48)
        await until(
            pilot, lambda: "48/64" in text(app, "#validation-stats"), "validation progress moves"
        )
        assert bar.query_one("#validation-progress").progress == 48
        run.validate(64)
        run.end_epoch()
        await until(pilot, lambda: not bar.display, "the validation bar goes")
        assert status(app) == "running"

    run_app(app, body)


def test_the_best_marker_moves_when_a_better_epoch_lands(tmp_path):
    run = FakeRun(
        tmp_path / "exp", epochs=4, steps_per_epoch=5, val_losses=(0.6, 0.5, 0.55, 0.4)
    ).start()
    run.play_epoch()
    run.play_epoch()
    app = MonitorApp(run.dir, probe=alive)

    def starred() -> list[str]:
        table = app.screen.query_one(EpochTable)
        return [
            str(table.get_row_at(i)[1])
            for i in range(table.row_count)
            if str(table.get_row_at(i)[0]) == "★"
        ]

    async def body(pilot):
        await until(pilot, lambda: starred() == ["2"], "epoch 2 is starred")
        chart = app.screen.query_one("#val-loss", MetricChart)
        assert "★0.5000" in str(chart.render())
        assert chart.source(10).best_epoch == 2
        run.play_epoch()  # 0.55: not better
        await until(pilot, lambda: app.screen.query_one(EpochTable).row_count >= 3, "epoch 3 lands")
        assert starred() == ["2"]
        run.play_epoch()  # 0.40: the new best
        await until(pilot, lambda: starred() == ["4"], "the star moves to epoch 4")
        assert "★0.4000" in str(chart.render()) and chart.source(10).best_epoch == 4
        columns = len(chart.last_data.points)
        data = chart.source(columns)
        assert data.highlight and max(data.highlight) == columns - 1  # the last epoch: right edge

    run_app(app, body)


# ------------------------------------------------------------------------------------ problems


def test_a_partial_last_line_and_a_garbage_state_show_as_problems_not_crashes(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    clock = Clock()
    app = MonitorApp(run.dir, probe=alive, clock=clock)

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) == 1, "the first step is read")
        with open(run.dir / Files.STEPS, "ab") as f:
            f.write(b'{"epoch": 1, "step": 2, "glo')
        await until(pilot, lambda: run_model(app).partial_bytes > 0, "the partial line is seen")
        run_screen(app).tick()
        assert "incomplete" not in problems(app)  # a line being written, for now
        clock.fixed = time.time() + 10
        run_screen(app).tick()
        assert "steps.jsonl: incomplete last line (28 bytes) for 10s" in problems(app)
        (run.dir / Files.STATE).write_bytes(b"\x00garbage{")
        await until(
            pilot, lambda: "state.json: not valid JSON" in problems(app), "the garbage state shows"
        )
        assert status(app) != "crashed" and "step 1/20" in text(
            app, "#position"
        )  # the last good state stays
        clock.fixed = None
        run.train_step()  # a good state.json again
        await until(pilot, lambda: "state.json" not in problems(app), "the problem clears")

    run_app(app, body)


def test_a_run_whose_writer_died_shows_as_crashed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = FakeRun(tmp_path / "exp", pid=dead.pid).start()
    run.train_step()
    app = MonitorApp(run.dir)  # the real process check

    async def body(pilot):
        await until(pilot, lambda: status(app) == "crashed", "the run shows as crashed")
        assert f"crashed: trainer pid {dead.pid} is gone" in problems(app)
        assert run_model(app).trainer == "gone"

    run_app(app, body)


def test_a_stale_heartbeat_shows_as_crashed_where_the_pid_cannot_be_checked(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    clock = Clock()
    app = MonitorApp(run.dir, probe=lambda _s: "remote", clock=clock)

    async def body(pilot):
        await until(pilot, lambda: status(app) == "running", "the run shows as running")
        clock.fixed = run.writer.state["heartbeat"] + 3600
        run_screen(app).tick()
        assert status(app) == "crashed"
        assert "no heartbeat for 1h00m" in problems(app)

    run_app(app, body)


def test_the_monitor_waits_for_a_run_directory_that_does_not_exist_yet(tmp_path):
    app = MonitorApp(tmp_path / "later", probe=alive, poll_interval=0.1)

    async def body(pilot):
        await until(pilot, lambda: "waiting for" in problems(app), "it says it waits")
        run = FakeRun(tmp_path / "later").start()
        run.train_step()
        await until(pilot, lambda: "step 1/20" in text(app, "#position"), "the run appears")
        assert status(app) == "running"

    run_app(app, body)


def test_help_lists_every_problem_and_closes(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.train_step(loss=float("nan"))
    run.finish("failed", error="non-finite loss")
    app = MonitorApp(run.dir, probe=alive)

    async def body(pilot):
        await until(pilot, lambda: "failed: non-finite loss" in problems(app), "the failure shows")
        # The run's state and its steps are read one file after the other: the NaN step's two
        # problems can join the bar a refresh after the failure does.
        await until(pilot, lambda: "+2 more" in problems(app), "the other two are counted")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert [p.text for p in app.screen.problems] == [
            "failed: non-finite loss",
            "loss NaN/Inf at 1 step",
            "non-finite loss (NaN/Inf) at step 1",  # the alert (its failure is the line above)
        ]
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

    run_app(app, body)


# ------------------------------------------------------------------------------------ keys


def test_x_stops_a_live_trainer_and_r_resumes_it_to_completed(tmp_path):
    run_dir = tmp_path / "exp"
    # Batches of 1 s, so that "stopping…" is on screen for a while after the request; held
    # after its first step until the stop, however long the app takes to look.
    trainer = launch_detached(
        fake_command(str(run_dir), "--steps-per-epoch", "100", step_s=1.0, hold_after=1), run_dir
    )
    controller = Controller(command=lambda *a: fake_command(*a, step_s=0.01))
    app = MonitorApp(run_dir, controller=controller)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        await until(
            pilot,
            lambda: run_model(app).status == "running" and len(run_model(app).history) >= 1,
            "the trainer runs",
        )
        await pilot.press("r")
        assert run_model(app).request is None and notes[-1].startswith(
            "not resuming: the trainer is alive"
        )
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        # (the held trainer may stop at once: the run's own "stopped" alert can follow the note)
        assert (
            f"stop requested: SIGINT sent to trainer pid {trainer.pid}, control.json written"
            in notes[-2:]
        )
        # "stopping…" until the run says stopped, which a held trainer can say before we look
        request = run_model(app).request
        assert (request is not None and request.label == "stopping…") or status(app) == "stopped"
        await until(pilot, lambda: status(app) == "stopped", "the run stops")
        assert trainer.wait(patience(10)) == 0
        assert orjson.loads((run_dir / Files.CONTROL).read_bytes())["command"] == "stop"
        assert (run_dir / "checkpoints" / "last").is_dir()
        assert run_model(app).state["global_step"] == 1  # held after step 1 until the stop
        await pilot.press("r")
        await until(
            pilot, lambda: status(app) == "completed", "the resumed run completes", timeout=30
        )
        assert run_model(app).request is None
        assert orjson.loads((run_dir / Files.RESULT).read_bytes())["status"] == "completed"
        assert run_model(app).state["global_step"] == 200
        assert "--resume" in (run_dir / Files.LOG).read_text()

    try:
        run_app(app, body)
    finally:
        if trainer.poll() is None:
            trainer.kill()


def test_a_second_x_while_stopping_forces_the_stop(tmp_path):
    run_dir = tmp_path / "exp"
    # Its batches last 30 s: only a forced stop ends it within the test's time.
    trainer = launch_detached(fake_command(str(run_dir), step_s=30), run_dir)
    app = MonitorApp(run_dir)

    async def body(pilot):
        await until(
            pilot,
            lambda: run_model(app).status == "running" and run_model(app).trainer == "alive",
            "the trainer runs",
        )
        await until(pilot, lambda: len(run_model(app).history) >= 1, "a first batch lands")
        await pilot.press("x", "y")
        assert run_model(app).request.kind == "stop"
        await pilot.press("x")
        assert "Force" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        assert trainer.wait(patience(10)) == 130
        await until(pilot, lambda: status(app) == "stopped", "the run shows stopped")
        assert "forced stop" in problems(app)

    try:
        run_app(app, body)
    finally:
        if trainer.poll() is None:
            trainer.kill()


def test_q_quits_and_leaves_the_training_running(tmp_path):
    run_dir = tmp_path / "exp"
    trainer = launch_detached(fake_command(str(run_dir), step_s=0.01, hold_after=1), run_dir)
    app = MonitorApp(run_dir)

    async def body(pilot):
        await until(pilot, lambda: run_model(app).trainer == "alive", "the trainer runs")
        await pilot.press("q")

    try:
        run_app(app, body)
        assert app.return_code in (0, None)
        assert trainer.poll() is None  # still training
    finally:
        trainer.kill()
        trainer.wait()


def test_s_shows_the_command_then_starts_the_run(tmp_path):
    run_dir = tmp_path / "exp"
    controller = Controller(
        start_spec=StartSpec(run_dir, ["--steps-per-epoch", "3"]),
        command=lambda *a: fake_command(*a, step_s=0.01),
    )
    app = MonitorApp(run_dir, controller=controller, poll_interval=0.2)

    async def body(pilot):
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        assert f"fake_trainer.py {run_dir} --steps-per-epoch 3" in app.screen.detail
        await pilot.press("n")
        assert not (run_dir / Files.LOG).exists()  # cancelled: nothing ran
        await pilot.press("s", "enter")
        await until(
            pilot, lambda: status(app) == "completed", "the started run completes", timeout=30
        )
        await pilot.press("s")
        assert isinstance(
            app.screen, ConfirmScreen
        )  # a finished run: s starts a new one next to it
        assert f"output.dir={run_dir.with_name('exp-2')}" in app.screen.detail

    run_app(app, body)


def test_a_start_from_the_saved_config_goes_to_a_new_directory(tmp_path):
    from entrenar_tui.model.run import RunModel

    run = FakeRun(tmp_path / "exp").start()
    run.finish("completed")
    model = RunModel(run.dir)
    model.run = orjson.loads((run.dir / Files.RUN).read_bytes())
    plan = Controller().plan_start(model)
    assert plan.run_dir == tmp_path / "exp-2"
    assert plan.argv[-1] == str(tmp_path / "exp-2" / "config.toml")
    config = tomllib.loads(plan.config_text)
    assert config["output"]["dir"] == str(tmp_path / "exp-2")
    assert config["model"] == model.run["config"]["model"]


@pytest.mark.parametrize("key", ["x", "r"])
def test_keys_that_do_not_apply_say_so(tmp_path, key):
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    run.finish("completed")
    app = MonitorApp(run.dir, probe=lambda _s: "gone")
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        await until(pilot, lambda: status(app) == "completed", "the run shows completed")
        await pilot.press(key)
        assert not isinstance(app.screen, ConfirmScreen)
        assert notes and (
            "nothing to stop" in notes[-1]
            or "only a stopped, failed or crashed run resumes" in notes[-1]
        )

    run_app(app, body)


def test_a_trainer_this_machine_cannot_signal_is_asked_through_control_json(tmp_path):
    """Another host on a shared file system: no signal, the request file only; the label stays
    until the trainer says it stopped."""
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    attempts: list[int] = []
    controller = Controller(
        send_signal=lambda _dir, _info, sig: attempts.append(sig) is not None
    )  # refuses
    app = MonitorApp(run.dir, controller=controller, probe=lambda _s: "remote")
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        await until(pilot, lambda: status(app) == "running", "the run shows running")
        await pilot.press("x", "y")
        assert attempts == [2]  # SIGINT, through the checked path, which said no
        assert "control.json" in notes[-1] and "could not prove pid" in notes[-1]
        assert orjson.loads((run.dir / Files.CONTROL).read_bytes())["command"] == "stop"
        assert "stopping…" in text(app, "#request")
        run.writer.update_state(status="stopping")
        await until(pilot, lambda: status(app) == "stopping", "the trainer says stopping")
        assert "stopping…" in text(app, "#request")
        run.finish("stopped")
        await until(pilot, lambda: status(app) == "stopped", "the trainer says stopped")
        assert run_model(app).request is None and text(app, "#request") == ""

    run_app(app, body)


def test_long_names_are_shortened_to_fit_80_columns(tmp_path):
    name = "sweep-lr-3e-4-r-64-alpha-128-dropout-0.1-seed-1234-" + "x" * 40
    run = FakeRun(tmp_path / name, model_path="/models/" + "Qwen2.5-72B-Instruct-" * 4).start()
    run.train_step()
    app = MonitorApp(run.dir, probe=alive)

    async def body(pilot):
        await until(
            pilot,
            lambda: run_model(app).run is not None and "…" in app.title,
            "the name is shortened",
        )
        header = f"{app.title} — {app.sub_title}"
        assert len(header) <= 80 - 20  # between the header's icon and its right edge
        assert app.title.startswith("sweep-lr") and app.title.endswith("xxx")  # both ends kept
        assert app.sub_title.endswith("· world 1")

    run_app(app, body, size=(80, 24))


# ------------------------------------------------------------------------------------ rough edges


def epoch_rows(app: MonitorApp) -> list[list[str]]:
    table = app.screen.query_one(EpochTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


@pytest.mark.parametrize("ending", ["stopped", "failed", "crashed"])
def test_the_epoch_a_run_ended_in_keeps_its_row(ending, tmp_path):
    """After a stop (a failure, a crash) 7 steps into epoch 2, that epoch's running numbers stay
    in the table, marked with where it ended; they do not vanish with the live row."""
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    for _ in range(7):
        run.train_step()
    trainer = {"liveness": "alive"}
    app = MonitorApp(run.dir, probe=lambda _s: trainer["liveness"])

    async def body(pilot):
        # the row shows from state.json first, its running numbers once the 7 steps are read
        def running() -> bool:
            rows = epoch_rows(app)
            return len(rows) == 2 and rows[1][2] != "–"

        await until(pilot, running, "epoch 2 in progress shows its running numbers")
        live = epoch_rows(app)[1]
        assert live[:2] == ["▸", "2"]
        if ending == "crashed":
            trainer["liveness"] = "gone"
            run_screen(app).tick()
        else:
            run.finish(ending, error="non-finite loss" if ending == "failed" else None)
        await until(pilot, lambda: run_model(app).status == ending, f"the run shows {ending}")
        await until(pilot, lambda: epoch_rows(app)[-1][0] == "■", "the row is marked ended")
        rows = epoch_rows(app)
        assert len(rows) == 2
        ended = rows[1]
        assert ended[1:4] == live[1:4]  # its epoch, train loss and accuracy
        assert ended[4:6] == [ending, "7/20"]  # where it ended, in the validation columns

    run_app(app, body)


def reaped(pid: int) -> bool:
    """The process is gone from the process table: not running, and not a zombie either."""
    import psutil

    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return False


def test_trainers_the_app_started_are_reaped_when_they_end(tmp_path):
    """A trainer started from the app (`entrenar-tui run`, `s`, `r`) that finishes while the app
    stays open is waited for: no zombie left in the process table."""
    run_dir = tmp_path / "exp"
    trainer = launch_detached(
        fake_command(str(run_dir), "--steps-per-epoch", "2", "--epochs", "1", step_s=0.01), run_dir
    )
    app = MonitorApp(run_dir, launched=trainer, tick_interval=0.05)

    async def body(pilot):
        await until(pilot, lambda: run_model(app).status == "completed", "the run completes")
        # the run model's own poll may collect the exit status first; the app's list lets go of
        # the process on its next reap tick
        await until(
            pilot,
            lambda: reaped(trainer.pid) and app.started_trainers == [],
            "the finished trainer is reaped",
        )
        assert app.started_trainers == [] and trainer.returncode == 0

    try:
        run_app(app, body)
    finally:
        if trainer.poll() is None:
            trainer.kill()


def test_a_resume_while_the_app_watches_is_announced_with_the_trainers_note(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    app = MonitorApp(run.dir, probe=alive)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
    note = "resumed from checkpoints/last at step 3; steps 4–52 are redone"

    async def body(pilot):
        await until(pilot, lambda: run_model(app).run is not None, "run.json is read")
        info = orjson.loads((run.dir / Files.RUN).read_bytes())
        info["resumed_from"] = [{"checkpoint": "/elsewhere/last", "global_step": 3, "note": note}]
        run.writer.write_run(info)
        await until(pilot, lambda: note in notes, "the note is shown")
        assert notes.count(note) == 1

    run_app(app, body)
    # an app opened after the resume does not announce it again
    later = MonitorApp(run.dir, probe=alive)
    later_notes: list[str] = []
    later.notify = lambda message, **kw: later_notes.append(message)  # type: ignore[method-assign]

    async def check(pilot):
        await until(pilot, lambda: run_model(later).run is not None, "run.json is read")
        await pilot.pause()
        assert note not in later_notes

    run_app(later, check)


def test_s_replaces_the_output_dir_override_instead_of_adding_a_second(tmp_path):
    """`entrenar-tui run c.toml output.dir=D` then `s` on the finished run: the command names the
    new directory once."""
    run = scenario(tmp_path / "exp", "completed")
    controller = Controller(
        start_spec=StartSpec(tmp_path / "c.toml", [f"output.dir={run.dir}", "train.epochs=3"]),
        command=lambda *a: ["entrenar-train", *a],
    )
    model = RunModel(run.dir)
    model.run = orjson.loads((run.dir / Files.RUN).read_bytes())
    plan = controller.plan_start(model)
    outputs = [a for a in plan.argv if a.startswith("output.dir=")]
    assert outputs == [f"output.dir={tmp_path / 'exp-2'}"]
    assert "train.epochs=3" in plan.argv and plan.command.count("output.dir=") == 1
