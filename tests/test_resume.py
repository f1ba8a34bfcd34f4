"""Stop and resume: a stopped-and-resumed run ends exactly where an uninterrupted one does.

Stops are triggered from inside the real run at a chosen step (a hook on the monitor writer writes
control.json or sends SIGINT), so each test stops at the same place every time.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import orjson
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import run_cli, write_config, write_corpus
from tests.helpers import assert_history_is_steps_jsonl, hook_steps
from trainer.cli import main
from trainer.config import load_config
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.writer import MonitorWriter
from trainer.train import train

EPOCHS = 3
METRICS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "is_best")


def make_config(tmp: Path, model_dir: Path, data: Path, **train_overrides) -> Path:
    return write_config(
        tmp / "c.toml", model_dir, data, tmp / "run",
        lora={"dropout": 0.1},  # dropout on: the RNG state must be restored too
        data={"val_split": 0.5},  # 60/60: 8 steps an epoch, 4 validation batches
        train={"epochs": EPOCHS, "batch_size": 8, "save_every": 0, **train_overrides},
    )  # fmt: skip


def weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / which / "adapter_model.safetensors")


def epoch_metrics(run: Path) -> list[dict]:
    return [
        {k: e[k] for k in METRICS}
        for e in orjson.loads((run / "epochs.json").read_bytes())["epochs"]
    ]


def state(run: Path) -> dict:
    return orjson.loads((run / "state.json").read_bytes())


def assert_one_line_error(stderr: str, expected: str) -> None:
    """Bad input: the last line of stderr is the one error line, it says what, and no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert lines[-1].startswith("entrenar-train: error: ") and expected in lines[-1], stderr
    assert sum("error" in line for line in lines) == 1, stderr


def request_stop(run: Path) -> None:
    atomic_write_json(
        run / "control.json", {"command": "stop", "id": "test", "requested_at": time.time()}
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_bert_dir, data) -> Path:
    """The uninterrupted run every resumed run is compared with."""
    tmp = tmp_path_factory.mktemp("straight")
    assert train(load_config(make_config(tmp, tiny_bert_dir, data))) == 0
    return tmp / "run"


def assert_same_as_straight(run: Path, straight: Path) -> None:
    got, want = weights(run), weights(straight)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert epoch_metrics(run) == epoch_metrics(straight)
    assert state(run)["status"] == "completed"
    assert state(run)["global_step"] == state(straight)["global_step"]
    assert_history_is_steps_jsonl(run)  # the history through the stop and resume


def test_stop_through_control_json_mid_epoch_then_resume(
    tmp_path, tiny_bert_dir, data, straight, monkeypatch
):
    config = load_config(make_config(tmp_path, tiny_bert_dir, data))
    hook_steps(monkeypatch, 12, request_stop)  # epoch 2, mid-epoch (8 steps an epoch)
    assert train(config) == 0
    run = tmp_path / "run"
    s = state(run)
    assert s["status"] == "stopped" and (s["epoch"], s["step"], s["global_step"]) == (
        2,
        5,
        13,
    )  # the batch under way finishes
    assert not (run / "control.json").exists()  # consumed, so the resume does not stop at once
    assert (run / "checkpoints" / "last" / "trainer_state.safetensors").is_file()
    monkeypatch.undo()

    assert main(["--resume", str(run)]) == 0
    assert_same_as_straight(run, straight)
    steps = [orjson.loads(x) for x in (run / "steps.jsonl").read_bytes().splitlines()]
    assert [s["global_step"] for s in steps] == list(range(1, state(straight)["global_step"] + 1))
    run_json = orjson.loads((run / "run.json").read_bytes())
    assert len(run_json["resumed_from"]) == 1 and run_json["resumed_from"][0]["global_step"] == 13
    assert run_json["resumed_from"][0]["note"] == "resumed from checkpoints/last at step 13"


def test_a_resume_after_a_crash_says_which_steps_are_redone(
    tmp_path, tiny_bert_dir, data, straight, monkeypatch, capsys
):
    """Stopped at step 13 (checkpoints/last), resumed, then killed at step 15 before the next
    checkpoint: the next resume says, in its log and in run.json (what the monitor shows), that it
    goes back to step 13 and redoes 14–15; the run still ends as the uninterrupted one."""
    config = load_config(make_config(tmp_path, tiny_bert_dir, data))
    hook_steps(monkeypatch, 12, request_stop)
    assert train(config) == 0
    monkeypatch.undo()

    def die(_run_dir):
        raise KeyboardInterrupt  # a forced exit: state.json is left as it was, as a kill leaves it

    hook_steps(monkeypatch, 15, die)  # killed right after step 15: state.json says 15
    run = tmp_path / "run"
    assert main(["--resume", str(run)]) == 130
    assert (state(run)["status"], state(run)["global_step"]) == ("running", 15)
    monkeypatch.undo()
    capsys.readouterr()

    assert main(["--resume", str(run)]) == 0
    note = "resumed from checkpoints/last at step 13; steps 14–15 are redone"
    assert note in capsys.readouterr().err
    assert orjson.loads((run / "run.json").read_bytes())["resumed_from"][-1]["note"] == note
    assert_same_as_straight(run, straight)


