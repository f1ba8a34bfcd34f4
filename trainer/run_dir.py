"""What the trainer checks in a run directory before it writes anything there.

The directory may have been prepared by someone else (a shared file system): a `checkpoints`
that is a symbolic link would have the trainer write into, and delete leftovers inside, a folder
elsewhere; a `steps.jsonl` that is a symbolic link, a FIFO or a second name of another file would
have it append there. Such a directory is refused up front (UserError: one line, exit 2), before
the first byte is written. (The writers check again as they open: safe_files.) A sweep's run
directory that is itself a link is refused too: the sweep made it (a link there was planted
between the sweep's check and this trainer's start).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trainer.errors import UserError
from trainer.monitor.safe_files import kind
from trainer.monitor.schema import Files
from trainer.monitor.text import printable
from trainer.sweep_tag import ENV as SWEEP_ENV

REPLACED = (Files.RUN, Files.STATE, Files.EPOCHS, Files.RESULT)  # written by os.replace


def check_run_dir(run_dir: str | Path) -> None:
    """Raise UserError naming the first entry of run_dir the trainer must not write through."""
    run_dir = Path(run_dir)
    try:
        str(run_dir.resolve()).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            f"{printable(run_dir)}: the run directory's path is not valid UTF-8 (the run's "
            "files are JSON, which names it); choose another output.dir"
        ) from None
    refuse_a_planted_sweep_link(run_dir)
    checkpoints = _lstat(run_dir / Files.CHECKPOINTS)
    if checkpoints is not None and not stat.S_ISDIR(checkpoints.st_mode):
        raise UserError(
            f"{run_dir / Files.CHECKPOINTS} is {kind(checkpoints.st_mode)}, not a directory of "
            "the run: the trainer writes checkpoints and deletes leftovers only inside the run "
            "directory (remove it, then start again)"
        )
    steps = _lstat(run_dir / Files.STEPS)
    if steps is not None and not stat.S_ISREG(steps.st_mode):
        raise UserError(
            f"{run_dir / Files.STEPS} is {kind(steps.st_mode)}, not a regular file; not written "
            "(remove it, then start again)"
        )
    if steps is not None and steps.st_nlink > 1:
        raise UserError(
            f"{run_dir / Files.STEPS} has {steps.st_nlink} hard links (another name elsewhere, "
            "e.g. a backup made with cp -al); not written: give it a copy of its own "
            f"(cp -p {Files.STEPS} x && mv x {Files.STEPS}), then start again"
        )
    for name in REPLACED:
        st = _lstat(run_dir / name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UserError(f"{run_dir / name} is a directory; remove it, then start again")


def refuse_a_started_run(run_dir: Path) -> None:
    """A fresh start never writes over a run: its directory must not hold a run.json yet."""
    if (run_dir / Files.RUN).exists():
        raise UserError(
            f"output.dir {run_dir} already holds a run; resume it with --resume {run_dir}, or choose another output.dir"
        )


def refuse_a_planted_sweep_link(run_dir: str | Path) -> None:
    """A run a sweep started (its tag in the environment) refuses a run directory that is a
    symbolic link: the sweep made that directory itself, so a link there was planted between
    the sweep's check and this trainer's start. (A run started by hand may be pointed at a link
    by its user.) Called on output.dir as given, before it is resolved, and again before writing."""
    if not os.environ.get(SWEEP_ENV):
        return
    try:
        here = os.lstat(run_dir)
    except OSError:  # missing, or a path the checks after this one name
        return
    if stat.S_ISLNK(here.st_mode):
        raise UserError(
            f"{printable(run_dir)} is a symbolic link: a sweep makes its runs' directories itself, "
            "so this one was planted; nothing written through it"
        )


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


PATH_MAX = 4096  # Linux's limit on a path handed to the kernel, its final NUL included
NAME_MAX = 255  # and on one of its names
# What the trainer adds below output.dir, at most: checkpoints/.tmp-epoch-N-PID/<a model file>
RUN_FILES_ROOM = 128


def check_path_length(path: str | Path, key: str, room: int = RUN_FILES_ROOM) -> None:
    """A directory whose files the kernel can take (ENAMETOOLONG otherwise, a traceback from the
    first call that used one): absolute, as the run's files record it, with `room` to spare under
    PATH_MAX bytes, and each name at most NAME_MAX."""
    whole = os.fsencode(os.path.abspath(path))
    longest = max((len(name) for name in whole.split(b"/")), default=0)
    if len(whole) + room >= PATH_MAX or longest > NAME_MAX:
        text = str(path)
        shown = text if len(text) <= 120 else f"{text[:60]}...{text[-50:]}"
        raise UserError(
            f"{key} {printable(shown)}: the path is too long ({len(whole):,} bytes, its longest "
            f"name {longest:,}); the files under it must stay within the system's "
            f"{PATH_MAX - 1:,} bytes a path ({NAME_MAX} a name)"
        )
