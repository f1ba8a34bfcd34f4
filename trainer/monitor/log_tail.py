"""train.log (the trainer's own output) read from its end, the one place it is: followed by byte
offset for the log pane (LogTail: each read costs only the bytes appended since the last one), or
its last line alone (last_line, LastLine: why a trainer died, for the run screen, `--once` and a
sweep). Lines come out printable (trainer.monitor.text.printable): escape sequences and control
characters in the log are shown spelled out, never sent to the terminal. A train.log that is not a
regular file (a FIFO, a device, a symbolic link) is not read (safe_files): LogTail's `problem`
says so, last_line is None."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.monitor.safe_files import UnsafeFile, open_regular
from trainer.monitor.text import printable

FIRST_BYTES = 64 << 10  # on attaching: only the end of a long log
MAX_READ = 256 << 10  # per read: a burst of output arrives over a few reads, never stalls the UI
LAST_LINE_BYTES = 4096  # last_line looks this far back from the end


def last_line(path: str | Path, max_bytes: int = LAST_LINE_BYTES) -> str | None:
    """The last non-empty line among the file's last `max_bytes` (an unfinished one counts:
    a trainer killed mid-line), stripped and printable; None when there is none or the file
    cannot be read safely."""
    try:
        with open(open_regular(Path(path)), "rb") as f:  # never a FIFO: it would hang the caller
            f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
            data = f.read(max_bytes)
    except OSError:  # (UnsafeFile included)
        return None
    lines = (ln.strip() for ln in reversed(data.decode("utf-8", "replace").splitlines()))
    return next((printable(ln) for ln in lines if ln), None)


class LastLine:
    """last_line of one file, read again only when its size or mtime changed: cheap to ask on
    every tick of the run screen."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cached: tuple[tuple[int, int], str | None] | None = None

    def __call__(self) -> str | None:
        try:
            st = self.path.lstat()
        except OSError:
            return None
        key = (st.st_size, st.st_mtime_ns)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, last_line(self.path))
        return self._cached[1]


class LogTail:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset: int | None = None  # None: not attached yet
        self._ino: int | None = None
        self._partial = b""
        self.problem: str | None = None

    def read(self) -> tuple[bool, list[str]]:
        """(reset, complete new lines). reset: the file shrank, was replaced or went away, so
        what was shown before is stale. An incomplete last line waits for its newline."""
        self.problem = None
        try:
            with open(open_regular(self.path), "rb") as f:
                st = os.fstat(f.fileno())
                reset = False
                skip_first = False
                if self.offset is None:
                    self.offset = max(0, st.st_size - FIRST_BYTES)
                    skip_first = self.offset > 0  # started mid-line
                elif st.st_size < self.offset or (self._ino is not None and st.st_ino != self._ino):
                    reset, self.offset, self._partial = True, 0, b""
                self._ino = st.st_ino
                f.seek(self.offset)
                data = f.read(MAX_READ)
        except FileNotFoundError:
            reset = self.offset not in (None, 0) or bool(self._partial)
            self.offset, self._ino, self._partial = 0 if reset else self.offset, None, b""
            return reset, []
        except UnsafeFile as e:
            self.problem = str(e)
            return False, []
        except OSError:
            return False, []
        self.offset += len(data)
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if len(self._partial) > MAX_READ:  # a "line" that never ends: show it in pieces
            data, end, self._partial = data + b"\n", len(data) + 1, b""
        lines = data[:end].decode("utf-8", "replace").split("\n")[:-1]
        if skip_first and lines:
            lines = lines[1:]
        return reset, [printable(line.rstrip("\r")) for line in lines]
