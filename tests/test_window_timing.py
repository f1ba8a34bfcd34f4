"""Throughput is timed by logging window, as the device sees it: a window's clock runs from its first
step's start to the end of the flush's host read, which waits for the device (on CUDA the host runs
ahead, and the work it queued finishes inside that read). Each step gets its share of the window's
time by samples, so steps.jsonl's samples_per_sec is the window's rate.

The clock is the trainer's step clock's own perf_counter with an offset the test moves: a step whose forward
"takes" 1000 s more and a flush read that "waits" 2000 s for the device, both without sleeping.
"""

from __future__ import annotations

import types
from pathlib import Path

import orjson
import pytest
import torch

import trainer.step_clock as step_clock_module
from tests.conftest import write_config
from trainer.config import load_config
from trainer.train import FineTuneRecipe, train

SLOW_STEP, SLOW_READ_AFTER = 6, 12  # windows of 4 steps: 1–4, 5–8, 9–12 (the epoch's last)
FORWARD_EXTRA, READ_EXTRA = 1000.0, 2000.0


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


@pytest.fixture
def shifted_clock(monkeypatch):
    """The step clock's perf_counter plus an offset; returns the offset's box."""
    offset = [0.0]
    real = step_clock_module.time
    clock = types.SimpleNamespace(
        perf_counter=lambda: real.perf_counter() + offset[0], time=real.time
    )
    monkeypatch.setattr(step_clock_module, "time", clock)
    return offset


def test_a_windows_time_covers_its_steps_and_the_devices_drain(
    tmp_path, tiny_bert_dir, data, monkeypatch, shifted_clock
):
    armed = [False]
    original_backward, original_tolist = FineTuneRecipe._backward, torch.Tensor.tolist

    def backward(self, *args):
        step = self.progress.global_step + len(self.pending) + 1  # the step being trained
        if step == SLOW_STEP:
            shifted_clock[0] += FORWARD_EXTRA
        armed[0] = step == SLOW_READ_AFTER
        return original_backward(self, *args)

    def tolist(self):
        if armed[0]:  # the flush's read after step 12: the device is still busy with the window
            armed[0] = False
            shifted_clock[0] += READ_EXTRA
        return original_tolist(self)

    monkeypatch.setattr(FineTuneRecipe, "_backward", backward)
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        data,
        tmp_path / "run",
        train={
            "epochs": 1,
            "batch_size": 8,
            "log_interval": 4,
            "save_every": 0,
            "group_by_length": False,
        },  # the short batch is the last
    )  # fmt: skip  (90 samples to train: 11 batches of 8 and one of 2)
    assert train(load_config(cfg)) == 0
    run = tmp_path / "run"
    steps = [orjson.loads(x) for x in (run / "steps.jsonl").read_bytes().splitlines()]
    assert len(steps) == 12
    sizes = [8] * 11 + [2]
    windows = [range(0, 4), range(4, 8), range(8, 12)]
    seconds = []
    for w in windows:
        rates = {steps[i]["samples_per_sec"] for i in w}
        assert len(rates) == 1  # every step of a window has the window's rate
        seconds.append(sum(sizes[i] for i in w) / rates.pop())
    real_limit = 500.0  # what the tiny steps really take, with room for a loaded machine
    assert seconds[0] < real_limit
    assert FORWARD_EXTRA <= seconds[1] < FORWARD_EXTRA + real_limit
    assert READ_EXTRA <= seconds[2] < READ_EXTRA + real_limit  # the drain is the window's too

    # the epoch's time, its rate, the FLOP/s and the ETA's pace are sums of the windows'
    epoch = load(run / "epochs.json")["epochs"][0]
    train_seconds = sum(seconds)
    assert epoch["train_samples_per_sec"] == pytest.approx(90 / train_seconds, rel=1e-9)
    assert epoch["epoch_time_s"] >= train_seconds
    flops = sum(s["flops"] for s in steps)
    assert load(run / "result.json")["flops_per_sec"] == pytest.approx(
        flops / train_seconds, rel=1e-9
    )
    state = load(run / "state.json")
    assert state["samples_per_sec"] == pytest.approx(90 / train_seconds, rel=1e-9)
