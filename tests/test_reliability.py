"""Nothing lost, nothing crashes: disk full and permission errors while checkpointing, planted
pickles, stale locks, and a kill soak (SIGKILL at random instants, then --resume to the same end)."""

from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, patience, write_config, write_corpus
from trainer import checkpoint as ckpt
from trainer.cli import main
from trainer.config import load_config
from trainer.errors import TrainingFailed
from trainer.train import train


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES])
def test_checkpoint_write_failure_keeps_earlier_checkpoints(
    error, tmp_path, tiny_bert_dir, small_corpus, monkeypatch
):
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={"epochs": 3, "save_every": 1},
    )
    calls = {"n": 0}
    real_save = ckpt.save_file

    def failing_save(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] >= 3:  # epoch 1 writes best and epoch-1; the third write fails
            raise OSError(error, os.strerror(error), path)
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    with pytest.raises(TrainingFailed, match=os.strerror(error)):
        train(load_config(cfg))
    run = tmp_path / "run"
    state = load(run / "state.json")
    assert state["status"] == "failed" and os.strerror(error) in state["error"]
    assert "earlier checkpoints are intact" in state["error"]
    assert load(run / "result.json")["status"] == "failed"
    checkpoints = run / "checkpoints"
    assert not [
        p for p in checkpoints.iterdir() if p.name.startswith(".")
    ]  # no temp folder left behind
    for name in ("best", "epoch-1"):
        ckpt.read_trainer_state(checkpoints / name)
        assert ckpt.read_adapter(checkpoints / name)
    assert not (run / "trainer.lock").exists()


class Boom:
    """A pickle that, if ever loaded, leaves a marker file: proof that it ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_planted_pickles_are_never_loaded(tmp_path, tiny_bert_dir, small_corpus, capsys):
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, small_corpus, tmp_path / "run", train={"epochs": 1}
    )
    assert main([str(cfg)]) == 0
    run = tmp_path / "run"
    last = run / "checkpoints" / "last"
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Boom(marker))
    # the names HF Trainer and PEFT use for pickled state, next to ours
    for name in (
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "training_args.bin",
        "pytorch_model.bin",
    ):
        (last / name).write_bytes(payload)
    assert main(["--resume", str(run), "train.epochs=2"]) == 0
    assert main(["predict", str(run / "checkpoints" / "last"), "ls -la"]) == 0
    # with our safetensors gone, the pickled adapter a loader might fall back to is refused, not loaded
    best = run / "checkpoints" / "best"
    (best / "adapter_model.safetensors").unlink()
    (best / "adapter_model.bin").write_bytes(payload)
    assert main(["predict", str(best), "ls -la"]) == 2
    assert main(["eval", str(best), "--data", str(small_corpus)]) == 2
    assert not marker.exists()
    assert "adapter_model.safetensors: missing" in capsys.readouterr().err


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path, tiny_bert_dir, small_corpus):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer.lock").write_bytes(
        orjson.dumps({"pid": dead.pid, "host": os.uname().nodename, "pid_create_time": 1.0})
    )
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, small_corpus, run, train={"epochs": 1})
    assert train(load_config(cfg)) == 0
    assert not (run / "trainer.lock").exists()


def test_a_live_lock_refuses_a_second_trainer(tmp_path, tiny_bert_dir, small_corpus, capsys):
    from trainer.lock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run).acquire()  # this process plays the running trainer
    try:
        cfg = write_config(
            tmp_path / "c.toml", tiny_bert_dir, small_corpus, run, train={"epochs": 1}
        )
        assert main([str(cfg)]) == 2
    finally:
        lock.release()
    assert "already running" in capsys.readouterr().err
    assert not (run / "run.json").exists()


# ---------------------------------------------------------------------------------------- kill soak

SOAK_KILLS = int(os.environ.get("ENTRENAR_SOAK_KILLS", "10"))  # bench mode: 100+


def check_run_dir_readable(run: Path) -> None:
    """After a kill: every checkpoint loads, every JSON parses, steps.jsonl's complete lines parse."""
    for name in ("run.json", "state.json", "epochs.json"):
        if (run / name).exists():
            assert isinstance(load(run / name), dict)
    if (run / "steps.jsonl").exists():
        data = (run / "steps.jsonl").read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        assert all(isinstance(orjson.loads(line), dict) for line in complete.splitlines())
    for folder in (run / "checkpoints").glob("*") if (run / "checkpoints").exists() else []:
        if folder.name.startswith("."):
            continue  # temp folders of a cut-short write: never taken for checkpoints
        ckpt.read_trainer_state(folder)
        assert ckpt.read_adapter(folder)


def kill_and_resume_until_done(cfg: Path, run: Path, rng: random.Random, max_kills: int) -> int:
    """Start the run, SIGKILL it at random instants and --resume it, until it completes; the kills made."""
    kills = 0
    command = [str(cfg)]
    while True:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer", *command], cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        command = ["--resume", str(run)]
        if kills >= max_kills:
            _, err = proc.communicate(timeout=patience(600))
            assert proc.returncode == 0, err[-2000:]
            return kills
        target = rng.randint(
            1, 40
        )  # kill after a random number of progress lines, at a random instant
        seen = 0
        for line in proc.stderr:
            seen += line.startswith("epoch")
            if seen >= target:
                break
        try:
            proc.wait(timeout=rng.uniform(0, 0.3))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
        proc.stderr.close()
        check_run_dir_readable(run)
        if proc.returncode == 0:  # it finished before the kill landed
            return kills


@pytest.mark.slow
def test_kill_soak_resume_ends_where_an_uninterrupted_run_ends(tmp_path, tiny_bert_dir):
    data = write_corpus(tmp_path / "d.jsonl", n=200)
    sections = {
        "train": {"epochs": 12, "batch_size": 8, "save_every": 1, "log_interval": 1},
        "lora": {"dropout": 0.1},
    }
    straight_cfg = write_config(
        tmp_path / "s.toml", tiny_bert_dir, data, tmp_path / "straight", **sections
    )
    assert main([str(straight_cfg)]) == 0
    want = load_file(tmp_path / "straight" / "checkpoints" / "last" / "adapter_model.safetensors")
    metrics = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
    strip = lambda p: [{k: e[k] for k in metrics} for e in load(p / "epochs.json")["epochs"]]  # noqa: E731

    rng = random.Random(1234)
    kills = runs = 0
    while kills < SOAK_KILLS:  # as many small runs as it takes to land the kills
        runs += 1
        run = tmp_path / f"soak-{runs}"
        cfg = write_config(tmp_path / f"k{runs}.toml", tiny_bert_dir, data, run, **sections)
        kills += kill_and_resume_until_done(cfg, run, rng, SOAK_KILLS - kills)
        assert load(run / "state.json")["status"] == "completed"
        got = load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert strip(run) == strip(tmp_path / "straight")
        shutil.rmtree(run, ignore_errors=True)
    print(f"kill soak: {runs} runs, {kills} kills, 0 lost, every run's final weights identical")
