"""Per-class metrics and the confusion matrix (trainer/monitor/class_metrics.py): the numbers equal
scikit-learn's on the same predictions, `eval` and the epoch records share them, a real run's
epochs.json holds them for its own validation predictions, and the oldest matrices go past a
budget."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import torch
from sklearn.metrics import classification_report as sk_report
from sklearn.metrics import confusion_matrix as sk_confusion

from tests.conftest import write_config, write_corpus
from trainer.inference import classification_report
from trainer.monitor.class_metrics import (
    confusion_cells,
    dense,
    epoch_class_metrics,
    trim_confusions,
)
from trainer.report import Reporter
from trainer.validation_sums import confusion_counts


def sklearn_metrics(labels: list[int], predictions: list[int], k: int) -> dict:
    """What scikit-learn says: per class (in label order) and macro-F1, zero_division=0."""
    report = sk_report(
        labels, predictions, labels=list(range(k)), output_dict=True, zero_division=0
    )
    per_class = [report[str(c)] for c in range(k)]
    return {"per_class": per_class, "macro_f1": report["macro avg"]["f1-score"]}


def random_predictions(seed: int, n: int, k: int) -> tuple[list[int], list[int]]:
    """Skewed labels and predictions; the last class is never predicted (precision 0/0)."""
    rng = random.Random(seed)
    labels = [min(int(rng.expovariate(0.7)), k - 1) for _ in range(n)]
    predictions = [y if rng.random() < 0.5 else rng.randrange(k) for y in labels]
    return labels, [p if p != k - 1 else 0 for p in predictions]


@pytest.mark.parametrize(("seed", "n", "k"), [(0, 200, 3), (1, 50, 7), (2, 1000, 12), (3, 5, 6)])
def test_epoch_metrics_equal_sklearn(seed, n, k):
    labels, predictions = random_predictions(seed, n, k)
    names = [f"class {c}" for c in range(k)]
    matrix = dense(confusion_cells(labels, predictions), k)
    assert matrix == sk_confusion(labels, predictions, labels=list(range(k))).tolist()

    ours = epoch_class_metrics(matrix, names)
    theirs = sklearn_metrics(labels, predictions, k)
    assert ours["confusion"] == matrix
    assert [c["label"] for c in ours["per_class"]] == names
    for mine, sk in zip(ours["per_class"], theirs["per_class"]):
        assert mine["precision"] == pytest.approx(sk["precision"], abs=1e-12)
        assert mine["recall"] == pytest.approx(sk["recall"], abs=1e-12)
        assert mine["f1"] == pytest.approx(sk["f1-score"], abs=1e-12)
        assert mine["support"] == sk["support"] and type(mine["support"]) is int
    assert ours["macro_f1"] == pytest.approx(theirs["macro_f1"], abs=1e-12)
    # a class never predicted: the zero_division=0 case is exercised
    assert sum(row[k - 1] for row in matrix) == 0 and ours["per_class"][-1]["precision"] == 0.0


def test_eval_and_epoch_records_share_the_numbers():
    labels, predictions = random_predictions(5, 300, 5)
    names = list("abcde")
    matrix = dense(confusion_cells(labels, predictions), 5)
    epoch = epoch_class_metrics(matrix, names)
    report = classification_report(confusion_cells(labels, predictions), names)
    assert report["confusion_matrix"]["matrix"] == matrix
    for row in epoch["per_class"]:
        assert report["per_class"][row["label"]] == {
            m: row[m] for m in ("precision", "recall", "f1", "support")
        }
    assert report["macro_avg"]["f1"] == epoch["macro_f1"]


def test_device_counts_equal_the_matrix():
    """validation_sums' in-place index_add_ on the flat K·K tensor gives the same matrix."""
    labels, predictions = random_predictions(7, 500, 9)
    counts = confusion_counts(9, torch.device("cpu"))
    y, p = torch.tensor(labels), torch.tensor(predictions)
    for part in range(0, 500, 64):  # batch by batch, as validation adds them
        counts.index_add_(0, y[part : part + 64] * 9 + p[part : part + 64], torch.ones(len(y[part : part + 64]), dtype=torch.int64))  # fmt: skip
    assert counts.view(9, 9).tolist() == dense(confusion_cells(labels, predictions), 9)


