"""Hostile per-class fields in epochs.json and result.json (issue 28): a 10⁶-row confusion matrix,
a per_class list of 10⁶ classes, negative and non-integer counts, ragged rows, a matrix that does
not match per_class, escapes in labels. Each is dropped and named in the one problem line, in
bounded time and memory; the rest of the record stays; export carries only what the monitor
keeps."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from entrenar_tui.model.loading import load_run_model
from entrenar_tui.model.validation import clean_epochs, clean_result
from entrenar_tui.output import export
from tests.fake_run import FakeRun
from trainer.monitor.atomic import atomic_write_bytes
from trainer.monitor.safe_files import JSON_CAP
from trainer.monitor.schema import MAX_CLASSES, Files, tagged
from trainer.monitor.text import printable

ESCAPES = "\x1b[2J\x1b]8;;file:///etc/passwd\x07red\x1b[0m\u202e"


def good_record(epoch: int = 1) -> dict:
    return {
        "epoch": epoch,
        "val_loss": 0.5,
        "val_accuracy": 0.75,
        "macro_f1": 0.7,
        "per_class": [
            {"label": "a", "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2},
            {"label": "b", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
        ],
        "confusion": [[1, 1], [0, 1]],
    }


def write_epochs(tmp_path, records: list) -> FakeRun:
    """A run whose epochs.json holds `records` (written as the trainer writes it: tagged JSON)."""
    run = FakeRun(tmp_path / "exp").start()
    data = tagged(Files.EPOCHS, {"epochs": records, "best_epoch": 1})
    atomic_write_bytes(run.dir / Files.EPOCHS, orjson.dumps(data))
    return run


def problem_of(run: FakeRun) -> str:
    return load_run_model(run.dir).file_problems[f"{Files.EPOCHS} values"]


def test_a_good_record_is_kept_whole_with_no_problem(tmp_path):
    run = write_epochs(tmp_path, [good_record()])
    model = load_run_model(run.dir)
    assert f"{Files.EPOCHS} values" not in model.file_problems
    assert model.epochs == [good_record()]


def test_a_million_row_matrix_is_dropped_unread_in_bounded_memory(tmp_path):
    rows = 10**6  # each row [] (3 bytes): a 3 MB file, under the reader's cap
    run = write_epochs(tmp_path, [{**good_record(), "confusion": [[]] * rows}])
    assert (run.dir / Files.EPOCHS).stat().st_size < JSON_CAP
    tracemalloc.start()
    try:
        model = load_run_model(run.dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [epoch] = model.epochs
    assert epoch["confusion"] is None and epoch["per_class"] == good_record()["per_class"]
    assert epoch["val_loss"] == 0.5  # the rest of the record stays
    assert f"epochs[0].confusion ({rows} items, expected at most {MAX_CLASSES})" in problem_of(run)
    assert peak < 200 << 20  # the parsed file, no copy of it per check


def test_a_million_class_list_is_dropped(tmp_path):
    big = [{"label": "x", "support": 1}] * 10**6  # ~24 MB: refused by the cap, never parsed
    run = write_epochs(tmp_path, [{**good_record(), "per_class": big}])
    problems = load_run_model(run.dir).file_problems
    assert f"more than the {JSON_CAP:,} read" in problems[Files.EPOCHS]
    small = [{"label": "x"}] * (MAX_CLASSES + 1)  # under the cap: read, the list refused whole
    run = write_epochs(tmp_path / "2", [{**good_record(), "per_class": small, "confusion": None}])
    model = load_run_model(run.dir)
    assert model.epochs[0]["per_class"] is None
    assert f"({MAX_CLASSES + 1} items, expected at most {MAX_CLASSES})" in problem_of(run)


@pytest.mark.parametrize(
    ("matrix", "named"),
    [
        ([[1, -1], [0, 1]], "epochs[0].confusion[0][1] (-1, expected a count >= 0)"),
        ([[1, 0.5], [0, 1]], "epochs[0].confusion[0][1] (0.5, expected an integer)"),
        ([[1, "2"], [0, 1]], "epochs[0].confusion[0][1] ('2', expected an integer)"),
        ([[1, True], [0, 1]], "epochs[0].confusion[0][1] (True, expected an integer)"),
        ([[1, 2**63], [0, 1]], "epochs[0].confusion[0][1]"),
        ([[1, 0], [0]], "epochs[0].confusion[1] (1 items, expected 2 (a square matrix))"),
        ([[1, 0, 0], [0, 1, 0]], "epochs[0].confusion[0] (3 items, expected 2 (a square matrix))"),
        ([[1, 0], 7], "epochs[0].confusion[1] (7, expected a list)"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "epochs[0].confusion (3 rows, expected 2 (per_class))"),
        ("[[1]]", "epochs[0].confusion ('[[1]]', expected a list)"),
    ],
)
def test_a_wrong_matrix_is_dropped_whole_and_named(tmp_path, matrix, named):
    """Never a cell dropped and the row shifted: the whole matrix goes."""
    run = write_epochs(tmp_path, [{**good_record(), "confusion": matrix}, good_record(2)])
    model = load_run_model(run.dir)
    assert model.epochs[0]["confusion"] is None
    assert model.epochs[0]["per_class"] == good_record()["per_class"]
    assert model.epochs[1] == good_record(2)  # the next epoch untouched
    assert named in problem_of(run)


def test_negative_support_and_wrong_scores_are_dropped(tmp_path):
    per_class = [
        {"label": "a", "precision": "high", "recall": 0.5, "f1": 0.5, "support": -3},
        {"label": "b", "precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1.5},
    ]
    run = write_epochs(tmp_path, [{**good_record(), "per_class": per_class}])
    model = load_run_model(run.dir)
    a, b = model.epochs[0]["per_class"]
    assert a["precision"] is None and a["support"] is None and a["recall"] == 0.5
    assert b["support"] is None and b["f1"] == 2 / 3
    problem = problem_of(run)
    assert "epochs[0].per_class[0].precision ('high', expected a number)" in problem
    assert "epochs[0].per_class[0].support (-3, expected >= 0)" in problem
    assert "epochs[0].per_class[1].support (1.5, expected an integer)" in problem


def test_escapes_in_labels_never_reach_the_terminal(tmp_path):
    per_class = [{**c, "label": ESCAPES + c["label"]} for c in good_record()["per_class"]]
    run = write_epochs(tmp_path, [{**good_record(), "per_class": per_class}])
    model = load_run_model(run.dir)
    labels = [c["label"] for c in model.epochs[0]["per_class"]]
    assert labels == [printable(ESCAPES) + "a", printable(ESCAPES) + "b"]
    assert not any(ch in label for label in labels for ch in "\x1b\x07\u202e")
    assert model.epochs[0]["confusion"] == [[1, 1], [0, 1]]  # the matrix kept: K matches


def test_result_json_epochs_are_checked_the_same_way():
    bad = {**good_record(), "confusion": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}
    cleaned, problem = clean_result({"epochs": [7, bad]})
    assert cleaned["epochs"][0]["confusion"] is None
    assert "epochs[1].confusion (3 rows, expected 2 (per_class))" in problem


def test_a_1024_class_matrix_is_checked_fast_enough_to_be_read_at_all():
    """The largest matrix the contract allows is kept (the bound is 1024, not less) and checked
    whole, not one value at a time (that took seconds)."""
    k = MAX_CLASSES
    record = {"epoch": 1, "confusion": [[i % 7 for i in range(k)] for _ in range(k)]}
    [epoch], _, problem = clean_epochs([record], 1)
    assert problem is None and epoch["confusion"] is record["confusion"]


def test_export_carries_only_what_the_monitor_keeps(tmp_path):
    per_class = [{**c, "label": ESCAPES + c["label"]} for c in good_record()["per_class"]]
    records = [{**good_record(), "per_class": per_class, "confusion": [[1, -1], [0, 1]]}]
    run = write_epochs(tmp_path, records)
    runs = export.collect(run.dir)
    [epoch] = runs[0]["epochs"]
    assert epoch["confusion"] is None and epoch["macro_f1"] == 0.7
    assert epoch["per_class"][0]["label"] == printable(ESCAPES) + "a"
    out = tmp_path / "csv"
    export.write_csv(runs, out)
    assert "\x1b" not in (out / "classes.csv").read_text(encoding="utf-8")
    assert (out / "confusion.csv").read_text().splitlines() == ["run,epoch,true,predicted,count"]
