"""train.micro_batch_size: a global batch accumulated from micro-batches trains as the whole batch.

fp32 and dropout 0 everywhere (the model's and LoRA's), class weights on and batches with padding:
accumulated runs end with the adapters and head of the one-batch run, to float summation order.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, patience, run_cli, write_config
from tests.helpers import hook_steps
from tests.test_host_syncs import host_reads, reads_per_step  # noqa: F401 (a fixture)
from tests.test_resume import request_stop
from trainer.cli import main
from trainer.config import load_config
from trainer.errors import UserError
from trainer.micro_batches import accumulation_steps, micro_batches
from trainer.train import train

# 120 samples, a quarter held out: 90 to train, batches of 16 → 5 full and one of 10 (uneven shares)
TRAIN = {"epochs": 2, "batch_size": 16, "save_every": 0, "log_interval": 2}


def config_for(tmp: Path, model: Path, data: Path, name: str, **train) -> Path:
    return write_config(
        tmp / f"{name}.toml", model, data, tmp / name,
        data={"class_weights": "inverse_freq"},  # the loss's weights must add up across micro-batches
        train={**TRAIN, **train},
    )  # fmt: skip


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")


def steps(run: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run / "steps.jsonl").read_bytes().splitlines()]


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Equal within 1e-5 × the largest weight: the same updates, summed in another order."""
    assert got.keys() == want.keys()
    scale = max(float(w.abs().max()) for w in want.values())
    for k in want:
        assert float((got[k] - want[k]).abs().max()) <= 1e-5 * scale, k


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory, no_dropout_bert, data) -> Path:
    """The run every accumulated one is compared with: each batch in one forward/backward."""
    tmp = tmp_path_factory.mktemp("one-batch")
    assert train(load_config(config_for(tmp, no_dropout_bert, data, "run"))) == 0
    return tmp / "run"


# ------------------------------------------------------------------------------ the split


@pytest.mark.parametrize(
    ("batch", "micro", "world", "steps"),
    [(32, 32, 1, 1), (32, 8, 1, 4), (32, 4, 2, 4), (32, 16, 2, 1), (32, 64, 1, 1), (3, 1, 4, 1)],
)
def test_accumulation_steps_is_the_batch_over_micro_batches_of_every_process(
    batch, micro, world, steps
):
    assert accumulation_steps(batch, micro, world) == steps


def test_a_batch_that_micro_batches_do_not_divide_is_refused_naming_both_keys():
    with pytest.raises(UserError) as e:
        accumulation_steps(32, 5, 2)
    assert str(e.value).startswith(
        "train.batch_size = 32 is not a multiple of train.micro_batch_size = 5 × 2 processes"
    )


def test_micro_batches_cut_each_shard_contiguously_and_evenly():
    batch = list(range(10))  # an epoch's short last batch of 10, for 2 ranks × 3 micro-batches
    assert micro_batches(batch, 0, 2, 3) == [[0, 2], [4, 6], [8]]
    assert micro_batches(batch, 1, 2, 3) == [[1, 3], [5, 7], [9]]
    assert micro_batches([7], 0, 1, 2) == [[7], []]  # an empty one still runs (zero weight)
    cut = micro_batches(list(range(32)), 0, 1, 4)
    assert cut == [list(range(i, i + 8)) for i in range(0, 32, 8)]


# ------------------------------------------------------------------------------ equal to one batch


def test_accumulated_micro_batches_train_as_the_whole_batch(
    tmp_path, no_dropout_bert, data, one_batch, capsys
):
    assert train(load_config(config_for(tmp_path, no_dropout_bert, data, "run", micro_batch_size=4))) == 0  # fmt: skip
    run = tmp_path / "run"
    assert_same_weights(weights(run), weights(one_batch))
    got, want = steps(run), steps(one_batch)
    assert [s["global_step"] for s in got] == list(range(1, 13))  # a line per optimizer step
    for key in ("loss", "grad_norm", "accuracy", "lr"):
        assert [s[key] for s in got] == pytest.approx([s[key] for s in want], rel=1e-5), key
    assert [s["flops"] for s in got] == [s["flops"] for s in want]
    run_json = load(run / "run.json")
    assert (run_json["micro_batch_size"], run_json["gradient_accumulation_steps"]) == (4, 4)
    assert load(one_batch / "run.json")["gradient_accumulation_steps"] == 1
    assert "batch 16 = micro-batch 4 × 4 accumulation steps × 1 process" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_accumulating_train_as_one_process_with_the_whole_batch(
    tmp_path, no_dropout_bert, data, one_batch
):
    cfg = config_for(tmp_path, no_dropout_bert, data, "two", micro_batch_size=4)
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", str(cfg), "--nproc", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=patience(300),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "two"
    assert "batch 16 = micro-batch 4 × 2 accumulation steps × 2 processes" in proc.stderr
    assert_same_weights(weights(run), weights(one_batch))
    got, want = steps(run), steps(one_batch)
    assert [s["loss"] for s in got] == pytest.approx([s["loss"] for s in want], rel=1e-5)
    result = load(run / "result.json")
    assert result["rank_weight_checksums"][0] == result["rank_weight_checksums"][1]
    assert load(run / "run.json")["gradient_accumulation_steps"] == 2


