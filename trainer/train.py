"""The training run, top to bottom in the order it happens: setup → data → model → optimizer → resume →
loop (batches, validation, checkpoints, early stopping) → the end.

Semantics follow entrenar's ClassifyTrainer: a seeded split, a reshuffle every epoch (seed + epoch),
AdamW, linear warmup then cosine decay to lr_min stepped every batch, gradient clipping, validation
every epoch, checkpoints best / epoch-N / last, NaN → failed, early stopping on validation loss.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import trainer
from trainer import checkpoint as ckpt
from trainer.config import Config
from trainer.data import epoch_batches, load_corpus, steps_per_epoch, tokenize
from trainer.distributed import Dist, init_distributed, shard
from trainer.errors import TrainingFailed, UserError
from trainer.lock import RunLock, identity
from trainer.model import (
    ModelPlan,
    fast_dropout_wanted,
    load_model,
    pick_device,
    use_fast_dropout,
)
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files
from trainer.monitor.writer import MonitorWriter, NullWriter
from trainer.preflight import preflight
from trainer.report import Reporter
from trainer.resources import ResourceSampler
from trainer.stopping import StopSignal


@dataclass
class Resume:
    """Where a resumed run continues from (resolved by the CLI)."""

    checkpoint: Path | None  # None: the run died before its first checkpoint; start over in place
    allow_data_mismatch: bool = False
    overrides: list[str] = field(default_factory=list)


@dataclass
class Progress:
    """Counters of the run; what a checkpoint stores so that a resume continues exactly here."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    needs_validation: bool = False
    best: dict[str, Any] | None = None
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0  # seconds spent by earlier processes of this run (resumes)
    # running sums of the current epoch's training (kept across a mid-epoch stop)
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    train_time: float = 0.0


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def resume_note(checkpoint: str | None, at_step: int, reached: int | None) -> str:
    """What a resume does to the run's steps, said the same in the trainer's log and the monitor
    (run.json's resumed_from note)."""
    if checkpoint is None:
        note = "started over with the saved config (no checkpoint yet)"
    else:
        note = f"resumed from {checkpoint} at step {at_step}"
    if reached is not None and reached > at_step:
        first = at_step + 1
        note += (
            f"; step {first} is redone"
            if reached == first
            else f"; steps {first}–{reached} are redone"
        )
    return note


def train(config: Config, resume: Resume | None = None, argv: list[str] | None = None) -> int:
    """Run training; return the exit code (0 completed or stopped, 1 failed). Bad input raises UserError.

    A crash inside training marks the run failed in state.json (with the error) before propagating.
    """
    run_dir = Path(config.output.dir)
    if resume is None and (run_dir / Files.RUN).exists():
        raise UserError(
            f"output.dir {run_dir} already holds a run; resume it with --resume {run_dir}, or choose another output.dir"
        )
    plan = preflight(config)  # nothing is written before the model and output.dir are checked
    dist = init_distributed()
    lock = None
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
    writer = MonitorWriter(run_dir) if dist.is_main else NullWriter(run_dir)
    try:
        return _train(config, resume, argv, writer, dist, plan)
    except UserError as e:
        if writer.state["seq"]:  # a fresh run already said "initializing": say why it ended
            writer.update_state(status="failed", error=str(e), validation=None)
        raise
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if writer.state["seq"]:
            rank = dist.rank if dist.enabled else None
            error = str(e) if isinstance(e, TrainingFailed) else crash_message(e, rank)
            writer.write_result({"status": "failed", "error": error})
            writer.update_state(status="failed", error=error, validation=None)
        raise
    finally:
        writer.close()
        if lock:
            lock.release()
        dist.close()


