"""Data parallel on torch.distributed: 2 processes on loopback with gloo, launched by `--nproc 2`.

The tiny BERT here has dropout off everywhere, so one process and two see the same arithmetic and
their weights and loss curves must agree to float tolerance.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, patience, write_config, write_corpus
from trainer.monitor.atomic import atomic_write_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("ddp-data") / "train.jsonl", n=126)


def config_for(
    tmp: Path, model: Path, data: Path, name: str, val_split: float = 0.25, **train
) -> Path:
    # 126 samples, val 0.25 → 94 train: batches of 16 end with 14 (uneven shards of 7 and 7),
    # validation 32 in batches of 32 → 16 a rank.
    return write_config(
        tmp / f"{name}.toml", model, data, tmp / name, data={"val_split": val_split},
        train={"epochs": 2, "batch_size": 16, "save_every": 0, "log_interval": 1, **train},
    )  # fmt: skip


def trainer(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", *args], cwd=REPO, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def losses(run: Path) -> list[float]:
    return [orjson.loads(x)["loss"] for x in (run / "steps.jsonl").read_bytes().splitlines()]


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def test_two_ranks_match_one_process(tmp_path, no_dropout_bert, data):
    # val 0.26: 33 validation samples (93 train: batches of 16 end with 13, shards of 7 and 6),
    # one validation batch on two ranks: shards of 17 and 16, none padded in.
    split = 0.26
    code, err = finish(trainer(str(config_for(tmp_path, no_dropout_bert, data, "one", split))))
    assert code == 0, err
    code, err = finish(
        trainer(str(config_for(tmp_path, no_dropout_bert, data, "two", split)), "--nproc", "2")
    )
    assert code == 0, err[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"

    assert load(two / "run.json")["world_size"] == 2 and load(two / "state.json")["world_size"] == 2
    result = load(two / "result.json")
    assert result["status"] == "completed"
    checksums = result["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # identical weights on both ranks

    w1, w2 = (
        load_file(r / "checkpoints" / "last" / "adapter_model.safetensors") for r in (one, two)
    )
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6), k
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    e1, e2 = (load(r / "epochs.json")["epochs"] for r in (one, two))
    assert [e["val_loss"] for e in e2] == pytest.approx([e["val_loss"] for e in e1], rel=1e-5)
    assert [e["val_accuracy"] for e in e2] == [e["val_accuracy"] for e in e1]
    # the confusion matrix summed over ranks is one process's, exactly; each sample counted once
    assert [e["confusion"] for e in e2] == [e["confusion"] for e in e1]
    assert [sum(map(sum, e["confusion"])) for e in e2] == [33, 33]
    assert [e["per_class"] for e in e2] == [e["per_class"] for e in e1]
    assert [e["macro_f1"] for e in e2] == [e["macro_f1"] for e in e1]
    # a step's model FLOPs are its global batch's, however many ranks share it; MFU is against
    # rank 0's measured peak × the world size
    flops = [[orjson.loads(x)["flops"] for x in (r / "steps.jsonl").read_bytes().splitlines()] for r in (one, two)]  # fmt: skip
    assert flops[0] == flops[1] and min(flops[0]) > 0
    state, peak = load(two / "state.json"), load(two / "run.json")["peak_flops"]["flops_per_sec"]
    assert state["mfu"] == pytest.approx(state["flops_per_sec"] / (2 * peak), rel=1e-9)

    # only rank 0 wrote: one line a step, and the files name rank 0's pid
    n_steps = load(two / "state.json")["total_steps"]
    assert [
        orjson.loads(x)["global_step"] for x in (two / "steps.jsonl").read_bytes().splitlines()
    ] == list(range(1, n_steps + 1))
    assert load(two / "state.json")["pid"] == load(two / "run.json")["pid"]
    assert (
        len(
            load_file(two / "checkpoints" / "last" / "trainer_state.safetensors").keys()
            & {"rng.0.torch", "rng.1.torch"}
        )
        == 2
    )


def test_control_json_stops_both_ranks_and_resume_finishes(tmp_path, no_dropout_bert, data):
    cfg = config_for(tmp_path, no_dropout_bert, data, "run", epochs=3)
    proc = trainer(str(cfg), "--nproc", "2")
    for line in proc.stderr:
        if line.startswith("epoch 1/3 step 2/"):
            atomic_write_json(
                tmp_path / "run" / "control.json",
                {"command": "stop", "id": "t", "requested_at": time.time()},
            )
            break
    code, err = finish(proc)
    assert code == 0, err[-3000:]
    run = tmp_path / "run"
    state = load(run / "state.json")
    assert state["status"] == "stopped" and state["global_step"] < state["total_steps"]
    saved = load(run / "checkpoints" / "last" / "trainer_state.json")
    assert saved["global_step"] == state["global_step"] and len(saved["rng"]) == 2

    code, err = finish(trainer("--resume", str(run), "--nproc", "2"))
    assert code == 0, err[-3000:]
    state = load(run / "state.json")
    assert state["status"] == "completed" and state["global_step"] == state["total_steps"]
    assert (
        load(run / "result.json")["rank_weight_checksums"][0]
        == load(run / "result.json")["rank_weight_checksums"][1]
    )


def test_a_dead_rank_fails_the_run_in_bounded_time(tmp_path, no_dropout_bert, data):
    cfg = config_for(tmp_path, no_dropout_bert, data, "run", epochs=50)
    proc = trainer(str(cfg), "--nproc", "2")
    for line in proc.stderr:
        if line.startswith("epoch 1/50 step 2/"):
            break
    workers = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.environ().get("RANK") == "1"
    ]
    assert len(workers) == 1
    workers[0].send_signal(signal.SIGKILL)
    start = time.monotonic()
    code, _ = finish(proc, timeout=patience(180))
    assert code != 0
    # the collectives' own 120 s timeout, plus the shutdown (slower on a busy machine)
    assert time.monotonic() - start < 120 + patience(30)
    state = load(tmp_path / "run" / "state.json")
    assert state["status"] == "failed", state
    assert "rank" in state["error"]
