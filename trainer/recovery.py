"""Runs that heal: a non-finite loss or gradient norm, or a loss spike that persists, rolls the run
back to an in-memory snapshot instead of failing it; the batches since the snapshot are skipped
and the learning rate is scaled down for the rest of the run (docs/reliability.md, "Recovery").

The recipe (trainer/train.py) only calls in: `check` each flushed step, `flushed` after a flush
whose steps were all good (a snapshot when one is due), `epoch_started` (a snapshot: every step
before it was verified), `handle` at a fault (a rollback, or the failed run's line). Faults are found where the steps are
read on the host, at a flush: a snapshot is only ever taken of verified state.

Under torchrun every rank decides alike: the loss is all-reduced in the step and the gradient
norm is taken of DDP's averaged gradients, so each rank sees the same values, finds the same
fault and rolls back to the snapshot it took at the same step.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from trainer import checkpoint as ckpt
from trainer.config import TrainSection
from trainer.fault_switch import fault_steps
from trainer.monitor.schema import MAX_SAMPLES_SKIPPED
from trainer.monitor.spike_rule import SPIKE_WARMUP, SPIKE_Z, LossEMA, rises_above
from trainer.monitor.text import utc_now
from trainer.progress import Progress

SPIKE_STEPS = 3  # a spike is a fault when this many flushed steps in a row are spikes
NON_FINITE_LOSS, NON_FINITE_GRAD, LOSS_SPIKE = (
    "non-finite loss",
    "non-finite gradient norm",
    "loss spike",
)


@dataclass
class Snapshot:
    """The run as of a verified step, in memory: the trainable weights, the optimizer's and the
    schedule's state, this process's RNG streams, the counters and the spike EMA (deep copies on
    the weights' device)."""

    progress: Progress
    weights: list[torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: tuple[dict[str, Any], dict[str, torch.Tensor]]
    spike: dict[str, Any]

    @classmethod
    def take(cls, p: Progress, trainable, optimizer, scheduler, spike: dict[str, Any]) -> Snapshot:
        with torch.no_grad():
            weights = [w.detach().clone() for w in trainable]
        return cls(
            progress=copy.deepcopy(p),
            weights=weights,
            optimizer=copy.deepcopy(optimizer.state_dict()),
            scheduler=copy.deepcopy(scheduler.state_dict()),
            rng=ckpt.capture_rng(0),
            spike=copy.deepcopy(spike),
        )

    def restore(self, p: Progress, trainable, optimizer, scheduler) -> None:
        """Put the snapshot back (the counters into `p` in place: the recipe holds it)."""
        with torch.no_grad():
            for w, saved in zip(trainable, self.weights):
                w.copy_(saved)
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        scheduler.load_state_dict(copy.deepcopy(self.scheduler))
        info, tensors = self.rng
        ckpt.restore_rng([info], tensors, 0)
        p.__dict__.update(copy.deepcopy(self.progress).__dict__)

    @property
    def nbytes(self) -> int:
        """Bytes of tensors the snapshot holds (weights and optimizer state)."""
        tensors = list(self.weights)
        for state in self.optimizer["state"].values():
            tensors += [t for t in state.values() if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)


class Healing:
    """The run's recoveries: the spike EMA, the snapshot, what was rolled back, the LR scale.
    `state()` is what a checkpoint keeps of it, for a resume to go on exactly."""

    def __init__(self, cfg: TrainSection, trainable, optimizer, scheduler) -> None:
        self.enabled, self.attempts = cfg.recovery, cfg.recovery_attempts
        self.scale_by, self.every = cfg.recovery_lr_scale, cfg.recovery_snapshot_every
        self.min_rise = cfg.spike_factor - 1
        self.trainable, self.optimizer, self.scheduler = trainable, optimizer, scheduler
        self.poisoned = fault_steps()
        self.lr_scale = 1.0
        self.recoveries: list[dict[str, Any]] = []  # run.json's `recoveries`
        self.ema, self.streak = LossEMA(), 0
        self.snapshot: Snapshot | None = None
        self.good_since = 0  # good (finite, not spiking) steps since the snapshot
        self.snapshot_seconds = 0.0  # the last snapshot's cost (docs/reliability.md)

    # ------------------------------------------------------------------ checkpoint and resume

    def state(self) -> dict[str, Any]:
        return {
            "lr_scale": self.lr_scale,
            "recoveries": self.recoveries,
            "spike": {**self.ema.state(), "streak": self.streak},
        }

    def load(self, saved: dict[str, Any] | None) -> None:
        """A resume's recoveries so far, LR scale (already in the schedule's base LRs) and EMA."""
        if not saved:
            return
        self.lr_scale = float(saved["lr_scale"])
        self.recoveries = list(saved["recoveries"])
        self.ema = LossEMA(state=saved["spike"])
        self.streak = int(saved["spike"]["streak"])

    # ------------------------------------------------------------------ in the loop

    def poisons(self, global_step: int) -> bool:
        """Whether the fault switch makes this optimizer step's loss NaN."""
        return global_step in self.poisoned

    def check(self, loss: float, grad_norm: float) -> str | None:
        """A flushed step's fault, if any; a good step enters the spike EMA. A spike is a fault
        after SPIKE_STEPS in a row, while a recovery is left; once none is, it is let be (the
        run goes on, as it did before recovery existed)."""
        if not math.isfinite(loss):
            return NON_FINITE_LOSS
        if not math.isfinite(grad_norm):
            return NON_FINITE_GRAD
        if not self.enabled:
            return None
        mean, spread = self.ema.mean_spread()
        spiking = self.ema.seen >= SPIKE_WARMUP and rises_above(
            loss, mean, spread, SPIKE_Z, self.min_rise
        )
        if spiking and len(self.recoveries) < self.attempts:
            self.streak += 1
            return LOSS_SPIKE if self.streak >= SPIKE_STEPS else None
        self.streak = 0
        self.ema.add(loss)
        self.good_since += 1
        return None

    def epoch_started(self, p: Progress) -> None:
        """A snapshot at an epoch's first step: a rollback never crosses an epoch's end."""
        if self.enabled:
            self._take(p)

    def flushed(self, p: Progress) -> None:
        """After a flush with no fault: a snapshot once `every` good steps were verified since the
        last, unless a spike is under way (its steps are no state to roll back to)."""
        if self.enabled and self.streak == 0 and self.good_since >= self.every:
            self._take(p)

    def _take(self, p: Progress) -> None:
        started = time.perf_counter()
        spike = {**self.ema.state(), "streak": self.streak}
        self.snapshot = Snapshot.take(p, self.trainable, self.optimizer, self.scheduler, spike)
        self.snapshot_seconds = time.perf_counter() - started
        self.good_since = 0

    def can_recover(self) -> bool:
        return self.enabled and self.snapshot is not None and len(self.recoveries) < self.attempts

    def failure(self, reason: str, loss: float, grad_norm: float, p: Progress) -> str:
        """The failed run's one line."""
        value = grad_norm if reason == NON_FINITE_GRAD else loss
        after = f" after {len(self.recoveries)} recoveries" if self.enabled else ""
        return (
            f"{reason} ({value}) at epoch {p.epoch} step {p.step + 1}{after}; "
            "no checkpoint holds weights from it or after"
        )

    def handle(
        self, reason: str, loss: float, grad_norm: float, p: Progress, batches: list[list[int]]
    ) -> str | None:
        """A fault: recovered from (None), or the failed run's one line when recovery is off or
        used up."""
        if not self.can_recover():
            return self.failure(reason, loss, grad_norm, p)
        self.recover(reason, p, batches)
        return None

    def news(self) -> str:
        """The last recovery, as the progress output says it."""
        r = self.recoveries[-1]
        n = len(r["batches_skipped"])
        return (
            f"recovered from {r['reason']} at step {r['step']}: rolled back to step "
            f"{r['rolled_back_to']}, skipped {n} batch{'es' if n != 1 else ''}, "
            f"LR scale now {r['lr_scale']:g}"
        )

    def recover(self, reason: str, p: Progress, batches: list[list[int]]) -> dict[str, Any]:
        """Roll back to the snapshot, skip the epoch's batches from it to the faulty step (p.step,
        0-based) inclusive, scale the LR; run.json's record of it.

        The skipped batches count as steps taken (the counters and the schedule move past them,
        the weights and the optimizer do not): the epoch keeps its length and the LR its place."""
        snapshot, fault_step, fault_at = self.snapshot, p.step, p.global_step + 1
        snapshot.restore(p, self.trainable, self.optimizer, self.scheduler)
        self.ema = LossEMA(state=snapshot.spike)
        self.streak = 0
        rolled_back_to = p.global_step
        skipped = list(range(p.step, fault_step + 1))
        self.scheduler.base_lrs = [lr * self.scale_by for lr in self.scheduler.base_lrs]
        self.lr_scale *= self.scale_by
        for _ in skipped:  # the schedule's LR of the step after them, from the scaled base
            self.scheduler.step()
        p.step += len(skipped)
        p.global_step += len(skipped)
        samples = [i for k in skipped for i in batches[k]]
        record = {
            "step": fault_at,
            "reason": reason,
            "rolled_back_to": rolled_back_to,
            "batches_skipped": [[p.epoch, k + 1] for k in skipped],
            "samples_skipped": samples[:MAX_SAMPLES_SKIPPED],
            "lr_scale": self.lr_scale,
            "at": utc_now(),
        }
        self.recoveries.append(record)
        self._take(p)  # the state after the skip is good: the next fault rolls back to here
        return record
