"""The training run as a recipe whose methods read in the order the run happens:

    train()                      entry point: the lock, the monitor writer, the process group, errors
    FineTuneRecipe.setup()       everything before the first batch:
      _setup_seed_and_device       seeds, device, the stop signal
      _setup_data                  the corpus; a resume's checkpoint read and checked against it
      _setup_model                 base model + LoRA, tokenized features, class weights
      _setup_optimizer             AdamW (no decay on biases and norms), warmup + cosine schedule
      _restore_progress            a resume's weights, optimizer, schedule, RNG and counters
      _setup_peak                  the device's peak FLOP/s (rank 0 measures a CPU's), for MFU
      _write_run_json              run.json, the start line, the first `running` state
      _setup_data_parallel         DDP, each rank's dropout stream
    FineTuneRecipe.train()       per epoch: train_epoch → validate → end_epoch; then finish
      train_epoch                  the epoch's remaining batches: _train_step (its micro-batches'
                                   _backward, then the optimizer); every log_interval steps
                                   _flush_steps reads them on the host (the window's clock stops
                                   there) and _record_step each
      validate                     validation loss and accuracy
      end_epoch                    best-so-far, epochs.json, checkpoints, early stopping
    save / stop / finish         a checkpoint; a requested stop; result.json and the exit code

What it trains: a seeded split, a reshuffle every epoch (seeded by (seed, epoch)), AdamW, linear warmup then
cosine decay to lr_min stepped every batch, gradient clipping, validation every epoch, checkpoints
best / epoch-N / last, a non-finite loss or gradient → failed, early stopping on validation loss.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import trainer
from trainer import checkpoint as ckpt
from trainer.config import Config
from trainer.data import (
    SHUFFLE_RULE,
    Corpus,
    epoch_batches,
    load_corpus,
    recorded_shuffle_rule,
    steps_per_epoch,
    tokenize,
)
from trainer.distributed import Dist, init_distributed, shard
from trainer.errors import TrainingFailed, UserError
from trainer.flops import FlopMeter, Peak, cpu_peak, device_peak, step_flops
from trainer.lock import RunLock, identity
from trainer.micro_batches import accumulation_steps, micro_batches
from trainer.model import (
    ModelPlan,
    fast_dropout_wanted,
    load_model,
    pick_device,
    release_freed_memory,
    store_frozen_matmuls,
    use_fast_dropout,
)
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files
from trainer.monitor.text import utc_now
from trainer.monitor.writer import MonitorWriter, NullWriter, WriteFailed
from trainer.preflight import preflight
from trainer.progress import Progress
from trainer.report import Reporter
from trainer.resources import ResourceSampler
from trainer.run_dir import check_run_dir, refuse_a_started_run
from trainer.stopping import StopSignal
from trainer.sweep.tag import env_tag, kept_tag


@dataclass
class Resume:
    """Where a resumed run continues from (resolved by the CLI)."""

    checkpoint: Path | None  # None: the run died before its first checkpoint; start over in place
    allow_data_mismatch: bool = False
    overrides: list[str] = field(default_factory=list)


def crash_message(e: BaseException, rank: int | None = None) -> str:
    """What failed, in one line: the exception's type and first line (or "(no message)"), and
    where it was raised (the innermost frame: file under its import root, line, function);
    "on rank N" under torchrun only."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0][:500]}" if lines else f"{type(e).__name__} (no message)"
    frames = traceback.extract_tb(e.__traceback__)
    where = ""
    if frames:
        where = f" at {import_path(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}"
    on = f" on rank {rank}" if rank is not None else ""
    return f"crashed{on}: {text}{where}"


def import_path(filename: str) -> str:
    """A source file as its import root sees it (bitsandbytes/nn/modules.py, trainer/train.py)."""
    roots = sorted((p for p in sys.path if p and os.path.isdir(p)), key=len, reverse=True)
    for root in roots:
        prefix = os.path.join(os.path.abspath(root), "")
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return filename


