"""The training run as a recipe whose methods read in the order the run happens:

    train()                      entry point: the lock, the monitor writer, the process group, errors
    FineTuneRecipe.setup()       everything before the first batch:
      _setup_seed_and_device       seeds, device
      recorder.watch_resources     state.json's resources; a fresh run's `initializing` state
      _install_signal_handlers     the stop signal (SIGINT, SIGTERM, control.json)
      _setup_data                  a resume's checkpoint read and checked against the corpus
      _setup_model                 base model + LoRA, tokenized features, each sample's FLOPs,
                                   class weights
      _setup_batches               steps per epoch, micro-batches and accumulation, log interval
      _setup_optimizer             AdamW (no decay on biases and norms), warmup + cosine schedule
      _restore_progress            a resume's weights, optimizer, schedule, RNG and counters
      _setup_peak                  the device's peak FLOP/s (rank 0 measures a CPU's), for MFU
      _record_start                run.json, the start lines, the first `running` state
      _setup_data_parallel         DDP, each rank's dropout stream
    FineTuneRecipe.train()       per epoch: train_epoch → validate → end_epoch; then finish
      train_epoch                  the epoch's remaining batches: _train_step (its micro-batches'
                                   _backward, then the optimizer); every log_interval steps
                                   _flush_steps reads them on the host (the window's clock stops
                                   there) and _record_step each
      validate                     validation loss and accuracy
      end_epoch                    best-so-far, epochs.json, checkpoints, early stopping
    save / stop / finish         a checkpoint; a requested stop; result.json and the exit code

What the run writes (run.json, state.json, steps.jsonl, epochs.json, result.json, a checkpoint's
trainer state and metadata) and its step clock live in trainer/run_recorder.py: the recipe says
when, the recorder what.

What it trains: a seeded split, a reshuffle every epoch (seeded by (seed, epoch)), AdamW, linear
warmup then cosine decay to lr_min stepped every batch, gradient clipping, validation every epoch, checkpoints
best / epoch-N / last, early stopping on validation loss; a non-finite loss or gradient, or a loss
spike that persists, rolls back to an in-memory snapshot and goes on (trainer/recovery.py), or
fails the run when recovery is off or used up.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
from trainer.fault_switch import fault_steps
from trainer.flops import run_peak, step_flops
from trainer.lock import RunLock
from trainer.micro_batches import accumulation_steps, micro_batches
from trainer.model import (
    ModelPlan,
    cpu_kernels_wanted,
    fast_dropout_wanted,
    load_model,
    loading_memory,
    pick_device,
    store_frozen_base,
    use_fast_dropout,
    use_short_attention,
)
from trainer.monitor.schema import MAX_CLASSES, Files
from trainer.monitor.writer import MonitorWriter, NullWriter, WriteFailed
from trainer.preflight import preflight
from trainer.progress import Progress
from trainer.recovery import Healing
from trainer.report import Reporter
from trainer.resume_point import (
    Resume,
    ResumePoint,
    read_resume_point,
    resume_note,
    shown_checkpoint,
)
from trainer.rms_norm import use_fused_rms_norm
from trainer.run_dir import check_run_dir, refuse_a_started_run
from trainer.run_recorder import RunRecorder, RunSetup, StepResult, record_failure
from trainer.stopping import StopSignal
from trainer.validation_sums import Tally, Validation, confusion_counts, validation_sums

__all__ = ["FineTuneRecipe", "Resume", "crash_message", "import_path", "log_every", "train"]


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
    fault_steps()  # a bad ENTRENAR_FAULT_NAN_STEPS fails before anything is written
    plan = preflight(config)  # nothing is written before the model and output.dir are checked
    dist = init_distributed()
    if dist.is_main and lock is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        check_run_dir(run_dir)  # nothing written through a link planted in the directory
        lock = RunLock(run_dir).acquire()
    writer = MonitorWriter(run_dir) if dist.is_main else NullWriter(run_dir)
    recipe: FineTuneRecipe | None = None
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
        # DDP's reducer holds the process group. Freed first, the group is destroyed by
        # destroy_process_group, which lets go of the GIL while gloo's threads end; freed after it,
        # by the reducer's deallocation, which holds the GIL while a gloo thread may wait for it to
        # drop a finished all-gather's tensors: rank 1 hung at exit (pytorch/pytorch#56297).
        if recipe is not None:
            recipe.model_wrapped = None  # (a traceback may keep the recipe itself)
        recipe = None
        gc.collect()
        dist.close()


def decay_groups(
    model: torch.nn.Module, weight_decay: float
) -> list[tuple[list[tuple[str, torch.nn.Parameter]], float]]:
    """The trainable parameters as AdamW's two groups, (named parameters, weight decay): weight
    decay as Hugging Face applies it, not on biases and norms."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decays = [p.ndim >= 2 and "norm" not in n.lower() for n, p in named]
    decay = [pair for pair, d in zip(named, decays) if d]
    no_decay = [pair for pair, d in zip(named, decays) if not d]
    return [(decay, weight_decay), (no_decay, 0.0)]