def test_stop_during_validation_then_resume(tmp_path, tiny_bert_dir, data, straight, monkeypatch):
    config = load_config(make_config(tmp_path, tiny_bert_dir, data))
    original = MonitorWriter.update_state

    def hooked(self, **changes):
        original(self, **changes)
        v = changes.get("validation")
        if (
            changes.get("status") == "validating"
            and v
            and v["done"] > 0
            and self.state["epoch"] == 2
        ):
            request_stop(self.dir)

    monkeypatch.setattr(MonitorWriter, "update_state", hooked)
    assert train(config) == 0
    run = tmp_path / "run"
    assert state(run)["status"] == "stopped"
    saved = orjson.loads((run / "checkpoints" / "last" / "trainer_state.json").read_bytes())
    assert saved["needs_validation"] is True and saved["epoch"] == 2
    assert [e["epoch"] for e in epoch_metrics(run)] == [1]
    monkeypatch.undo()

    assert main(["--resume", str(run)]) == 0
    assert_same_as_straight(run, straight)


def test_sigint_stops_gracefully_then_resume(tmp_path, tiny_bert_dir, data, straight, monkeypatch):
    config = load_config(make_config(tmp_path, tiny_bert_dir, data))
    hook_steps(monkeypatch, 3, lambda _: os.kill(os.getpid(), signal.SIGINT))
    assert train(config) == 0
    run = tmp_path / "run"
    assert (state(run)["status"], state(run)["global_step"]) == ("stopped", 4)
    monkeypatch.undo()
    assert main(["--resume", str(run)]) == 0
    assert_same_as_straight(run, straight)


def test_resume_from_best_replays_later_steps_and_overrides_are_recorded(
    tmp_path, tiny_bert_dir, data, straight
):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    best_epoch = orjson.loads((run / "epochs.json").read_bytes())["best_epoch"]
    assert main(["--resume", str(run), "--from", "best", "train.epochs=4"]) == 0
    run_json = orjson.loads((run / "run.json").read_bytes())
    assert run_json["config"]["train"]["epochs"] == 4
    assert run_json["resumed_from"][-1]["overrides"] == ["train.epochs=4"]
    assert [e["epoch"] for e in epoch_metrics(run)] == [1, 2, 3, 4]

    def without_flag(rows):
        return [{k: v for k, v in e.items() if k != "is_best"} for e in rows]

    assert without_flag(epoch_metrics(run)[:best_epoch]) == without_flag(
        epoch_metrics(straight)[:best_epoch]
    )
    assert state(run)["total_epochs"] == 4 and state(run)["status"] == "completed"


def test_data_hash_mismatch_is_refused_unless_allowed(tmp_path, tiny_bert_dir, straight):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    run_json = orjson.loads((run / "run.json").read_bytes())
    changed = Path(run_json["config"]["data"]["train"]).with_name("changed.jsonl")
    write_corpus(changed, n=120, seed=99)
    before = (run / "state.json").read_bytes()
    r = run_cli("--resume", str(run), f"data.train={changed}", "train.epochs=4")
    assert r.returncode == 2, r.stderr
    assert_one_line_error(r.stderr, run_json["data"]["data_hash"])
    assert "--allow-data-mismatch" in r.stderr
    assert (run / "state.json").read_bytes() == before  # nothing written
    r = run_cli(
        "--resume", str(run), f"data.train={changed}", "train.epochs=4", "--allow-data-mismatch"
    )
    assert r.returncode == 0, r.stderr
    assert state(run)["status"] == "completed" and state(run)["epoch"] == 4


