"""Opening files of a run directory as if someone else had made them (on a shared machine, someone
may have): nothing blocks, nothing follows a symbolic link, nothing reads without bound.

* Reading: `open_regular`/`read_bytes` open with O_NONBLOCK|O_NOFOLLOW and refuse what is not a
  regular file (a FIFO would block the reader forever, /dev/zero would fill its memory) and, for
  the JSON files, anything larger than a cap. The refusal is an `UnsafeFile` whose text is the one
  line to show ("state.json is a FIFO, not a regular file; not read").
* Writing: `open_append` (steps.jsonl, train.log) and `create_new` (a new run's config.toml) never
  write through a symbolic link, into a non-regular file or into a file with another hard link
  (whose other name may be anywhere on the file system). Whole-file writes go through
  atomic.atomic_write_bytes, whose os.replace replaces a symbolic link instead of following it.

Torch-free: the monitor, the trainer and scripts share it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

JSON_CAP = 16 << 20  # run.json, state.json, epochs.json, result.json, control.json, trainer.lock
CHUNK = 8 << 20  # steps.jsonl and train.log are read in bounded pieces, never whole
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
READ_FLAGS = os.O_RDONLY | _NONBLOCK | _NOFOLLOW | _CLOEXEC
SYMLINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK})  # O_NOFOLLOW on a link: ELOOP (BSD: EMLINK)


class UnsafeFile(OSError):
    """A run file that was not read or written, and why, in one line naming it."""

    def __init__(self, path: str | Path, what: str, consequence: str):
        self.path = Path(path)
        self.what = what
        super().__init__(f"{self.path.name} {what}; {consequence}")

    def __str__(self) -> str:
        return str(self.args[0])

    def naming(self, path: str | Path | None = None) -> str:
        """The same text naming the whole path (for a message outside the run's own screen)."""
        return str(self).replace(self.path.name, str(path or self.path), 1)


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_non_regular(path: Path, mode: int, consequence: str) -> None:
    if not stat.S_ISREG(mode):
        what = kind(mode)
        if what != "a symbolic link":
            what += ", not a regular file"
        raise UnsafeFile(path, f"is {what}", consequence)


# ---------------------------------------------------------------------------------------- reading


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of `path` if it is a regular file (not through a symbolic link), or
    UnsafeFile. FileNotFoundError and other OSErrors pass through. Never blocks: a FIFO is refused
    from its lstat without being opened (opening a device may act), and the descriptor's fstat is
    checked again (the name may have been swapped in between)."""
    path = Path(path)
    _refuse_non_regular(path, os.lstat(path).st_mode, "not read")
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as e:
        if e.errno in SYMLINK_ERRNOS:
            raise UnsafeFile(path, "is a symbolic link", "not read") from None
        raise
    try:
        _refuse_non_regular(path, os.fstat(fd).st_mode, "not read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str | Path, cap: int = JSON_CAP) -> bytes:
    """The whole of a small run file (at most `cap` bytes), or UnsafeFile."""
    path = Path(path)
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise UnsafeFile(path, f"is {size:,} bytes, more than the {cap:,} read", "not read")
        parts, total = [], 0
        while total <= cap:
            part = os.read(fd, cap + 1 - total)
            if not part:
                break
            parts.append(part)
            total += len(part)
        if total > cap:  # it grew while being read
            raise UnsafeFile(path, f"is more than {cap:,} bytes", "not read")
        return b"".join(parts)
    finally:
        os.close(fd)


def iter_lines(path: str | Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """The complete lines of a regular file (without their newline), read `chunk` bytes at a time,
    so that memory stays bounded whatever the file's size; a line longer than `chunk` is skipped
    (yielded as b"", which no parser takes), an unterminated last line is not yielded."""
    fd = open_regular(path)
    try:
        rest, skipping = b"", False
        while part := os.read(fd, chunk):
            data = rest + part
            lines = data.split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield b"" if skipping else line
                skipping = False
            if len(rest) > chunk:
                rest, skipping = b"", True
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- writing


def open_writable(path: str | Path, access: int, mode: int = 0o644) -> int:
    """A descriptor of `path` (created if missing) opened with `access` (O_WRONLY | O_APPEND,
    O_RDWR), or UnsafeFile when it is a symbolic link, not a regular file, or has another hard
    link. Never blocks: a FIFO is refused from its lstat, or fails to open without a reader."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        _refuse_non_regular(path, os.lstat(path).st_mode, "not written")
    flags = access | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _NONBLOCK
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        if e.errno in SYMLINK_ERRNOS:
            raise UnsafeFile(path, "is a symbolic link", "not written") from None
        if e.errno == errno.ENXIO:  # a FIFO with no reader, swapped in after the lstat
            raise UnsafeFile(path, "is a FIFO, not a regular file", "not written") from None
        raise
    try:
        st = os.fstat(fd)
        _refuse_non_regular(path, st.st_mode, "not written")
        if st.st_nlink > 1:
            raise UnsafeFile(path, f"has {st.st_nlink} hard links", "not written")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str | Path, mode: int = 0o644) -> int:
    """A descriptor that appends to `path` (steps.jsonl, train.log); see open_writable."""
    return open_writable(path, os.O_WRONLY | os.O_APPEND, mode)


def make_directory(path: str | Path, consequence: str = "not written") -> None:
    """`path` made a directory (if missing), then checked as it is at this instant: a symbolic
    link (even to a directory, which mkdir's "exists" would take) or anything else that is not a
    directory is UnsafeFile. For a directory made in a folder others can write to (a sweep's next
    run), checked when it is made rather than once at the start."""
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else kind(st.st_mode)
        raise UnsafeFile(path, f"is {what}, not a directory", consequence)


def create_new(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a file that must not exist yet (O_EXCL: never through a symbolic link, never
    over a file someone put there); FileExistsError otherwise."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written (a full disk may write part, then raise)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
