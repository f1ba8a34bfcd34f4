"""entrenar-train CONFIG --auto-resume: one command that starts, resumes, leaves alone or refuses,
and a kill soak that SIGKILLs that same command at random instants (model loading included) and
still ends where an uninterrupted run ends."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, patience, write_config, write_corpus
from tests.helpers import hook_steps
from tests.test_reliability import check_run_dir_readable
from trainer.cli import main
from trainer.config import load_config
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.writer import MonitorWriter
from trainer.train import train

METRICS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "is_best")


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def config_in(tmp: Path, model_dir: Path, data: Path, name: str = "run", **extra) -> Path:
    return write_config(
        tmp / f"{name}.toml", model_dir, data, tmp / name,
        lora={"dropout": 0.1},  # dropout on: a resume must restore the RNG too
        data={"val_split": 0.5},  # 60/60: 8 steps an epoch
        train={"epochs": 3, "batch_size": 8, "save_every": 0, **extra},
    )  # fmt: skip


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")


def epoch_metrics(run: Path) -> list[dict]:
    return [{k: e[k] for k in METRICS} for e in load(run / "epochs.json")["epochs"]]


def assert_same_as(run: Path, straight: Path) -> None:
    got, want = weights(run), weights(straight)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert epoch_metrics(run) == epoch_metrics(straight)
    assert load(run / "state.json")["status"] == "completed"
    assert load(run / "result.json")["status"] == "completed"


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_bert_dir, data) -> Path:
    """The uninterrupted run the others are compared with."""
    tmp = tmp_path_factory.mktemp("straight")
    assert train(load_config(config_in(tmp, tiny_bert_dir, data))) == 0
    return tmp / "run"


def files_of(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_it_starts_a_run_and_then_leaves_the_completed_run_alone(
    tmp_path, tiny_bert_dir, data, straight, capsys
):
    cfg = config_in(tmp_path, tiny_bert_dir, data)
    assert main([str(cfg), "--auto-resume"]) == 0
    run = tmp_path / "run"
    assert f"{run}: no run there yet; starting it" in capsys.readouterr().err
    assert_same_as(run, straight)
    assert load(run / "run.json")["resumed_from"] is None
    before = files_of(run)
    assert main([str(cfg), "--auto-resume"]) == 0
    err = capsys.readouterr().err.strip()
    best = load(run / "state.json")["best"]
    assert (
        err
        == f"{run}: already completed (best epoch {best['epoch']}: val loss {best['val_loss']:.4f}); nothing to do"
    )
    assert files_of(run) == before  # nothing rewritten


def test_a_changed_config_is_refused_naming_the_keys(tmp_path, tiny_bert_dir, data, monkeypatch):
    cfg = config_in(tmp_path, tiny_bert_dir, data)
    hook_steps(monkeypatch, 3, lambda d: atomic_write_json(d / "control.json", {"command": "stop", "id": "t", "requested_at": time.time()}))  # fmt: skip
    assert main([str(cfg)]) == 0  # stopped at step 3: an unfinished run
    run = tmp_path / "run"
    before = files_of(run)
    r = subprocess.run(
        [sys.executable, "-m", "trainer", str(cfg), "--auto-resume", "lora.r=8", "train.epochs=4"],
        cwd=REPO, capture_output=True, text=True, timeout=patience(120),
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"entrenar-train: error: {run} holds a run of another config: lora.r (4 → 8); "
        f"train.epochs (3 → 4); resume it as it is with entrenar-train --resume {run}, or choose "
        "another output.dir"
    )
    assert files_of(run) == before


def test_a_start_killed_before_run_json_starts_over(
    tmp_path, tiny_bert_dir, data, straight, capsys
):
    """What a SIGKILL during model loading leaves: state.json `initializing` naming a dead
    process, its lock, an atomic write cut short. None of it stands in the way."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    writer = MonitorWriter(run)
    writer.update_state(status="initializing", total_epochs=3, pid=dead.pid, pid_create_time=1.0)
    (run / "trainer.lock").write_bytes(orjson.dumps({"pid": dead.pid, "host": os.uname().nodename, "pid_create_time": 1.0}))  # fmt: skip
    (run / ".state.json.abc123.tmp").write_bytes(b'{"sche')
    assert main([str(config_in(tmp_path, tiny_bert_dir, data)), "--auto-resume"]) == 0
    assert "no run there yet; starting it" in capsys.readouterr().err
    assert_same_as(run, straight)
    assert not (run / "trainer.lock").exists()


