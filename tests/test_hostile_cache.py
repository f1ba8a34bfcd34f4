"""Issue 24: a planted steps.cols (the binary cache of the step history earlier versions kept) can
no longer put on the screen what steps.jsonl does not hold. steps.jsonl is the only source: the
monitor's history, `--once` and the trainer's resume read it alone and leave such a file alone.

The caches planted here are ones the previous reader took: its exact header, every record's end a
line's end, and the 64 records it sampled equal to their lines; only the records between the
samples are invented."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np

from tests.conftest import patience
from tests.helpers import assert_history_is_steps_jsonl
from trainer.monitor.atomic import dumps
from trainer.monitor.reader import load_run
from trainer.monitor.writer import MonitorWriter

REPO = Path(__file__).resolve().parent.parent
LINES = 5_000
# The previous version's steps.cols: a 128-byte header, then one record per line of steps.jsonl.
RECORD = np.dtype([("end", "<i8"), ("global_step", "<i8"), *((n, "<f8") for n in ("loss", "lr", "accuracy", "t"))])  # fmt: skip
HEADER = (
    "entrenar-tui/steps.cols version 1 little-endian 48-byte records: "
    "end:i8 global_step:i8 loss:f8 lr:f8 accuracy:f8 t:f8"
).ljust(127).encode() + b"\n"
SAMPLED = np.unique(np.linspace(0, LINES - 1, 64).astype(np.int64))  # what the old reader checked


def step(g: int) -> dict:
    return {"epoch": 1, "step": g, "global_step": g, "loss": 1.0 / g, "lr": 1e-4, "grad_norm": 1.0,
            "accuracy": 0.5, "samples_per_sec": 64.0, "t": 1_700_000_000.0 + 0.25 * g}  # fmt: skip


def a_run(tmp_path: Path) -> Path:
    """A run of LINES steps written by the trainer's own writer."""
    run = tmp_path / "run"
    writer = MonitorWriter(run)
    for g in range(1, LINES + 1):
        writer.append_step(step(g))
    writer.update_state(status="running", epoch=1, total_epochs=1, step=LINES,
                        steps_per_epoch=LINES, global_step=LINES, total_steps=2 * LINES)  # fmt: skip
    writer.close()
    return run


def true_records(run: Path) -> np.ndarray:
    """Every line of steps.jsonl as a record the old reader would take."""
    lines = (run / "steps.jsonl").read_bytes().splitlines(keepends=True)
    records = np.zeros(len(lines), RECORD)
    records["end"] = np.cumsum([len(line) for line in lines])
    records["global_step"] = np.arange(1, len(lines) + 1)
    records["loss"] = 1.0 / records["global_step"]
    records["lr"], records["accuracy"] = 1e-4, 0.5
    records["t"] = 1_700_000_000.0 + 0.25 * records["global_step"]
    return records


def plant_lying_cache(run: Path) -> bytes:
    """A steps.cols whose sampled records are true and whose others claim step 10^12 and a loss of
    10^6: the old reader showed them."""
    records = true_records(run)
    invented = np.setdiff1d(np.arange(len(records)), SAMPLED)
    records["global_step"][invented] = 10**12
    records["loss"][invented] = 1e6
    planted = HEADER + records.tobytes()
    (run / "steps.cols").write_bytes(planted)
    return planted


def test_invented_records_between_the_sampled_ones_are_not_in_the_history(tmp_path):
    run = a_run(tmp_path)
    plant_lying_cache(run)
    history = load_run(run).history
    assert len(history) == LINES
    assert history.global_steps.array.max() == LINES  # not 10^12
    assert_history_is_steps_jsonl(run)


def test_once_prints_what_steps_jsonl_holds_not_the_cache(tmp_path):
    run = a_run(tmp_path)
    clean = (
        tmp_path / "clean" / "run"
    )  # the same name: the outputs differ only where the cache shows
    shutil.copytree(run, clean)
    plant_lying_cache(run)

    def once(path: Path) -> str:
        result = subprocess.run([sys.executable, "-m", "entrenar_tui", "monitor", str(path), "--once"],
                                cwd=REPO, capture_output=True, text=True, timeout=patience(60))  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.replace(str(path), "RUN")

    assert once(run) == once(clean)


def test_the_trainer_neither_trusts_nor_rewrites_a_planted_cache(tmp_path):
    """A resume appends to steps.jsonl: the planted file stays as it is (no record kept, cut or
    added for it), and the history is steps.jsonl's, the new line included."""
    run = a_run(tmp_path)
    planted = plant_lying_cache(run)
    writer = MonitorWriter(run)
    writer.append_step(step(LINES + 1))
    writer.close()
    assert (run / "steps.cols").read_bytes() == planted
    assert load_run(run).history.global_steps.array.tolist() == list(range(1, LINES + 2))
    assert_history_is_steps_jsonl(run)


def test_a_new_run_writes_no_cache(tmp_path):
    run = a_run(tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["state.json", "steps.jsonl"]


def test_a_huge_planted_cache_is_never_opened(tmp_path, monkeypatch):
    """A 960 MB steps.cols (sparse, the old header, records that rise by a line each) beside a
    5,000-line steps.jsonl: not a byte of it is read (the old reader took as many records as
    steps.jsonl's size allowed, 1 GB for a large run), and the history costs no more memory than
    without it."""
    run = a_run(tmp_path)
    clean = tmp_path / "clean"
    shutil.copytree(run, clean)
    records = np.zeros(1 << 16, RECORD)
    records["end"] = np.arange(1, len(records) + 1) * len(dumps({"global_step": 0}) + b"\n")
    with open(run / "steps.cols", "wb") as f:
        f.write(HEADER + records.tobytes())
        f.truncate(960_000_000)

    def peak(path: Path) -> int:
        tracemalloc.start()
        try:
            load_run(path)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k)
    )
    assert peak(run) < 1.5 * peak(clean) + (64 << 10)
    assert str(run / "steps.jsonl") in opened and not [
        p for p in opened if p.endswith("steps.cols")
    ]
    assert_history_is_steps_jsonl(run)
