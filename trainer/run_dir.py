"""What the trainer checks in a run directory before it writes anything there.

The directory may have been prepared by someone else (a shared file system): a `checkpoints`
that is a symbolic link would have the trainer write into, and delete leftovers inside, a folder
elsewhere; a `steps.jsonl` that is a symbolic link, a FIFO or a second name of another file would
have it append there. Such a directory is refused up front (UserError: one line, exit 2), before
the first byte is written. (The writers check again as they open: safe_files.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trainer.errors import UserError
from trainer.monitor.safe_files import kind
from trainer.monitor.schema import Files
from trainer.monitor.text import printable

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


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