# ------------------------------------------------------------------------------ stop and resume


def test_a_stop_and_resume_with_accumulation_is_bit_identical(
    tmp_path, no_dropout_bert, data, monkeypatch
):
    """Stopped mid-epoch at an optimizer step's end, resumed with the saved micro_batch_size: the
    very weights of the uninterrupted accumulated run."""
    straight = tmp_path / "straight"
    straight.mkdir()
    assert train(load_config(config_for(straight, no_dropout_bert, data, "run", micro_batch_size=4))) == 0  # fmt: skip
    cfg = config_for(tmp_path, no_dropout_bert, data, "run", micro_batch_size=4)
    hook_steps(monkeypatch, 8, request_stop)  # epoch 2, step 2
    assert train(load_config(cfg)) == 0
    run = tmp_path / "run"
    assert load(run / "state.json")["status"] == "stopped"
    assert load(run / "checkpoints" / "last" / "trainer_state.json")["global_step"] == 9
    monkeypatch.undo()
    assert main(["--resume", str(run)]) == 0
    got, want = weights(run), weights(straight / "run")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert [s["loss"] for s in steps(run)] == [s["loss"] for s in steps(straight / "run")]
    assert load(run / "run.json")["micro_batch_size"] == 4


def test_a_resume_may_change_the_micro_batch_and_trains_the_same_batches(
    tmp_path, no_dropout_bert, data, one_batch, monkeypatch
):
    """Micro-batching is a memory setting: a resume takes the one it is given (an override, or auto
    resolved afresh for this machine); the optimizer steps see the same batches."""
    cfg = config_for(tmp_path, no_dropout_bert, data, "run")
    hook_steps(monkeypatch, 4, request_stop)
    assert train(load_config(cfg)) == 0
    monkeypatch.undo()
    run = tmp_path / "run"
    assert main(["--resume", str(run), "train.micro_batch_size=2"]) == 0
    run_json = load(run / "run.json")
    assert (run_json["micro_batch_size"], run_json["gradient_accumulation_steps"]) == (2, 8)
    assert_same_weights(weights(run), weights(one_batch))


# ------------------------------------------------------------------------------ bad input


def test_an_undivided_batch_is_one_line_exit_2_and_nothing_written(tmp_path, no_dropout_bert, data):
    cfg = config_for(tmp_path, no_dropout_bert, data, "run", micro_batch_size=5)
    r = run_cli(str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert "train.batch_size = 16" in lines[0] and "train.micro_batch_size = 5" in lines[0]
    assert not (tmp_path / "run").exists()


def test_preflight_resolves_auto_to_each_process_share(
    tmp_path, no_dropout_bert, data, monkeypatch
):
    from trainer.preflight import preflight

    cfg = config_for(tmp_path, no_dropout_bert, data, "run", batch_size=15)
    monkeypatch.setitem(os.environ, "WORLD_SIZE", "2")
    assert preflight(load_config(cfg)).micro_batch_size == 8  # shares of 8 and 7
    monkeypatch.setitem(os.environ, "WORLD_SIZE", "1")
    assert preflight(load_config(cfg, ["train.micro_batch_size=99"])).micro_batch_size == 15
    assert preflight(load_config(cfg, ["train.micro_batch_size=5"])).micro_batch_size == 5


def test_micro_batches_add_no_host_read(
    tmp_path,
    tiny_bert_dir,
    small_corpus,
    monkeypatch,
    host_reads,  # noqa: F811 (the fixture)
):
    """Accumulating stays on the device: the trainer still reads values back once a flush."""
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={
            "epochs": 1,
            "batch_size": 4,
            "micro_batch_size": 2,
            "log_interval": 4,
            "save_every": 0,
        },
    )  # fmt: skip  (120 samples to train: 30 steps of 2 micro-batches)
    per_step = reads_per_step(monkeypatch, host_reads, [])
    assert train(load_config(cfg)) == 0
    ours = [[kind for kind, where in reads if where == "trainer"] for reads in per_step]
    assert ours == [["tolist"] if n % 4 == 0 or n == 30 else [] for n in range(1, 31)]


def test_under_ddp_only_the_last_micro_batch_all_reduces():
    """DDP's no_sync around every micro-batch but the step's last: one gradient all-reduce a step.
    (The recipe's own _accumulate, with a stand-in DDP wrapper that records where it syncs.)"""
    from types import SimpleNamespace

    from trainer.distributed import Dist
    from trainer.train import FineTuneRecipe

    deferred = [False]
    calls: list[tuple[list[int], bool]] = []

    class FakeDDP:
        @contextlib.contextmanager
        def no_sync(self):
            deferred[0] = True
            yield
            deferred[0] = False

    def backward(rows, batch, weight):
        calls.append((rows, deferred[0]))
        return torch.tensor(float(len(rows))), torch.tensor(1.0)

    recipe = SimpleNamespace(
        dist=Dist(rank=1, world_size=2), accumulation=3, model_wrapped=FakeDDP(), _backward=backward
    )
    loss_sum, correct = FineTuneRecipe._accumulate(recipe, list(range(12)), 12.0)
    assert calls == [([1, 3], True), ([5, 7], True), ([9, 11], False)]
    assert (float(loss_sum), float(correct)) == (6.0, 3.0)  # the micro-batches' sums add up
