"""Follows train.log (the trainer's own output) by byte offset: each read costs only the bytes
appended since the last one. Lines come out printable (trainer.monitor.text.printable): escape
sequences and control characters in the log are shown spelled out, never sent to the terminal. A
train.log that is not a regular file (a FIFO, a device, a symbolic link) is not read: `problem`
says so."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.monitor.safe_files import UnsafeFile, open_regular
from trainer.monitor.text import printable

FIRST_BYTES = 64 << 10  # on attaching: only the end of a long log
MAX_READ = 256 << 10  # per read: a burst of output arrives over a few reads, never stalls the UI


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
