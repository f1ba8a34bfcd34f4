"""bench/gpu.py works before a GPU is lent: its --tiny --device cpu mode runs every contender (LoRA
and QLoRA, entrenar-train and HF Trainer + PEFT) and the correctness run, in a subprocess as a user
would, and reports figures that hang together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_bench_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = ["--tiny", "--device", "cpu", "--rounds", "1", "--batch-size", "8", "--max-length", "48"]
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), *args, "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["peak_flops"] > 0
    rows = {(row["mode"], row["contender"]): row for row in report["results"]}
    assert set(rows) == {(m, c) for m in ("lora", "qlora") for c in ("hf-best", "entrenar")}
    for row in rows.values():
        assert row["samples_per_sec"] > 0
        # ~48 tokens a sample (the docstrings, truncated to max_length 48)
        # (the two rates share one time, so their ratio is tokens a sample: 48 when every sample
        # is cut, up to float rounding)
        per_sample = row["tokens_per_sec"] / row["samples_per_sec"]
        assert 10 < per_sample <= 48 + 1e-9
        assert 0 < row["mfu"] < 1
        assert row["peak_memory_bytes"] > 50 * 2**20
        assert 0 <= row["val_accuracy"] <= 1
    check = report["correctness"]
    assert check["ok"] and check["last_loss"] < check["first_loss"]
    assert check["reloaded_accuracy"] == check["val_accuracy"]
    assert "entrenar / hf-best" in r.stdout and "correctness:" in r.stdout
