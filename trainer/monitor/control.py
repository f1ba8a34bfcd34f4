"""Steering a run from outside: the stop request, safe signalling, and detached launching.

Torch-free and reusable by scripts (`python -c "from trainer.monitor.control import request_stop"`).
The rule that matters: never signal a process without proof that it is the trainer of this run
directory. state.json's pid, host and start time are only a claim (anyone who can write the
directory can write them, naming any process of the machine); the proof is the kernel's: the
trainer holds a record lock on RUN_DIR/trainer.lock for its whole life, and F_GETLK must name the
very pid the run names (lockfile.py). Without that proof the request goes through control.json only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import psutil

from trainer.monitor import lockfile
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.python_module import python_module_argv
from trainer.monitor.safe_files import open_append, read_bytes, write_all
from trainer.monitor.schema import Files, tagged
from trainer.monitor.text import printable
from trainer.monitor.values import is_int

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

Liveness = Literal["alive", "gone", "remote", "unknown"]

# How far the run's pid_create_time may differ from psutil's (clock-tick rounding).
CREATE_TIME_TOLERANCE_S = 1.0


STOP_REASONS = ("pruned",)  # a stop with a reason ends the run with that status, not `stopped`


def request_stop(
    run_dir: str | Path, *, clock: Callable[[], float] = time.time, reason: str | None = None
) -> dict[str, Any]:
    """Write control.json asking the trainer to stop after its current batch; returns the request.
    reason `pruned` (a sweep's pruner): the run ends `pruned` (final: never resumed)."""
    if reason is not None and reason not in STOP_REASONS:
        raise ValueError(f"unknown stop reason {reason!r}")
    request = {"command": "stop", "id": uuid.uuid4().hex, "requested_at": clock()}
    if reason is not None:
        request["reason"] = reason
    atomic_write_json(Path(run_dir) / Files.CONTROL, tagged(Files.CONTROL, request))
    return request


@contextlib.contextmanager
def directory_flock(directory: str | Path) -> Iterator[None]:
    """An exclusive flock on a directory itself, held for the block: no file is added, and it goes
    with the process (Linux's NFS client passes flock on to the server as a record lock). Where
    flock is not to be had (a file system without it, not POSIX), no lock."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
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


def control_lock(run_dir: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold this while deciding whether to stop a run and stopping it, so that two monitors (or
    scripts) on this host pressing stop at once make one request, not two SIGINTs (the second of
    which the trainer takes as "force"): the run directory's flock. Without flock, no lock:
    `pending_stop` still sees a request made a moment earlier."""
    return directory_flock(run_dir)


def pending_stop(run_dir: str | Path, info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stop request in control.json that the trainer `info` names has yet to honour (it was
    written after that trainer started; the trainer deletes it once honoured), or None. Anything
    else in control.json (garbage, another command, a request older than the trainer) is None."""
    try:
        request = orjson.loads(read_bytes(Path(run_dir) / Files.CONTROL))
    except (OSError, orjson.JSONDecodeError):  # missing, garbage, a FIFO (never waited on)
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


@dataclass(frozen=True)
class Identified:
    """The outcome of looking for a run's trainer: `process` when it is proven to be the trainer
    of this run directory, else None and `why` (one phrase, for the user)."""

    process: psutil.Process | None
    why: str = ""
    liveness: Liveness = "unknown"
    ask_lock: bool = False  # the claim alone proves nothing either way: the run's lock may

    def __bool__(self) -> bool:
        return self.process is not None


def _claimed_process(info: dict[str, Any] | None) -> Identified:
    """The live process that `info` (state.json) claims is the trainer: same host, same pid,
    same start time, not a zombie. A claim only: `identify_trainer` asks the kernel."""
    if not info or not isinstance(info.get("pid"), int) or isinstance(info.get("pid"), bool):
        return Identified(None, "the run names no trainer pid")
    pid = info["pid"]
    if info.get("host") != socket.gethostname():
        return Identified(
            None, f"pid {pid} runs on {printable(info.get('host'))}, not this host", "remote"
        )
    # "gone" only where the kernel proves it: no such process, a zombie, another process (its
    # start time differs), or (identify_trainer) not the holder of the run's lock. A process
    # that exists but cannot be examined, or init, is "unknown": the heartbeat decides then.
    if pid <= 0 or pid == os.getpid():
        return Identified(None, f"pid {pid} is not a process a trainer can be", "gone")
    if pid == 1:
        return Identified(None, "pid 1 is init here, not proven a trainer", "unknown")
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return Identified(None, f"pid {pid} has exited (a zombie)", "gone")
        created = info.get("pid_create_time")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            return Identified(None, "the run names no process start time", ask_lock=True)
        if abs(proc.create_time() - created) > CREATE_TIME_TOLERANCE_S:
            return Identified(
                None, f"pid {pid} is another process now (its start time differs)", "gone"
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, OverflowError, ValueError):
        return Identified(None, f"no process {pid} on this host", "gone")
    except psutil.AccessDenied:
        return Identified(None, f"pid {pid} cannot be examined by this user", "unknown")
    return Identified(proc, liveness="alive")


def identify_trainer(run_dir: str | Path, info: dict[str, Any] | None) -> Identified:
    """The trainer of `run_dir`, proven: the process state.json names (host, pid, start time) and
    the kernel names as the holder of RUN_DIR/trainer.lock are the same process. Otherwise None
    and why; `liveness` then says whether the claimed process runs at all ("gone", "remote")
    or runs but cannot be proven ours ("unknown": the lock cannot be examined here)."""
    claimed = _claimed_process(info)
    if claimed.process is None and not claimed.ask_lock:
        return claimed
    pid = info["pid"]
    lock = lockfile.query(run_dir)
    if lock.holder == pid:  # without a start time: alive, yet not proven enough to signal
        return claimed if claimed.process else Identified(None, claimed.why, "alive")
    if lock.holder is not None:
        return Identified(None, f"{Files.LOCK} is held by pid {lock.holder}, not {pid}", "gone")
    # A trainer takes its lock before it writes a live status and holds it for its whole life:
    # a lock nobody holds, or none at all, proves the named process is not this run's trainer.
    examined = bool(lock.why) and lock.why.startswith(
        ("no process holds", f"{Files.LOCK} does not")
    )
    return Identified(None, lock.why or "no proof", "gone" if examined else "unknown")


class Verdict(str):
    """A Liveness ("gone" compares equal to "gone") that also carries the proof, `why`, so that
    a message can say exactly what is known ("pid 7 is another process now")."""

    why: str

    def __new__(cls, liveness: Liveness, why: str = "") -> Verdict:
        verdict = super().__new__(cls, liveness)
        verdict.why = why
        return verdict


def trainer_liveness(info: dict[str, Any] | None, run_dir: str | Path | None = None) -> Verdict:
    """alive: the trainer runs on this host (proven through the run's lock when `run_dir` is
    given); gone: the kernel proves it does not (no such process, another one now, or one that
    does not hold the run's lock); remote: another host's (only the heartbeat can tell); unknown:
    nothing says which process, or it cannot be examined here. Its `why` says how."""
    if not info or not isinstance(info.get("pid"), int):
        return Verdict("unknown", "the run names no trainer pid")
    found = identify_trainer(run_dir, info) if run_dir is not None else _claimed_process(info)
    return Verdict(found.liveness, found.why)


@dataclass(frozen=True)
class Signalled:
    """The outcome of signal_trainer: truthy when the signal was sent; `why` says why not."""

    pid: int | None
    why: str = ""

    def __bool__(self) -> bool:
        return not self.why


def signal_trainer(
    run_dir: str | Path, info: dict[str, Any] | None, sig: int = signal.SIGINT
) -> Signalled:
    """Send `sig` to the trainer of `run_dir` that `info` names, only once identify_trainer has
    proven it (without pid_create_time, or without the kernel naming that pid as the holder of
    the run's lock, nothing is sent). Where the platform has pidfds the process is pinned before
    the proof, so a pid reused in between cannot receive it."""
    pid = (info or {}).get("pid")
    pid = pid if is_int(pid) else None
    pidfd = _pidfd(pid) if pid and pid > 1 else None
    try:
        found = identify_trainer(run_dir, info)
        if found.process is None:
            return Signalled(pid, found.why)
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                found.process.send_signal(sig)
        except (ProcessLookupError, psutil.NoSuchProcess):
            return Signalled(pid, f"pid {pid} exited meanwhile")
        except (PermissionError, psutil.AccessDenied):
            return Signalled(pid, f"pid {pid} may not be signalled by this user")
        return Signalled(pid)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return None
    try:
        return os.pidfd_open(pid)
    except (OSError, OverflowError):  # no such process; a number no pid can be
        return None


def trainer_command(*args: str) -> list[str]:
    """argv that runs `entrenar-train ARGS` with this Python: the console script installed next to
    the interpreter (its own folder heads sys.path, not the working directory), else `python -P -m
    trainer` (python_module_argv: a `trainer/` planted in the working directory never runs). Not a
    script found on PATH: that may be another installation's."""
    script = Path(sys.executable).with_name("entrenar-train")
    if script.exists():
        return [str(script), *args]
    return python_module_argv("trainer", *args)


def describe_command(argv: Sequence[str]) -> str:
    """The command as a user would type it (the script's name instead of its full path)."""
    shown = list(argv)
    if shown and Path(shown[0]).name == "entrenar-train":
        shown[0] = "entrenar-train"
    elif shown[: len(module := python_module_argv("trainer"))] == module:
        shown[: len(module)] = ["python", "-m", "trainer"]
    return shlex.join(shown)


def launch_detached(
    argv: Sequence[str],
    run_dir: str | Path,
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    stop_with_parent: bool = False,
) -> subprocess.Popen:
    """Start argv in its own session (a closed terminal or a quit monitor does not reach it), with
    stdout and stderr appended to RUN_DIR/train.log and stdin from /dev/null. train.log is never
    written through a symbolic link, into a FIFO or into a file with another hard link
    (safe_files.UnsafeFile, which names it; nothing is started then). `env`: variables added to
    this process's environment. `stop_with_parent` (Linux): the child gets SIGTERM, the trainer's
    clean stop, when this process dies (a sweep killed with SIGKILL leaves no run training on
    unwatched)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open_append(run_dir / Files.LOG)
    try:
        write_all(log, f"\n$ {describe_command(argv)}\n".encode())
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_sigterm_when_parent_dies() if stop_with_parent else None,
        )
    finally:
        os.close(log)


PR_SET_PDEATHSIG = 1


def _sigterm_when_parent_dies() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel for SIGTERM when the parent dies (prctl, Linux only); if the
    parent died before the request landed, the child ends itself before it starts anything."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    parent = os.getpid()

    def request() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return request