@pytest.mark.parametrize(
    "damage", ["truncated", "nan", "missing_trainer_state", "wrong_shape", "not_a_run"]
)
def test_corrupt_checkpoints_are_one_line_errors(tmp_path, straight, damage):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    last = run / "checkpoints" / "last"
    target = run
    if damage == "truncated":
        data = (last / "adapter_model.safetensors").read_bytes()
        (last / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
        expected = "adapter_model.safetensors: unreadable safetensors"
    elif damage == "nan":
        tensors = weights(run)
        name = next(k for k in tensors if "lora_B" in k)
        tensors[name][0, 0] = float("nan")
        save_file(tensors, last / "adapter_model.safetensors")
        expected = f"{name} holds NaN/Inf"
    elif damage == "missing_trainer_state":
        (last / "trainer_state.safetensors").unlink()
        expected = "trainer_state.safetensors: missing"
    elif damage == "wrong_shape":
        tensors = weights(run)
        name = next(k for k in tensors if "lora_A" in k)
        tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
        save_file(tensors, last / "adapter_model.safetensors")
        expected = "another model, num_labels or LoRA rank?"
    else:
        target = tmp_path
        expected = "not a run directory"
    r = run_cli("--resume", str(target), "train.epochs=4")
    assert r.returncode == 2, r.stderr
    assert_one_line_error(r.stderr, expected)


def test_resume_of_a_live_run_is_refused(tmp_path, straight):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    from trainer.lock import RunLock

    lock = RunLock(run).acquire()  # this test process plays the live trainer
    try:
        r = run_cli("--resume", str(run), "train.epochs=4")
    finally:
        lock.release()
    assert r.returncode == 2 and "already running" in r.stderr and f"pid {os.getpid()}" in r.stderr


def test_a_second_sigint_exits_at_once_and_says_so(tmp_path, monkeypatch):
    from trainer import stopping

    forced = []
    exits = []
    monkeypatch.setattr(stopping.os, "_exit", lambda code: exits.append(code))
    stop = stopping.StopSignal(
        tmp_path, started_at=time.time(), on_force=lambda: forced.append(True)
    ).install()
    try:
        assert not stop.requested
        signal.raise_signal(signal.SIGINT)
        assert stop.requested and stop.reason == "SIGINT received" and exits == []
        signal.raise_signal(signal.SIGINT)
        assert forced == [True] and exits == [stopping.FORCED_EXIT_CODE]
    finally:
        stop.uninstall()


def test_stale_or_garbage_control_files_do_not_stop(tmp_path):
    from trainer.stopping import StopSignal

    stop = StopSignal(tmp_path, started_at=time.time())
    atomic_write_json(
        tmp_path / "control.json", {"command": "stop", "id": 1, "requested_at": time.time() - 3600}
    )
    assert not stop.requested  # written before this trainer started: the stop we resumed from
    (tmp_path / "control.json").write_bytes(b"{garbage")
    assert not stop.requested
    atomic_write_json(
        tmp_path / "control.json", {"command": "pause", "id": 2, "requested_at": time.time() + 1}
    )
    assert not stop.requested
    atomic_write_json(
        tmp_path / "control.json", {"command": "stop", "id": 3, "requested_at": time.time() + 1}
    )
    assert stop.requested and stop.request_id == 3
    stop.consume()
    assert not (tmp_path / "control.json").exists()


def test_a_monitor_stop_then_one_sigint_is_still_a_clean_stop(tmp_path, monkeypatch):
    from trainer import stopping

    exits = []
    monkeypatch.setattr(stopping.os, "_exit", lambda code: exits.append(code))
    stop = stopping.StopSignal(tmp_path, started_at=time.time()).install()
    try:
        atomic_write_json(
            tmp_path / "control.json", {"command": "stop", "id": 1, "requested_at": time.time() + 1}
        )
        assert stop.requested
        signal.raise_signal(signal.SIGINT)  # the monitor signals too: not a forced exit
        assert exits == []
        signal.raise_signal(signal.SIGINT)  # a second signal is
        assert exits == [stopping.FORCED_EXIT_CODE]
    finally:
        stop.uninstall()


def test_a_run_from_before_the_shuffle_rule_resumes_with_its_own_order(
    tmp_path, tiny_bert_dir, data, straight, monkeypatch
):
    """A run.json without `shuffle` was written by a trainer that shuffled with seed + epoch: its
    resume keeps that order (ending exactly where that trainer would have), not the new rule's."""
    import trainer.train
    from trainer.data import SHUFFLE_V1, SHUFFLE_V2

    old = tmp_path / "old"
    old.mkdir()
    monkeypatch.setattr(trainer.train, "SHUFFLE_RULE", SHUFFLE_V1)  # the trainer before the rule
    assert train(load_config(make_config(old, tiny_bert_dir, data))) == 0
    old_straight = old / "run"
    assert orjson.loads((old_straight / "run.json").read_bytes())["shuffle"] == SHUFFLE_V1
    hook_steps(monkeypatch, 12, request_stop)
    assert train(load_config(make_config(tmp_path, tiny_bert_dir, data))) == 0
    monkeypatch.undo()  # the resume runs the trainer of today
    run = tmp_path / "run"
    run_json = orjson.loads((run / "run.json").read_bytes())
    del run_json["shuffle"]  # as the old trainer wrote it
    (run / "run.json").write_bytes(orjson.dumps(run_json))

    assert main(["--resume", str(run)]) == 0
    assert_same_as_straight(run, old_straight)
    assert orjson.loads((run / "run.json").read_bytes())["shuffle"] == SHUFFLE_V1  # kept for later
    # It can fail: the new rule trains another order, to other weights.
    assert orjson.loads((straight / "run.json").read_bytes())["shuffle"] == SHUFFLE_V2
    assert epoch_metrics(straight) != epoch_metrics(old_straight)
