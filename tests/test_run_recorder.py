"""The run's documents and its one step clock, without training: a step's seconds are added once
and every time figure reads them (the epoch's time, the ETA's pace, the FLOP/s), and the epoch's
time crosses a checkpoint's JSON to a resume unchanged."""

from __future__ import annotations

import types
from pathlib import Path

import orjson
import pytest
import torch

import trainer.step_clock as step_clock_module
from trainer.checkpoint import TrainerState
from trainer.distributed import Dist
from trainer.monitor.writer import NullWriter
from trainer.progress import Progress
from trainer.run_recorder import RunRecorder, StepResult
from trainer.step_clock import StepClock


def a_step(samples: int, tokens: int) -> StepResult:
    return StepResult(samples, float(samples), torch.zeros(3), False, tokens, 0, 1e-3)


def test_a_window_is_shared_by_samples_and_rates_its_tokens(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(
        step_clock_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0])
    )
    clock = StepClock()
    clock.start_window()
    now[0] += 10.0
    steps = [a_step(8, 400), a_step(2, 100)]
    clock.end_window(steps)
    assert [s.seconds for s in steps] == [8.0, 2.0]
    assert clock.tokens_per_sec == 50.0


def test_one_clock_times_the_epoch_the_eta_and_the_flops():
    clock = StepClock()
    clock.set_peak(1000.0)
    clock.epoch_seconds = 5.0  # a resumed epoch's time so far
    for seconds, flops in [(1.0, 100), (3.0, 500)]:
        clock.add_step(seconds, flops)
    assert clock.epoch_seconds == 9.0  # the epoch's, earlier processes' included
    assert clock.flops.rate(overall=True) == (150.0, 0.15)  # this process's steps only
    clock.start_validation()
    clock.end_validation()
    validation = clock.validation_seconds
    assert validation is not None and validation >= 0
    assert clock.eta(10, 2) == pytest.approx(2.0 * 10 + validation * 2)  # its steps' mean pace
    assert clock.epoch_time() == pytest.approx(9.0 + validation)
    clock.start_epoch()
    assert clock.epoch_seconds == 0.0
    assert clock.flops.rate(overall=True) == (150.0, 0.15)  # the process's pace goes on


def recorder(tmp_path: Path) -> RunRecorder:
    config = types.SimpleNamespace(
        to_dict=lambda: {"train": {"epochs": 2}},
        model=types.SimpleNamespace(path="base"),
        train=types.SimpleNamespace(epochs=2),
    )
    return RunRecorder(NullWriter(tmp_path), config, Dist(), argv=[], resume=None)


def test_the_epochs_time_crosses_a_checkpoint_to_the_resume(tmp_path):
    first = recorder(tmp_path)
    first.clock.add_step(1.25, 10)
    first.clock.add_step(0.25, 10)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    p = Progress(epoch=1, step=2, global_step=2, loss_sum=1.0, correct=3, seen=4)
    state = first.trainer_state(p, scheduler, optimizer, [["w"]], "sha256:0")
    assert state.running == {"loss_sum": 1.0, "correct": 3, "seen": 4, "train_time": 1.5}
    assert list(state.running) == ["loss_sum", "correct", "seen", "train_time"]  # the old order
    saved = TrainerState(**orjson.loads(orjson.dumps(state.__dict__)))
    assert Progress.from_saved(saved) == Progress(
        **{**p.__dict__, "elapsed_before": saved.elapsed_s}
    )
    second = recorder(tmp_path)
    second.resumed("resumed", None, epoch_seconds=saved.running["train_time"])
    assert second.clock.epoch_seconds == 1.5
    assert second.clock.steps == 0  # the ETA's pace is this process's own
