"""The alerts that know the run trains a classifier (entrenar_tui/model/class_alerts.py), on
scripted epochs.json records as the trainer writes them (per_class, confusion, val_accuracy): a
model that predicts one class only, does no better than the majority class, or never predicts a
class is told once per streak of such epochs, by its first epoch; a learning run raises nothing;
hostile records (a matrix that is not square, a 1024-class one, escapes in labels) raise nothing
wrong and never fail."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entrenar_tui.model.alerts import AlertLog, AlertSettings, Detector, detect
from entrenar_tui.model.class_alerts import ClassAlerts, read_epoch
from entrenar_tui.model.validation import clean_epochs

LABELS = ("safe", "needs-quoting", "unsafe")


def record(epoch: int, confusion: Sequence[Sequence[int]], labels=LABELS) -> dict:
    """An epochs.json record with the per-class metrics of this confusion matrix (rows = true,
    columns = predicted), its accuracy the matrix's trace over its total, as the trainer writes."""
    k = len(confusion)
    total = sum(map(sum, confusion))
    per_class = []
    for i in range(k):
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(
            {
                "label": labels[i],
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": support,
            }
        )
    return {
        "epoch": epoch,
        "val_loss": 1.0 / epoch,
        "val_accuracy": sum(confusion[i][i] for i in range(k)) / total,
        "macro_f1": sum(c["f1"] for c in per_class) / k,
        "per_class": per_class,
        "confusion": [list(row) for row in confusion],
    }


# 60 validation samples: 30 safe, 20 needs-quoting, 10 unsafe (the majority baseline is 50%)
ALL_SAFE = [[30, 0, 0], [20, 0, 0], [10, 0, 0]]  # one class only, at the baseline
TWO_CLASSES = [[28, 2, 0], [5, 15, 0], [6, 4, 0]]  # unsafe never predicted; 71.7%
BASELINE_MIX = [[20, 6, 4], [8, 8, 4], [5, 3, 2]]  # every class predicted; 50.0% = the baseline
LEARNING = [[27, 2, 1], [3, 16, 1], [1, 1, 8]]  # 85%: every class predicted
GOOD = [[29, 1, 0], [1, 19, 0], [0, 1, 9]]


def told(epochs: list[dict], settings: AlertSettings | None = None) -> dict[str, int]:
    """Detect after each new epoch, as a watching monitor does: {key: the epoch it was told at}."""
    log, detector, first = AlertLog(), Detector(settings), {}
    for n in range(1, len(epochs) + 1):
        for alert in log.new(detector.detect([], epochs[:n], "running", 0.0)):
            first[alert.key] = n
    return first


def messages(epochs: list[dict], settings: AlertSettings | None = None) -> dict[str, str]:
    return {a.key: a.message for a in detect([], epochs, "running", 0.0, settings)}


def test_a_learning_run_raises_nothing():
    epochs = [record(1, LEARNING), record(2, LEARNING), record(3, GOOD)]
    assert told(epochs) == {}


def test_a_single_class_validation_is_told_once_per_streak_at_its_first_epoch():
    epochs = [
        record(1, ALL_SAFE),
        record(2, ALL_SAFE),
        record(3, ALL_SAFE),
        record(4, LEARNING),
        record(5, [[0, 30, 0], [0, 20, 0], [0, 10, 0]]),
    ]
    keys = {k: v for k, v in told(epochs).items() if k.startswith("single_class")}
    assert keys == {"single_class@epoch:1": 1, "single_class@epoch:5": 5}
    text = messages(epochs)
    assert text["single_class@epoch:1"] == (
        "epoch 1: the model predicted one class only, 'safe', for all 60 validation samples"
    )
    assert "'needs-quoting'" in text["single_class@epoch:5"]


def test_one_class_in_validation_or_one_class_at_all_is_no_single_class_alert():
    only_safe_present = record(1, [[30, 0, 0], [0, 0, 0], [0, 0, 0]])
    one_class_model = record(1, [[30]], labels=("safe",))
    assert told([only_safe_present]) == {}
    assert told([one_class_model]) == {}


