"""The README's main job, end to end: the packaged MiniLM learns the shell-safety corpus on a CPU."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter

import orjson
import pytest
import torch

from tests.conftest import REPO, run_cli
from trainer.config import load_config
from trainer.data import load_corpus
from trainer.inference import load_classifier

CONTRACT_FILES = ("run.json", "state.json", "steps.jsonl", "epochs.json", "result.json")


def test_corpus_generator_reproduces_the_committed_corpus(tmp_path):
    out = tmp_path / "corpus.jsonl"
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "make_corpus.py"), "--out", str(out)], check=True
    )
    committed = (REPO / "examples" / "data" / "shell-safety.jsonl").read_bytes()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(committed).digest()


@pytest.mark.slow
def test_quickstart_learns_well_above_the_majority_class(tmp_path):
    run = tmp_path / "quickstart"
    # 5 of the quickstart's 10 epochs keep CI's time down and still learn far past the majority class
    r = run_cli(
        str(REPO / "examples" / "quickstart.toml"),
        f"output.dir={run}",
        "train.epochs=5",
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert all((run / name).is_file() for name in CONTRACT_FILES)
    state = orjson.loads((run / "state.json").read_bytes())
    assert state["status"] == "completed"

    config = load_config(
        REPO / "examples" / "quickstart.toml", [f"output.dir={run}", "train.epochs=5"]
    )
    corpus = load_corpus(config.data, config.train.seed)
    majority = max(Counter(corpus.val_labels).values()) / len(corpus.val_labels)
    best = state["best"]
    assert best["val_accuracy"] > majority + 0.15, (best, majority)

    # checkpoints/best reproduces the trainer's validation numbers when loaded back
    clf = load_classifier(run / "checkpoints" / "best")
    logits = clf.logits(corpus.val_texts)
    accuracy = float((logits.argmax(-1) == torch.tensor(corpus.val_labels)).float().mean())
    assert accuracy == pytest.approx(best["val_accuracy"], abs=2 / len(corpus.val_labels))
