"""Bad input to the monitor: a run directory whose files are damaged, of another version, of the
wrong types, or missing. Each case twice: in the app (a problem on the problems line, no crash, the
last good data still shown) and in plain `entrenar-tui monitor DIR --once` (the problem as a line,
exit code 0, or 2 when there is no run directory; never a traceback).

Also: a run whose trainer is killed shows as crashed and `r` resumes it to the end; stop requests
from two monitors at once are one clean stop (not a forced one).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.controller import Controller
from entrenar_tui.model.run import RunModel
from entrenar_tui.screens.confirm import ConfirmScreen
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.status_badge import StatusBadge
from tests.conftest import patience
from tests.fake_run import FakeRun
from tests.helpers import fake_command, run_app, run_model, run_screen, until
from trainer.monitor.control import identify_trainer, launch_detached, request_stop, signal_trainer
from trainer.monitor.schema import Files
from trainer.monitor.text import printable

REPO = Path(__file__).resolve().parent.parent
SIZE = (100, 32)


def problems_text(app: MonitorApp) -> str:
    """Every current problem (the line shows the first; `?` lists them all)."""
    return " | ".join(p.text for p in run_model(app).problems())


def once(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "entrenar_tui", "monitor", str(run_dir), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=patience(60),
    )


def tagged(name: str, **fields) -> bytes:
    return orjson.dumps({"schema": f"entrenar-tui/{name.split('.')[0]}", "version": 1, **fields})


def rewrite(path: Path, **changes) -> None:
    data = orjson.loads(path.read_bytes())
    data.update(changes)
    path.write_bytes(orjson.dumps(data))


# ------------------------------------------------------------------------------------ the cases


@dataclass
class Case:
    damage: Callable[[Path], None]
    expected: str  # in the app's problems and in --once's output
    then: Callable[[MonitorApp], None] | None = None  # more checks on the app


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def epochs_with_garbage_records(run: Path) -> None:
    good = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "is_best": True}
    records = [5, "x", {"epoch": "two", "val_loss": "low"}, good, dict(good), {"epoch": None}]
    (run / Files.EPOCHS).write_bytes(tagged(Files.EPOCHS, epochs=records, best_epoch=[1]))


def table_rows(app: MonitorApp) -> int:
    return app.screen.query_one(EpochTable).row_count


CASES = {
    "unknown-state-version": Case(
        lambda run: rewrite(run / Files.STATE, version=2),
        "state.json: contract version 2; this monitor reads version 1",
    ),
    "unknown-run-schema": Case(
        lambda run: rewrite(run / Files.RUN, schema="entrenar-tui/other"),
        "run.json: schema is 'entrenar-tui/other', expected 'entrenar-tui/run'",
    ),
    "garbage-state": Case(
        lambda run: (run / Files.STATE).write_bytes(b"\x00\xffgarbage{"),
        "state.json: not valid JSON",
    ),
    "state-not-an-object": Case(
        lambda run: (run / Files.STATE).write_bytes(b"[1, 2, 3]"),
        "state.json: expected a JSON object, got list",
    ),
    "empty-state": Case(
        lambda run: (run / Files.STATE).write_bytes(b""),
        "state.json: not valid JSON",
    ),
    "state-of-the-wrong-types": Case(
        lambda run: rewrite(
            run / Files.STATE,
            status=7,
            epoch="three",
            total_steps=[80],
            heartbeat="now",
            world_size="two",
            validation={"done": "half"},
        ),
        "state.json: ignored values of the wrong type: status (7, expected a string), "
        "epoch ('three', expected an integer), total_steps ([80], expected an integer) and 3 more",
        then=lambda app: app.screen.query_one(StatusBadge).status == "unknown",
    ),
    "unknown-status": Case(
        lambda run: rewrite(run / Files.STATE, status="paused"),
        "",  # not a problem: shown as it is, without a colour
        then=lambda app: app.screen.query_one(StatusBadge).status == "paused",
    ),
    "unreadable-step-lines": Case(
        lambda run: append(
            run / Files.STEPS,
            b'garbage\n[1]\n{"global_step": "x"}\n{"global_step": 1e999}\n'
            b'{"epoch": 1, "step": 4, "global_step": 4, "loss": 0.5}\n',
        ),
        "steps.jsonl: 4 unreadable lines, first at line 4",
        then=lambda app: list(run_model(app).history.global_steps) == [1, 2, 3, 4],
    ),
    "nan-and-huge-steps": Case(
        lambda run: append(
            run / Files.STEPS,
            b'{"global_step": 4, "loss": null, "accuracy": 1e308}\n'
            b'{"global_step": 5, "loss": -1.7e308, "lr": 1.7e308, "accuracy": -1e308}\n',
        ),
        "loss NaN/Inf at 1 step",
    ),
    "epochs-with-garbage-records": Case(
        epochs_with_garbage_records,
        "epochs.json: ignored values of the wrong type: epochs[0] (5, expected an object), "
        "epochs[1] ('x', expected an object), epochs[2].epoch ('two', expected an integer) and 2 more",
        then=lambda app: table_rows(app) >= 4,  # the objects, a repeated epoch included
    ),
    "garbage-result": Case(
        lambda run: (run / Files.RESULT).write_bytes(b'{"schema": "entrenar-tui/result", "vers'),
        "result.json: not valid JSON",
    ),
    "garbage-control": Case(
        lambda run: (run / Files.CONTROL).write_bytes(b"\x1b[2J{not json"),
        "",  # the monitor does not read control.json; stop replaces it (see below)
        then=lambda app: run_model(app).status == "running" and "control" not in problems_text(app),
    ),
    "epochs-not-a-list": Case(
        lambda run: (run / Files.EPOCHS).write_bytes(tagged(Files.EPOCHS, epochs=5)),
        "epochs.json",
    ),
    "global-step-past-int64": Case(
        lambda run: append(run / Files.STEPS, b'{"global_step": 9223372036854775808}\n'),
        "steps.jsonl: 1 unreadable line, first at line 4",
    ),
    "steps-is-a-directory": Case(
        lambda run: ((run / Files.STEPS).unlink(), (run / Files.STEPS).mkdir()),
        "steps.jsonl",
    ),
}
ALL_CASES = [pytest.param(name, case, id=name) for name, case in CASES.items()]


def damaged_run(tmp_path: Path, case: Case) -> FakeRun:
    run = FakeRun(tmp_path / "exp").start()
    for _ in range(3):
        run.train_step()
    run.writer.close()
    case.damage(run.dir)
    return run


@pytest.mark.parametrize("name, case", ALL_CASES)
def test_bad_files_are_problems_in_the_app(tmp_path, name, case):
    run = damaged_run(tmp_path, case)
    app = MonitorApp(run.dir, probe=lambda _s: "alive", poll_interval=0.1)

    async def body(pilot):
        await until(
            pilot,
            lambda: run_model(app).run is not None or Files.RUN in problems_text(app),
            "run.json is read",
            timeout=4,
        )
        await until(pilot, lambda: case.expected in problems_text(app), "the problem shows", 4)
        if case.expected:  # the line shows the most serious problem (as text, escaped)
            line = str(app.screen.query_one(ProblemsLine).render())
            assert printable(run_model(app).problems()[0].text) in line
        if case.then is not None:
            await until(pilot, lambda: case.then(app), f"{name}: the app shows what it should", 4)
        run_screen(app).tick()  # the clock moves; everything redraws from what was read
        await pilot.pause()
        await pilot.press("question_mark")  # the help lists every problem
        await pilot.pause()
        await pilot.press("escape")

    run_app(app, body)


@pytest.mark.parametrize("name, case", ALL_CASES)
def test_bad_files_are_problem_lines_in_plain_mode(tmp_path, name, case):
    run = damaged_run(tmp_path, case)
    result = once(run.dir)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert case.expected in result.stdout
    if case.expected:
        line = next(ln for ln in result.stdout.splitlines() if case.expected in ln)
        assert line.startswith(("error ", "warning ")), line
    assert f"run       {run.dir.name}" in result.stdout  # what could be read is still there


def test_a_run_directory_that_is_a_file_is_bad_input(tmp_path):
    path = tmp_path / "exp"
    path.write_text("not a directory")
    result = once(path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"entrenar-tui: error: {path}: no such run directory\n"
    app = MonitorApp(path, probe=lambda _s: "unknown", poll_interval=0.1)

    async def body(pilot):
        await until(
            pilot, lambda: f"waiting for {path} to appear" in problems_text(app), "it waits"
        )

    run_app(app, body)


def test_a_garbage_control_file_does_not_stand_in_the_way_of_a_stop(tmp_path):
    run = damaged_run(tmp_path, CASES["garbage-control"])
    sent: list[int] = []
    controller = Controller(send_signal=lambda _d, _info, sig: sent.append(sig) is None)
    app = MonitorApp(run.dir, controller=controller, probe=lambda _s: "alive")

    async def body(pilot):
        await until(pilot, lambda: run_model(app).status == "running", "the run shows running")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        assert sent == [signal.SIGINT]  # garbage is no request on its way: the stop goes out
        request = orjson.loads((run.dir / Files.CONTROL).read_bytes())
        assert request["command"] == "stop" and request["schema"] == "entrenar-tui/control"

    run_app(app, body)


# ------------------------------------------------------------------------------------ killed


def test_a_killed_trainer_shows_as_crashed_and_r_resumes_it_to_the_end(tmp_path):
    """The kill soak's monitor side: SIGKILL mid-run, the app says crashed (and why), offers
    resume, and `r` carries the run on to completed."""
    run_dir = tmp_path / "exp"
    trainer = launch_detached(  # held after step 3: it cannot finish before the app looks
        fake_command(str(run_dir), "--steps-per-epoch", "10", step_s=0.05, hold_after=3), run_dir
    )
    controller = Controller(command=lambda *a: fake_command(*a, step_s=0.01))
    app = MonitorApp(run_dir, controller=controller, tick_interval=0.1)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) >= 3, "the trainer runs", timeout=15)
        assert run_model(app).status == "running"
        os.kill(trainer.pid, signal.SIGKILL)
        assert trainer.wait(patience(10)) == -signal.SIGKILL
        await until(pilot, lambda: run_model(app).status == "crashed", "the run shows crashed")
        line = str(app.screen.query_one(ProblemsLine).render())
        assert f"crashed: trainer pid {trainer.pid} is gone" in line
        assert app.screen.query_one(StatusBadge).status == "crashed"
        offered = {key: binding.binding.description for key, binding in app.active_bindings.items()}
        assert offered.get("r") == "Resume"  # the footer offers it
        killed_at = run_model(app).state["global_step"]
        await pilot.press("r")
        # the resume is told first; the fast fake trainer may already have ended within the press
        (told,) = [i for i, note in enumerate(notes) if note.startswith("resuming: ")]
        assert all("completed" not in note for note in notes[:told]), notes
        await until(pilot, lambda: run_model(app).status == "completed", "the run completes", 30)
        assert run_model(app).state["global_step"] == 20 > killed_at
        assert orjson.loads((run_dir / Files.RESULT).read_bytes())["status"] == "completed"

    try:
        run_app(app, body)
    finally:
        if trainer.poll() is None:
            trainer.kill()


# ------------------------------------------------------------------------------------ two monitors


def at_once(*actions: Callable[[], object]) -> list[object]:
    """Run the actions in threads released together (two monitors, two scripts), in order."""
    start = threading.Barrier(len(actions))
    results: list[object] = [None] * len(actions)

    def run(i: int) -> None:
        start.wait()
        results[i] = actions[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(patience(10))
    return results


def test_two_monitors_stopping_at_once_make_one_clean_stop(tmp_path):
    """Both press x (and y) at the same instant: one SIGINT and one control.json, not two SIGINTs,
    which the trainer would take as "force" (exit 130, the batch in flight lost)."""
    run_dir = tmp_path / "exp"
    # 1 s batches: both requests land inside the first one
    trainer = launch_detached(fake_command(str(run_dir), step_s=1.0, hold_after=1), run_dir)
    app = MonitorApp(run_dir)  # monitor 1 watches; monitors 1 and 2 press x at once

    async def body(pilot):
        await until(
            pilot,
            lambda: run_model(app).status == "running" and run_model(app).trainer == "alive",
            "the trainer runs",
            timeout=15,
        )
        other = RunModel(run_dir)
        other.set_state(run_model(app).state)
        other.tick(time.time(), "alive")
        said = at_once(lambda: Controller().stop(run_model(app)), lambda: Controller().stop(other))
        assert sorted(str(s)[:14] for s in said) == ["a stop is alre", "stop requested"], said
        assert any(str(s).startswith("stop requested: SIGINT sent") for s in said)
        await until(pilot, lambda: trainer.poll() is not None, "the trainer exits", timeout=20)
        assert trainer.returncode == 0  # a clean stop, not 130 (forced)
        await until(pilot, lambda: run_model(app).status == "stopped", "the run shows stopped")

    try:
        run_app(app, body)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    state = orjson.loads((run_dir / Files.STATE).read_bytes())
    assert state["status"] == "stopped" and not state.get("error")
    assert (run_dir / "checkpoints" / "last").is_dir()


def test_a_second_monitor_does_not_signal_a_stop_already_on_its_way(tmp_path):
    """One after the other this time, inside one batch: the second x finds the first one's
    request in control.json and waits for it instead of sending a second (forcing) SIGINT."""
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    sent: list[int] = []
    models = [RunModel(run.dir), RunModel(run.dir)]
    for model in models:
        model.set_state(orjson.loads((run.dir / Files.STATE).read_bytes()))
        model.tick(time.time(), "alive")
    first = Controller(send_signal=lambda _d, _i, sig: sent.append(sig) is None).stop(models[0])
    second = Controller(send_signal=lambda _d, _i, sig: sent.append(sig) is None).stop(models[1])
    assert first.startswith("stop requested: SIGINT sent")
    assert second.startswith("a stop is already on its way")
    assert sent == [signal.SIGINT]
    assert models[1].request is not None and models[1].request.label == "stopping…"


def test_two_scripts_requesting_a_stop_at_once_make_one_clean_stop(tmp_path):
    """request_stop (control.json only, as a script would) from two threads at once."""
    run_dir = tmp_path / "exp"
    trainer = launch_detached(fake_command(str(run_dir), step_s=0.2, hold_after=1), run_dir)
    app = MonitorApp(run_dir)

    async def body(pilot):
        await until(
            pilot, lambda: run_model(app).status == "running", "the trainer runs", timeout=15
        )
        first, second = at_once(lambda: request_stop(run_dir), lambda: request_stop(run_dir))
        assert first["id"] != second["id"]
        await until(pilot, lambda: trainer.poll() is not None, "the trainer exits", timeout=20)
        assert trainer.returncode == 0
        await until(pilot, lambda: run_model(app).status == "stopped", "the run shows stopped")

    try:
        run_app(app, body)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    state = orjson.loads((run_dir / Files.STATE).read_bytes())
    assert state["status"] == "stopped" and not state.get("error")
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp files


def test_a_state_without_a_process_start_time_is_never_signalled(tmp_path):
    """pid and host alone do not say which process it is (pids are reused, by another run's
    trainer even): without pid_create_time nothing is sent, whatever the process is."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = (  # it even holds the run's lock, as the trainer does
        "import signal, sys; from trainer.lock import RunLock; "
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(7)); "
        "lock = RunLock(sys.argv[1]).acquire(); print('ready', flush=True); signal.pause()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        info = {"pid": proc.pid, "host": socket.gethostname()}
        created = psutil.Process(proc.pid).create_time()
        assert (
            identify_trainer(run_dir, {**info, "pid_create_time": created}).process is not None
        )  # ours
        assert not signal_trainer(run_dir, info, signal.SIGINT)
        assert not signal_trainer(run_dir, {**info, "pid_create_time": "yesterday"}, signal.SIGINT)
        assert proc.poll() is None  # untouched
    finally:
        proc.kill()
        proc.wait()
