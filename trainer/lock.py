"""One trainer per run directory: a POSIX record lock on RUN_DIR/trainer.lock, held for the
trainer's whole life.

Acquisition is one fcntl F_SETLK (a non-blocking write lock on the whole file): the kernel lets one
process have it and drops it when that process dies, however it dies. A start and a stale takeover
are therefore the same atomic step: whoever gets the kernel lock owns the directory, whatever the
file said before, and writes its identity (pid, host, pid_create_time) into it through the held
descriptor. The monitor asks the kernel who holds it (F_GETLK) before it signals anyone
(trainer/monitor/lockfile.py).

What keeps it sound:
* POSIX locks belong to a process and go away when it closes *any* descriptor of the file: the
  holder never opens trainer.lock again (it reads and writes through the held descriptor), and a
  second RunLock on a lock this process holds is refused without opening the file.
* The file is removed on release. A process that opened the old file just before is not fooled:
  after locking, the name must still lead to the file it locked, else it tries again.
* A lock naming another host is never taken over by itself (a shared file system may not carry
  locks between hosts): `--force-unlock` takes it and says from whom.
* Where the file system has no record locks (ENOLCK, EOPNOTSUPP), the lock is a file made by
  link(2) of a fully written temp file (atomic, NFS too); a stale one (its process gone on this
  host) is judged again and removed by one process at a time, under a takeover mutex (a
  directory: mkdir is atomic), so a fresh lock made meanwhile is never the one removed. That
  fallback cannot prove anything to the monitor: without record locks, x asks through
  control.json only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil

from trainer.errors import UserError
from trainer.monitor.lockfile import (
    NO_LOCKS_ERRNOS,
    other_host_message,
    parse_content,
    query,
    write_lock_holder,
)
from trainer.monitor.safe_files import (
    JSON_CAP,
    UnsafeFile,
    create_new,
    open_regular,
    open_writable,
)
from trainer.monitor.schema import Files
from trainer.monitor.text import printable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

CREATE_TIME_TOLERANCE_S = 1.0
ATTEMPTS = 20
LINK_ATTEMPTS = 2000  # the fallback waits its turn for the takeover mutex: at most ~10 s
LINK_RETRY_S = 0.005
TAKEOVER_STALE_S = 10.0  # a takeover mutex this old was left by a process that died in it
# The locks this process holds, by (device, inode) of their file.
_HELD: dict[tuple[int, int], RunLock] = {}


def identity() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "pid_create_time": psutil.Process().create_time(),
    }


def holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process a lock file names runs on this host, started when the file says."""
    try:
        proc = psutil.Process(int(holder["pid"]))
        created = float(holder["pid_create_time"])
        return (
            proc.status() != psutil.STATUS_ZOMBIE
            and abs(proc.create_time() - created) < CREATE_TIME_TOLERANCE_S
        )
    except (psutil.Error, KeyError, TypeError, ValueError, OverflowError):
        return False


def refuse_if_running(run_dir: str | Path) -> None:
    """Raise UserError if a live trainer holds run_dir's lock, without taking it (a sweep checks
    its runs before it starts any): the kernel's answer, or where record locks are missing, a
    lock file naming a live process of this host."""
    found = query(run_dir)
    content = found.content or {}
    if found.holder is None and not (
        content.get("host") == socket.gethostname() and holder_alive(content)
    ):
        return
    raise UserError(
        f"{printable(run_dir)}: a trainer is already running on it "
        f"({_who(content, found.holder)}); stop it first"
    )


def _who(holder: dict[str, Any] | None, pid: int | None = None) -> str:
    pid = pid if pid is not None else (holder or {}).get("pid")
    host = (holder or {}).get("host") or socket.gethostname()
    return f"pid {printable(pid)} on {printable(host)}" if pid is not None else "another process"


