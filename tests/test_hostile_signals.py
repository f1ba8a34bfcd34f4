"""Stop never signals a process that is not proven to be the trainer of this run directory.

A hostile (or just copied) run directory can name any live process of the machine in state.json,
with its right pid, host and start time. Before any signal the monitor asks the kernel who holds
RUN_DIR/trainer.lock (the trainer holds a record lock on it for its life); only the pid the kernel
names is signalled. Anything else gets control.json only, and the notification says why.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.screens.confirm import ConfirmScreen
from tests.fake_run import FakeRun
from tests.helpers import run_model
from trainer.monitor.schema import Files

PAUSE = "import signal; print('ready', flush=True); signal.pause()"
HOLD = (
    "import signal, sys; from trainer.lock import RunLock; "
    "lock = RunLock(sys.argv[1]).acquire(); print('ready', flush=True); signal.pause()"
)


def started(argv: list[str], ready: bool = True) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    if ready:
        assert proc.stdout.readline() == "ready\n"
    return proc


VICTIMS = [
    "tail -f trainer/train.py",
    "python with -m trainer in its argv",
    "an editor on entrenar-train notes",
    "the trainer of another run",
]


def start_victim(name: str, tmp_path: Path) -> subprocess.Popen:
    """A live process of this host whose command line mentions a trainer, and that is not the
    trainer of the run under test."""
    if name == "tail -f trainer/train.py":
        script = tmp_path / "trainer" / "train.py"
        script.parent.mkdir()
        script.write_text("# someone's copy\n")
        return started(["tail", "-f", str(script)], ready=False)
    if name == "python with -m trainer in its argv":
        return started([sys.executable, "-c", PAUSE, "-m", "trainer"])
    if name == "an editor on entrenar-train notes":
        notes = tmp_path / "entrenar-train-notes.txt"
        return started([sys.executable, "-c", PAUSE, "edit", str(notes)])
    other_run = tmp_path / "other-run"  # holds that run's lock, as its trainer does
    other_run.mkdir()
    return started([sys.executable, "-c", HOLD, str(other_run)])


def planted_run(tmp_path: Path, victim: subprocess.Popen) -> FakeRun:
    """A run directory whose state.json names `victim` (pid, host, start time: all right)."""
    run = FakeRun(tmp_path / "exp", pid=victim.pid).start()
    run.train_step()
    state = orjson.loads((run.dir / Files.STATE).read_bytes())
    assert state["pid"] == victim.pid and state["host"] == socket.gethostname()
    assert abs(state["pid_create_time"] - psutil.Process(victim.pid).create_time()) < 1
    return run


def press_stop(app: MonitorApp, notes: list[str]) -> None:
    async def main():
        async with app.run_test(size=(120, 36)) as pilot:
            deadline = time.monotonic() + 60  # generous: a loaded 2-core box
            while run_model(app).state is None or run_model(app).status == "waiting":
                assert time.monotonic() < deadline, "the run never showed"
                await pilot.pause(0.02)
            await pilot.press("x")
            if isinstance(app.screen, ConfirmScreen):
                await pilot.press("y")
            while not notes:
                assert time.monotonic() < deadline, "no notification"
                await pilot.pause(0.02)

    asyncio.run(main())


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("victim", VICTIMS)
def test_a_foreign_process_named_by_a_planted_state_is_never_signalled(tmp_path, victim):
    """The app as it comes (its own liveness probe, its own controller): the named process is
    not this run's trainer, so the run is not even shown as live, and x sends nothing."""
    proc = start_victim(victim, tmp_path)
    try:
        run = planted_run(tmp_path, proc)
        app = MonitorApp(run.dir, tick_interval=0.1)
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        press_stop(app, notes)
        assert "SIGINT sent" not in notes[-1], notes
        assert run_model(app).status == "crashed", run_model(app).status_and_reason
        assert proc.poll() is None  # untouched
    finally:
        kill(proc)


