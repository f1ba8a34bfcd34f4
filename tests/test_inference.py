"""eval, predict and export: metrics checked by hand, and predict/export agreeing on every label."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tests.conftest import patience, run_cli, write_config, write_corpus
from trainer.cli import main
from trainer.config import load_config
from trainer.data import load_corpus
from trainer.inference import classification_report, confusion_matrix
from trainer.train import train


def test_confusion_matrix_and_report_by_hand():
    names = ["a", "b", "c"]
    labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 0, 0, 1, 1, 1, 0, 2, 2, 0]
    m = confusion_matrix(labels, preds, 3)
    assert m == [[3, 1, 0], [1, 2, 0], [1, 0, 2]]
    r = classification_report(m, names)
    assert r["accuracy"] == pytest.approx(7 / 10)
    # a: tp 3, predicted 5, support 4 → p 3/5, r 3/4, f1 2/3
    assert r["per_class"]["a"] == pytest.approx(
        {"precision": 0.6, "recall": 0.75, "f1": 2 / 3, "support": 4}
    )
    # b: tp 2, predicted 3, support 3 → p 2/3, r 2/3, f1 2/3
    assert r["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    # c: tp 2, predicted 2, support 3 → p 1, r 2/3, f1 0.8
    assert r["per_class"]["c"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert r["macro_avg"]["precision"] == pytest.approx((0.6 + 2 / 3 + 1) / 3)
    assert r["macro_avg"]["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.8) / 3)
    assert r["weighted_avg"]["recall"] == pytest.approx(0.7)  # weighted recall is accuracy
    assert r["weighted_avg"]["f1"] == pytest.approx((4 * 2 / 3 + 3 * 2 / 3 + 3 * 0.8) / 10)
    assert r["confusion_matrix"] == {"labels": names, "matrix": m}


def test_a_class_never_predicted_has_zero_precision():
    r = classification_report([[2, 0], [1, 0]], ["x", "y"])
    assert r["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("inference")
    data = write_corpus(tmp / "train.jsonl", n=160)
    config = load_config(
        write_config(tmp / "c.toml", tiny_bert_dir, data, tmp / "run", train={"epochs": 3})
    )
    assert train(config) == 0
    corpus = load_corpus(config.data, config.train.seed)
    val = tmp / "val.jsonl"
    val.write_text(
        "".join(
            json.dumps({"input": t, "label": corpus.label_names[y]}) + "\n"
            for t, y in zip(corpus.val_texts, corpus.val_labels)
        ),
        encoding="utf-8",
    )
    return tmp, Path(config.output.dir), val


def test_eval_matches_the_trainers_validation_accuracy(trained, capsys):
    tmp, run, val = trained
    out = tmp / "eval.json"
    assert (
        main(["eval", str(run / "checkpoints" / "best"), "--data", str(val), "--out", str(out)])
        == 0
    )
    result = orjson.loads(out.read_bytes())
    best = next(
        e for e in orjson.loads((run / "epochs.json").read_bytes())["epochs"] if e["is_best"]
    )
    assert result["accuracy"] == pytest.approx(best["val_accuracy"])
    assert result["n"] == sum(sum(row) for row in result["confusion_matrix"]["matrix"])
    assert set(result["per_class"]) == set(result["confusion_matrix"]["labels"])
    printed = capsys.readouterr().out
    assert f"accuracy {result['accuracy']:.4f}" in printed and "macro avg" in printed


def test_predict_and_export_agree(trained, tmp_path):
    from transformers import pipeline

    _, run, val = trained
    texts = [json.loads(line)["input"] for line in val.read_text().splitlines()[:12]]
    r = run_cli("predict", str(run / "checkpoints" / "best"), *texts)
    assert r.returncode == 0, r.stderr
    predicted = [json.loads(line) for line in r.stdout.splitlines()]
    assert [p["text"] for p in predicted] == texts
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in predicted)
    assert all(p["label"] == max(p["probabilities"], key=p["probabilities"].get) for p in predicted)

    stdin = run_cli_stdin(["predict", str(run / "checkpoints" / "best")], "\n".join(texts) + "\n")
    assert [json.loads(line)["label"] for line in stdin.splitlines()] == [
        p["label"] for p in predicted
    ]

    out = tmp_path / "exported"
    assert main(["export", str(run / "checkpoints" / "best"), str(out)]) == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    classify = pipeline("text-classification", model=str(out))
    assert [x["label"] for x in classify(texts)] == [p["label"] for p in predicted]


def run_cli_stdin(args: list[str], text: str) -> str:
    import subprocess
    import sys

    from tests.conftest import REPO

    r = subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        input=text,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=patience(300),
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_eval_of_a_folder_that_is_not_a_checkpoint(tmp_path):
    r = run_cli("eval", str(tmp_path), "--data", str(tmp_path / "x.jsonl"))
    assert (
        r.returncode == 2 and "not a checkpoint folder" in r.stderr and "Traceback" not in r.stderr
    )


def test_export_respects_the_umask_and_draws_no_progress_bars(trained, tmp_path):
    """Files are made as a plain open() makes them under the user's umask (safetensors alone
    writes 0600), and stderr is one line, not a tqdm bar."""
    import os
    import stat
    import subprocess
    import sys

    from tests.conftest import REPO

    _, run, _ = trained
    out = tmp_path / "exported"
    r = subprocess.run(
        [sys.executable, "-m", "trainer", "export", str(run / "checkpoints" / "best"), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=patience(600), preexec_fn=lambda: os.umask(0o027),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == f"exported a merged model to {out}"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}, modes
