"""Atomic file writes: a temp file in the same directory, then os.replace. A reader never sees half a file."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any, *, indent: bool = False) -> bytes:
    """orjson with NaN/Inf written as null (JSON has no NaN) and numpy values allowed."""
    return orjson.dumps(obj, option=JSON_OPTIONS | (orjson.OPT_INDENT_2 if indent else 0))


@functools.cache
def _file_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes 0600): 0666 minus the umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(
    path: str | Path, data: bytes, *, durable: bool = False, mode: int | None = None
) -> None:
    """Write data to path atomically. durable=True fsyncs first (for what must survive a power cut);
    mode: the file's (a script's 0700), else what a plain open() would give it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(
    path: str | Path, obj: Any, *, indent: bool = True, durable: bool = False
) -> None:
    atomic_write_bytes(path, dumps(obj, indent=indent) + b"\n", durable=durable)


def match_umask(folder: str | Path) -> None:
    """Give the files of a folder that libraries wrote (safetensors writes through a 0600 temp
    file) the mode atomic_write_bytes gives: what a plain open() would, 0666 minus the umask."""
    mode = _file_mode()
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            os.chmod(entry.path, mode)
