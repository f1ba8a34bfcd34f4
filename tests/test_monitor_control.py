"""trainer/monitor/control.py: the stop request, the proof before any signal, detached launching."""

from __future__ import annotations

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

from tests.conftest import patience
from trainer.monitor.control import (
    describe_command,
    identify_trainer,
    launch_detached,
    request_stop,
    signal_trainer,
    trainer_command,
    trainer_liveness,
)
from trainer.monitor.schema import Files

# A stand-in trainer: holds RUN_DIR's lock as the trainer does (trainer.lock.RunLock), then waits.
SLEEPER = (
    "import signal, sys; from trainer.lock import RunLock; "
    "signal.signal(signal.SIGINT, lambda *a: sys.exit(7)); "
    "lock = RunLock(sys.argv[1]).acquire(); print('ready', flush=True); signal.pause()"
)


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def sleeper(run_dir):
    """A live process that holds run_dir's lock, as the run's trainer does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "ready\n"  # its SIGINT handler and its lock are in place
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def identity(proc) -> dict:
    return {
        "pid": proc.pid,
        "host": socket.gethostname(),
        "pid_create_time": psutil.Process(proc.pid).create_time(),
    }


def wait_exit(proc, timeout=10.0) -> int:
    return proc.wait(timeout=patience(timeout))


def test_request_stop_writes_a_tagged_request(tmp_path):
    request = request_stop(tmp_path, clock=lambda: 123.0)
    written = orjson.loads((tmp_path / Files.CONTROL).read_bytes())
    assert written["command"] == "stop" and written["requested_at"] == 123.0
    assert (
        written["id"] == request["id"]
        and written["schema"] == "entrenar-tui/control"
        and written["version"] == 1
    )


def test_our_trainer_is_found_and_signalled(sleeper, run_dir):
    info = identity(sleeper)
    assert identify_trainer(run_dir, info).process is not None
    assert trainer_liveness(info, run_dir) == "alive"
    assert signal_trainer(run_dir, info, signal.SIGINT)
    assert wait_exit(sleeper) == 7  # its SIGINT handler ran


@pytest.mark.parametrize(
    "change, liveness",
    [
        ({"host": "another-host"}, "remote"),
        ({"pid_create_time": 12345.0}, "gone"),  # the pid was reused by another process
        ({"pid": 2**22 + 12345}, "gone"),  # no such process
    ],
)
def test_a_pid_that_is_not_our_trainer_is_never_signalled(sleeper, run_dir, change, liveness):
    info = {**identity(sleeper), **change}
    assert identify_trainer(run_dir, info).process is None
    assert trainer_liveness(info, run_dir) == liveness
    assert not signal_trainer(run_dir, info, signal.SIGINT)
    assert sleeper.poll() is None  # untouched


def test_a_process_that_is_not_a_trainer_is_never_signalled(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        info = identity(proc)
        assert identify_trainer(run_dir, info).process is None
        assert not signal_trainer(run_dir, info, signal.SIGINT)
        assert trainer_liveness(info, run_dir) == "gone"  # alive, but not this run's trainer
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_without_a_pid_liveness_is_unknown():
    assert trainer_liveness(None) == "unknown"
    assert trainer_liveness({"status": "running"}) == "unknown"


def test_launch_detached_runs_in_its_own_session_with_output_in_train_log(tmp_path):
    run_dir = tmp_path / "runs" / "exp"
    argv = [
        sys.executable,
        "-c",
        "import os, sys; print('sid', os.getsid(0)); print('err', file=sys.stderr)",
    ]
    proc = launch_detached(argv, run_dir)
    assert wait_exit(proc) == 0
    log = (run_dir / Files.LOG).read_text()
    assert f"sid {proc.pid}" in log  # session leader: a closed terminal does not reach it
    assert "err" in log and log.count("$ ") == 1
    assert os.getsid(0) != proc.pid


def test_trainer_command_runs_this_python_and_describes_itself():
    argv = trainer_command("--resume", "runs/x y")
    assert argv[-2:] == ["--resume", "runs/x y"]
    assert Path(argv[0]).name in ("entrenar-train", Path(sys.executable).name)
    assert describe_command(argv).startswith(
        ("entrenar-train --resume", "python -m trainer --resume")
    )
    assert describe_command(argv).endswith("'runs/x y'")


def test_request_stop_is_atomic(tmp_path):
    request_stop(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [Files.CONTROL]  # no temp file left behind
    assert time.time() - orjson.loads((tmp_path / Files.CONTROL).read_bytes())["requested_at"] < 60