class RunLock:
    def __init__(self, run_dir: str | Path, *, say: Callable[[str], None] | None = None):
        self.dir = Path(run_dir)
        self.path = self.dir / Files.LOCK
        self.me = identity()
        self.fd: int | None = None
        self.key: tuple[int, int] | None = None  # (device, inode) of the file held
        self.mode = ""  # "record" (fcntl) or "link" (the fallback)
        self.taken_from: dict[str, Any] | None = None  # what --force-unlock replaced
        self._say = say or (lambda text: print(text, file=sys.stderr, flush=True))

    @property
    def held(self) -> bool:
        return self.key is not None

    # ------------------------------------------------------------------------ acquire

    def acquire(self, *, force: bool = False) -> RunLock:
        """Take the run's lock, or raise UserError saying who has it. `force` (--force-unlock)
        takes over a lock file that names another host (or a live process of this host that does
        not hold the kernel lock), never a lock a process of this host holds."""
        self._refuse_if_held_here()
        if not self._record_locks_work():
            return self._acquire_by_link(force)
        for _ in range(ATTEMPTS):
            self._refuse_if_held_here()
            fd: int | None = self._open()
            try:
                self._record_lock(fd)
                if not self._still_named(fd):
                    continue  # locked a file its holder unlinked on release: again
                self._check_previous(parse_content(os.pread(fd, JSON_CAP, 0)), force)
                os.ftruncate(fd, 0)
                os.pwrite(fd, orjson.dumps(self.me), 0)
                self._hold(fd, "record")
                fd = None
                return self
            finally:
                if fd is not None:
                    os.close(fd)  # (drops the record lock, if it was taken)
        raise UserError(f"{self.path}: could not take the run lock (it changed hands meanwhile)")

    def _record_locks_work(self) -> bool:
        """Whether this file system has record locks, asked of a private temp file (so that the
        link(2) fallback never meets an empty trainer.lock made by the attempt)."""
        if fcntl is None:
            return False
        probe = self.dir / f".{Files.LOCK}.probe.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0))
        except OSError as e:
            raise UserError(
                f"{self.dir}: cannot write in the run directory ({e.strerror})"
            ) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in NO_LOCKS_ERRNOS:
                return False
            raise UserError(f"{self.path}: cannot lock ({e.strerror})") from None
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
        return True

    def _hold(self, fd: int | None, mode: str) -> None:
        st = os.fstat(fd) if fd is not None else os.stat(self.path, follow_symlinks=False)
        self.fd, self.mode, self.key = fd, mode, (st.st_dev, st.st_ino)
        _HELD[self.key] = self

    def _refuse_if_held_here(self) -> None:
        """This process holds it already: refuse without opening the file."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) in _HELD:
            raise UserError(self._running(self.me))

    def _open(self) -> int:
        try:
            return open_writable(self.path, os.O_RDWR)
        except UnsafeFile as e:
            raise UserError(f"{e.naming()} (remove it, then start again)") from None
        except OSError as e:
            raise UserError(f"{self.path}: cannot open the run lock ({e.strerror})") from None

    def _record_lock(self, fd: int) -> None:
        """Take the record lock, or raise UserError naming the process that holds it."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise UserError(f"{self.path}: cannot lock ({e.strerror})") from None
            try:
                pid = write_lock_holder(fd)
            except OSError:
                pid = None
            content = parse_content(os.pread(fd, JSON_CAP, 0))
            if pid is not None and pid > 0 and (content or {}).get("pid") != pid:
                content = None  # the file's content is not the holder's (yet): name the kernel's
            raise UserError(self._running(content, pid if pid and pid > 0 else None)) from None

    def _still_named(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
        except FileNotFoundError:
            return False

    def _running(self, holder: dict[str, Any] | None, pid: int | None = None) -> str:
        return (
            f"{printable(self.dir)}: a trainer is already running on it ({_who(holder, pid)}); "
            "stop it first"
        )

    def _check_previous(self, previous: dict[str, Any] | None, force: bool) -> None:
        """What the file said before this process locked it: nothing, or a process of this host
        that is gone (a crash: taken over); another host (refused unless forced); a live process
        of this host that does not hold the lock (an older trainer?: refused unless forced)."""
        if not previous or previous.get("pid") == os.getpid():
            return
        here = previous.get("host") == socket.gethostname()
        if here and not holder_alive(previous):
            return
        if not force:
            if not here:
                raise UserError(other_host_message(self.dir, previous))
            raise UserError(
                f"{printable(self.dir)}: {Files.LOCK} names {_who(previous)}, which is alive but "
                "does not hold the lock (a trainer of an older version?); if it is not this run's "
                f"trainer, take the lock with: entrenar-train --resume {printable(self.dir)} "
                "--force-unlock"
            )
        self.taken_from = previous
        self._say(
            f"--force-unlock: took the run lock of {printable(self.dir)} from {_who(previous)}"
        )

    # ------------------------------------------------------------------------ no record locks

    def _acquire_by_link(self, force: bool) -> RunLock:
        """link(2) a fully written temp file to trainer.lock: it fails if the name exists."""
        payload = orjson.dumps(self.me)
        for _ in range(LINK_ATTEMPTS):
            tmp = self.dir / f".{Files.LOCK}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            create_new(tmp, payload)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                self._remove_stale(force)
                continue
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self._hold(None, "link")
            return self
        raise UserError(f"{self.path}: could not take the run lock (it changed hands meanwhile)")

    def _read_lock_file(self) -> tuple[os.stat_result, dict[str, Any] | None] | None:
        try:
            fd = open_regular(self.path)
        except FileNotFoundError:
            return None
        except UnsafeFile as e:
            raise UserError(f"{e.naming()} (remove it, then start again)") from None
        try:
            return os.fstat(fd), parse_content(os.pread(fd, JSON_CAP, 0))
        finally:
            os.close(fd)

    def _judge(self, holder: dict[str, Any] | None, force: bool) -> None:
        """Refuse unless the lock file's holder is gone (or --force-unlock takes another host's)."""
        here = holder is None or holder.get("host") == socket.gethostname()
        if holder is not None and here and holder_alive(holder):
            raise UserError(self._running(holder))
        if not here and not force:
            raise UserError(other_host_message(self.dir, holder))

    def _remove_stale(self, force: bool) -> None:
        """trainer.lock exists: refuse if its holder may be alive; else remove it, under a
        takeover mutex (mkdir is atomic) so that only one process judges and removes a stale
        lock at a time and none can remove the fresh lock of another (it is judged again under
        the mutex). Returns to let the caller try link(2) again."""
        found = self._read_lock_file()
        if found is None:
            return
        self._judge(found[1], force)
        mutex = self.dir / f".{Files.LOCK}.takeover"
        try:
            os.mkdir(mutex)
        except FileExistsError:
            with contextlib.suppress(OSError):  # its maker died mid-takeover: free it
                if time.time() - os.stat(mutex).st_mtime > TAKEOVER_STALE_S:
                    os.rmdir(mutex)
            time.sleep(LINK_RETRY_S)
            return
        try:
            found = self._read_lock_file()  # again: only a mutex holder removes it
            if found is None:
                return
            judged, holder = found
            self._judge(holder, force)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(judged, os.stat(self.path, follow_symlinks=False)):
                    os.unlink(self.path)
                    if holder and holder.get("host") != socket.gethostname():
                        self.taken_from = holder
                        self._say(
                            f"--force-unlock: took the run lock of {printable(self.dir)} "
                            f"from {_who(holder)}"
                        )
        finally:
            os.rmdir(mutex)

    # ------------------------------------------------------------------------ release

    def release(self) -> None:
        """Remove the file (still holding it), then let the lock go."""
        if self.key is None:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self.path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == self.key:
                os.unlink(self.path)
        _HELD.pop(self.key, None)
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.key = None, None