def log_every(setting: int | str, steps_per_epoch: int) -> int:
    """train.log_interval: an int, or auto = about 20 progress lines an epoch."""
    if setting == "auto":
        return max(1, steps_per_epoch // 20)
    return int(setting)


def epochs_done(epoch: int, step: int, needs_validation: bool) -> int:
    """Epochs a checkpoint has trained into: those finished, and the one in progress if begun."""
    return epoch if step or needs_validation else epoch - 1


def previous_global_step(run_dir: Path) -> int | None:
    """How far the run's state.json says it got (a resume redoes the steps after its checkpoint)."""
    try:
        state = read_contract_json(run_dir / Files.STATE) or {}
    except ContractError:
        return None
    step = state.get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


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


def processes(n: int) -> str:
    return f"{n} process{'es' if n != 1 else ''}"


def shown_checkpoint(checkpoint: Path, run_dir: Path) -> str:
    """A checkpoint as the user names it: checkpoints/last inside the run, else its path."""
    try:
        return Path(checkpoint).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(checkpoint)


def train(
    config: Config,
    resume: Resume | None = None,
    argv: list[str] | None = None,
    lock: RunLock | None = None,
    corpus: Corpus | None = None,
) -> int:
    """Run training; return the exit code (0 completed or stopped, 1 failed). Bad input raises UserError.

    A crash inside training marks the run failed in state.json (with the error) before propagating;
    a run file that cannot be written (a full disk) fails the run with that reason, recorded where
    it still can be. `lock`: the run lock, when the caller (--resume) took it already; `corpus`:
    the data, when the caller checked it with the config already.
    """
    run_dir = Path(config.output.dir)
    # Rank 0 alone: under --auto-resume the ranks come here after agreeing, and a later rank
    # could find the run.json rank 0 has just written.
    if resume is None and os.environ.get("RANK", "0") == "0":
        refuse_a_started_run(run_dir)
    if corpus is None:  # read before anything is written: bad data leaves no run folder behind
        corpus = load_corpus(config.data, config.train.seed)
    plan = preflight(config)  # nothing is written before the model and output.dir are checked
    dist = init_distributed()
    if dist.is_main and lock is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        check_run_dir(run_dir)  # nothing written through a link planted in the directory
        lock = RunLock(run_dir).acquire()
    writer = MonitorWriter(run_dir) if dist.is_main else NullWriter(run_dir)
    try:
        recipe = FineTuneRecipe(config, resume, argv, writer, dist, plan, corpus)
        recipe.setup()
        return recipe.train()
    except UserError as e:
        if writer.state["seq"]:  # a fresh run already said "initializing": say why it ended
            record_failure(writer, str(e), result=False)
        raise
    except KeyboardInterrupt:
        raise
    except WriteFailed as e:  # a full disk: the run fails with the reason, no traceback
        raise TrainingFailed(record_failure(writer, str(e))) from None
    except Exception as e:
        if writer.state["seq"]:
            rank = dist.rank if dist.enabled else None
            error = str(e) if isinstance(e, TrainingFailed) else crash_message(e, rank)
            recorded = record_failure(writer, error)
            if isinstance(e, TrainingFailed):
                raise TrainingFailed(recorded) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            writer.close()
        if lock:
            lock.release()
        dist.close()


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


@dataclass
class Pace:
    """This process's own speed, for the ETA (earlier processes of a resumed run do not count)."""

    steps: int = 0
    train_seconds: float = 0.0
    validation_seconds: float | None = None  # the last validation's

    def add_step(self, seconds: float) -> None:
        self.steps += 1
        self.train_seconds += seconds

    def eta(self, steps_left: int, validations_left: int) -> float:
        eta = self.train_seconds / self.steps * steps_left
        return eta + (self.validation_seconds or 0.0) * validations_left


class FineTuneRecipe:
    """LoRA fine-tuning of a sequence classifier, one run directory, one or more ranks."""

    def __init__(
        self,
        config: Config,
        resume: Resume | None,
        argv: list[str] | None,
        writer: MonitorWriter,
        dist: Dist,
        plan: ModelPlan,
        corpus: Corpus,
    ):
        self.started_at = time.time()
        self.corpus = corpus  # read and checked before the run directory was made
        self.plan = plan  # the model as preflight checked it
        self._clock = time.perf_counter()
        self.config, self.train_config = config, config.train
        self.resume, self.argv = resume, argv
        self.restoring = resume is not None and resume.checkpoint is not None
        self.elastic: dict[str, int] | None = None  # {"from": N, "to": M} processes, on resume
        self.sweep_tag = env_tag()  # run.json's `sweep`, from the sweep that started this run
        self.writer, self.dist = writer, dist
        self.run_dir = writer.dir
        self.report = Reporter(enabled=dist.is_main)
        self.pace = Pace()
        self.pending: list[StepResult] = []  # trained, not yet read on the host nor recorded
        self.window_started = 0.0  # perf_counter at the first pending step's start
        self.window_tokens_per_sec = 0.0  # the last flushed window's

    def elapsed(self) -> float:
        """Seconds of training in this run, earlier processes of it included."""
        return self.progress.elapsed_before + time.perf_counter() - self._clock

    # ======================================================================================= setup

    def setup(self) -> None:
        """Everything before the first batch, in the order exact resume and DDP depend on."""
        if self.dist.is_main:
            ckpt.clean_leftovers(self.run_dir / Files.CHECKPOINTS)  # what a killed writer left
        self._setup_seed_and_device()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._restore_progress()
        self._setup_peak()
        self._write_run_json()
        self._setup_data_parallel()
        if self.peak_refresh is not None:  # after setup: it competes with no setup step's clock
            self.peak_refresh.start()

    def _setup_seed_and_device(self) -> None:
        seed = self.train_config.seed
        # Seed before the model loads: the head and LoRA weights are drawn from these generators.
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.device = pick_device()
        self.resources = ResourceSampler(self.device)  # state.json's `resources`, at most 1/s
        self.identity = identity()
        if self.resume is None:  # a resume writes nothing until its checkpoint and data are checked
            self.writer.update_state(
                status="initializing", total_epochs=self.train_config.epochs, **self.identity
            )
        self.stop_signal = StopSignal(
            self.run_dir,
            self.started_at,
            on_force=self._forced_exit,
            on_ignored=self.report.say,  # a control.json that is not a file: said once
        ).install()

    def _forced_exit(self) -> None:
        with contextlib.suppress(OSError):  # (a full disk: the exit goes on)
            self.writer.update_state(
                status="stopped",
                error="forced stop (second interrupt): exited without writing a checkpoint",
            )

    def _setup_data(self) -> None:
        self.saved: ckpt.TrainerState | None = None  # the checkpoint to resume from, once read
        self.saved_tensors = self.saved_adapter = None
        if self.restoring:  # fail fast, before the model loads
            self._read_checkpoint()
        for note in self.corpus.notes:
            self.report.say(note)

    def _read_checkpoint(self) -> None:
        """Read the checkpoint to resume from and refuse it if it cannot continue this run."""
        folder = self.resume.checkpoint
        self.saved, self.saved_tensors = ckpt.read_trainer_state(folder)
        self.saved_adapter = ckpt.read_adapter(folder)
        saved_ranks, world_size = len(self.saved.rng), self.dist.world_size
        if saved_ranks != world_size:  # elastic: each rank's dropout stream is derived afresh
            self.elastic = {"from": saved_ranks, "to": world_size}
        done = epochs_done(self.saved.epoch, self.saved.step, self.saved.needs_validation)
        if self.train_config.epochs < done:
            raise UserError(
                f"train.epochs = {self.train_config.epochs} is fewer than the {done} epoch(s) "
                f"{folder} has already trained; resume with train.epochs={done} or more (or use "
                "its checkpoints as they are)"
            )
        data_hash = self.corpus.data_hash
        if self.saved.data_hash != data_hash and not self.resume.allow_data_mismatch:
            raise UserError(
                f"{folder}: data changed since the checkpoint (checkpoint {self.saved.data_hash}, "
                f"data now {data_hash}); pass --allow-data-mismatch to resume anyway"
            )

    def _setup_model(self) -> None:
        config, corpus = self.config, self.corpus
        self.loaded = load_model(
            config.model,
            config.lora,
            corpus.label_names,
            self.device,
            self.plan,
            gradient_checkpointing=self.train_config.gradient_checkpointing,
        )
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        if fast_dropout_wanted(self.train_config.fast_dropout, self.device):
            use_fast_dropout(self.model)
        store_frozen_matmuls(self.model, self.loaded.precision)  # exact: what autocast would cast
        release_freed_memory()  # the fp32 copies just dropped go back to the system
        from transformers import DataCollatorWithPadding

        self.collate = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")
        max_length = config.model.max_length
        self.train_features = tokenize(
            self.tokenizer, corpus.train_texts, corpus.train_labels, max_length
        )
        self.val_features = tokenize(
            self.tokenizer, corpus.val_texts, corpus.val_labels, max_length
        )
        self.train_lengths = [len(f["input_ids"]) for f in self.train_features]
        # Each sample's model FLOPs: a step's are one sum over its batch (no per-token work).
        self.step_flops = step_flops(self.model, self.plan.head)
        self.sample_flops = self.step_flops.per_sample(self.train_lengths)
        self.val_features.sort(key=lambda f: len(f["input_ids"]))  # less padding; metrics are sums
        self.class_weights = (
            torch.tensor(corpus.class_weights, device=self.device) if corpus.class_weights else None
        )
        self.sample_weight = corpus.class_weights or [1.0] * corpus.num_labels

    def _setup_optimizer(self) -> None:
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        cfg = self.train_config
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        # Weight decay as Hugging Face applies it: not on biases and norms.
        decays = [p.ndim >= 2 and "norm" not in n.lower() for n, p in named]
        decay = [pair for pair, d in zip(named, decays) if d]
        no_decay = [pair for pair, d in zip(named, decays) if not d]
        groups = [(decay, cfg.weight_decay), (no_decay, 0.0)]
        self.param_names = [[n for n, _ in g] for g, _ in groups]
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for _, p in g], "weight_decay": wd} for g, wd in groups],
            lr=cfg.learning_rate,
        )
        self.trainable = [p for _, p in named]
        self.max_grad_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        self.steps_per_epoch = steps_per_epoch(len(self.train_features), cfg.batch_size)
        # Resolved by each rank's preflight; an `auto` size may differ where the ranks' devices have
        # different free memory, and every rank must run the same micro-steps: the smallest wins.
        self.micro_batch_size = min(self.dist.gather_objects(self.plan.micro_batch_size))
        self.accumulation = accumulation_steps(
            cfg.batch_size, self.micro_batch_size, self.dist.world_size
        )
        self.log_interval = log_every(cfg.log_interval, self.steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=math.ceil(cfg.warmup_fraction * self.total_steps),
            num_training_steps=self.total_steps,
            min_lr=cfg.lr_min,
        )

    def _restore_progress(self) -> None:
        """A fresh run starts at epoch 1; a resume takes weights, optimizer, schedule, RNG and
        counters from its checkpoint, and its run.json's history."""
        self.progress = Progress()
        self.run_info: dict[str, Any] = {}
        self.resume_note: str | None = None
        self.shuffle = SHUFFLE_RULE  # run.json's `shuffle`: the rule of every epoch's order
        if self.resume is None:
            return
        reached = previous_global_step(self.run_dir)  # before this process writes state.json
        if (self.run_dir / Files.RUN).exists():
            self.run_info = ckpt.read_json(self.run_dir / Files.RUN)
            self.shuffle = recorded_shuffle_rule(self.run_info, str(self.run_dir / Files.RUN))
        if not self.restoring:
            self.resume_note = resume_note(None, 0, reached)
            return  # (the CLI has said that a run without a checkpoint starts over)
        saved, folder = self.saved, self.resume.checkpoint
        ckpt.load_adapter(folder, self.saved_adapter, self.model)
        ckpt.load_optimizer_tensors(self.optimizer, saved, self.saved_tensors)
        self.scheduler.load_state_dict(saved.scheduler)
        # Restore RNG after the model and optimizer are built: what setup drew (LoRA init) must not
        # move the saved streams.
        if self.elastic:
            ckpt.derive_rng(saved.rng, self.saved_tensors, self.dist.rank, self.dist.world_size)
        else:
            ckpt.restore_rng(saved.rng, self.saved_tensors, self.dist.rank)
        self.progress = Progress.from_saved(saved)
        self.saved_tensors = self.saved_adapter = None  # in the model and optimizer now
        shown = shown_checkpoint(folder, self.run_dir)
        self.resume_note = resume_note(shown, self.progress.global_step, reached, self.elastic)
        p = self.progress
        self.report.say(f"{self.resume_note} (epoch {p.epoch}, step {p.step} of it)")

    def _setup_peak(self) -> None:
        """The peak MFU is measured against: rank 0's device (a table entry on a GPU, a short
        matmul measurement on a CPU, before the first step's clock starts) × the world size. A
        CPU's comes from the cache of this machine's best when it has one (trainer/peak_cache.py),
        re-measured in the background for the next run."""
        self.peak_refresh = None
        if self.dist.is_main and self.device.type != "cuda":
            found = cpu_peak(self.loaded.precision)
            self.peak, self.peak_refresh = found.peak, found.refresh
            if found.warning:
                self.report.say(f"warning: {found.warning}")
        elif self.dist.is_main:
            self.peak = device_peak(self.device, self.loaded.precision)
        else:  # other ranks write no state: they neither measure nor disturb rank 0's measurement
            self.peak = Peak(None, self.loaded.precision, None, str(self.device))
        total = self.peak.flops_per_sec
        self.flop_meter = FlopMeter(total * self.dist.world_size if total else None)

    def _write_run_json(self) -> None:
        """run.json (every resume appends itself to `resumed_from`), the start line, and state.json's
        first `running` state with the run's fixed totals."""
        self.run_started_at = self.run_info.get("started_at", utc_now())
        self.run_id = self.run_info.get(
            "run_id", f"{self.run_dir.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        )
        self.writer.write_run(self._run_document())
        loaded, cfg = self.loaded, self.train_config
        quantization = (
            "NF4 base (QLoRA)" if self.config.model.quantize == "nf4" else "no quantization"
        )
        self.report.say(
            f"{loaded.architecture} ({loaded.params_trainable:,} of {loaded.params_total:,} parameters trainable) "
            f"on {self.device} in {loaded.precision}, {quantization}; {len(self.train_features)} train / "
            f"{len(self.val_features)} validation samples, {len(self.corpus.label_names)} labels; "
            f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} × {self.steps_per_epoch} steps"
        )
        checkpointing = ", gradient checkpointing" if cfg.gradient_checkpointing else ""
        self.report.say(
            f"batch {cfg.batch_size} = micro-batch {self.micro_batch_size} × "
            f"{self.accumulation} accumulation step{'s' if self.accumulation != 1 else ''} × "
            f"{processes(self.dist.world_size)}{checkpointing}"
        )
        world = self.dist.world_size
        each = f" per process (MFU is against {world} ×)" if world > 1 else ""
        self.report.say(f"peak: {self.peak.describe()}{each}")
        self.fixed_state = {  # state.json fields every `running` write repeats
            "total_epochs": cfg.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "checkpoints": sorted(
                str(p.relative_to(self.run_dir))
                for p in (self.run_dir / Files.CHECKPOINTS).glob("[!.]*")
            ),
        }
        p = self.progress
        self.writer.update_state(
            status="running",
            epoch=p.epoch,
            step=p.step,
            global_step=p.global_step,
            elapsed_s=p.elapsed_before,
            best=p.best,
            world_size=self.dist.world_size,
            **self.identity,
            **self.fixed_state,
        )
        if p.history:
            self.writer.write_epochs(p.history, p.best_epoch)

    def _run_document(self) -> dict[str, Any]:
        config, loaded, corpus = self.config, self.loaded, self.corpus
        resumed_from = list(self.run_info.get("resumed_from") or [])
        if self.resume is not None:
            checkpoint = self.resume.checkpoint
            resumed_from.append(
                {
                    "checkpoint": str(checkpoint) if checkpoint else None,
                    "at": utc_now(),
                    "global_step": self.progress.global_step,
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
                "device": str(self.device),
                "step_flops": asdict(self.step_flops),
            },
            "peak_flops": self.peak.to_json(),
            "data": {
                "train": config.data.train,
                "validation": config.data.validation or None,
                "n_train": len(self.train_features),
                "n_val": len(self.val_features),
                "data_hash": corpus.data_hash,
                "labels": corpus.label_names,
                "class_counts": corpus.class_counts,
                "class_weights": corpus.class_weights,
                "classes": corpus.classes,
            },
            "shuffle": self.shuffle,
            "epochs": self.train_config.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.train_config.batch_size,
            "micro_batch_size": self.micro_batch_size,
            "gradient_accumulation_steps": self.accumulation,
            "memory_plan": self.plan.memory.to_json() if self.plan.memory else None,
            "world_size": self.dist.world_size,
            **self.identity,
            "argv": self.argv if self.argv is not None else sys.argv,
            "tool_version": trainer.__version__,
            "started_at": self.run_started_at,
            "resumed_from": resumed_from or None,
            # a hand resume keeps the run's tag, when it is one a sweep could have written
            "sweep": self.sweep_tag or kept_tag(self.run_info.get("sweep")),
        }

    def _setup_data_parallel(self) -> None:
        """`forward` is the model the batches go through: DDP's wrapper under torchrun (it averages
        the gradients and starts every rank from rank 0's weights), else the model itself."""
        dist = self.dist
        if not dist.enabled:
            self.forward = self.model
            return
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device.type == "cuda"
        self.forward = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if cuda else None
        )
        # Reseed per rank only when not restoring: a resumed rank continues its saved stream.
        if not self.restoring:
            torch.manual_seed(self.train_config.seed + 1000 * dist.rank)  # own dropout stream

    # ======================================================================================= train

    def train(self) -> int:
        """The epochs, each trained, validated and closed; then the run's end. The exit code."""
        self.model.train()
        while self.progress.epoch <= self.train_config.epochs:
            if (code := self.train_epoch()) is not None:
                return code
            self.progress.needs_validation = True
            started = time.perf_counter()
            validation = self.validate()
            if validation is None:
                return self.stop()
            self.pace.validation_seconds = time.perf_counter() - started
            self.model.train()
            if (code := self.end_epoch(*validation)) is not None:
                return code
        self.save("last")
        return self.finish("completed")

    def train_epoch(self) -> int | None:
        """The epoch's remaining batches (all of them, unless resumed mid-epoch); an exit code if
        the run ends among them."""
        cfg, p = self.train_config, self.progress
        batches = epoch_batches(
            self.train_lengths, cfg.batch_size, cfg.seed, p.epoch, cfg.group_by_length,
            self.shuffle,
        )  # fmt: skip
        if p.step == 0:
            p.start_epoch()
        while (
            done := p.step + len(self.pending)
        ) < self.steps_per_epoch and not p.needs_validation:
            if not self.pending:  # a logging window starts: its clock runs to the flush's read
                self.window_started = time.perf_counter()
            step = self._train_step(batches[done])
            step.finished_at = time.time()
            self.pending.append(step)
            done += 1
            if done % self.log_interval == 0 or done == self.steps_per_epoch or step.stop_requested:
                if (code := self._flush_steps()) is not None:  # rows, then state.json
                    return code
            else:
                self._heartbeat(done)
            if step.stop_requested:  # any rank asked: all stop here
                self.stop_signal.request("stop requested on another rank")
                return self.stop()
        return None

    def _heartbeat(self, done: int) -> None:
        """state.json after a step that is not flushed, from what the host knows (the counters, the
        schedule, the clock): the monitor sees the run alive between flushes."""
        p = self.progress
        self.writer.update_state(
            status="running",
            epoch=p.epoch,
            step=done,
            global_step=p.global_step + len(self.pending),
            lr=self.pending[-1].lr,
            elapsed_s=self.elapsed(),
            resources=self.resources.sample(),
        )

    def _flush_steps(self) -> int | None:
        """Read the pending steps' device values in one host copy, then record each in order; the
        first non-finite loss or gradient norm fails the run (an exit code).

        The read waits for the device to finish the window's steps, so the window's time, from its
        first step's start to here, is what the device took (a CUDA host runs ahead of it, and no
        step waits for it): each step gets the window's time in proportion to its samples."""
        pending, self.pending = self.pending, []
        values = torch.stack([step.sums for step in pending]).tolist()
        window_seconds = time.perf_counter() - self.window_started
        window_samples = sum(step.samples for step in pending)
        for step in pending:
            step.seconds = window_seconds * step.samples / window_samples
        self.window_tokens_per_sec = sum(step.tokens for step in pending) / window_seconds
        for i, (step, (loss_sum, correct, grad_norm)) in enumerate(zip(pending, values)):
            loss = loss_sum / step.weight
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                error = self._non_finite(loss, grad_norm)
                self.report.say(f"error: {error}")
                return self.finish("failed", error=error)
            self._record_step(step, loss, int(correct), grad_norm, last=i == len(pending) - 1)
        return None

    def _train_step(self, batch: list[int]) -> StepResult:
        """One optimizer step on a global batch of sample indices, of which this rank computes its
        shard, a micro-batch at a time; skipped (with `error` set) when the loss or the gradient
        norm is not finite."""
        weight = sum(self.sample_weight[self.corpus.train_labels[i]] for i in batch)
        loss_sum, correct = self._accumulate(batch, weight)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        asked = self.stop_signal.requested
        if self.dist.enabled:  # the stop flag travels in the per-step all-reduce (DDP syncs anyway)
            loss_sum, correct, stop = self.dist.all_sum(
                torch.stack([loss_sum, correct, torch.tensor(float(asked), device=loss_sum.device)])
            ).unbind()
            asked = bool(stop.item())  # every rank stops after the same step
        step = StepResult(
            samples=len(batch),
            weight=weight,
            sums=torch.stack([loss_sum.double(), correct.double(), grad_norm.double()]),
            stop_requested=asked,
            tokens=sum(self.train_lengths[i] for i in batch),
            flops=int(self.sample_flops[batch].sum()),
            lr=self.scheduler.get_last_lr()[0],
        )
        # A non-finite loss or gradient is found at the next flush, which fails the run before any
        # checkpoint is written (every save flushes first): no host read here.
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step

    def _accumulate(self, batch: list[int], weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's micro-batches of the global batch, forward and backward each, their gradients
        adding up in place: (weighted loss sum, correct), on the device. DDP all-reduces the
        gradients in the last micro-batch's backward only (`no_sync` before it)."""
        chunks = micro_batches(batch, self.dist.rank, self.dist.world_size, self.accumulation)
        loss_sum = correct = None
        for i, rows in enumerate(chunks):
            last = i == len(chunks) - 1
            defer = self.dist.enabled and not last
            with self.forward.no_sync() if defer else contextlib.nullcontext():
                chunk_loss, chunk_correct = self._backward(rows, batch, weight)
            loss_sum = chunk_loss if loss_sum is None else loss_sum + chunk_loss
            correct = chunk_correct if correct is None else correct + chunk_correct
        return loss_sum, correct

    def _backward(
        self, mine: list[int], batch: list[int], weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on one micro-batch of this rank (`mine`, of the global `batch`):
        (weighted loss sum, correct), on the device.

        The loss is this rank's share of the global batch's weighted mean (divided by the whole
        batch's weight, not the micro-batch's), so that the micro-batches' gradients add up, and
        DDP's average over ranks makes the one-process gradient of the whole batch."""
        world_size = self.dist.world_size
        rows = mine or batch[:1]
        features = self.collate([self.train_features[i] for i in rows])
        labels = features.pop("labels").to(self.device)
        if len({self.train_lengths[i] for i in rows}) == 1:
            # No padding: no mask. Transformers would read an all-ones mask back from the device
            # (`mask.all()`) to drop it; this way the step does not wait for the GPU, and SDPA runs
            # unmasked, as it would have.
            features.pop("attention_mask", None)
        inputs = {k: v.to(self.device) for k, v in features.items()}
        with self.loaded.autocast():
            logits = self.forward(**inputs).logits.float()
        w = (
            self.class_weights[labels]
            if self.class_weights is not None
            else torch.ones_like(labels, dtype=torch.float)
        )
        if not mine:  # fewer samples than ranks: take part with a zero-weight sample
            w = torch.zeros_like(w)
        loss_sum = (F.cross_entropy(logits, labels, reduction="none") * w).sum()
        (loss_sum * (world_size / weight)).backward()
        correct = ((logits.detach().argmax(-1) == labels) & (w > 0)).sum()
        return loss_sum.detach(), correct.float()

    def _non_finite(self, loss: float, grad_norm: float) -> str:
        what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
        return (
            f"non-finite {what} ({value}) at epoch {self.progress.epoch} step "
            f"{self.progress.step + 1}; no checkpoint holds weights from it or after"
        )

    def _record_step(
        self, step: StepResult, loss: float, correct: int, grad_norm: float, *, last: bool
    ) -> None:
        """Count a flushed step, then tell: its steps.jsonl line; for the flush's last step,
        state.json and (every log_interval) the progress line."""
        p, cfg = self.progress, self.train_config
        seconds = step.seconds
        p.add_step(step.samples, loss, correct, seconds)
        self.pace.add_step(seconds)
        self.flop_meter.add(step.flops, seconds)
        flops_per_sec, mfu = self.flop_meter.rate()
        eta = self.pace.eta(self.total_steps - p.global_step, cfg.epochs - p.epoch + 1)
        self.writer.append_step(
            {
                "epoch": p.epoch,
                "step": p.step,
                "global_step": p.global_step,
                "loss": loss,
                "lr": step.lr,
                "grad_norm": grad_norm,
                "accuracy": correct / step.samples,
                "samples_per_sec": step.samples / seconds,
                "flops": step.flops,
                "t": step.finished_at,
            }
        )
        if not last:
            return
        self.writer.update_state(
            status="running",
            epoch=p.epoch,
            step=p.step,
            global_step=p.global_step,
            loss=loss,
            train_loss=p.train_loss,
            train_accuracy=p.train_accuracy,
            lr=step.lr,
            grad_norm=grad_norm,
            samples_per_sec=p.seen / p.train_time,
            tokens_per_sec=self.window_tokens_per_sec,
            flops_per_sec=flops_per_sec,
            mfu=mfu,
            elapsed_s=self.elapsed(),
            eta_s=eta,
            resources=self.resources.sample(),
        )
        if p.step % self.log_interval == 0 or p.step == self.steps_per_epoch:
            self.report.step(self.writer.state)

    def validate(self) -> tuple[float, float] | None:
        """Weighted loss and accuracy over the validation set, batched, in inference mode; None if
        a stop was requested meanwhile. Under torchrun each rank takes its shard of every batch and
        the sums are all-reduced, so that the metrics equal one process's."""
        self.forward.eval()
        # Twice the training micro-batch (no activations kept): what fits the step fits here.
        total, batch_size = len(self.val_features), self.micro_batch_size * self.dist.world_size * 2
        loss_sum = weight_sum = 0.0
        correct = done = 0
        started = time.perf_counter()
        self._show_validation(0, total, None, None, None)
        with torch.inference_mode():
            for start in range(0, total, batch_size):
                indices = list(range(start, min(start + batch_size, total)))
                sums = self._validation_sums(shard(indices, self.dist.rank, self.dist.world_size))
                # The stop flag travels with the batch's sums: every rank stops at the same batch.
                sums[4] = float(self.stop_signal.requested)
                b_loss, b_weight, b_correct, b_samples, b_stop = self.dist.all_sum(sums).tolist()
                loss_sum += b_loss
                weight_sum += b_weight
                correct += int(b_correct)
                done += int(b_samples)
                per_second = done / (time.perf_counter() - started)
                self._show_validation(
                    done, total, loss_sum / weight_sum, correct / done, per_second
                )
                if b_stop and done < total:
                    self.stop_signal.request("stop requested on another rank")
                    return None
        return loss_sum / weight_sum, correct / total

    def _validation_sums(self, mine: list[int]) -> torch.Tensor:
        """This rank's sums over its shard of a validation batch: weighted loss, weight, correct,
        samples, and a free slot for the stop flag (float64, on the CPU)."""
        if not mine:
            return torch.zeros(5, dtype=torch.float64)
        features = self.collate([self.val_features[i] for i in mine])
        labels = features.pop("labels").to(self.device)
        inputs = {k: v.to(self.device) for k, v in features.items()}
        with self.loaded.autocast():
            logits = self.forward(**inputs).logits.float()
        losses = F.cross_entropy(logits, labels, reduction="none")
        w = (
            self.class_weights[labels]
            if self.class_weights is not None
            else torch.ones_like(losses)
        )
        correct = (logits.argmax(-1) == labels).sum().float()
        sums = [
            (losses * w).sum(),
            w.sum(),
            correct,
            torch.tensor(float(len(mine))),
            torch.tensor(0.0),
        ]
        return torch.stack(sums).double().cpu()

    def _show_validation(
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

    def end_epoch(self, val_loss: float, val_accuracy: float) -> int | None:
        """Best-so-far and patience, epochs.json, the epoch's checkpoints, early stopping; an exit
        code if the run ends here."""
        cfg, p = self.train_config, self.progress
        epoch = p.epoch
        is_best = p.judge_epoch(val_loss, val_accuracy)
        record = self._epoch_record(val_loss, val_accuracy, is_best)
        p.record_epoch(record)
        # The counters advance before save("best"): a resume from it starts the next epoch.
        p.next_epoch()
        metrics = {
            "epoch": epoch,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "train_loss": record["train_loss"],
        }
        if is_best:
            record["checkpoint"] = self.save("best", metrics=metrics)
        every = cfg.save_every  # epoch-N exactly when N is a multiple (best and last do the rest)
        if every and epoch % every == 0:
            record["checkpoint"] = self.save(f"epoch-{epoch}", metrics=metrics)
        self.writer.write_epochs(p.history, p.best_epoch)
        self.writer.update_state(
            status="running",
            validation=None,
            best=p.best,
            epoch=min(epoch + 1, cfg.epochs),
            step=0,
            **self.fixed_state,
        )
        self.report.epoch(record, cfg.epochs)
        patience = cfg.early_stopping_patience
        if patience and p.epochs_without_improvement >= patience:
            self.report.say(f"early stopping: no better validation loss for {patience} epochs")
            self.save("last")
            return self.finish("completed", stopped_early=True)
        if epoch >= cfg.epochs:  # every epoch trained: a stop asked for now ends it completed
            if self.dist.is_main and self.stop_signal.requested:
                self.stop_signal.consume()  # (honoured: the run ends)
            return None
        if self.dist.all_sum(torch.tensor([float(self.stop_signal.requested)])).item():
            return self.stop()
        return None

    def _epoch_record(self, val_loss: float, val_accuracy: float, is_best: bool) -> dict[str, Any]:
        """The epoch's line in epochs.json (its `checkpoint` is filled in once saved)."""
        p = self.progress
        return {
            "epoch": p.epoch,
            "train_loss": p.train_loss,
            "train_accuracy": p.train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": self.scheduler.get_last_lr()[0],
            "epoch_time_s": p.train_time + self.pace.validation_seconds,
            "train_samples_per_sec": p.seen / p.train_time if p.train_time else None,
            "is_best": is_best,
            "checkpoint": None,
        }

    # ======================================================================= save, stop, finish

    def save(self, name: str, *, metrics: dict[str, Any] | None = None) -> str:
        """Write checkpoints/<name>; its path relative to the run directory.

        Every rank calls it at the same point (each rank's RNG state is gathered); rank 0 writes.
        """
        rng = self.dist.gather_objects(ckpt.capture_rng(self.dist.rank))
        relative = f"{Files.CHECKPOINTS}/{name}"
        if not self.dist.is_main:
            return relative
        state, metadata = self._trainer_state(), self._checkpoint_metadata(metrics)
        try:
            ckpt.save_checkpoint(
                self.run_dir / Files.CHECKPOINTS / name,
                self.model,
                self.tokenizer,
                self.optimizer,
                state,
                metadata,
                rng,
            )
        except OSError as e:  # disk full, permission denied: the earlier checkpoints are untouched
            raise TrainingFailed(
                f"could not write checkpoint {name}: {e.strerror or e}; earlier checkpoints are intact"
            ) from None
        if relative not in self.fixed_state["checkpoints"]:
            self.fixed_state["checkpoints"].append(relative)
        return relative

    def _trainer_state(self) -> ckpt.TrainerState:
        return ckpt.TrainerState(
            **self.progress.to_saved(elapsed_s=self.elapsed()),
            scheduler=self.scheduler.state_dict(),
            data_hash=self.corpus.data_hash,
            config=self.config.to_dict(),
            param_names=self.param_names,
            param_groups=[
                {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
            ],
            rng=[],  # save_checkpoint fills in every rank's
            provenance={
                "tool_version": trainer.__version__,
                "base_model": self.config.model.path,
                "started_at": self.run_started_at,
                "run_id": self.run_id,
            },
        )

    def _checkpoint_metadata(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "metrics": metrics or {},
            "labels": self.corpus.label_names,
            "data_hash": self.corpus.data_hash,
            "epoch": self.progress.epoch,
            "global_step": self.progress.global_step,
            "tool_version": trainer.__version__,
            "base_model": self.config.model.path,
            "started_at": self.run_started_at,
            "saved_at": utc_now(),
            "run_id": self.run_id,
        }

    def stop(self) -> int:
        """A requested stop: checkpoints/last, status stopped, exit 0. Every rank calls it."""
        self.writer.update_state(status="stopping", validation=None)
        self.report.say(f"stopping: {self.stop_signal.reason}; writing checkpoints/last")
        self.save("last")
        if self.dist.is_main:
            self.stop_signal.consume()
        return self.finish("stopped", error=None)

    def finish(self, status: str, *, error: str | None = None, stopped_early: bool = False) -> int:
        """result.json, the final state and the summary; the exit code (0 completed or stopped).

        Every rank calls it at the same point (the weight checksums are gathered, then a barrier).
        """
        checksums = None
        if self.dist.enabled:  # every rank must end with the same weights, else the run failed
            checksums = self.dist.gather_objects(
                sum(float(p.detach().double().sum()) for p in self.trainable)
            )
            if len(set(checksums)) > 1 and status != "failed":
                status = "failed"
                error = f"ranks ended with different weights (checksums {checksums})"
        result = self._result(status, error, stopped_early, checksums)
        self.writer.write_result(result)
        self.writer.update_state(
            status=status,
            error=error,
            validation=None,
            best=self.progress.best,
            elapsed_s=self.elapsed(),
            eta_s=0.0 if status == "completed" else None,
            **self.fixed_state,
        )
        self.writer.close()
        self.stop_signal.uninstall()
        self.report.summary(result, str(self.run_dir))
        self._say_peak_refresh()
        self.dist.barrier()
        return 0 if status in ("completed", "stopped") else 1

    def _say_peak_refresh(self) -> None:
        """What the background re-measurement found (it ends within its budget of starting)."""
        if self.peak_refresh is None:
            return
        self.peak_refresh.join()
        again, warning = self.peak_refresh.measured, self.peak_refresh.warning
        if warning:
            self.report.say(f"warning: {warning}")
        elif again is not None and again.flops_per_sec > (self.peak.flops_per_sec or 0):
            self.report.say(
                f"peak: measured {again.describe()} during the run, kept for the next run "
                "(this run's MFU stays against the peak it started with)"
            )

    def _result(
        self, status: str, error: str | None, stopped_early: bool, checksums: list | None
    ) -> dict[str, Any]:
        best = self.progress.best
        flops_per_sec, mfu = self.flop_meter.rate(overall=True)
        return {
            "status": status,
            "epochs": self.progress.history,
            "best": best,
            "best_epoch": best["epoch"] if best else None,
            "best_val_loss": best["val_loss"] if best else None,
            "best_val_accuracy": best["val_accuracy"] if best else None,
            "stopped_early": stopped_early,
            "global_step": self.progress.global_step,
            "total_time_s": self.elapsed(),
            "error": error,
            "checkpoints": self.fixed_state["checkpoints"],
            "world_size": self.dist.world_size,
            "rank_weight_checksums": checksums,
            "flops_per_sec": flops_per_sec,
            "mfu": mfu,
        }