def _train(
    config: Config,
    resume: Resume | None,
    argv: list[str] | None,
    writer: MonitorWriter,
    dist: Dist,
    plan: ModelPlan,
) -> int:
    # ------------------------------------------------------------------------------------ setup
    started = time.time()
    t0 = time.perf_counter()
    cfg_t = config.train
    run_dir = writer.dir
    report = Reporter(enabled=dist.is_main)
    if dist.is_main:
        ckpt.clean_leftovers(run_dir / Files.CHECKPOINTS)
    random.seed(cfg_t.seed)
    np.random.seed(cfg_t.seed)
    torch.manual_seed(cfg_t.seed)
    device = pick_device()
    resources = ResourceSampler(device)  # state.json's `resources`, sampled at most once a second
    me = identity()
    if resume is None:  # a resume writes nothing until its checkpoint and data have been checked
        writer.update_state(status="initializing", total_epochs=cfg_t.epochs, **me)

    def forced_exit() -> None:
        writer.update_state(
            status="stopped",
            error="forced stop (second interrupt): exited without writing a checkpoint",
        )

    stop = StopSignal(run_dir, started, on_force=forced_exit).install()

    # ------------------------------------------------------------------------------------ data
    corpus = load_corpus(config.data, cfg_t.seed)
    restoring = resume is not None and resume.checkpoint is not None
    if restoring:  # fail fast, before the model loads
        saved, saved_tensors = ckpt.read_trainer_state(resume.checkpoint)
        saved_adapter = ckpt.read_adapter(resume.checkpoint)
        if len(saved.rng) != dist.world_size:
            raise UserError(
                f"{resume.checkpoint}: saved by {len(saved.rng)} process(es), resumed with {dist.world_size}; "
                f"resume with --nproc {len(saved.rng)} (each rank continues its own dropout RNG)"
            )
        done = epochs_done(saved.epoch, saved.step, saved.needs_validation)
        if cfg_t.epochs < done:
            raise UserError(
                f"train.epochs = {cfg_t.epochs} is fewer than the {done} epoch(s) {resume.checkpoint} "
                f"has already trained; resume with train.epochs={done} or more (or use its "
                "checkpoints as they are)"
            )
        if saved.data_hash != corpus.data_hash and not resume.allow_data_mismatch:
            raise UserError(
                f"{resume.checkpoint}: data changed since the checkpoint (checkpoint {saved.data_hash}, "
                f"data now {corpus.data_hash}); pass --allow-data-mismatch to resume anyway"
            )
    for note in corpus.notes:
        report.say(note)

    # ------------------------------------------------------------------------------------ model
    loaded = load_model(config.model, config.lora, corpus.label_names, device, plan)
    model, tokenizer = loaded.model, loaded.tokenizer
    if fast_dropout_wanted(cfg_t.fast_dropout, device):
        use_fast_dropout(model)
    from transformers import DataCollatorWithPadding, get_cosine_with_min_lr_schedule_with_warmup

    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    train_features = tokenize(
        tokenizer, corpus.train_texts, corpus.train_labels, config.model.max_length
    )
    val_features = tokenize(tokenizer, corpus.val_texts, corpus.val_labels, config.model.max_length)
    n_train, n_val = len(train_features), len(val_features)
    train_lengths = [len(f["input_ids"]) for f in train_features]
    val_features.sort(key=lambda f: len(f["input_ids"]))  # less padding; the metrics are sums
    class_weights = (
        torch.tensor(corpus.class_weights, device=device) if corpus.class_weights else None
    )

    # ------------------------------------------------------------------------------------ optimizer
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decays = [p.ndim >= 2 and "norm" not in n.lower() for n, p in named]  # as HF: not biases, norms
    decay = [np_ for np_, d in zip(named, decays) if d]
    no_decay = [np_ for np_, d in zip(named, decays) if not d]
    groups = [(decay, cfg_t.weight_decay), (no_decay, 0.0)]
    param_names = [[n for n, _ in g] for g, _ in groups]
    optimizer = torch.optim.AdamW(
        [{"params": [p for _, p in g], "weight_decay": wd} for g, wd in groups],
        lr=cfg_t.learning_rate,
    )
    trainable = [p for _, p in named]
    spe = steps_per_epoch(n_train, cfg_t.batch_size)
    total_steps = spe * cfg_t.epochs
    warmup_steps = math.ceil(cfg_t.warmup_fraction * total_steps)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=total_steps,
        min_lr=cfg_t.lr_min,
    )

    # ------------------------------------------------------------------------------------ resume
    progress = Progress()
    run_info: dict[str, Any] = {}
    reached = previous_global_step(run_dir) if resume is not None else None
    if resume is not None and (run_dir / Files.RUN).exists():
        run_info = ckpt.read_json(run_dir / Files.RUN)
    if restoring:
        ckpt.load_adapter(resume.checkpoint, saved_adapter, model)
        ckpt.load_optimizer_tensors(optimizer, saved, saved_tensors)
        scheduler.load_state_dict(saved.scheduler)
        ckpt.restore_rng(saved.rng, saved_tensors, dist.rank)
        progress = Progress(
            epoch=saved.epoch,
            step=saved.step,
            global_step=saved.global_step,
            needs_validation=saved.needs_validation,
            best=saved.best,
            epochs_without_improvement=saved.epochs_without_improvement,
            history=saved.epochs,
            elapsed_before=saved.elapsed_s,
            **saved.running,
        )
    note = None
    if resume is not None:
        shown = shown_checkpoint(resume.checkpoint, run_dir) if resume.checkpoint else None
        note = resume_note(shown, progress.global_step, reached)
        if restoring:  # (the CLI has said that a run without a checkpoint starts over)
            report.say(f"{note} (epoch {progress.epoch}, step {progress.step} of it)")

    resumed_from = list(run_info.get("resumed_from") or [])
    if resume is not None:
        resumed_from.append(
            {
                "checkpoint": str(resume.checkpoint) if resume.checkpoint else None,
                "at": utc_now(),
                "global_step": progress.global_step,
                "overrides": resume.overrides,
                "note": note,
            }
        )
    run_started_at = run_info.get("started_at", utc_now())
    run_id = run_info.get("run_id", f"{run_dir.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    writer.write_run(
        {
            "run_id": run_id,
            "name": run_dir.name,
            "config": config.to_dict(),
            "model": {
                "path": config.model.path,
                "architecture": loaded.architecture,
                "params_total": loaded.params_total,
                "params_trainable": loaded.params_trainable,
                "quantize": config.model.quantize,
                "precision": loaded.precision,
                "device": str(device),
            },
            "data": {
                "train": config.data.train,
                "validation": config.data.validation or None,
                "n_train": n_train,
                "n_val": n_val,
                "data_hash": corpus.data_hash,
                "labels": corpus.label_names,
                "class_counts": corpus.class_counts,
                "class_weights": corpus.class_weights,
            },
            "epochs": cfg_t.epochs,
            "steps_per_epoch": spe,
            "batch_size": cfg_t.batch_size,
            "world_size": dist.world_size,
            **me,
            "argv": argv if argv is not None else sys.argv,
            "tool_version": trainer.__version__,
            "started_at": run_started_at,
            "resumed_from": resumed_from or None,
        }
    )
    quantization = "NF4 base (QLoRA)" if config.model.quantize == "nf4" else "no quantization"
    report.say(
        f"{loaded.architecture} ({loaded.params_trainable:,} of {loaded.params_total:,} parameters trainable) "
        f"on {device} in {loaded.precision}, {quantization}; {n_train} train / {n_val} validation samples, "
        f"{len(corpus.label_names)} labels; {cfg_t.epochs} epoch{'s' if cfg_t.epochs != 1 else ''} × {spe} steps"
    )
    base_state = {
        "total_epochs": cfg_t.epochs,
        "steps_per_epoch": spe,
        "total_steps": total_steps,
        "checkpoints": sorted(
            str(p.relative_to(run_dir)) for p in (run_dir / Files.CHECKPOINTS).glob("[!.]*")
        ),
    }
    writer.update_state(
        status="running",
        epoch=progress.epoch,
        step=progress.step,
        global_step=progress.global_step,
        elapsed_s=progress.elapsed_before,
        best=progress.best,
        world_size=dist.world_size,
        **me,
        **base_state,
    )
    if progress.history:
        writer.write_epochs(progress.history, progress.best["epoch"] if progress.best else None)

    # Helpers that close over the run: saving a checkpoint, finishing, failing.
    def elapsed() -> float:
        return progress.elapsed_before + time.perf_counter() - t0

    def save(name: str, *, metrics: dict[str, Any] | None = None) -> str:
        """Every rank calls this (its RNG state is gathered); rank 0 writes the checkpoint."""
        rng = dist.gather_objects(ckpt.capture_rng(dist.rank))
        rel = f"{Files.CHECKPOINTS}/{name}"
        if not dist.is_main:
            return rel
        trainer_state = ckpt.TrainerState(
            epoch=progress.epoch,
            step=progress.step,
            global_step=progress.global_step,
            needs_validation=progress.needs_validation,
            scheduler=scheduler.state_dict(),
            best=progress.best,
            epochs_without_improvement=progress.epochs_without_improvement,
            epochs=progress.history,
            data_hash=corpus.data_hash,
            config=config.to_dict(),
            param_names=param_names,
            param_groups=[
                {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
            ],
            rng=[],
            provenance={
                "tool_version": trainer.__version__,
                "base_model": config.model.path,
                "started_at": run_started_at,
                "run_id": run_id,
            },
            running={
                "loss_sum": progress.loss_sum,
                "correct": progress.correct,
                "seen": progress.seen,
                "train_time": progress.train_time,
            },
            elapsed_s=elapsed(),
        )
        metadata = {
            "metrics": metrics or {},
            "labels": corpus.label_names,
            "data_hash": corpus.data_hash,
            "epoch": progress.epoch,
            "global_step": progress.global_step,
            "tool_version": trainer.__version__,
            "base_model": config.model.path,
            "started_at": run_started_at,
            "saved_at": utc_now(),
            "run_id": run_id,
        }
        directory = run_dir / Files.CHECKPOINTS / name
        try:
            ckpt.save_checkpoint(
                directory, model, tokenizer, optimizer, trainer_state, metadata, rng
            )
        except OSError as e:  # disk full, permission denied: the earlier checkpoints are untouched
            raise TrainingFailed(
                f"could not write checkpoint {name}: {e.strerror or e}; earlier checkpoints are intact"
            ) from None
        if rel not in base_state["checkpoints"]:
            base_state["checkpoints"].append(rel)
        return rel

    def finish(status: str, *, error: str | None = None, stopped_early: bool = False) -> int:
        checksums = None
        if dist.enabled:  # every rank must end with the same weights (the seed's F-DP-001)
            checksums = dist.gather_objects(
                sum(float(p.detach().double().sum()) for p in trainable)
            )
            if len(set(checksums)) > 1 and status != "failed":
                status, error = (
                    "failed",
                    f"ranks ended with different weights (checksums {checksums})",
                )
        result = {
            "status": status,
            "epochs": progress.history,
            "best": progress.best,
            "best_epoch": progress.best["epoch"] if progress.best else None,
            "best_val_loss": progress.best["val_loss"] if progress.best else None,
            "best_val_accuracy": progress.best["val_accuracy"] if progress.best else None,
            "stopped_early": stopped_early,
            "global_step": progress.global_step,
            "total_time_s": elapsed(),
            "error": error,
            "checkpoints": base_state["checkpoints"],
            "world_size": dist.world_size,
            "rank_weight_checksums": checksums,
        }
        writer.write_result(result)
        writer.update_state(
            status=status,
            error=error,
            validation=None,
            best=progress.best,
            elapsed_s=elapsed(),
            eta_s=0.0 if status == "completed" else None,
            **base_state,
        )
        writer.close()
        stop.uninstall()
        report.summary(result, str(run_dir))
        dist.barrier()
        return 0 if status in ("completed", "stopped") else 1

    def stop_now() -> int:
        writer.update_state(status="stopping", validation=None)
        report.say(f"stopping: {stop.reason}; writing checkpoints/last")
        save("last")
        if dist.is_main:
            stop.consume()
        return finish("stopped", error=None)

    # ------------------------------------------------------------------------------------ loop
    if dist.enabled:  # DDP averages gradients; every rank starts from rank 0's weights
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        if not restoring:
            torch.manual_seed(cfg_t.seed + 1000 * dist.rank)  # each rank its own dropout stream
    else:
        forward = model
    sample_weight = corpus.class_weights or [1.0] * corpus.num_labels
    log_interval = log_every(cfg_t.log_interval, spe)
    model.train()
    steps_this_process = 0
    train_time_this_process = 0.0
    val_time_per_epoch: float | None = None
    while progress.epoch <= cfg_t.epochs:
        epoch = progress.epoch
        this_epoch = epoch_batches(train_lengths, cfg_t.batch_size, cfg_t.seed, epoch, cfg_t.group_by_length)
        if progress.step == 0:
            progress.loss_sum, progress.correct, progress.seen, progress.train_time = 0.0, 0, 0, 0.0
        while progress.step < spe and not progress.needs_validation:
            tb = time.perf_counter()
            idx = this_epoch[progress.step]
            # The loss is this rank's share of the global batch's weighted mean, so that DDP's
            # average of the ranks' gradients is the one-process gradient of the whole batch.
            batch_weight = sum(sample_weight[corpus.train_labels[i]] for i in idx)
            mine = shard(idx, dist.rank, dist.world_size)
            batch = collate([train_features[i] for i in mine or idx[:1]])
            labels = batch.pop("labels").to(device)
            inputs = {k: v.to(device) for k, v in batch.items()}
            with loaded.autocast():
                logits = forward(**inputs).logits.float()
            w = (
                class_weights[labels]
                if class_weights is not None
                else torch.ones_like(labels, dtype=torch.float)
            )
            if not mine:  # fewer samples than ranks: take part with a zero-weight sample
                w = torch.zeros_like(w)
            weighted = (F.cross_entropy(logits, labels, reduction="none") * w).sum()
            loss = weighted * (dist.world_size / batch_weight)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                trainable, cfg_t.grad_clip if cfg_t.grad_clip > 0 else math.inf
            )
            correct = ((logits.detach().argmax(-1) == labels) & (w > 0)).sum()
            weighted_v, correct_v, stop_v = dist.all_sum(
                torch.stack(
                    [weighted.detach(), correct.float(), torch.tensor(float(stop.requested))]
                )
            ).tolist()
            loss_v, grad_norm_v = weighted_v / batch_weight, float(grad_norm)
            if not (math.isfinite(loss_v) and math.isfinite(grad_norm_v)):
                what = "loss" if not math.isfinite(loss_v) else "gradient norm"
                error = f"non-finite {what} ({loss_v if what == 'loss' else grad_norm_v}) at epoch {epoch} step {progress.step + 1}; weights left at the last good step"
                report.say(f"error: {error}")
                return finish("failed", error=error)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            progress.step += 1
            progress.global_step += 1
            n = len(idx)  # the global batch
            dt = time.perf_counter() - tb
            progress.loss_sum += loss_v * n
            progress.correct += int(correct_v)
            progress.seen += n
            progress.train_time += dt
            steps_this_process += 1
            train_time_this_process += dt
            remaining_steps = total_steps - progress.global_step
            eta = train_time_this_process / steps_this_process * remaining_steps
            eta += (val_time_per_epoch or 0.0) * (cfg_t.epochs - epoch + 1)
            tokens = (
                dist.world_size * int(inputs["attention_mask"].sum())
                if "attention_mask" in inputs
                else n
            )
            step_info = {
                "epoch": epoch,
                "step": progress.step,
                "global_step": progress.global_step,
                "loss": loss_v,
                "lr": lr,
                "grad_norm": grad_norm_v,
                "accuracy": correct_v / n,
                "samples_per_sec": n / dt,
                "t": time.time(),
            }
            writer.append_step(step_info)
            writer.update_state(
                status="running",
                epoch=epoch,
                step=progress.step,
                global_step=progress.global_step,
                loss=loss_v,
                train_loss=progress.loss_sum / progress.seen,
                train_accuracy=progress.correct / progress.seen,
                lr=lr,
                grad_norm=grad_norm_v,
                samples_per_sec=progress.seen / progress.train_time,
                tokens_per_sec=tokens / dt,
                elapsed_s=elapsed(),
                eta_s=eta,
                resources=resources.sample(),
            )
            if progress.step % log_interval == 0 or progress.step == spe:
                report.step(writer.state)
            if stop_v:  # any rank asked (signal or control.json): all stop at this step
                stop.request("stop requested on another rank")
                return stop_now()

        # -------------------------------------------------------------------------------- validation
        progress.needs_validation = True
        tv = time.perf_counter()
        val = validate(
            forward,
            loaded,
            val_features,
            collate,
            class_weights,
            cfg_t.batch_size * 2,
            writer,
            stop,
            dist,
        )
        if val is None:
            return stop_now()
        val_time_per_epoch = time.perf_counter() - tv
        model.train()

        # -------------------------------------------------------------------------------- epoch end
        val_loss, val_acc = val
        is_best = progress.best is None or val_loss < progress.best["val_loss"]
        if is_best:
            progress.best = {"epoch": epoch, "val_loss": val_loss, "val_accuracy": val_acc}
            progress.epochs_without_improvement = 0
        else:
            progress.epochs_without_improvement += 1
        record = {
            "epoch": epoch,
            "train_loss": progress.loss_sum / max(progress.seen, 1),
            "train_accuracy": progress.correct / max(progress.seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": scheduler.get_last_lr()[0],
            "epoch_time_s": progress.train_time + val_time_per_epoch,
            "train_samples_per_sec": progress.seen / progress.train_time
            if progress.train_time
            else None,
            "is_best": is_best,
            "checkpoint": None,
        }
        progress.history = [e for e in progress.history if e["epoch"] < epoch] + [record]
        if is_best:  # the earlier best is best no more: its checkpoint is its epoch-N, if any
            best_rel = f"{Files.CHECKPOINTS}/best"
            for e in progress.history[:-1]:
                e["is_best"] = False
                if e.get("checkpoint") == best_rel:
                    e["checkpoint"] = None
        progress.epoch, progress.step, progress.needs_validation = epoch + 1, 0, False
        metrics = {
            "epoch": epoch,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "train_loss": record["train_loss"],
        }
        if is_best:
            record["checkpoint"] = save("best", metrics=metrics)
        every = cfg_t.save_every  # epoch-N exactly when N is a multiple (best and last do the rest)
        if every and epoch % every == 0:
            record["checkpoint"] = save(f"epoch-{epoch}", metrics=metrics)
        writer.write_epochs(progress.history, progress.best["epoch"] if progress.best else None)
        writer.update_state(
            status="running",
            validation=None,
            best=progress.best,
            epoch=min(epoch + 1, cfg_t.epochs),
            step=0,
            **base_state,
        )
        report.epoch(record, cfg_t.epochs)

        patience = cfg_t.early_stopping_patience
        if patience and progress.epochs_without_improvement >= patience:
            report.say(f"early stopping: no better validation loss for {patience} epochs")
            save("last")
            return finish("completed", stopped_early=True)
        if dist.all_sum(torch.tensor([float(stop.requested)])).item():
            return stop_now()

    # ------------------------------------------------------------------------------------ the end
    save("last")
    return finish("completed")


def shown_checkpoint(checkpoint: Path, run_dir: Path) -> str:
    """A checkpoint as the user names it: checkpoints/last inside the run, else its path."""
    try:
        return Path(checkpoint).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(checkpoint)


def validate(
    model, loaded, features, collate, class_weights, batch_size, writer, stop, dist
) -> tuple[float, float] | None:
    """Weighted loss and accuracy over the validation set, batched, in inference mode. None if stopped.

    Under torchrun each rank takes its shard of every validation batch and the sums are all-reduced,
    so the metrics equal one process's.
    """
    model.eval()
    total = len(features)
    loss_sum = weight_sum = 0.0
    correct = done = 0
    t = time.perf_counter()
    writer.update_state(
        status="validating",
        validation={
            "done": 0,
            "total": total,
            "loss": None,
            "accuracy": None,
            "samples_per_sec": None,
        },
    )
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            mine = shard(
                list(range(start, min(start + batch_size, total))), dist.rank, dist.world_size
            )
            sums = torch.zeros(5, dtype=torch.float64)
            if mine:
                batch = collate([features[i] for i in mine])
                labels = batch.pop("labels").to(loaded.device)
                inputs = {k: v.to(loaded.device) for k, v in batch.items()}
                with loaded.autocast():
                    logits = model(**inputs).logits.float()
                losses = F.cross_entropy(logits, labels, reduction="none")
                w = class_weights[labels] if class_weights is not None else torch.ones_like(losses)
                correct_b = (logits.argmax(-1) == labels).sum().float()
                sums = (
                    torch.stack(
                        [
                            (losses * w).sum(),
                            w.sum(),
                            correct_b,
                            torch.tensor(float(len(mine))),
                            torch.tensor(0.0),
                        ]
                    )
                    .double()
                    .cpu()
                )
            sums[4] = float(stop.requested)
            b_loss, b_weight, b_correct, b_n, b_stop = dist.all_sum(sums).tolist()
            loss_sum += b_loss
            weight_sum += b_weight
            correct += int(b_correct)
            done += int(b_n)
            writer.update_state(
                status="validating",
                validation={
                    "done": done,
                    "total": total,
                    "loss": loss_sum / weight_sum,
                    "accuracy": correct / done,
                    "samples_per_sec": done / (time.perf_counter() - t),
                },
            )
            if b_stop and done < total:
                stop.request("stop requested on another rank")
                return None
    return loss_sum / weight_sum, correct / total
