"""Elastic resume: a checkpoint saved by N processes resumes with M. The global sample order does not
depend on the world size; optimizer and schedule continue; each rank's RNGs are derived afresh from
the saved states and the new rank. In fp32 with every dropout off, 2→1 and 1→2 end within float32
noise of an uninterrupted run."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, patience, write_config, write_corpus
from trainer import checkpoint as ckpt
from trainer.cli import main
from trainer.data import epoch_batches
from trainer.distributed import shard
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.writer import MonitorWriter

# Weights may differ by summation order only (DDP averages two shards' gradients where one process
# sums the batch): a few float32 ulps a step. Measured after 18 steps: 1.5e-7 of a tensor's largest
# value. Allowed: 1e-5 of it, 60x that and still 100x below the smallest real change (a wrong batch
# or a restarted schedule moves the LoRA B matrices by 1e-3 and more).
WEIGHT_RTOL = 1e-5
METRIC_RTOL = 1e-5


@pytest.mark.parametrize("group_by_length", [True, False])
def test_the_global_sample_order_is_the_same_for_every_world_size(group_by_length):
    """Every rank walks the same global batches (epoch_batches takes no world size); for 1, 2 and 3
    processes the ranks' shards of each batch are disjoint and together are the batch."""
    rng = random.Random(0)
    lengths = [rng.randint(3, 40) for _ in range(94)]
    for epoch in (1, 2, 3):
        batches = epoch_batches(lengths, 16, 42, epoch, group_by_length)
        assert sorted(i for b in batches for i in b) == list(range(94))
        for world_size in (1, 2, 3):
            for batch in batches:
                shards = [shard(batch, rank, world_size) for rank in range(world_size)]
                assert sorted(i for s in shards for i in s) == sorted(batch)
                assert sum(len(s) for s in shards) == len(batch)


def saved_rng(ranks: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """What a checkpoint of `ranks` processes holds: each rank's captured RNG state."""
    infos, tensors = [], {}
    for rank in range(ranks):
        torch.manual_seed(100 + rank)
        info, t = ckpt.capture_rng(rank)
        infos.append(info)
        tensors.update(t)
    return infos, tensors


def draws() -> tuple[list[float], float, float]:
    return torch.rand(4).tolist(), random.random(), float(np.random.rand())


def test_an_elastic_ranks_generators_are_derived_from_the_saved_states_and_its_rank():
    infos, tensors = saved_rng(2)
    seed = ckpt.derive_rng(infos, tensors, rank=0, world_size=1)
    first = draws()
    assert ckpt.derive_rng(infos, tensors, rank=0, world_size=1) == seed
    assert draws() == first  # the same checkpoint and world size: the same streams
    ckpt.derive_rng(infos, tensors, rank=1, world_size=2)
    other_rank = draws()
    ckpt.derive_rng(infos, tensors, rank=0, world_size=2)
    other_world = draws()
    assert len({str(first), str(other_rank), str(other_world)}) == 3
    infos3, tensors3 = saved_rng(3)
    ckpt.derive_rng(infos3, tensors3, rank=0, world_size=1)
    assert draws() != first  # other saved states: another stream


# ---------------------------------------------------------------------------------------- end to end


def config_for(tmp: Path, model: Path, data: Path, name: str) -> Path:
    # 126 samples, val 0.25 → 94 train: 6 steps an epoch of 16 (the last 14: shards of 7 and 7)
    return write_config(
        tmp / f"{name}.toml", model, data, tmp / name,
        lora={"dropout": 0.0},
        train={"epochs": 3, "batch_size": 16, "save_every": 0, "log_interval": 1, "fast_dropout": "off"},
    )  # fmt: skip


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def step_losses(run: Path) -> dict[int, float]:
    """global step → loss, a later line winning (the contract's reader rule)."""
    lines = (run / "steps.jsonl").read_bytes().splitlines()
    return {r["global_step"]: r["loss"] for r in map(orjson.loads, lines)}


def stop_at(line_start: str, run: Path, *args: str) -> None:
    """Run the trainer; ask it to stop (control.json) once it prints a line starting so."""
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *args], cwd=REPO, stderr=subprocess.PIPE, text=True)  # fmt: skip
    asked = False
    for line in proc.stderr:
        if line.startswith(line_start):
            atomic_write_json(run / "control.json", {"command": "stop", "id": "t", "requested_at": time.time()})  # fmt: skip
            asked = True
            break
    _, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 0 and asked, err[-3000:]