def test_below_baseline_waits_for_baseline_epochs_then_tells_the_streak_once():
    epochs = [record(1, BASELINE_MIX), record(2, BASELINE_MIX), record(3, BASELINE_MIX)]
    assert told(epochs) == {"below_baseline@epoch:2": 2}
    assert messages(epochs)["below_baseline@epoch:2"] == (
        "epoch 2: validation accuracy 50.0% is no better than always predicting the majority "
        "class 'safe' (50.0%)"
    )
    assert told(epochs, AlertSettings(baseline_epochs=1)) == {"below_baseline@epoch:1": 1}
    assert told(epochs, AlertSettings(baseline_epochs=4)) == {}
    back_again = [*epochs, record(4, LEARNING), record(5, BASELINE_MIX)]
    assert told(back_again) == {"below_baseline@epoch:2": 2, "below_baseline@epoch:5": 5}


def test_one_right_answer_above_the_majority_is_better_than_the_baseline():
    # 31 of 60 right against a majority of 30: better, by one sample
    above = [[21, 6, 3], [8, 8, 4], [5, 3, 2]]
    assert told([record(1, above), record(2, above)]) == {}


def test_below_baseline_reads_the_supports_of_per_class_and_the_records_accuracy():
    epoch = record(2, LEARNING)
    epoch["val_accuracy"] = 0.5  # what the trainer wrote wins over the matrix
    assert set(told([record(1, LEARNING), epoch])) == {"below_baseline@epoch:2"}
    no_matrix = {k: v for k, v in record(2, BASELINE_MIX).items() if k != "confusion"}
    assert set(told([record(1, LEARNING), no_matrix])) == {"below_baseline@epoch:2"}


def test_a_class_never_predicted_is_named_after_baseline_epochs():
    epochs = [record(1, TWO_CLASSES), record(2, TWO_CLASSES), record(3, TWO_CLASSES)]
    assert told(epochs) == {"never_predicted@epoch:2": 2}
    assert messages(epochs)["never_predicted@epoch:2"] == (
        "epoch 2: the model never predicted 'unsafe' (1 of 3 classes) on validation"
    )


def test_a_single_class_epoch_is_not_also_told_as_classes_never_predicted():
    epochs = [record(1, ALL_SAFE), record(2, ALL_SAFE)]
    assert set(told(epochs)) == {"single_class@epoch:1", "below_baseline@epoch:2"}


def test_many_classes_never_predicted_name_three_and_count_the_rest():
    labels = tuple(f"c{i}" for i in range(8))
    confusion = [[5 if j == (i % 2) else 0 for j in range(8)] for i in range(8)]
    epochs = [record(e, confusion, labels) for e in (1, 2)]
    assert messages(epochs)["never_predicted@epoch:2"] == (
        "epoch 2: the model never predicted 'c2', 'c3', 'c4' and 3 more (6 of 8 classes) on "
        "validation"
    )


def test_a_class_absent_from_validation_and_never_predicted_is_right_not_an_alert():
    confusion = [[28, 2, 0], [5, 15, 0], [0, 0, 0]]  # no unsafe sample to predict
    assert told([record(1, confusion), record(2, confusion)]) == {}


def test_hostile_labels_are_printable_and_cut_in_the_message():
    labels = ("safe\x1b[2J\x07", "x" * 500, "unsafe")
    epochs = [record(e, [[28, 0, 2], [5, 0, 15], [6, 0, 4]], labels) for e in (1, 2)]
    cleaned, _, _ = clean_epochs(epochs, None)
    text = messages(cleaned)["never_predicted@epoch:2"]
    assert "\x1b" not in text and "\x07" not in text
    assert "xxxxxxxxxxxxxxx…xxxxxxxxxxxxxxxx" in text and "x" * 17 not in text
    raw = messages(epochs)["never_predicted@epoch:2"]  # unchecked records: printable here too
    assert "\x1b" not in raw


