"""Checks that need no training: run before a run writes anything, so that bad input is one line
naming the key (exit 2) and leaves no half-made run directory behind."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from trainer.config import Config
from trainer.errors import UserError
from trainer.memory_plan import plan_micro_batch
from trainer.model import ModelPlan, check_gradient_checkpointing, inspect_model
from trainer.run_dir import check_path_length


def preflight(config: Config, *, create: bool = True) -> ModelPlan:
    """The model folder and the keys that depend on it (model.inspect_model), the memory plan (the
    micro-batch that fits, or a refusal before any weight loads), then output.dir (made, unless
    `create=False`: a dry run)."""
    plan = inspect_model(config.model, config.lora)
    if config.train.gradient_checkpointing:
        check_gradient_checkpointing(plan.skeleton, config.model.path)
    plan.memory = plan_micro_batch(config, plan)
    plan.micro_batch_size = plan.memory.micro_batch_size
    check_output_dir(Path(config.output.dir), create=create)
    return plan


def _first_file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of path that is not a directory (a file in the way)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_dir(path: Path, key: str = "output.dir", *, create: bool = True) -> None:
    """output.dir is a directory this process can write: made if missing (as training would make
    it), then probed with a real temporary file (permissions alone do not tell a read-only file
    system, nor root's view of a 0555 folder). `create=False` (a dry run) makes nothing: a
    missing directory's nearest existing parent is probed instead (the probe leaves no file)."""
    check_path_length(path, key)
    if path.exists() and not path.is_dir():
        raise UserError(f"{key} {path}: is a file, not a directory")
    blocker = _first_file_above(path)
    if blocker is not None:
        raise UserError(f"{key} {path}: {blocker} is a file, not a directory")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        probed = next(p for p in (path, *path.parents) if p.exists())
        with tempfile.TemporaryFile(dir=probed, prefix=".probe-"):
            pass
    except OSError as e:
        raise UserError(f"{key} {path}: cannot write there ({_reason(e)})") from None


def _reason(e: OSError) -> str:
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e)
