"""A full disk (ENOSPC, EDQUOT, EIO) while the trainer writes state.json or steps.jsonl: the run ends
`failed` with the reason recorded where it still can be (result.json and state.json; else one line
on stderr), exit 1, no traceback, the earlier files intact; once space is freed, `--resume` ends
exactly where an uninterrupted run ends (weights equal to the bit).

The full disk is simulated in-process: the writer's two ways of writing (the atomic whole-file
write, the appending one) fail from a chosen step on, the appending one after writing half of its
line, as a disk that fills up mid-write does. A last test (root only) fills a real tmpfs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, write_config
from tests.helpers import assert_history_is_steps_jsonl
from trainer.cli import main
from trainer.config import load_config
from trainer.monitor import writer as writer_module
from trainer.train import train

EPOCHS = 3
FULL_AT_STEP = 13  # epoch 2 of 3, mid-epoch (8 steps an epoch); the last checkpoint: best, epoch 1


def make_config(tmp: Path, model_dir: Path, data: Path) -> Path:
    return write_config(
        tmp / "c.toml", model_dir, data, tmp / "run",
        lora={"dropout": 0.1},  # the RNG state must be restored too
        data={"val_split": 0.5},
        train={"epochs": EPOCHS, "batch_size": 8, "save_every": 0},
    )  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_bert_dir, data) -> Path:
    """The uninterrupted run every resumed run is compared with."""
    tmp = tmp_path_factory.mktemp("straight")
    assert train(load_config(make_config(tmp, tiny_bert_dir, data))) == 0
    return tmp / "run"


class Disk:
    """The writer's writes, failing with `errno` once step FULL_AT_STEP is appended (`stays`: every
    write after too; else that write only, as when another job frees space right after)."""

    def __init__(self, monkeypatch, err: int, *, first: str, stays: bool):
        self.err, self.first, self.stays = err, first, stays
        self.full = False
        self.failures = 0
        atomic = writer_module.atomic_write_json
        append = getattr(writer_module, "write_all", None)

        def atomic_write_json(path, obj, **kw):
            if self._fails(obj.get("global_step") if isinstance(obj, dict) else None, "state"):
                raise OSError(self.err, os.strerror(self.err))
            return atomic(path, obj, **kw)

        def write_all(fd, data):
            step = orjson.loads(data).get("global_step")
            if self._fails(step, "steps"):
                os.write(fd, data[: len(data) // 2])  # half a line, then the disk is full
                raise OSError(self.err, os.strerror(self.err))
            return append(fd, data)

        monkeypatch.setattr(writer_module, "atomic_write_json", atomic_write_json)
        # (raising=False: a writer without write_all, as e16131a, gets only the state failures)
        monkeypatch.setattr(writer_module, "write_all", write_all, raising=False)

    def _fails(self, step, kind: str) -> bool:
        if not self.full and kind == self.first and step == FULL_AT_STEP:
            self.full = True
            self.failures += 1
            return True
        if self.full and self.stays:
            self.failures += 1
            return True
        return False


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")


def read(run: Path, name: str) -> dict:
    return orjson.loads((run / name).read_bytes())


def epoch_metrics(run: Path) -> list[dict]:
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "is_best")
    return [{k: e[k] for k in keys} for e in read(run, "epochs.json")["epochs"]]


def assert_resumes_exactly(run: Path, straight: Path) -> None:
    assert main(["--resume", str(run)]) == 0
    got, want = weights(run), weights(straight)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert epoch_metrics(run) == epoch_metrics(straight)
    lines = (run / "steps.jsonl").read_bytes().splitlines()
    steps = [orjson.loads(line)["global_step"] for line in lines]  # every line parses: none glued
    total = read(straight, "state.json")["global_step"]
    assert sorted(set(steps)) == list(range(1, total + 1))
    assert read(run, "state.json")["status"] == "completed"
    assert_history_is_steps_jsonl(run)  # the cut line dropped, the redone steps added


def one_failed_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("entrenar-train: ")]
    assert len(lines) == 1 and lines[0].startswith("entrenar-train: failed: "), err
    return lines[0]


@pytest.mark.parametrize(
    "first, err",
    [
        ("steps", errno.ENOSPC),
        ("steps", errno.EDQUOT),
        ("steps", errno.EIO),
        ("state", errno.ENOSPC),
    ],
)
def test_a_disk_that_stays_full_fails_the_run_in_one_line_and_resume_is_exact(
    tmp_path, tiny_bert_dir, data, straight, monkeypatch, capsys, first, err
):
    cfg = make_config(tmp_path, tiny_bert_dir, data)
    run = tmp_path / "run"
    disk = Disk(monkeypatch, err, first=first, stays=True)
    assert main([str(cfg)]) == 1
    line = one_failed_line(capsys.readouterr().err)
    name = "steps.jsonl" if first == "steps" else "state.json"
    assert line == (
        f"entrenar-train: failed: cannot write {name}: {os.strerror(err)} (errno {err}) "
        f"(not recorded in the run directory: cannot write result.json: {os.strerror(err)} "
        f"(errno {err}))"
    )
    assert disk.failures >= 2  # the write, then the attempt to record why
    # what was written before is intact: the last state.json, every complete line, the checkpoint
    assert read(run, "state.json")["global_step"] == FULL_AT_STEP - 1  # the last one written
    raw = (run / "steps.jsonl").read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1].splitlines()
    written = FULL_AT_STEP - 1 if first == "steps" else FULL_AT_STEP
    assert [orjson.loads(x)["global_step"] for x in complete] == list(range(1, written + 1))
    assert raw.endswith(b"\n") == (first == "state")  # the disk cut the step line in half
    assert (run / "checkpoints" / "best" / "adapter_model.safetensors").is_file()
    assert not (run / "trainer.lock").exists()

    monkeypatch.undo()  # space is freed
    assert_resumes_exactly(run, straight)


@pytest.mark.parametrize("first", ["state", "steps"])
def test_a_write_that_fails_once_is_recorded_as_the_reason_and_resume_is_exact(
    tmp_path, tiny_bert_dir, data, straight, monkeypatch, capsys, first
):
    cfg = make_config(tmp_path, tiny_bert_dir, data)
    run = tmp_path / "run"
    Disk(monkeypatch, errno.ENOSPC, first=first, stays=False)
    assert main([str(cfg)]) == 1
    name = "state.json" if first == "state" else "steps.jsonl"
    reason = f"cannot write {name}: No space left on device (errno 28)"
    assert one_failed_line(capsys.readouterr().err) == f"entrenar-train: failed: {reason}"
    state, result = read(run, "state.json"), read(run, "result.json")
    assert state["status"] == result["status"] == "failed"
    assert state["error"] == result["error"] == reason

    monkeypatch.undo()
    assert_resumes_exactly(run, straight)


# ------------------------------------------------------------------------------ a real full disk


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_real_full_tmpfs(tmp_path, tiny_bert_dir, data, straight):
    """Root only: the run directory on a small tmpfs, filled up once epoch 1's checkpoint is
    written. Whatever write meets the full disk, the run fails in one line, exit 1; freed, it
    resumes to the uninterrupted run's weights."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        cfg = write_config(
            tmp_path / "c.toml", tiny_bert_dir, data, mount / "run",
            lora={"dropout": 0.1}, data={"val_split": 0.5},
            train={"epochs": EPOCHS, "batch_size": 8, "save_every": 0},
        )  # fmt: skip
        trainer = subprocess.Popen(
            [sys.executable, "-m", "trainer", str(cfg)],
            cwd=REPO, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen = []
        for line in trainer.stderr:  # epoch 1's summary comes after its checkpoint is written
            seen.append(line)
            if line.startswith("epoch 1/3 done"):
                break
        filler = mount / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (64 << 10))
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        err = "".join(seen) + trainer.stderr.read()
        assert trainer.wait(120) == 1, err
        line = one_failed_line(err)
        assert "No space left on device" in line, line
        filler.unlink()
        run = mount / "run"
        assert main(["--resume", str(run)]) == 0
        got, want = weights(run), weights(straight)
        assert all(torch.equal(got[k], want[k]) for k in want)
        del got  # (safetensors maps the file: the mount would stay busy)
        shutil.rmtree(run)
    finally:
        if subprocess.run(["umount", str(mount)]).returncode:
            subprocess.run(["umount", "-l", str(mount)])  # busy: detach it now, free it when idle