def test_oldest_matrices_go_past_the_budget_the_best_kept():
    history = [
        {"epoch": e, "confusion": [[1, 0], [0, 1]], "per_class": [{"label": "x"}]}
        for e in range(1, 6)
    ]
    trim_confusions(history, best_epoch=2, budget=12)  # 3 matrices of 4 cells
    kept = [e["epoch"] for e in history if e["confusion"] is not None]
    assert kept == [2, 4, 5]  # the best, then the newest
    assert all(e["per_class"] for e in history)  # per-class numbers always stay


def test_k_1024_keeps_the_best_and_newest_matrix():
    big = [[0] * 1024 for _ in range(1024)]
    history = [{"epoch": e, "confusion": big} for e in (1, 2, 3)]
    trim_confusions(history, best_epoch=1)
    assert [e["confusion"] is not None for e in history] == [True, False, True]


def test_console_epoch_line_has_macro_f1(capsys):
    record = {
        "epoch": 2, "epoch_time_s": 1.0, "train_loss": 0.5, "train_accuracy": 0.8,
        "val_loss": 0.4, "val_accuracy": 0.9, "macro_f1": 0.8766, "lr": 1e-4,
        "train_samples_per_sec": 100.0, "is_best": False,
    }  # fmt: skip
    Reporter().epoch(record, 3)
    assert "acc 0.900 macro-F1 0.877 |" in capsys.readouterr().err


# -------------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def run_with_validation_file(tmp_path_factory, tiny_bert_dir) -> tuple[Path, Path]:
    """A 2-epoch run of the real trainer on the tiny BERT with its own validation file."""
    from trainer.cli import main as train

    work = tmp_path_factory.mktemp("class-metrics-run")
    train_file = write_corpus(work / "train.jsonl", n=96, seed=1)
    val_file = write_corpus(work / "val.jsonl", n=45, seed=2)
    config = write_config(
        work / "c.toml",
        tiny_bert_dir,
        train_file,
        work / "run",
        data={"validation": str(val_file)},
        train={"epochs": 2, "save_every": 1},
    )
    assert train([str(config)]) == 0
    return work / "run", val_file


def test_real_run_writes_the_validation_predictions_metrics(run_with_validation_file):
    """Each epoch's record equals sklearn's on that epoch's checkpoint's own predictions for the
    validation file."""
    from trainer.data import label_ids, read_rows
    from trainer.inference import load_classifier

    run, val_file = run_with_validation_file
    epochs = orjson.loads((run / "epochs.json").read_bytes())["epochs"]
    result = orjson.loads((run / "result.json").read_bytes())
    labels_order = orjson.loads((run / "run.json").read_bytes())["data"]["labels"]
    assert result["epochs"] == epochs
    for record in epochs:
        clf = load_classifier(run / "checkpoints" / f"epoch-{record['epoch']}")
        assert clf.labels == labels_order
        rows = read_rows(val_file, clf.config.data.text_field, clf.config.data.label_field)
        truth = label_ids(rows, clf.labels)
        predictions = clf.logits([r.text for r in rows]).argmax(-1).tolist()
        k = len(clf.labels)
        assert record["confusion"] == sk_confusion(truth, predictions, labels=list(range(k))).tolist()  # fmt: skip
        sk = sklearn_metrics(truth, predictions, k)
        assert [c["label"] for c in record["per_class"]] == labels_order
        for mine, theirs in zip(record["per_class"], sk["per_class"]):
            assert mine["precision"] == pytest.approx(theirs["precision"], abs=1e-12)
            assert mine["recall"] == pytest.approx(theirs["recall"], abs=1e-12)
            assert mine["f1"] == pytest.approx(theirs["f1-score"], abs=1e-12)
            assert mine["support"] == theirs["support"]
        assert record["macro_f1"] == pytest.approx(sk["macro_f1"], abs=1e-12)
        assert sum(map(sum, record["confusion"])) == len(rows)  # each sample counted once
        diagonal = sum(record["confusion"][c][c] for c in range(k))
        assert record["val_accuracy"] == pytest.approx(diagonal / len(rows))