class FineTuneRecipe:
    """LoRA fine-tuning of a sequence classifier, one run directory, one or more ranks.

    Each attribute is made in __init__ or in one setup step:
      __init__                 config, train_config, resume, plan, corpus (read and checked before
                               the run directory was made), dist, run_dir, report, started_at,
                               restoring, recorder (the run's documents and step clock), pending
      _setup_seed_and_device   device
      _install_signal_handlers stop_signal
      _setup_model             loaded, model, tokenizer, collate, train_features, val_features,
                               train_lengths, step_flops, sample_flops, class_weights, sample_weight
      _setup_batches           steps_per_epoch, micro_batch_size, accumulation, log_interval,
                               total_steps
      _setup_optimizer         param_names, optimizer, trainable, max_grad_norm, scheduler,
                               healing (the run's recoveries: trainer/recovery.py)
      _restore_progress        progress, shuffle (the epoch order's rule: a resumed run's own)
      _setup_peak              peak, peak_refresh
      _setup_data_parallel     model_wrapped (what the batches go through: DDP's wrapper or the model)
    """

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
        self.started_at = time.time()  # a control.json older than this is not for this process
        self.corpus = corpus  # read and checked before the run directory was made
        self.plan = plan  # the model as preflight checked it
        self.config, self.train_config = config, config.train
        self.resume = resume
        self.restoring = resume is not None and resume.checkpoint is not None
        self.dist = dist
        self.run_dir = writer.dir
        self.report = Reporter(enabled=dist.is_main)
        self.recorder = RunRecorder(writer, config, dist, argv, resume)
        self.pending: list[StepResult] = []  # trained, not yet read on the host nor recorded
        self.poisoned = False  # this step's loss made NaN by the fault switch (trainer/recovery.py)

    # ======================================================================================= setup

    def setup(self) -> None:
        """Everything before the first batch, in the order exact resume and DDP depend on."""
        if self.dist.is_main:
            ckpt.clean_leftovers(self.run_dir / Files.CHECKPOINTS)  # what a killed writer left
        self._setup_seed_and_device()
        self.recorder.watch_resources(self.device)  # state.json's `resources` from here on
        if self.resume is None:  # a resume writes nothing until its checkpoint and data are checked
            self.recorder.initializing()
        self._install_signal_handlers()
        resume_point = self._setup_data()
        self._setup_model()
        self._setup_batches()
        self._setup_optimizer()
        self._restore_progress(resume_point)
        del resume_point  # its tensors are in the model and optimizer now
        self._setup_peak()
        self._record_start()
        self._setup_data_parallel()
        if self.peak_refresh is not None:  # after setup: it competes with no setup step's clock
            self.peak_refresh.start()

    def setup_for_range_test(self) -> None:
        """lr_find.py's setup: the run's own seeds, device, model, batches, AdamW; nothing saved."""
        self._setup_seed_and_device()
        self._setup_model()
        self._setup_batches()
        self._setup_optimizer()
        self.model_wrapped = self.model

    def _setup_seed_and_device(self) -> None:
        seed = self.train_config.seed
        # Seed before the model loads: the head and LoRA weights are drawn from these generators.
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.device = pick_device()

    def _install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM (and control.json) ask for a clean stop; a second SIGINT exits at once."""
        self.stop_signal = StopSignal(
            self.run_dir,
            self.started_at,
            on_force=self.recorder.forced_stop,
            on_ignored=self.report.say,  # a control.json that is not a file: said once
        ).install()

    def _setup_data(self) -> ResumePoint | None:
        """The corpus's notes said; a resume's checkpoint, read and checked against the corpus
        before the model loads (fail fast)."""
        resume_point = None
        if self.restoring:
            resume_point = read_resume_point(
                self.resume, self.corpus.data_hash, self.train_config.epochs, self.dist.world_size
            )
        for note in self.corpus.notes:
            self.report.say(note)
        return resume_point

    def _setup_model(self) -> None:
        config, corpus = self.config, self.corpus
        with loading_memory():  # the fp32 copies loading drops go back to the system
            self.loaded = load_model(
                config.model,
                config.lora,
                corpus.label_names,
                self.device,
                self.plan,
                gradient_checkpointing=self.train_config.gradient_checkpointing,
            )
            store_frozen_base(self.loaded.model, self.loaded.precision)  # exact: see its docstring
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        if fast_dropout_wanted(self.train_config.fast_dropout, self.device):
            use_fast_dropout(self.model)
        if cpu_kernels_wanted(self.device):  # short inputs' attention, RMSNorm backward: CPU
            use_short_attention(self.model)
            use_fused_rms_norm(self.model)
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
        # Class weights (1s without): on the host for a batch's total, on the device per sample.
        self.sample_weight = corpus.class_weights or [1.0] * corpus.num_labels
        self.class_weights = torch.tensor(self.sample_weight, device=self.device)

    def _setup_batches(self) -> None:
        """The run's shape: steps per epoch, each step's micro-batches, the log interval."""
        cfg = self.train_config
        self.steps_per_epoch = steps_per_epoch(len(self.train_features), cfg.batch_size)
        # Resolved by each rank's preflight; an `auto` size may differ where the ranks' devices have
        # different free memory, and every rank must run the same micro-steps: the smallest wins.
        self.micro_batch_size = min(self.dist.gather_objects(self.plan.micro_batch_size))
        self.accumulation = accumulation_steps(
            cfg.batch_size, self.micro_batch_size, self.dist.world_size
        )
        self.log_interval = log_every(cfg.log_interval, self.steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.epochs

    def _setup_optimizer(self) -> None:
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        cfg = self.train_config
        groups = decay_groups(self.model, cfg.weight_decay)
        self.param_names = [[n for n, _ in g] for g, _ in groups]
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for _, p in g], "weight_decay": wd} for g, wd in groups],
            lr=cfg.learning_rate,
        )
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.max_grad_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=math.ceil(cfg.warmup_fraction * self.total_steps),
            num_training_steps=self.total_steps,
            min_lr=cfg.lr_min,
        )
        self.healing = Healing(cfg, self.trainable, self.optimizer, self.scheduler)

    def _restore_progress(self, resume_point: ResumePoint | None) -> None:
        """A fresh run starts at epoch 1; a resume takes weights, optimizer, schedule, RNG and
        counters from its checkpoint, and its run.json's history."""
        self.progress = Progress()
        self.shuffle = SHUFFLE_RULE  # run.json's `shuffle`: the rule of every epoch's order
        if self.resume is None:
            return
        reached = self.recorder.read_previous_run()  # before this process writes state.json
        if self.recorder.previous_run:  # a run.json without the rule resumes with the old one
            run_json = str(self.run_dir / Files.RUN)
            self.shuffle = recorded_shuffle_rule(self.recorder.previous_run, run_json)
        if resume_point is None:
            self.recorder.resumed(resume_note(None, 0, reached), None, epoch_seconds=0.0)
            return  # (the CLI has said that a run without a checkpoint starts over)
        resume_point.restore(
            self.model, self.optimizer, self.scheduler, self.dist.rank, self.dist.world_size
        )
        saved, elastic = resume_point.saved, resume_point.elastic
        self.progress = p = Progress.from_saved(saved)
        self.healing.load(saved.recovery)
        shown = shown_checkpoint(resume_point.folder, self.run_dir)
        note = resume_note(shown, p.global_step, reached, elastic)
        self.recorder.resumed(note, elastic, epoch_seconds=saved.running["train_time"])
        self.report.say(f"{note} (epoch {p.epoch}, step {p.step} of it)")

    def _setup_peak(self) -> None:
        """The peak MFU is measured against: rank 0's device (a table entry on a GPU, a short
        matmul measurement on a CPU, before the first step's clock starts) × the world size. A
        CPU's comes from the cache of this machine's best when it has one (trainer/peak_cache.py),
        re-measured in the background for the next run."""
        found = run_peak(self.device, self.loaded.precision, self.dist.is_main)
        self.peak, self.peak_refresh = found.peak, found.refresh
        if found.warning:
            self.report.say(f"warning: {found.warning}")
        total = self.peak.flops_per_sec
        self.recorder.clock.set_peak(total * self.dist.world_size if total else None)

    def _record_start(self) -> None:
        """run.json (every resume appends itself to `resumed_from`), the start lines, and
        state.json's first `running` state with the run's fixed totals."""
        setup = RunSetup(
            loaded=self.loaded,
            device=self.device,
            corpus=self.corpus,
            n_train=len(self.train_features),
            n_val=len(self.val_features),
            step_flops=self.step_flops,
            peak=self.peak,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
            micro_batch_size=self.micro_batch_size,
            accumulation=self.accumulation,
            memory_plan=self.plan.memory,
            shuffle=self.shuffle,
            recoveries=self.healing.recoveries,
        )
        self.recorder.write_run(self.progress, setup)
        self.report.start(setup, self.config, self.dist.world_size)
        self.recorder.started(self.progress)

    def _setup_data_parallel(self) -> None:
        """`model_wrapped` is the model the batches go through (Hugging Face Trainer's name): DDP's
        wrapper under torchrun (it averages the gradients and starts every rank from rank 0's
        weights), else the model itself."""
        dist = self.dist
        if not dist.enabled:
            self.model_wrapped = self.model
            return
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device.type == "cuda"
        self.model_wrapped = DistributedDataParallel(
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
            self.recorder.clock.start_validation()
            validation = self.validate()
            if validation is None:
                return self.stop()
            self.recorder.clock.end_validation()
            self.model.train()
            if (code := self.end_epoch(validation)) is not None:
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
            self.recorder.clock.start_epoch()
        self.healing.epoch_started(p)  # every step before this one was verified
        while (
            done := p.step + len(self.pending)
        ) < self.steps_per_epoch and not p.needs_validation:
            if not self.pending:  # a logging window starts: its clock runs to the flush's read
                self.recorder.clock.start_window()
            step = self._train_step(batches[done])
            step.finished_at = time.time()
            self.pending.append(step)
            done += 1
            if done % self.log_interval == 0 or done == self.steps_per_epoch or step.stop_requested:
                if (code := self._flush_steps(batches)) is not None:  # rows, then state.json
                    return code
            else:  # state.json from what the host knows: the monitor sees the run alive
                self.recorder.heartbeat(p, done, len(self.pending), step.lr)
            if step.stop_requested:  # any rank asked: all stop here
                self.stop_signal.request("stop requested on another rank")
                return self.stop()
        return None

    def _flush_steps(self, batches: list[list[int]]) -> int | None:
        """Read the pending steps' device values in one host copy, then record each in order; the
        first fault (a non-finite loss or gradient norm, a persisting spike) rolls the run back to
        its snapshot, or fails it (an exit code) when recovery is off or used up.

        The read waits for the device to finish the window's steps, so the window's time, from its
        first step's start to here, is what the device took (a CUDA host runs ahead of it, and no
        step waits for it): each step gets the window's time in proportion to its samples."""
        pending, self.pending = self.pending, []
        values = torch.stack([step.sums for step in pending]).tolist()
        self.recorder.clock.end_window(pending)
        for i, (step, (loss_sum, correct, grad_norm)) in enumerate(zip(pending, values)):
            loss = loss_sum / step.weight
            if (fault := self.healing.check(loss, grad_norm)) is not None:
                if error := self.healing.handle(fault, loss, grad_norm, self.progress, batches):
                    self.report.say(f"error: {error}")
                    return self.finish("failed", error=error)
                self.recorder.recovered(self.healing.recoveries)
                self.report.say(self.healing.news())
                return None
            self._record_step(step, loss, int(correct), grad_norm, last=i == len(pending) - 1)
        self.healing.flushed(self.progress)  # a snapshot, when one is due
        return None

    def _train_step(self, batch: list[int]) -> StepResult:
        """One optimizer step on a global batch of sample indices, of which this rank computes its
        shard, a micro-batch at a time. A non-finite loss or gradient norm is not looked for here
        (that would read the device every step): the step is taken, and the next flush finds it."""
        weight = sum(self.sample_weight[self.corpus.train_labels[i]] for i in batch)
        self.poisoned = self.healing.poisons(self.progress.global_step + len(self.pending) + 1)
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
        # A fault is found at the next flush, before any checkpoint is written (a save comes only
        # after a flush: the epoch's last step flushes, as does a stop's): no host read here.
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
            with self.model_wrapped.no_sync() if defer else contextlib.nullcontext():
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
            logits = self.model_wrapped(**inputs).logits.float()
        w = self.class_weights[labels]
        if not mine:  # fewer samples than ranks: take part with a zero-weight sample
            w = torch.zeros_like(w)
        loss_sum = (F.cross_entropy(logits, labels, reduction="none") * w).sum()
        if self.poisoned:  # ENTRENAR_FAULT_NAN_STEPS (trainer/recovery.py): NaN loss and gradients
            loss_sum = loss_sum * math.nan
        (loss_sum * (world_size / weight)).backward()
        correct = ((logits.detach().argmax(-1) == labels) & (w > 0)).sum()
        return loss_sum.detach(), correct.float()

    def _record_step(
        self, step: StepResult, loss: float, correct: int, grad_norm: float, *, last: bool
    ) -> None:
        """Count a flushed step, then tell: its steps.jsonl line; for the flush's last step,
        state.json and (every log_interval) the progress line."""
        p = self.progress
        p.add_step(step.samples, loss, correct)
        self.recorder.step(p, step, loss, correct, grad_norm)
        if not last:
            return
        self.recorder.steps_flushed(p, step, loss, grad_norm)
        if p.step % self.log_interval == 0 or p.step == self.steps_per_epoch:
            self.report.step(self.recorder.state)

    def validate(self) -> Validation | None:
        """Weighted loss, accuracy and the confusion matrix over the validation set, batched, in
        inference mode; None if a stop was requested meanwhile. Under torchrun each rank takes its
        shard of every batch (each sample on one rank) and the sums are all-reduced: the metrics
        equal one process's. The matrix stays on the device, summed over ranks and read once."""
        self.model_wrapped.eval()
        # Twice the training micro-batch (no activations kept): what fits the step fits here.
        total, batch_size = len(self.val_features), self.micro_batch_size * self.dist.world_size * 2
        tally, k = Tally(total), self.corpus.num_labels
        confusion = confusion_counts(k, self.device) if k <= MAX_CLASSES else None
        started = time.perf_counter()
        self.recorder.validating(0, total, None, None, None)
        with torch.inference_mode():
            for start in range(0, total, batch_size):
                indices = list(range(start, min(start + batch_size, total)))
                mine = shard(indices, self.dist.rank, self.dist.world_size)
                sums = validation_sums(self.model_wrapped, self.loaded, self.collate,
                                       [self.val_features[i] for i in mine], self.class_weights,
                                       confusion)  # fmt: skip
                # The stop flag travels with the batch's sums: every rank stops at the same batch.
                sums[4] = float(self.stop_signal.requested)
                stop = tally.add(self.dist.all_sum(sums).tolist())
                per_second = tally.done / (time.perf_counter() - started)
                self.recorder.validating(tally.done, total, tally.loss, tally.accuracy, per_second)
                if stop and tally.done < total:
                    self.stop_signal.request("stop requested on another rank")
                    return None
            counts = self.dist.all_sum_counts(confusion) if confusion is not None else None
        return tally.result(counts)

    def end_epoch(self, validation: Validation) -> int | None:
        """Best-so-far and patience, epochs.json, the epoch's checkpoints, early stopping; an exit
        code if the run ends here."""
        cfg, p = self.train_config, self.progress
        epoch = p.epoch
        val_loss, val_accuracy = validation.loss, validation.accuracy
        is_best = p.judge_epoch(val_loss, val_accuracy)
        lr = self.scheduler.get_last_lr()[0]
        record = self.recorder.epoch_record(p, validation, self.corpus.label_names, is_best, lr)
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
        self.recorder.epoch_ended(p, epoch)
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

    # ======================================================================= save, stop, finish

    def save(self, name: str, *, metrics: dict[str, Any] | None = None) -> str:
        """Write checkpoints/<name>; its path relative to the run directory.

        Every rank calls it at the same point (each rank's RNG state is gathered); rank 0 writes.
        """
        rng = self.dist.gather_objects(ckpt.capture_rng(self.dist.rank))
        relative = f"{Files.CHECKPOINTS}/{name}"
        if not self.dist.is_main:
            return relative
        p = self.progress
        state = self.recorder.trainer_state(
            p, self.scheduler, self.optimizer, self.param_names, self.corpus.data_hash,
            self.healing.state(),
        )  # fmt: skip
        metadata = self.recorder.checkpoint_metadata(p, self.corpus, metrics)
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
        self.recorder.checkpoint_saved(relative)
        return relative

    def stop(self) -> int:
        """A requested stop: checkpoints/last, status stopped (or pruned, when a sweep's pruner
        asked), exit 0. Every rank calls it."""
        self.recorder.stopping()
        self.report.say(f"stopping: {self.stop_signal.reason}; writing checkpoints/last")
        self.save("last")
        # rank 0 read control.json: every rank ends with its status
        pruned = bool(self.dist.broadcast_object(self.stop_signal.pruned))
        if self.dist.is_main:
            self.stop_signal.consume()
        return self.finish("pruned" if pruned else "stopped", error=None)

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
        result = self.recorder.finished(self.progress, status, error, stopped_early, checksums)
        self.stop_signal.uninstall()
        self.report.summary(result, str(self.run_dir))
        if self.peak_refresh is not None and (news := self.peak_refresh.news(self.peak)):
            self.report.say(news)
        self.dist.barrier()
        return 0 if status in ("completed", "stopped", "pruned") else 1
