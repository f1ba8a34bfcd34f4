"""Steering a run from outside: the stop request, safe signalling, and detached launching.

Torch-free and reusable by scripts (`python -c "from trainer.monitor.control import request_stop"`).
The rule that matters: never signal a pid without checking that it is our trainer, on this host,
started when the run says it was (pids get reused).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
import psutil

from trainer.monitor.atomic import atomic_write_json

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]
from trainer.monitor.schema import Files, tagged

Liveness = Literal["alive", "gone", "remote", "unknown"]

# How far the run's pid_create_time may differ from psutil's (clock-tick rounding).
CREATE_TIME_TOLERANCE_S = 1.0
TRAINER_MARKERS = ("trainer", "entrenar-train")


def request_stop(run_dir: str | Path, *, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Write control.json asking the trainer to stop after its current batch; returns the request."""
    request = {"command": "stop", "id": uuid.uuid4().hex, "requested_at": clock()}
    atomic_write_json(Path(run_dir) / Files.CONTROL, tagged(Files.CONTROL, request))
    return request


@contextlib.contextmanager
def control_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold this while deciding whether to stop a run and stopping it, so that two monitors (or
    scripts) on this host pressing stop at once make one request, not two SIGINTs (the second of
    which the trainer takes as "force"). An flock on the run directory itself: no file is added,
    and it goes with the process. Where flock is not to be had (a file system without it), no
    lock: `pending_stop` still sees a request made a moment earlier."""
    try:
        fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def pending_stop(run_dir: str | Path, info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stop request in control.json that the trainer `info` names has yet to honour (it was
    written after that trainer started; the trainer deletes it once honoured), or None. Anything
    else in control.json (garbage, another command, a request older than the trainer) is None."""
    try:
        request = orjson.loads((Path(run_dir) / Files.CONTROL).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    started = (info or {}).get("pid_create_time")
    at = request.get("requested_at") if isinstance(request, dict) else None
    if (
        not isinstance(request, dict)
        or request.get("command") != "stop"
        or not isinstance(at, (int, float))
        or isinstance(at, bool)
        or not isinstance(started, (int, float))
        or at < started - CREATE_TIME_TOLERANCE_S
    ):
        return None
    return request


def find_trainer(info: dict[str, Any] | None) -> psutil.Process | None:
    """The live process that `info` (state.json or run.json) names, if it is really our trainer on
    this host: same host name, same pid, same start time, and a command line that runs the trainer."""
    if not info or info.get("host") != socket.gethostname():
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        created = info.get("pid_create_time")
        if (
            isinstance(created, (int, float))
            and abs(proc.create_time() - created) > CREATE_TIME_TOLERANCE_S
        ):
            return None
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if not any(marker in cmdline for marker in TRAINER_MARKERS):
        return None
    return proc


def trainer_liveness(info: dict[str, Any] | None) -> Liveness:
    """alive: our trainer runs on this host; gone: it ran here and does not any more; remote: it
    runs on another host (only the heartbeat can tell); unknown: nothing says which process."""
    if not info or not isinstance(info.get("pid"), int):
        return "unknown"
    if info.get("host") != socket.gethostname():
        return "remote"
    return "alive" if find_trainer(info) is not None else "gone"


def signal_trainer(info: dict[str, Any] | None, sig: int = signal.SIGINT) -> bool:
    """Send `sig` to the trainer `info` names, only after find_trainer confirms it, and only when
    `info` gives the whole identity: without `pid_create_time` a reused pid (another run's
    trainer, even) cannot be told apart, so nothing is sent. True if sent."""
    created = (info or {}).get("pid_create_time")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        return False
    proc = find_trainer(info)
    if proc is None:
        return False
    try:
        proc.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return True


def trainer_command(*args: str) -> list[str]:
    """argv that runs `entrenar-train ARGS` with this Python: the console script installed next to
    the interpreter, else `python -m trainer`."""
    script = Path(sys.executable).with_name("entrenar-train")
    if script.exists():
        return [str(script), *args]
    found = shutil.which("entrenar-train")
    if found:
        return [found, *args]
    return [sys.executable, "-m", "trainer", *args]


def resume_command(run_dir: str | Path) -> list[str]:
    return trainer_command("--resume", str(run_dir))


def describe_command(argv: Sequence[str]) -> str:
    """The command as a user would type it (the script's name instead of its full path)."""
    shown = list(argv)
    if shown and Path(shown[0]).name == "entrenar-train":
        shown[0] = "entrenar-train"
    elif shown[:3] == [sys.executable, "-m", "trainer"]:
        shown[:3] = ["python", "-m", "trainer"]
    return shlex.join(shown)


def launch_detached(
    argv: Sequence[str], run_dir: str | Path, *, cwd: str | Path | None = None
) -> subprocess.Popen:
    """Start argv in its own session (a closed terminal or a quit monitor does not reach it), with
    stdout and stderr appended to RUN_DIR/train.log and stdin from /dev/null."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / Files.LOG, "ab") as log:
        log.write(f"\n$ {describe_command(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
