"""Every document the trainer writes about its run, built in one place: run.json, state.json (each
phase of the run through a named method), steps.jsonl, epochs.json, result.json, and a
checkpoint's trainer state and metadata. The recipe says *when*; this module says *what*, reading
the run's one step clock (trainer/step_clock.py) for every time figure.

Only rank 0 writes (the other ranks hold a NullWriter); every rank builds the same documents.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trainer
from trainer import checkpoint as ckpt
from trainer.lock import identity
from trainer.monitor.class_metrics import epoch_class_metrics
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files
from trainer.monitor.text import utc_now
from trainer.resources import ResourceSampler
from trainer.step_clock import StepClock
from trainer.sweep_tag import env_tag, kept_tag

if TYPE_CHECKING:
    import torch

    from trainer.config import Config
    from trainer.data import Corpus
    from trainer.distributed import Dist
    from trainer.flops import Peak, StepFlops
    from trainer.model import LoadedModel
    from trainer.monitor.writer import MonitorWriter
    from trainer.progress import Progress
    from trainer.resume_point import Resume
    from trainer.validation_sums import Validation


@dataclass
class StepResult:
    """One optimizer step on a global batch (all its micro-batches), summed over every rank.

    Its device values stay tensors until the steps are flushed (every log_interval steps, at an
    epoch's end, before a checkpoint or a stop): one host read for all of them, so that a CUDA
    step never waits for the device just to log. Everything else is known on the host.
    """

    samples: int  # the global batch's size
    weight: float  # its class weights summed: the batch's mean loss is loss_sum / weight
    sums: torch.Tensor  # [class-weighted cross-entropy summed, correct, grad norm before clipping]
    stop_requested: bool  # any rank was asked to stop (signal or control.json)
    tokens: int  # non-padding tokens of the global batch
    flops: int  # the global batch's model FLOPs (trainer/flops.py)
    lr: float  # the learning rate the step used
    seconds: float = 0.0  # its share, by samples, of its logging window's time (set at the flush)
    finished_at: float = 0.0  # unix time, steps.jsonl's `t`


@dataclass(frozen=True)
class RunSetup:
    """What setup resolved, as run.json and the run's fixed state.json totals report it."""

    loaded: LoadedModel
    device: torch.device
    corpus: Corpus
    n_train: int
    n_val: int
    step_flops: StepFlops
    peak: Peak
    steps_per_epoch: int
    total_steps: int
    micro_batch_size: int
    accumulation: int
    memory_plan: Any  # preflight's (trainer.memory_plan.MemoryPlan), or None
    shuffle: str  # the rule of every epoch's order (trainer.data.SHUFFLE_RULE, or a resumed run's)
    recoveries: list[dict[str, Any]]  # run.json's `recoveries` so far (a resume's checkpoint's)


def record_failure(writer: MonitorWriter, error: str, *, result: bool = True) -> str:
    """Mark the run failed with `error` in result.json and state.json, as far as they can still be
    written; returns the error, saying where it could not be recorded (a full disk)."""
    try:
        if result:
            writer.write_result({"status": "failed", "error": error})
        writer.update_state(status="failed", error=error, validation=None)
    except OSError as e:
        return f"{error} (not recorded in the run directory: {e})"
    return error


def previous_global_step(run_dir: Path) -> int | None:
    """How far the run's state.json says it got (a resume redoes the steps after its checkpoint)."""
    try:
        state = read_contract_json(run_dir / Files.STATE) or {}
    except ContractError:
        return None
    step = state.get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class RunRecorder:
    """The run's documents and its step clock. Attributes: `clock` (StepClock), `identity` (pid,
    host, start time), `previous_run` (the run.json a resume found), `resume_note` and `elastic`
    (this process's resume, for run.json's resumed_from), `started_at` and `run_id` (run.json's,
    kept by a resume), `fixed` (state.json fields every `running` write repeats), `resources`
    (state.json's, once the device is known)."""

    def __init__(
        self,
        writer: MonitorWriter,
        config: Config,
        dist: Dist,
        argv: list[str] | None,
        resume: Resume | None,
    ):
        self.writer, self.config, self.dist = writer, config, dist
        self.argv, self.resume = argv, resume
        self.run_dir = writer.dir
        self.clock = StepClock()
        self.sweep_tag = env_tag()  # run.json's `sweep`, from the sweep that started this run
        self.identity = identity()
        self.previous_run: dict[str, Any] = {}
        self.resume_note: str | None = None
        self.elastic: dict[str, int] | None = None  # {"from": N, "to": M} processes, on resume
        self.started_at: str | None = None
        self.run_id: str | None = None
        self.fixed: dict[str, Any] = {}
        self.resources: ResourceSampler | None = None
        self.run_info: dict[str, Any] = {}  # run.json as last written (a recovery rewrites it)

    def elapsed(self, p: Progress) -> float:
        """Seconds of training in this run, earlier processes of it included."""
        return p.elapsed_before + self.clock.process_seconds()

    # ======================================================================= before the first step

    def watch_resources(self, device: torch.device) -> None:
        """state.json's `resources` from here on, sampled at most once a second."""
        self.resources = ResourceSampler(device)

    def initializing(self) -> None:
        """A fresh run's first state (a resume writes nothing until its checkpoint and data pass)."""
        self.writer.update_state(
            status="initializing", total_epochs=self.config.train.epochs, **self.identity
        )

    def forced_stop(self) -> None:
        """A second interrupt: the process exits at once, without a checkpoint."""
        with contextlib.suppress(OSError):  # (a full disk: the exit goes on)
            self.writer.update_state(
                status="stopped",
                error="forced stop (second interrupt): exited without writing a checkpoint",
            )

    def read_previous_run(self) -> int | None:
        """A resume's view of the run so far, before this process writes: run.json (kept in
        `previous_run`) and how far state.json says the run got (returned)."""
        reached = previous_global_step(self.run_dir)
        if (self.run_dir / Files.RUN).exists():
            self.previous_run = ckpt.read_json(self.run_dir / Files.RUN)
        return reached

    def resumed(self, note: str, elastic: dict[str, int] | None, epoch_seconds: float) -> None:
        """What this process's resume did (run.json's resumed_from), and the epoch's training
        time so far, from the checkpoint."""
        self.resume_note, self.elastic = note, elastic
        self.clock.epoch_seconds = epoch_seconds

    def write_run(self, p: Progress, setup: RunSetup) -> None:
        """run.json (a resume appends itself to `resumed_from`); the run's fixed totals."""
        self.started_at = self.previous_run.get("started_at", utc_now())
        self.run_id = self.previous_run.get(
            "run_id", f"{self.run_dir.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        )
        self.run_info = self.run_document(p, setup)
        self.writer.write_run(self.run_info)
        self.fixed = {
            "recoveries": len(setup.recoveries),
            "total_epochs": self.config.train.epochs,
            "steps_per_epoch": setup.steps_per_epoch,
            "total_steps": setup.total_steps,
            "checkpoints": sorted(
                str(c.relative_to(self.run_dir))
                for c in (self.run_dir / Files.CHECKPOINTS).glob("[!.]*")
            ),
        }

    def started(self, p: Progress) -> None:
        """state.json's first `running` state with the run's fixed totals; a resume's epochs.json."""
        self.writer.update_state(
            status="running",
            epoch=p.epoch,
            step=p.step,
            global_step=p.global_step,
            elapsed_s=p.elapsed_before,
            best=p.best,
            world_size=self.dist.world_size,
            **self.identity,
            **self.fixed,
        )
        if p.history:
            self.writer.write_epochs(p.history, p.best_epoch)

    def run_document(self, p: Progress, setup: RunSetup) -> dict[str, Any]:
        """run.json: the run's config, model, data, shape and provenance."""
        config, loaded, corpus = self.config, setup.loaded, setup.corpus
        resumed_from = list(self.previous_run.get("resumed_from") or [])
        if self.resume is not None:
            checkpoint = self.resume.checkpoint
            resumed_from.append(
                {
                    "checkpoint": str(checkpoint) if checkpoint else None,
                    "at": utc_now(),
                    "global_step": p.global_step,
                    "overrides": self.resume.overrides,
                    "note": self.resume_note,
                    "elastic": self.elastic,
                }
            )
        return {
            "run_id": self.run_id,
            "name": self.run_dir.name,
            "config": config.to_dict(),
            "model": {
                "path": config.model.path,
                "architecture": loaded.architecture,
                "params_total": loaded.params_total,
                "params_trainable": loaded.params_trainable,
                "quantize": config.model.quantize,
                "precision": loaded.precision,
                "device": str(setup.device),
                "step_flops": asdict(setup.step_flops),
            },
            "peak_flops": setup.peak.to_json(),
            "data": {
                "train": config.data.train,
                "validation": config.data.validation or None,
                "n_train": setup.n_train,
                "n_val": setup.n_val,
                "data_hash": corpus.data_hash,
                "labels": corpus.label_names,
                "class_counts": corpus.class_counts,
                "class_weights": corpus.class_weights,
                "classes": corpus.classes,
            },
            "shuffle": setup.shuffle,
            "recoveries": setup.recoveries,
            "epochs": config.train.epochs,
            "steps_per_epoch": setup.steps_per_epoch,
            "batch_size": config.train.batch_size,
            "micro_batch_size": setup.micro_batch_size,
            "gradient_accumulation_steps": setup.accumulation,
            "memory_plan": setup.memory_plan.to_json() if setup.memory_plan else None,
            "world_size": self.dist.world_size,
            **self.identity,
            "argv": self.argv if self.argv is not None else sys.argv,
            "tool_version": trainer.__version__,
            "started_at": self.started_at,
            "resumed_from": resumed_from or None,
            # a hand resume keeps the run's tag, when it is one a sweep could have written
            "sweep": self.sweep_tag or kept_tag(self.previous_run.get("sweep")),
        }

    # ======================================================================= training steps

    def heartbeat(self, p: Progress, done: int, pending: int, lr: float) -> None:
        """state.json after a step that is not flushed, from what the host knows (the counters, the
        schedule, the clock): the monitor sees the run alive between flushes."""
        self.writer.update_state(
            status="running",
            epoch=p.epoch,
            step=done,
            global_step=p.global_step + pending,
            lr=lr,
            elapsed_s=self.elapsed(p),
            resources=self.resources.sample(),
        )

    def step(
        self, p: Progress, step: StepResult, loss: float, correct: int, grad_norm: float
    ) -> None:
        """A flushed step, already counted in `p`: its time on the clock, its steps.jsonl line."""
        self.clock.add_step(step.seconds, step.flops)
        self.writer.append_step(
            {
                "epoch": p.epoch,
                "step": p.step,
                "global_step": p.global_step,
                "loss": loss,
                "lr": step.lr,
                "grad_norm": grad_norm,
                "accuracy": correct / step.samples,
                "samples_per_sec": step.samples / step.seconds,
                "flops": step.flops,
                "t": step.finished_at,
            }
        )

    def steps_flushed(self, p: Progress, last: StepResult, loss: float, grad_norm: float) -> None:
        """state.json as of a flush's last step."""
        flops_per_sec, mfu = self.clock.flops.rate()
        cfg = self.config.train
        eta = self.clock.eta(self.fixed["total_steps"] - p.global_step, cfg.epochs - p.epoch + 1)
        self.writer.update_state(
            status="running",
            epoch=p.epoch,
            step=p.step,
            global_step=p.global_step,
            loss=loss,
            train_loss=p.train_loss,
            train_accuracy=p.train_accuracy,
            lr=last.lr,
            grad_norm=grad_norm,
            samples_per_sec=p.seen / self.clock.epoch_seconds,
            tokens_per_sec=self.clock.tokens_per_sec,
            flops_per_sec=flops_per_sec,
            mfu=mfu,
            elapsed_s=self.elapsed(p),
            eta_s=eta,
            resources=self.resources.sample(),
        )

    def recovered(self, recoveries: list[dict[str, Any]]) -> None:
        """A recovery (trainer/recovery.py): run.json's `recoveries` rewritten (atomically, as
        every run.json), state.json's count."""
        self.run_info["recoveries"] = list(recoveries)
        self.writer.write_run(self.run_info)
        self.fixed["recoveries"] = len(recoveries)
        self.writer.update_state(recoveries=len(recoveries))

    @property
    def state(self) -> dict[str, Any]:
        """state.json as last written (the progress line reads it)."""
        return self.writer.state

    # ======================================================================= validation, epochs

    def validating(
        self,
        done: int,
        total: int,
        loss: float | None,
        accuracy: float | None,
        per_second: float | None,
    ) -> None:
        self.writer.update_state(
            status="validating",
            validation={
                "done": done,
                "total": total,
                "loss": loss,
                "accuracy": accuracy,
                "samples_per_sec": per_second,
            },
        )

    def epoch_record(
        self, p: Progress, validation: Validation, labels: list[str], is_best: bool, lr: float
    ) -> dict[str, Any]:
        """The epoch's line in epochs.json (its `checkpoint` is filled in once saved); macro_f1,
        per_class and confusion from the validation's matrix (null beyond MAX_CLASSES classes)."""
        seconds = self.clock.epoch_seconds
        by_class: dict[str, Any] = {"macro_f1": None, "per_class": None, "confusion": None}
        if validation.confusion is not None:
            by_class = epoch_class_metrics(validation.confusion, labels)
        return {
            "epoch": p.epoch,
            "train_loss": p.train_loss,
            "train_accuracy": p.train_accuracy,
            "val_loss": validation.loss,
            "val_accuracy": validation.accuracy,
            **by_class,
            "lr": lr,
            "epoch_time_s": self.clock.epoch_time(),
            "train_samples_per_sec": p.seen / seconds if seconds else None,
            "is_best": is_best,
            "checkpoint": None,
        }

    def epoch_ended(self, p: Progress, epoch: int) -> None:
        """epochs.json, and state.json between epochs (`p` has moved on to the next one)."""
        self.writer.write_epochs(p.history, p.best_epoch)
        self.writer.update_state(
            status="running",
            validation=None,
            best=p.best,
            epoch=min(epoch + 1, self.config.train.epochs),
            step=0,
            **self.fixed,
        )

    # ======================================================================= checkpoints

    def checkpoint_saved(self, relative: str) -> None:
        """state.json's `checkpoints` lists it from the next write on."""
        if relative not in self.fixed["checkpoints"]:
            self.fixed["checkpoints"].append(relative)

    def trainer_state(
        self,
        p: Progress,
        scheduler: Any,
        optimizer: torch.optim.Optimizer,
        param_names: list[list[str]],
        data_hash: str,
        recovery: dict[str, Any] | None = None,
    ) -> ckpt.TrainerState:
        """The checkpoint's trainer_state.json: the counters, the clock's epoch time, the
        schedule, the optimizer's groups, provenance (save_checkpoint fills in every rank's RNG)."""
        counters = p.to_saved(elapsed_s=self.elapsed(p))
        counters["running"]["train_time"] = self.clock.epoch_seconds
        return ckpt.TrainerState(
            **counters,
            scheduler=scheduler.state_dict(),
            data_hash=data_hash,
            config=self.config.to_dict(),
            param_names=param_names,
            param_groups=[
                {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
            ],
            rng=[],
            recovery=recovery,
            provenance={
                "tool_version": trainer.__version__,
                "base_model": self.config.model.path,
                "started_at": self.started_at,
                "run_id": self.run_id,
            },
        )

    def checkpoint_metadata(
        self, p: Progress, corpus: Corpus, metrics: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The checkpoint's metadata.json: what it is, for a reader that does not resume."""
        return {
            "metrics": metrics or {},
            "labels": corpus.label_names,
            "data_hash": corpus.data_hash,
            "epoch": p.epoch,
            "global_step": p.global_step,
            "tool_version": trainer.__version__,
            "base_model": self.config.model.path,
            "started_at": self.started_at,
            "saved_at": utc_now(),
            "run_id": self.run_id,
        }

    # ======================================================================= the end

    def stopping(self) -> None:
        self.writer.update_state(status="stopping", validation=None)

    def finished(
        self,
        p: Progress,
        status: str,
        error: str | None,
        stopped_early: bool,
        checksums: list | None,
    ) -> dict[str, Any]:
        """result.json and the final state.json; the result (for the summary)."""
        result = self.result(p, status, error, stopped_early, checksums)
        self.writer.write_result(result)
        self.writer.update_state(
            status=status,
            error=error,
            validation=None,
            best=p.best,
            elapsed_s=self.elapsed(p),
            eta_s=0.0 if status == "completed" else None,
            **self.fixed,
        )
        self.writer.close()
        return result

    def result(
        self,
        p: Progress,
        status: str,
        error: str | None,
        stopped_early: bool,
        checksums: list | None,
    ) -> dict[str, Any]:
        """result.json."""
        best = p.best
        flops_per_sec, mfu = self.clock.flops.rate(overall=True)
        return {
            "status": status,
            "epochs": p.history,
            "best": best,
            "best_epoch": best["epoch"] if best else None,
            "best_val_loss": best["val_loss"] if best else None,
            "best_val_accuracy": best["val_accuracy"] if best else None,
            "stopped_early": stopped_early,
            "global_step": p.global_step,
            "total_time_s": self.elapsed(p),
            "error": error,
            "checkpoints": self.fixed["checkpoints"],
            "world_size": self.dist.world_size,
            "rank_weight_checksums": checksums,
            "flops_per_sec": flops_per_sec,
            "mfu": mfu,
        }