@pytest.mark.parametrize("victim", VICTIMS)
def test_stop_without_proof_asks_through_control_json_only_and_says_why(tmp_path, victim):
    """Even when the run looks live (here the probe says so, as the old pid/cmdline check did),
    the stop itself asks the kernel: no proof, no signal; control.json is written."""
    proc = start_victim(victim, tmp_path)
    try:
        run = planted_run(tmp_path, proc)
        app = MonitorApp(run.dir, probe=lambda _s: "alive")
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        press_stop(app, notes)
        assert notes[-1].startswith(f"could not prove pid {proc.pid} is this run's trainer: ")
        assert "asked through control.json only" in notes[-1]
        assert orjson.loads((run.dir / Files.CONTROL).read_bytes())["command"] == "stop"
        assert proc.poll() is None  # untouched
    finally:
        kill(proc)


@pytest.mark.parametrize("how", ["hardlink", "symlink"])
def test_a_lock_borrowed_from_another_run_proves_nothing(tmp_path, how):
    """RUN/trainer.lock made a second name (or a link) of another run's lock, which that run's
    trainer really holds: the kernel would name that trainer, but the file is refused first."""
    other = tmp_path / "other-run"
    other.mkdir()
    proc = started([sys.executable, "-c", HOLD, str(other)])
    try:
        run = planted_run(tmp_path, proc)
        lock = run.dir / Files.LOCK
        if how == "hardlink":
            os.link(other / Files.LOCK, lock)
        else:
            lock.symlink_to(other / Files.LOCK)
        app = MonitorApp(run.dir, probe=lambda _s: "alive")
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        press_stop(app, notes)
        why = "has 2 hard links" if how == "hardlink" else "is a symbolic link"
        assert (
            f"could not prove pid {proc.pid} is this run's trainer: trainer.lock {why}" in notes[-1]
        )
        assert proc.poll() is None
    finally:
        kill(proc)


def test_the_trainer_holding_this_runs_lock_is_signalled(tmp_path):
    """The other side: the process the kernel names as the holder of this run's lock is ours."""
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    script = (
        "import signal, sys; from trainer.lock import RunLock; "
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(7)); "
        "lock = RunLock(sys.argv[1]).acquire(); print('ready', flush=True); signal.pause()"
    )
    proc = started([sys.executable, "-c", script, str(run_dir)])
    try:
        run = planted_run(tmp_path, proc)
        app = MonitorApp(run.dir, tick_interval=0.1)
        notes: list[str] = []
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        press_stop(app, notes)
        assert (
            notes[-1]
            == f"stop requested: SIGINT sent to trainer pid {proc.pid}, control.json written"
        )
        assert proc.wait(10) == 7
    finally:
        kill(proc)


# ------------------------------------------------------------------------------ pids of every kind


def zombie() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # until it exits, left unreaped
    assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
    return proc


@pytest.mark.parametrize(
    "case",
    ["pid 1", "pid 0", "negative pid", "the monitor itself", "huge pid", "pid as text",
     "pid as true", "no start time", "start time as text", "zombie", "another host"],
)  # fmt: skip
def test_no_claim_in_state_json_gets_a_signal_sent(tmp_path, case):
    from trainer.monitor.control import identify_trainer, signal_trainer, trainer_liveness

    here = socket.gethostname()
    me = {"pid": os.getpid(), "host": here, "pid_create_time": psutil.Process().create_time()}
    made = zombie() if case == "zombie" else None
    info = {
        "pid 1": {**me, "pid": 1, "pid_create_time": psutil.Process(1).create_time()},
        "pid 0": {**me, "pid": 0},
        "negative pid": {**me, "pid": -os.getpgid(0)},  # kill(-pgid) would signal a whole group
        "the monitor itself": me,
        "huge pid": {**me, "pid": 2**62},
        "pid as text": {**me, "pid": str(os.getpid())},
        "pid as true": {**me, "pid": True},
        "no start time": {"pid": os.getpid(), "host": here},
        "start time as text": {**me, "pid_create_time": "yesterday"},
        "zombie": made
        and {
            "pid": made.pid,
            "host": here,
            "pid_create_time": psutil.Process(made.pid).create_time(),
        },
        "another host": {**me, "host": "elsewhere"},
    }[case]
    try:
        assert not identify_trainer(tmp_path, info)
        sent = signal_trainer(tmp_path, info, signal.SIGUSR1)  # (would kill pytest if sent)
        assert not sent and sent.why
        assert trainer_liveness(info, tmp_path) in ("gone", "remote", "unknown")
    finally:
        if made is not None:
            made.wait()
