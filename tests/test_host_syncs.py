"""The training step reads nothing back from the device: its values are read in one host copy every
log_interval steps (and at the epoch's end), so that a CUDA step never waits for the GPU just to log.

Counted on the CPU by wrapping every Python-level way a tensor's value reaches the host (item,
tolist, float/int/bool of a tensor, numpy), each read filed under the file that made it. Two kinds
are not the trainer's and are checked apart: torch's AdamW reads its `step` counters, which torch
keeps on the CPU even for CUDA parameters (no device wait); and transformers reads an attention mask
back (`mask.all()`) to drop it when nothing is padded, which the trainer avoids by passing no mask
for a batch without padding. (A sync inside a C++ kernel is not visible here;
torch.cuda.set_sync_debug_mode would catch those on a GPU.)
"""

from __future__ import annotations

import itertools
import traceback
from pathlib import Path

import orjson
import pytest
import torch

from tests.conftest import write_config
from trainer.config import load_config
from trainer.train import FineTuneRecipe, train

HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy")


def origin(frame: traceback.FrameSummary) -> str:
    """trainer, torch.optim, transformers.masking_utils, ... : who read a value back."""
    path = Path(frame.filename)
    if "trainer" in path.parts:
        return "trainer"
    if "optim" in path.parts and "torch" in path.parts:
        return f"torch.optim:{frame.name}"
    return f"{path.parent.name}.{path.stem}:{frame.name}"


@pytest.fixture
def host_reads(monkeypatch):
    """A list that every host read of a tensor's value appends (its kind, its origin) to."""
    reads: list[tuple[str, str]] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            reads.append((_name, origin(traceback.extract_stack(limit=2)[0])))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def reads_per_step(monkeypatch, host_reads: list, padded: list[bool]) -> list[list]:
    """Hook the recipe: the host reads from one step's start to the next's (the last step's up to
    the end of train_epoch), per step of the first epoch; `padded` gets whether each step's batch
    has padding."""
    per_step: list[list] = []
    marks: list[int] = []
    original_step, original_epoch = FineTuneRecipe._train_step, FineTuneRecipe.train_epoch

    def train_step(self, batch):
        marks.append(len(host_reads))
        if self.progress.epoch == 1:
            padded.append(len({self.train_lengths[i] for i in batch}) > 1)
        return original_step(self, batch)

    def train_epoch(self):
        marks.clear()
        code = original_epoch(self)
        if self.progress.epoch == 1 and not per_step:
            ends = [*marks[1:], len(host_reads)]
            per_step.extend(host_reads[a:b] for a, b in zip(marks, ends))
        return code

    monkeypatch.setattr(FineTuneRecipe, "_train_step", train_step)
    monkeypatch.setattr(FineTuneRecipe, "train_epoch", train_epoch)
    return per_step


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_step_reads_the_device_once_every_log_interval(
    tmp_path, tiny_bert_dir, small_corpus, monkeypatch, host_reads, dropout
):
    log_interval = 4
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        lora={"dropout": dropout},
        train={"epochs": 1, "batch_size": 3, "log_interval": log_interval, "save_every": 0},
    )  # small length-grouped batches: some have no padding
    padded: list[bool] = []
    per_step = reads_per_step(monkeypatch, host_reads, padded)
    assert train(load_config(cfg)) == 0
    steps = len(per_step)
    assert steps == 40  # 120 training samples, batch 3
    ours = [[kind for kind, where in reads if where == "trainer"] for reads in per_step]
    expected = [
        ["tolist"] if n % log_interval == 0 or n == steps else [] for n in range(1, steps + 1)
    ]
    assert ours == expected
    for reads, has_padding in zip(per_step, padded):
        others = sorted({(kind, where) for kind, where in reads if where != "trainer"})
        mask_check = [("__bool__", "transformers.masking_utils:_ignore_bidirectional_mask_sdpa")]
        step_counters = [("item", "torch.optim:_get_value")]
        assert others == sorted(step_counters + (mask_check if has_padding else []))
    assert True in padded and False in padded  # both kinds of batch were seen
    # ... and every step still has its own steps.jsonl line, in order, with its own values
    rows = [
        orjson.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_bytes().splitlines()
    ]
    assert [r["global_step"] for r in rows] == list(range(1, steps + 1))
    assert len({r["loss"] for r in rows}) == steps
    assert all(r["t"] <= s["t"] for r, s in itertools.pairwise(rows))


def test_state_json_beats_every_step_between_flushes(
    tmp_path, tiny_bert_dir, small_corpus, monkeypatch
):
    """The monitor's heartbeat: state.json is written after every step, with the step counters,
    even while the step's loss waits for the next flush."""
    from trainer.monitor.writer import MonitorWriter

    seen: list[tuple[int, int]] = []  # (global_step in state.json, steps.jsonl rows written)
    original_update, original_append = MonitorWriter.update_state, MonitorWriter.append_step
    rows = [0]

    def append_step(self, record):
        rows[0] += 1
        return original_append(self, record)

    def update_state(self, **changes):
        original_update(self, **changes)
        if changes.get("status") == "running" and "global_step" in changes:
            seen.append((self.state["global_step"], rows[0]))

    monkeypatch.setattr(MonitorWriter, "append_step", append_step)
    monkeypatch.setattr(MonitorWriter, "update_state", update_state)
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={"epochs": 1, "batch_size": 12, "log_interval": 4, "save_every": 0},
    )
    assert train(load_config(cfg)) == 0
    beats = sorted({g for g, _ in seen if g > 0})
    assert beats == list(range(1, 11))  # every step's count reached state.json
    assert (3, 0) in seen  # step 3 was announced before any row (the first flush is at step 4)
    assert (4, 4) in seen and (10, 10) in seen


def test_validation_reads_the_device_once_a_batch_and_the_matrix_once(
    tmp_path, tiny_bert_dir, small_corpus, monkeypatch, host_reads
):
    """The confusion matrix is counted on the device (index_add_, not bincount, which reads its
    input's max back) and read back once, at the validation's end: the only per-batch read stays
    the batch's sums (with the stop flag)."""
    per_validation: list[list[str]] = []
    original = FineTuneRecipe.validate

    def validate(self):
        start = len(host_reads)
        result = original(self)
        per_validation.append([kind for kind, where in host_reads[start:] if where == "trainer"])
        return result

    monkeypatch.setattr(FineTuneRecipe, "validate", validate)
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={"epochs": 1, "batch_size": 3, "save_every": 0},
    )  # 40 validation samples in batches of 6: 7 batches
    assert train(load_config(cfg)) == 0
    assert per_validation == [["tolist"] * 7 + ["tolist"]]
    [epoch] = orjson.loads((tmp_path / "run" / "epochs.json").read_bytes())["epochs"]
    assert sum(map(sum, epoch["confusion"])) == 40