@pytest.mark.parametrize(
    "confusion",
    [
        [[30, 0], [20, 0], [10, 0]],  # not square
        [[30, 0, 0], [20, 0], [10, 0, 0]],  # a short row
        [[30, 0, 0], [20, 0, 0], "rows"],
        [[30, -1, 0], [20, 0, 0], [10, 0, 0]],  # a negative count
        [[30, 0.5, 0], [20, 0, 0], [10, 0, 0]],
        [[30, True, 0], [20, 0, 0], [10, 0, 0]],
        [[2**70, 0, 0], [20, 0, 0], [10, 0, 0]],  # past int64
        [],
        "matrix",
        None,
    ],
)
def test_a_confusion_that_is_not_a_k_by_k_count_matrix_is_read_as_none(confusion):
    epoch = record(1, ALL_SAFE)
    epoch["confusion"] = confusion
    epoch["per_class"] = None
    assert read_epoch(epoch, 1) is None
    assert told([epoch, {**epoch, "epoch": 2}]) == {}


def test_a_record_without_class_fields_is_left_alone():
    assert told([{"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.2}] * 3) == {}
    assert told([{"epoch": "one", "per_class": "x", "confusion": {"a": 1}}]) == {}


def test_a_1024_class_matrix_is_read_once_while_the_record_stays():
    k = 1024
    confusion = [[0] * k for _ in range(k)]
    for i in range(k):
        confusion[i][0] = 1  # every sample predicted as class 0
    epochs = [{"epoch": 1, "val_accuracy": 1 / k, "confusion": confusion}]
    classes = ClassAlerts()
    first = classes.epochs(epochs)
    assert first[0].labels[5] == "class 5" and int(first[0].predicted[0]) == k
    assert classes.epochs(epochs)[0] is first[0]  # the same record: not read again
    assert classes.epochs([dict(epochs[0])])[0] is not first[0]  # a new record: read again
    text = messages(epochs)["single_class@epoch:1"]
    assert (
        text
        == "epoch 1: the model predicted one class only, 'class 0', for all 1,024 validation samples"
    )


def test_each_classification_kind_can_be_turned_off():
    epochs = [record(1, ALL_SAFE), record(2, ALL_SAFE), record(3, TWO_CLASSES)]
    assert set(told(epochs)) == {
        "single_class@epoch:1",
        "below_baseline@epoch:2",
        "never_predicted@epoch:3",
    }
    off = AlertSettings(single_class=False, below_baseline=False, never_predicted=False)
    assert told(epochs, off) == {}


counts = st.integers(min_value=-2, max_value=2**64) | st.none() | st.booleans() | st.floats()
matrices = st.integers(0, 4).flatmap(
    lambda k: st.lists(st.lists(counts | st.integers(0, 9), min_size=k, max_size=k), max_size=k)
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "label": st.text(max_size=8) | st.integers(),
        "support": counts | st.integers(0, 9),
    },
)
records = st.fixed_dictionaries(
    {},
    optional={
        "epoch": st.integers(-3, 5) | st.text(max_size=3) | st.none(),
        "val_accuracy": st.floats() | st.integers(-1, 2) | st.none(),
        "per_class": st.lists(entries | st.none() | st.integers(), max_size=4)
        | st.text(max_size=3),
        "confusion": matrices | st.text(max_size=3) | st.none(),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=4))
def test_any_epoch_records_give_alerts_of_the_three_kinds_and_never_raise(epochs):
    """Records as a hostile epochs.json may hold them, checked by the monitor or not."""
    cleaned, _, _ = clean_epochs(epochs, None)
    for chosen in (epochs, cleaned):
        for alert in detect([], chosen, "running", 0.0, AlertSettings(baseline_epochs=1)):
            assert alert.kind in ("single_class", "below_baseline", "never_predicted")
            assert alert.key.startswith(f"{alert.kind}@epoch:")
            assert alert.message.isprintable()