def assert_within_float_noise_of(run: Path, straight: Path) -> None:
    assert load(run / "state.json")["status"] == "completed"
    got = load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")
    want = load_file(straight / "checkpoints" / "last" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    for k in want:
        scale = want[k].abs().max().item()
        assert (got[k] - want[k]).abs().max().item() <= WEIGHT_RTOL * scale, k
    assert max(w.abs().max().item() for k, w in want.items() if "lora_B" in k) > 1e-3  # it trained
    got_steps, want_steps = step_losses(run), step_losses(straight)
    assert list(got_steps) == list(want_steps)  # every step, once
    assert list(got_steps.values()) == pytest.approx(list(want_steps.values()), rel=METRIC_RTOL)
    e1, e2 = load(run / "epochs.json")["epochs"], load(straight / "epochs.json")["epochs"]
    for key in ("train_loss", "val_loss", "lr"):
        assert [e[key] for e in e1] == pytest.approx([e[key] for e in e2], rel=METRIC_RTOL), key
    assert [e["val_accuracy"] for e in e1] == [e["val_accuracy"] for e in e2]


@pytest.mark.slow
def test_resuming_with_another_number_of_processes_ends_within_float_noise(tmp_path, no_dropout_bert, monkeypatch):  # fmt: skip
    data = write_corpus(tmp_path / "train.jsonl", n=126)
    assert main([str(config_for(tmp_path, no_dropout_bert, data, "straight"))]) == 0
    straight = tmp_path / "straight"

    # 2 → 1: two processes stopped in epoch 1, resumed by one with --resume
    two = tmp_path / "two"
    stop_at("epoch 1/3 step 3/", two, str(config_for(tmp_path, no_dropout_bert, data, "two")), "--nproc", "2")  # fmt: skip
    saved = load(two / "checkpoints" / "last" / "trainer_state.json")
    assert len(saved["rng"]) == 2 and 3 <= saved["global_step"] < 18
    r = subprocess.run([sys.executable, "-m", "trainer", "--resume", str(two)], cwd=REPO, capture_output=True, text=True, timeout=patience(300))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "with 1 process (saved by 2: the same sample order, each rank's dropout stream derived afresh)" in r.stderr  # fmt: skip
    assert load(two / "run.json")["resumed_from"][-1]["elastic"] == {"from": 2, "to": 1}
    assert load(two / "result.json")["world_size"] == 1
    assert_within_float_noise_of(two, straight)

    # 1 → 2: one process stopped in epoch 2, resumed by two through --auto-resume (rank 0 decides)
    one_cfg = config_for(tmp_path, no_dropout_bert, data, "one")
    original = MonitorWriter.append_step

    def stop_at_step_8(self, record):
        original(self, record)
        if record["global_step"] == 8:
            atomic_write_json(self.dir / "control.json", {"command": "stop", "id": "t", "requested_at": time.time()})  # fmt: skip

    monkeypatch.setattr(MonitorWriter, "append_step", stop_at_step_8)
    assert main([str(one_cfg)]) == 0
    monkeypatch.undo()
    one = tmp_path / "one"
    assert len(load(one / "checkpoints" / "last" / "trainer_state.json")["rng"]) == 1
    r = subprocess.run([sys.executable, "-m", "trainer", str(one_cfg), "--auto-resume", "--nproc", "2"], cwd=REPO, capture_output=True, text=True, timeout=patience(300))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    info = load(one / "run.json")
    assert info["world_size"] == 2 and info["resumed_from"][-1]["elastic"] == {"from": 1, "to": 2}
    result = load(one / "result.json")
    assert result["world_size"] == 2 and len(set(result["rank_weight_checksums"])) == 1
    assert len(load(one / "checkpoints" / "last" / "trainer_state.json")["rng"]) == 2
    assert_within_float_noise_of(one, straight)
