"""Where a resumed run continues from: the checkpoint read and checked against this run before the
model loads (fail fast), held until setup puts it into the model and optimizer, and the note that
says what the resume does to the run's steps (the trainer's log and run.json say the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoint as ckpt
from trainer.errors import UserError
from trainer.report import processes


@dataclass
class Resume:
    """Where a resumed run continues from (resolved by the CLI)."""

    checkpoint: Path | None  # None: the run died before its first checkpoint; start over in place
    allow_data_mismatch: bool = False
    overrides: list[str] = field(default_factory=list)


@dataclass
class ResumePoint:
    """A checkpoint read and checked, not yet loaded: its trainer state, its tensors (optimizer
    state and RNG), its adapter, and how the process count changed (elastic) if it did."""

    folder: Path
    saved: ckpt.TrainerState
    tensors: dict[str, torch.Tensor]
    adapter: dict[str, torch.Tensor]
    elastic: dict[str, int] | None  # {"from": N, "to": M} processes; None for the same count

    def restore(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        rank: int,
        world_size: int,
    ) -> None:
        """Put the checkpoint into the built model, optimizer and schedule, then the RNG streams:
        after the model and optimizer are built, so that what setup drew (LoRA init) does not
        move the saved streams. Elastic: each rank's stream is derived afresh."""
        ckpt.load_adapter(self.folder, self.adapter, model)
        ckpt.load_optimizer_tensors(optimizer, self.saved, self.tensors)
        scheduler.load_state_dict(self.saved.scheduler)
        if self.elastic:
            ckpt.derive_rng(self.saved.rng, self.tensors, rank, world_size)
        else:
            ckpt.restore_rng(self.saved.rng, self.tensors, rank)


def read_resume_point(resume: Resume, data_hash: str, epochs: int, world_size: int) -> ResumePoint:
    """Read the checkpoint to resume from and refuse it if it cannot continue this run (its
    data, train.epochs)."""
    folder = resume.checkpoint
    saved, tensors = ckpt.read_trainer_state(folder)
    adapter = ckpt.read_adapter(folder)
    saved_ranks = len(saved.rng)
    # elastic: each rank's dropout stream is derived afresh
    elastic = {"from": saved_ranks, "to": world_size} if saved_ranks != world_size else None
    done = epochs_done(saved.epoch, saved.step, saved.needs_validation)
    if epochs < done:
        raise UserError(
            f"train.epochs = {epochs} is fewer than the {done} epoch(s) "
            f"{folder} has already trained; resume with train.epochs={done} or more (or use "
            "its checkpoints as they are)"
        )
    if saved.data_hash != data_hash and not resume.allow_data_mismatch:
        raise UserError(
            f"{folder}: data changed since the checkpoint (checkpoint {saved.data_hash}, "
            f"data now {data_hash}); pass --allow-data-mismatch to resume anyway"
        )
    return ResumePoint(folder, saved, tensors, adapter, elastic)


def epochs_done(epoch: int, step: int, needs_validation: bool) -> int:
    """Epochs a checkpoint has trained into: those finished, and the one in progress if begun."""
    return epoch if step or needs_validation else epoch - 1


def resume_note(
    checkpoint: str | None,
    at_step: int,
    reached: int | None,
    elastic: dict[str, int] | None = None,
) -> str:
    """What a resume does to the run's steps, said the same in the trainer's log and the monitor
    (run.json's resumed_from note)."""
    if checkpoint is None:
        note = "started over with the saved config (no checkpoint yet)"
    else:
        note = f"resumed from {checkpoint} at step {at_step}"
    if elastic:
        note += (
            f" with {processes(elastic['to'])} (saved by {elastic['from']}: the same sample order, "
            "each rank's dropout stream derived afresh)"
        )
    if reached is not None and reached > at_step:
        first = at_step + 1
        note += (
            f"; step {first} is redone"
            if reached == first
            else f"; steps {first}–{reached} are redone"
        )
    return note


def shown_checkpoint(checkpoint: Path, run_dir: Path) -> str:
    """A checkpoint as the user names it: checkpoints/last inside the run, else its path."""
    try:
        return Path(checkpoint).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(checkpoint)
