"""A scripted training run written through the real MonitorWriter, batch by batch, with no model:
for tests, screenshots and trying the monitor on a machine without a GPU.

Every number is a function of the step, so two plays of the same script write the same files (only
the writer's own heartbeat, pid and host differ)."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import psutil

from trainer.monitor.schema import Files
from trainer.monitor.writer import MonitorWriter

T0 = 1_700_000_000.0  # the scripted wall clock of the first step


class FakeRun:
    def __init__(
        self,
        run_dir: str | Path,
        *,
        epochs: int = 4,
        steps_per_epoch: int = 20,
        batch_size: int = 16,
        n_val: int = 64,
        val_losses: Sequence[float] = (0.62, 0.48, 0.51, 0.44, 0.47, 0.43),
        step_s: float = 0.5,
        model_path: str = "/models/Qwen2-0.5B-instruct",
        architecture: str = "Qwen2ForSequenceClassification",
        pid: int | None = None,
        sweep: dict[str, Any] | None = None,
        step_flops: int | None = None,
        peak_flops: float | None = None,
        classes: Sequence[str] | None = None,
    ):
        self.writer = MonitorWriter(run_dir)
        self.dir = self.writer.dir
        self.epochs, self.spe, self.batch_size, self.n_val = (
            epochs,
            steps_per_epoch,
            batch_size,
            n_val,
        )
        self.val_losses = list(val_losses)
        self.step_s = step_s
        self.model_path, self.architecture = model_path, architecture
        self.pid = pid if pid is not None else os.getpid()
        self.sweep = sweep  # run.json `sweep`: {name, index, values}, as a sweep's run has it
        # Model FLOPs a step (steps.jsonl `flops`, and the rate and MFU in state.json and
        # result.json) against a device peak (None: no peak, no MFU); None: an older trainer
        # that wrote none of these fields.
        self.step_flops, self.peak_flops = step_flops, peak_flops
        # Labels whose per-class validation (macro_f1, per_class, confusion) each epoch writes, as
        # issue 28's trainer does; None: an older trainer that wrote none of these fields.
        self.classes = list(classes) if classes is not None else None
        self.clock: Callable[[], float] | None = None  # a step's `t`; None: scripted, T0-based
        self.epoch, self.step, self.global_step = 1, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.loss_sum = self.correct = 0.0

    # ---------------------------------------------------------------------------- identity

    def identity(self) -> dict[str, Any]:
        try:
            created = psutil.Process(self.pid).create_time()
        except psutil.Error:
            created = 0.0
        return {"pid": self.pid, "host": socket.gethostname(), "pid_create_time": created}

    # ---------------------------------------------------------------------------- the script

    def config(self) -> dict[str, Any]:
        """run.json's config; a sweep's run holds its grid values (`lora.r` → config["lora"]["r"])."""
        config: dict[str, Any] = {
            "model": {
                "path": self.model_path,
                "quantize": "none",
                "precision": "auto",
                "max_length": 128,
            },
            "data": {"train": "/data/train.jsonl"},
            "train": {"epochs": self.epochs, "batch_size": self.batch_size},
            "output": {"dir": str(self.dir)},
        }
        for key, value in ((self.sweep or {}).get("values") or {}).items():
            *sections, name = key.split(".")
            table = config
            for section in sections:
                table = table.setdefault(section, {})
            table[name] = value
        return config

    def start(self) -> FakeRun:
        self.writer.update_state(status="initializing", total_epochs=self.epochs, **self.identity())
        self.writer.write_run(
            {
                "run_id": f"{self.dir.name}-20231114T221320Z",
                "name": self.dir.name,
                "config": self.config(),
                "model": {
                    "path": self.model_path,
                    "architecture": self.architecture,
                    "params_total": 494_032_768,
                    "params_trainable": 1_089_536,
                    "quantize": "none",
                    "precision": "bf16",
                },
                "data": {
                    "train": "/data/train.jsonl",
                    "validation": None,
                    "n_train": self.spe * self.batch_size,
                    "n_val": self.n_val,
                    "data_hash": "sha256:" + "0" * 64,
                    "labels": self.classes or ["safe", "unsafe"],
                },
                "epochs": self.epochs,
                "steps_per_epoch": self.spe,
                "batch_size": self.batch_size,
                "world_size": 1,
                **self.identity(),
                "argv": ["entrenar-train", "config.toml"],
                "tool_version": "0.1.0",
                "started_at": "2023-11-14T22:13:20+00:00",
                "resumed_from": None,
                "sweep": self.sweep,
                **self.flops_fields(),
            }
        )
        self.writer.update_state(
            status="running",
            total_epochs=self.epochs,
            steps_per_epoch=self.spe,
            total_steps=self.epochs * self.spe,
            epoch=1,
            **self.identity(),
        )
        return self

    def flops_fields(self) -> dict[str, Any]:
        """run.json's `peak_flops` (the step's coefficients are left out: nothing here reads
        them); none for an older trainer."""
        if self.step_flops is None:
            return {}
        return {
            "peak_flops": {
                "flops_per_sec": self.peak_flops,
                "precision": "bf16",
                "source": "table: scripted" if self.peak_flops else None,
                "device": "Scripted GPU",
            }
        }

    def rate_at(self, g: int | None) -> dict[str, Any]:
        """state.json's `flops_per_sec` (the last 10 steps', wobbling around the step's FLOPs over
        its time) and `mfu`; result.json's over the run when g is None."""
        if self.step_flops is None:
            return {}
        wobble = 0.95 if g is None else 0.9 + 0.1 * math.cos(g)
        rate = self.step_flops / self.step_s * wobble
        return {"flops_per_sec": rate, "mfu": rate / self.peak_flops if self.peak_flops else None}

    def loss_at(self, g: int) -> float:
        return 0.25 + 0.45 * math.exp(-g / (1.5 * self.spe)) + 0.04 * math.sin(g * 1.7)

    def lr_at(self, g: int) -> float:
        total = self.epochs * self.spe
        warm = max(1, total // 10)
        if g <= warm:
            return 1e-4 * g / warm
        return 1e-6 + (1e-4 - 1e-6) * 0.5 * (
            1 + math.cos(math.pi * (g - warm) / max(1, total - warm))
        )

    def train_step(self, loss: float | None = None) -> None:
        """One batch: a line in steps.jsonl, then state.json. `loss=float('nan')` writes null."""
        self.step += 1
        self.global_step += 1
        g = self.global_step
        loss = self.loss_at(g) if loss is None else loss
        acc = min(0.99, 0.55 + 0.4 * (1 - math.exp(-g / (2 * self.spe))) + 0.03 * math.cos(g))
        if self.step == 1:
            self.loss_sum = self.correct = 0.0
        self.loss_sum += loss if math.isfinite(loss) else 0.0
        self.correct += acc
        elapsed = g * self.step_s
        record = {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": g,
            "loss": loss if math.isfinite(loss) else None,
            "lr": self.lr_at(g),
            "grad_norm": 1.0 + 0.1 * math.sin(g),
            "accuracy": acc,
            "samples_per_sec": self.batch_size / self.step_s,
            "t": self.clock() if self.clock is not None else T0 + elapsed,
            **({} if self.step_flops is None else {"flops": self.step_flops}),
        }
        self.writer.append_step(record)
        self.writer.update_state(
            status="running",
            epoch=self.epoch,
            step=self.step,
            global_step=g,
            loss=record["loss"],
            train_loss=self.loss_sum / self.step,
            train_accuracy=self.correct / self.step,
            lr=record["lr"],
            grad_norm=record["grad_norm"],
            samples_per_sec=self.batch_size / self.step_s,
            tokens_per_sec=self.batch_size * 100 / self.step_s,
            elapsed_s=elapsed,
            eta_s=(self.epochs * self.spe - g) * self.step_s,
            **self.rate_at(g),
        )

    def validate(self, done: int) -> None:
        """The validation pass at `done` of n_val samples."""
        loss = self.val_losses[(self.epoch - 1) % len(self.val_losses)]
        self.writer.update_state(
            status="validating",
            validation={
                "done": done,
                "total": self.n_val,
                "loss": loss + 0.02,
                "accuracy": 0.8 - loss / 4,
                "samples_per_sec": 256.0,
            },
        )

    def end_epoch(self) -> None:
        val_loss = self.val_losses[(self.epoch - 1) % len(self.val_losses)]
        val_acc = round(0.95 - val_loss / 3, 4)
        is_best = self.best is None or val_loss < self.best["val_loss"]
        if is_best:
            self.best = {"epoch": self.epoch, "val_loss": val_loss, "val_accuracy": val_acc}
            for e in self.history:
                e["is_best"] = False
        self.history.append(
            {
                "epoch": self.epoch,
                "train_loss": self.loss_sum / self.spe,
                "train_accuracy": self.correct / self.spe,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": self.lr_at(self.global_step),
                "epoch_time_s": self.spe * self.step_s + 2.0,
                "train_samples_per_sec": self.batch_size / self.step_s,
                "is_best": is_best,
                "checkpoint": "checkpoints/best" if is_best else None,
                **self.per_class_fields(),
            }
        )
        self.writer.write_epochs(self.history, self.best["epoch"] if self.best else None)
        self.epoch, self.step = self.epoch + 1, 0
        self.writer.update_state(
            status="running",
            validation=None,
            best=self.best,
            epoch=min(self.epoch, self.epochs),
            step=0,
        )

    def confusion_at(self, epoch: int) -> list[list[int]]:
        """The scripted K×K matrix of an epoch (rows true, columns predicted): each class's
        samples mostly right, more so each epoch, the rest on the next two classes."""
        k = len(self.classes)
        matrix = [[0] * k for _ in range(k)]
        for t in range(k):
            support = 10 + 3 * (t % 4)
            right = min(support, round(support * (0.45 + 0.12 * epoch + 0.06 * (t % 3))))
            matrix[t][t] = right
            matrix[t][(t + 1) % k] += (support - right + 1) // 2
            matrix[t][(t + 2) % k] += (support - right) // 2
        return matrix

    def per_class_fields(self) -> dict[str, Any]:
        if self.classes is None:
            return {}
        return per_class_record(self.classes, self.confusion_at(self.epoch))

    def play_epoch(self, *, validate: bool = True) -> None:
        for _ in range(self.spe):
            self.train_step()
        if validate:
            for done in range(16, self.n_val + 1, 16):
                self.validate(done)
            self.end_epoch()

    def resume(self) -> None:
        """A resume at this point (the checkpoint at the current global step): run.json's
        resumed_from grows by one entry, as the trainer writes it."""
        info = orjson.loads((self.dir / Files.RUN).read_bytes())
        at = self.global_step
        info["resumed_from"] = [
            *(info.get("resumed_from") or []),
            {
                "checkpoint": str(self.dir / "checkpoints" / "last"),
                "at": datetime.fromtimestamp(T0 + at * self.step_s, timezone.utc).isoformat(),
                "global_step": at,
                "overrides": [],
                "note": f"resumed from checkpoints/last at step {at}",
                "elastic": None,
            },
        ]
        self.writer.write_run(info)

    def recover(
        self,
        rolled_back_to: int,
        reason: str = "non-finite loss",
        lr_scale: float = 0.5,
    ) -> dict[str, Any]:
        """The trainer healing the run (issue 30's contract): the fault seen at the next step, the
        weights rolled back to `rolled_back_to` (in this epoch), that step's batch skipped, the
        learning rate scaled. run.json `recoveries` grows by the entry (returned), state.json
        `recoveries` counts them; the steps after `rolled_back_to` are then played again."""
        fault = self.global_step + 1
        back = self.step - (self.global_step - rolled_back_to)
        assert 0 <= back <= self.step, "a scripted rollback stays in its epoch"
        info = orjson.loads((self.dir / Files.RUN).read_bytes())
        entry = {
            "step": fault,
            "reason": reason,
            "rolled_back_to": rolled_back_to,
            "batches_skipped": [[self.epoch, self.step + 1]],
            "samples_skipped": list(range(fault * self.batch_size, (fault + 1) * self.batch_size)),
            "lr_scale": lr_scale,
            "at": datetime.fromtimestamp(T0 + fault * self.step_s, timezone.utc).isoformat(),
        }
        info["recoveries"] = [*(info.get("recoveries") or []), entry]
        self.writer.write_run(info)
        self.writer.update_state(recoveries=len(info["recoveries"]))
        if self.step:  # the epoch's running sums as of the step rolled back to (roughly)
            self.loss_sum *= back / self.step
            self.correct *= back / self.step
        self.global_step, self.step = rolled_back_to, back
        return entry

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        self.writer.write_result(
            {
                "status": status,
                "epochs": self.history,
                "best": self.best,
                "best_epoch": self.best and self.best["epoch"],
                "error": error,
                **self.rate_at(None),
            }
        )
        self.writer.update_state(
            status=status,
            error=error,
            validation=None,
            eta_s=0.0 if status == "completed" else None,
        )
        self.writer.close()


def scenario(run_dir: str | Path, name: str, **fake: Any) -> FakeRun:
    """A run directory in one of the states the screenshots and snapshot tests show (`fake`:
    FakeRun's keywords, e.g. step_flops and peak_flops). The `long` ones run 10 epochs with a
    resume after epoch 4 (more epochs than the table has rows)."""
    run = FakeRun(run_dir, **{"epochs": 10 if name.startswith("long") else 4, **fake}).start()
    if name.startswith("long"):
        for epoch in range(1, 8 if name == "long_running" else 11):
            run.play_epoch()
            if epoch == 4:
                run.resume()
        if name == "long_running":
            for _ in range(7):
                run.train_step()
        else:
            run.finish("completed")
        return run
    if name == "running":
        run.play_epoch()
        run.play_epoch()
        for _ in range(7):
            run.train_step()
    elif name == "recovered":  # healed twice: a NaN at step 28 (back to 25), a spike at 33 (30)
        run.play_epoch()
        for _ in range(7):
            run.train_step()
        run.recover(25)
        for _ in range(7):
            run.train_step()
        run.recover(30, "loss spike", lr_scale=0.25)
        for _ in range(9):
            run.train_step()
    elif name == "validating":
        run.play_epoch()
        run.play_epoch()
        run.play_epoch(validate=False)
        run.validate(32)
    elif name == "completed":
        for _ in range(run.epochs):
            run.play_epoch()
        run.finish("completed")
    elif name == "failed":
        run.play_epoch()
        for _ in range(5):
            run.train_step()
        run.train_step(loss=float("nan"))
        run.finish(
            "failed",
            error="non-finite loss (nan) at epoch 2 step 6; weights left at the last good step",
        )
    elif name == "crashed":
        run.play_epoch()
        for _ in range(12):
            run.train_step()
    else:
        raise ValueError(f"no scenario {name!r}")
    return run


def fake_sweep(
    directory: str | Path,
    axes: dict[str, list[Any]],
    statuses: Sequence[str] | None = None,
) -> list[FakeRun]:
    """A sweep's directory as `entrenar-train sweep` leaves it: sweep.json written by the trainer's
    own SweepRecord, each run a FakeRun tagged with its grid values (run.json `sweep`). Run i's
    validation losses are shifted by a step of its index, so the runs differ and one is best.
    `statuses` (one a run; default all completed): completed, running, failed."""
    from trainer.sweep.plan import Axis, Grid
    from trainer.sweep.record import SweepRecord, identity

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    grid = Grid([Axis(key, list(values)) for key, values in axes.items()])
    planned = grid.runs(directory.name)
    base = {"model": {"path": "/models/all-MiniLM-L6-v2"}, "train": {"epochs": 2}}
    about = {"parallel": 1, "argv": ["entrenar-train", "sweep", "config.toml"]}
    record = SweepRecord.begin(directory / Files.SWEEP, identity(grid, base), planned, about, None)
    record.write()
    runs = []
    for run, status in zip(planned, statuses or ["completed"] * len(planned), strict=True):
        shift = 0.03 * ((run.index * 5) % 7 - 3)
        fake = FakeRun(
            directory / run.name,
            epochs=2,
            val_losses=[v + shift for v in (0.62, 0.48)],
            model_path="/models/all-MiniLM-L6-v2",
            architecture="BertForSequenceClassification",
            sweep={"name": directory.name, "index": run.index, "values": run.values},
        ).start()
        fake.play_epoch()
        if status != "running":
            fake.play_epoch()
            fake.finish(status, error="scripted failure" if status == "failed" else None)
        best = fake.best or {}
        record.update_run(
            run.index,
            status=status,
            exit_code=None if status == "running" else int(status != "completed"),
            best_epoch=best.get("epoch"),
            best_val_loss=best.get("val_loss"),
            best_val_accuracy=best.get("val_accuracy"),
        )
        runs.append(fake)
    record.finish("running" if "running" in (statuses or ()) else "completed")
    return runs


def per_class_record(labels: Sequence[str], matrix: list[list[int]]) -> dict[str, Any]:
    """An epoch record's macro_f1, per_class and confusion from a confusion matrix, as the
    contract defines them (a class never predicted has precision 0)."""
    k = len(labels)
    rows = []
    for i, label in enumerate(labels):
        tp, support = matrix[i][i], sum(matrix[i])
        predicted = sum(matrix[t][i] for t in range(k))
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        rows.append({"label": label, "precision": p, "recall": r, "f1": f1, "support": support})
    macro = sum(row["f1"] for row in rows) / k if k else None
    return {"macro_f1": macro, "per_class": rows, "confusion": matrix}