def test_a_run_that_died_before_its_first_checkpoint_starts_over_in_place(tmp_path, tiny_bert_dir, data, straight, monkeypatch, capsys):  # fmt: skip
    cfg = config_in(tmp_path, tiny_bert_dir, data)

    def crash(_):
        raise RuntimeError("the node went away")

    hook_steps(monkeypatch, 2, crash)  # epoch 1 of 8 steps: no checkpoint yet
    with pytest.raises(RuntimeError):
        main([str(cfg)])
    run = tmp_path / "run"
    assert load(run / "state.json")["status"] == "failed" and not (run / "checkpoints").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert main([str(cfg), "--auto-resume"]) == 0
    assert (
        "no checkpoint yet; starting the run over with its saved config" in capsys.readouterr().err
    )
    assert_same_as(run, straight)
    (resumed,) = load(run / "run.json")["resumed_from"]
    assert resumed["checkpoint"] is None
    # (state.json, which the note reads, had reached step 2: the crash came before step 3's write)
    assert (
        resumed["note"]
        == "started over with the saved config (no checkpoint yet); steps 1–2 are redone"
    )


def test_the_newest_checkpoint_that_loads_is_the_one_resumed(tmp_path, tiny_bert_dir, data, straight, monkeypatch, capsys):  # fmt: skip
    cfg = config_in(tmp_path, tiny_bert_dir, data)
    hook_steps(monkeypatch, 12, lambda d: atomic_write_json(d / "control.json", {"command": "stop", "id": "t", "requested_at": time.time()}))  # fmt: skip
    assert main([str(cfg)]) == 0  # stopped in epoch 2: checkpoints/best (step 8) and last (13)
    monkeypatch.undo()
    run = tmp_path / "run"
    assert (
        load(run / "checkpoints" / "last" / "trainer_state.json")["global_step"] == 13
    )  # (the stop lands after the next step)
    (run / "checkpoints" / "last" / "adapter_model.safetensors").write_bytes(b"\0" * 16)  # damaged
    capsys.readouterr()
    assert main([str(cfg), "--auto-resume"]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'last'}: skipped, it does not load (" in err
    assert "resumed from checkpoints/best at step 8; steps 9–13 are redone" in err
    assert_same_as(run, straight)


HOLD_LOCK = """
import sys
from trainer.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_run_a_trainer_still_holds_is_refused_and_nothing_of_it_is_tidied(tmp_path, tiny_bert_dir, data, straight, monkeypatch, capsys):  # fmt: skip
    """A requeued job that starts while the old one still stops (its lock held): refused naming the
    holder, exit 2, and what looks like a killed writer's leftovers is not touched (it may be the
    live trainer's checkpoint being written)."""
    cfg = config_in(tmp_path, tiny_bert_dir, data)
    hook_steps(monkeypatch, 3, lambda d: atomic_write_json(d / "control.json", {"command": "stop", "id": "t", "requested_at": time.time()}))  # fmt: skip
    assert main([str(cfg)]) == 0  # stopped at step 3: an unfinished run
    monkeypatch.undo()
    run = tmp_path / "run"
    writing = run / "checkpoints" / ".tmp-last-live"
    writing.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)], cwd=REPO, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main([str(cfg), "--auto-resume"]) == 2
        refused = (
            f"entrenar-train: error: {run}: a trainer is already running on it "
            f"(pid {holder.pid} on {os.uname().nodename}); stop it first"
        )
        assert capsys.readouterr().err.strip() == refused
        r = subprocess.run(
            [sys.executable, "-m", "trainer", str(cfg), "--auto-resume", "--nproc", "2"],
            cwd=REPO, capture_output=True, text=True, timeout=patience(120),
        )  # fmt: skip
        assert (r.returncode, r.stderr.strip()) == (2, refused)  # one line, before torchrun
        assert writing.is_dir()
    finally:
        holder.communicate("", timeout=patience(60))
    assert main([str(cfg), "--auto-resume"]) == 0  # its holder gone: resumed, leftovers tidied
    assert not writing.exists()
    assert_same_as(run, straight)


def test_auto_resume_goes_with_a_config_not_with_resume(tmp_path, capsys):
    assert main(["--resume", str(tmp_path), "--auto-resume"]) == 2
    assert "--auto-resume goes with a CONFIG" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- kill soak

AUTO_RESUME_KILLS = int(os.environ.get("ENTRENAR_AUTO_RESUME_KILLS", "8"))  # 2 scripted + random


def wait_for(proc: subprocess.Popen, condition, timeout: float = 120) -> bool:
    """Poll condition() while proc runs (its exit is the pause); False if proc ended first."""
    deadline = time.monotonic() + patience(timeout)
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "timed out"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
    return True


