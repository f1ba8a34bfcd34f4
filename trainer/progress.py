"""The run's counters: where training stands, and what a checkpoint stores so that a resume goes on
exactly there (the epoch and step, best-so-far, patience, the epoch history, the epoch's running sums).
The epoch's training time is the step clock's (trainer/step_clock.py), saved beside these sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trainer.monitor.class_metrics import trim_confusions
from trainer.monitor.schema import Files

if TYPE_CHECKING:
    from trainer.checkpoint import TrainerState


@dataclass
class Progress:
    """Where the run stands; the part of a checkpoint an exact resume continues from."""

    epoch: int = 1  # 1-based epoch the next batch belongs to
    step: int = 0  # batches of that epoch already done
    global_step: int = 0
    needs_validation: bool = False  # the epoch's batches are done but its validation is not
    best: dict[str, Any] | None = None  # {"epoch", "val_loss", "val_accuracy"} of the best epoch
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # epochs.json's records
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run (resumes)
    # running sums of the current epoch's training (kept across a mid-epoch stop)
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0

    @classmethod
    def from_saved(cls, saved: TrainerState) -> Progress:
        """The counters a checkpoint holds."""
        return cls(
            epoch=saved.epoch,
            step=saved.step,
            global_step=saved.global_step,
            needs_validation=saved.needs_validation,
            best=saved.best,
            epochs_without_improvement=saved.epochs_without_improvement,
            history=saved.epochs,
            elapsed_before=saved.elapsed_s,
            loss_sum=saved.running["loss_sum"],
            correct=saved.running["correct"],
            seen=saved.running["seen"],
        )

    def to_saved(self, elapsed_s: float) -> dict[str, Any]:
        """The TrainerState fields the counters fill (the clock adds `running.train_time`; the
        optimizer, data and provenance fill the rest)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "needs_validation": self.needs_validation,
            "best": self.best,
            "epochs_without_improvement": self.epochs_without_improvement,
            "epochs": self.history,
            "running": {
                "loss_sum": self.loss_sum,
                "correct": self.correct,
                "seen": self.seen,
            },
            "elapsed_s": elapsed_s,
        }

    @property
    def best_epoch(self) -> int | None:
        return self.best["epoch"] if self.best else None

    # ------------------------------------------------------------------------------ within an epoch

    def start_epoch(self) -> None:
        """Zero the running sums at an epoch's first batch (a mid-epoch resume keeps them)."""
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0

    def add_step(self, samples: int, loss: float, correct: int) -> None:
        """Count one optimizer step on a global batch of `samples`, its mean loss and hits."""
        self.step += 1
        self.global_step += 1
        self.loss_sum += loss * samples
        self.correct += correct
        self.seen += samples

    @property
    def train_loss(self) -> float:
        """The epoch's mean training loss so far."""
        return self.loss_sum / max(self.seen, 1)

    @property
    def train_accuracy(self) -> float:
        return self.correct / max(self.seen, 1)

    # ------------------------------------------------------------------------------ at an epoch's end

    def judge_epoch(self, val_loss: float, val_accuracy: float) -> bool:
        """Whether this epoch's validation loss is the best so far; updates best and patience."""
        is_best = self.best is None or val_loss < self.best["val_loss"]
        if is_best:
            self.best = {"epoch": self.epoch, "val_loss": val_loss, "val_accuracy": val_accuracy}
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return is_best

    def record_epoch(self, record: dict[str, Any]) -> None:
        """Put the epoch's record in the history (replacing a re-run epoch's); a best one unmarks
        the earlier epochs. The oldest confusion matrices go past a budget (trim_confusions)."""
        self.history = [e for e in self.history if e["epoch"] < record["epoch"]] + [record]
        if record[
            "is_best"
        ]:  # the earlier best is best no more: its checkpoint is its epoch-N, if any
            best = f"{Files.CHECKPOINTS}/best"
            for e in self.history[:-1]:
                e["is_best"] = False
                if e.get("checkpoint") == best:
                    e["checkpoint"] = None
        trim_confusions(self.history, self.best_epoch)

    def next_epoch(self) -> None:
        self.epoch, self.step, self.needs_validation = self.epoch + 1, 0, False
