"""trainer.lock as the kernel sees it: which process holds the run's lock right now.

The trainer holds a POSIX record lock (fcntl F_SETLK, a write lock on the whole file) on
RUN_DIR/trainer.lock for its whole life (trainer/lock.py). The kernel drops it when the process
dies, however it dies, and answers F_GETLK with the holder's pid. That answer is the proof the
monitor needs before it signals anything: a pid written in state.json (a file anyone who can write
the run directory can forge) is only believed to be this run's trainer when the kernel names the
same pid as the holder of this run's lock.

Only Linux and macOS are known here (struct flock's layout is the platform's); elsewhere, and on a
file system without record locks, nothing is proven (`LockQuery.holder` is None and `why` says so).
Torch-free.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trainer.monitor.safe_files import JSON_CAP, READ_FLAGS, SYMLINK_ERRNOS, kind, read_bytes
from trainer.monitor.schema import Files
from trainer.monitor.text import format_age, printable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

# struct flock, field by field, as the platform's C headers lay it out (64-bit off_t).
if sys.platform.startswith("linux") and struct.calcsize("P") == 8:
    _FLOCK, _ORDER = "hhqqi4x", ("type", "whence", "start", "len", "pid")
elif sys.platform == "darwin":
    _FLOCK, _ORDER = "qqihh", ("start", "len", "pid", "type", "whence")
else:  # pragma: no cover - unknown layout: never guessed
    _FLOCK, _ORDER = None, ()

# The errors of a file system (or platform) that has no record locks.
NO_LOCKS_ERRNOS = frozenset(
    {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
)


class NoRecordLocks(OSError):
    """This platform or file system cannot say who holds a record lock."""


def write_lock_holder(fd: int) -> int | None:
    """The pid of the process holding a write (or read) lock that conflicts with a whole-file write
    lock on fd's file, or None when none does. The caller's own locks never count (POSIX).
    Raises NoRecordLocks where that cannot be asked."""
    if fcntl is None or _FLOCK is None:
        raise NoRecordLocks(errno.ENOSYS, "no struct flock layout known for this platform")
    fields = {"type": fcntl.F_WRLCK, "whence": os.SEEK_SET, "start": 0, "len": 0, "pid": 0}
    query = struct.pack(_FLOCK, *(fields[name] for name in _ORDER))
    try:
        answer = dict(zip(_ORDER, struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))))
    except OSError as e:
        if e.errno in NO_LOCKS_ERRNOS:
            raise NoRecordLocks(e.errno, f"record locks unavailable here ({e.strerror})") from None
        raise
    if answer["type"] == fcntl.F_UNLCK:
        return None
    # A holder in another pid namespace (a container) is reported as 0: not a pid we can use.
    return answer["pid"] if answer["pid"] > 0 else -1


@dataclass(frozen=True)
class LockQuery:
    """What trainer.lock says about a run: `holder` is the pid the kernel names (None: nobody, or
    it cannot be known; then `why` says which), `content` what the file says (pid, host,
    pid_create_time), or None."""

    holder: int | None
    content: dict[str, Any] | None
    why: str | None = None


def query(run_dir: str | Path) -> LockQuery:
    """Ask the kernel who holds RUN_DIR/trainer.lock. The file is opened read-only, without
    following a symbolic link and without blocking, and must be a regular file with one link (a
    hard link to another run's lock would name that run's trainer). Never raises."""
    path = Path(run_dir) / Files.LOCK
    try:
        mode = os.lstat(path).st_mode  # (a device is never opened: opening one may act)
        if not stat.S_ISREG(mode):
            return LockQuery(None, None, f"{Files.LOCK} is {kind(mode)}")
        fd = os.open(path, READ_FLAGS)
    except FileNotFoundError:
        return LockQuery(None, None, f"{Files.LOCK} does not exist")
    except OSError as e:
        if e.errno in SYMLINK_ERRNOS:
            return LockQuery(None, None, f"{Files.LOCK} is a symbolic link")
        return LockQuery(None, None, f"{Files.LOCK} cannot be opened ({e.strerror})")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return LockQuery(None, None, f"{Files.LOCK} is {kind(st.st_mode)}")
        if st.st_nlink != 1:
            return LockQuery(None, None, f"{Files.LOCK} has {st.st_nlink} hard links")
        content = parse_content(os.pread(fd, JSON_CAP, 0))
        try:
            holder = write_lock_holder(fd)
        except NoRecordLocks as e:
            return LockQuery(None, content, str(e.strerror))
        except OSError as e:
            return LockQuery(None, content, f"{Files.LOCK}: {e.strerror}")
        if holder is None:
            return LockQuery(None, content, f"no process holds {Files.LOCK}")
        if holder < 0:
            return LockQuery(None, content, f"{Files.LOCK} is held from another pid namespace")
        return LockQuery(holder, content)
    finally:
        os.close(fd)


def parse_content(raw: bytes) -> dict[str, Any] | None:
    """The identity a lock file holds, or None when it holds none (empty, torn, garbage)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def heartbeat_age(run_dir: str | Path, now: float | None = None) -> str:
    """How long ago the run's state.json was last written by its trainer ("3m05s ago"), or
    "unknown" when it cannot be read."""
    try:
        state = orjson.loads(read_bytes(Path(run_dir) / Files.STATE))
    except (OSError, orjson.JSONDecodeError):
        return "unknown"
    beat = state.get("heartbeat") if isinstance(state, dict) else None
    if not isinstance(beat, (int, float)) or isinstance(beat, bool):
        return "unknown"
    return f"{format_age((time.time() if now is None else now) - beat)} ago"


def other_host_message(
    run_dir: str | Path, holder: dict[str, Any], now: float | None = None
) -> str:
    """The one line that says a lock belongs to another host, how to tell whether that trainer is
    dead, and how to take the lock over (the trainer's refusal and the monitor's `r` say the same)."""
    host, pid = printable(holder.get("host")), printable(holder.get("pid"))
    return (
        f"{printable(run_dir)}: {Files.LOCK} is held by pid {pid} on host {host} "
        f"(last heartbeat {heartbeat_age(run_dir, now)}); a lock of another host is never taken "
        "over by itself. "
        f"If that trainer is dead (`ssh {host} ps -p {pid}` shows no process), take the lock over "
        f"with: entrenar-train --resume {printable(run_dir)} --force-unlock"
    )