def progress_lines(proc: subprocess.Popen, n: int) -> None:
    """Read the trainer's stderr until its n-th progress line (or its end)."""
    seen = 0
    for line in proc.stderr:
        seen += line.startswith("epoch")
        if seen >= n:
            return


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL proc unless it has ended; whether the kill landed."""
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    return True


def soak_one_run(cfg: Path, run: Path, rng: random.Random, max_kills: int) -> dict[str, int]:
    """Run `entrenar-train CFG --auto-resume`, the same command every time, SIGKILLing it until it
    completes (or max_kills are made, then letting it finish): the first kill while the model
    loads (state.json says initializing, no run.json yet), the second after run.json but before
    the first checkpoint, then at random instants of a start or of training. Counts."""
    command = [sys.executable, "-m", "trainer", str(cfg), "--auto-resume"]
    counts = {"kills": 0, "starts": 0, "before_run_json": 0}
    while True:
        counts["starts"] += 1
        proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
        if counts["kills"] >= max_kills:
            _, err = proc.communicate(timeout=patience(600))
            assert proc.returncode == 0, err[-3000:]
            return counts
        if counts["kills"] == 0:
            wait_for(proc, lambda: (run / "state.json").exists())
        elif counts["kills"] == 1:
            progress_lines(proc, 2)
        elif rng.random() < 0.4:  # a random instant of the start: imports, model loading, setup
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0, 6))
        else:  # a random instant of training, validation, checkpointing
            progress_lines(proc, rng.randint(1, 30))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0, 0.3))
        landed = kill(proc)
        _, err = proc.communicate()
        check_run_dir_readable(run)
        if not landed:  # it ended before the kill: it must have completed the run
            assert proc.returncode == 0, err[-3000:]
            return counts
        counts["kills"] += 1
        counts["before_run_json"] += not (run / "run.json").exists()
        if counts["kills"] == 1:
            assert not (run / "run.json").exists()  # the kill during model loading
        if counts["kills"] == 2:
            assert (run / "run.json").exists() and not (run / "checkpoints").exists()


@pytest.mark.slow
def test_kill_soak_the_same_auto_resume_command_ends_where_an_uninterrupted_run_ends(tmp_path, tiny_bert_dir):  # fmt: skip
    data = write_corpus(tmp_path / "d.jsonl", n=200)
    extra = {"epochs": 5, "save_every": 2, "log_interval": 1}
    straight = tmp_path / "straight"
    assert main([str(config_in(tmp_path, tiny_bert_dir, data, "straight", **extra))]) == 0
    rng = random.Random(2024)
    totals = {"runs": 0, "kills": 0, "starts": 0, "before_run_json": 0, "resumes": 0}
    while totals["kills"] < AUTO_RESUME_KILLS:  # as many runs as it takes to land the kills
        totals["runs"] += 1
        name = f"soak-{totals['runs']}"
        run = tmp_path / name
        cfg = config_in(tmp_path, tiny_bert_dir, data, name, **extra)
        counts = soak_one_run(cfg, run, rng, AUTO_RESUME_KILLS - totals["kills"])
        assert_same_as(run, straight)
        resumed = load(run / "run.json")["resumed_from"] or []
        if counts["kills"] >= 2:
            assert (
                resumed[0]["checkpoint"] is None
            )  # the restart after the kill before a checkpoint
        for key, value in counts.items():
            totals[key] += value
        totals["resumes"] += len(resumed)
        shutil.rmtree(run)
    assert totals["before_run_json"] >= 1
    print(
        f"auto-resume kill soak: {totals['runs']} runs, {totals['kills']} kills in "
        f"{totals['starts']} starts of the same command ({totals['before_run_json']} before "
        f"run.json existed, {totals['resumes']} resumes), 0 lost, every run's weights identical"
    )


def test_a_run_saved_before_a_key_existed_resumes_while_the_key_is_at_its_default(tmp_path, tiny_bert_dir, data):  # fmt: skip
    """An older version's run.json lacks the keys added since: that is the default, not a change."""
    from trainer.auto_resume import decide
    from trainer.errors import UserError
    from trainer.monitor.schema import Files, tagged

    config = load_config(config_in(tmp_path, tiny_bert_dir, data))
    old = config.to_dict()
    del old["train"]["recovery_snapshot_every"]  # a key this version added
    run = Path(config.output.dir)
    run.mkdir()
    atomic_write_json(run / Files.RUN, tagged(Files.RUN, {"config": old}))
    assert decide(config, lambda _: None) == {"action": "resume"}

    changed = load_config(
        config_in(tmp_path, tiny_bert_dir, data), ["train.recovery_snapshot_every=3"]
    )
    with pytest.raises(UserError, match=r"train\.recovery_snapshot_every \(10 → 3\)"):
        decide(changed, lambda _: None)
