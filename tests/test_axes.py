"""The chart frame (charts/axes.py) and what the views put on it (charts/views.py): y labels on
the rows braille draws those values on, the x axis line with its labels and marks, epoch and
resume marks from a run's files, a lone point drawn as a marker, and the pane heights that keep
the charts readable."""

from __future__ import annotations

import math

import pytest

from entrenar_tui.charts import axes, braille
from entrenar_tui.charts.views import EpochMetric, StepMetric, epoch_chart, interpolate, step_chart
from entrenar_tui.model.run import RunModel
from entrenar_tui.screens.monitor import CHARTS_MIN, LOG_MIN, TABLE_MIN, pane_heights
from tests.fake_run import scenario
from trainer.monitor.reader import load_run

LOSS = StepMetric("loss", "train_loss")  # the train loss chart


def test_y_labels_name_the_range_and_a_nice_value_between_on_their_rows():
    y = axes.y_axis((0.249, 0.725), 3)
    assert y.labels == ["0.725", "  0.5", "0.249"] and y.width == 5
    y = axes.y_axis((0.249, 0.725), 8)
    assert [label.strip() for label in y.labels] == ["0.725", "", "0.6", "", "", "0.4", "", "0.249"]
    # each label sits on the text row where braille draws its value
    for row, label in enumerate(y.labels):
        if label.strip() and label.strip() not in ("0.725", "0.249"):
            dots = braille.dots([(float(label), float(label))], (0.249, 0.725), 4 * 8)
            assert {r for r, _, _ in dots} == {row}


def test_y_labels_in_each_series_format():
    assert [s.strip() for s in axes.y_axis((0.549, 0.967), 4, fraction=True).labels] == [
        "96.7%",
        "80%",
        "",
        "54.9%",
    ]
    assert [s.strip() for s in axes.y_axis((1e-6, 1e-4), 4).labels] == [
        "1.0e-04",
        "",
        "5.0e-05",
        "1.0e-06",
    ]


def test_log_y_labels_are_powers_of_ten():
    y = axes.y_axis((math.log10(1e-4), math.log10(10)), 6, log=True)
    assert [s.strip() for s in y.labels] == [
        "1.0e+01",
        "1.0e+00",
        "1.0e-01",
        "1.0e-02",
        "1.0e-03",
        "1.0e-04",
    ]
    # under a decade: the two ends and the power between
    y = axes.y_axis((math.log10(0.3), math.log10(2.0)), 4, log=True)
    assert [s.strip() for s in y.labels if s.strip()] == ["2", "1", "0.3"]


def test_no_range_no_labels():
    assert axes.y_axis(None, 3) == axes.YAxis(["", "", ""], 0)
    assert axes.y_axis((0.0, math.inf), 3).width == 0


def test_x_axis_line_keeps_its_ends_and_resume_marks():
    line = axes.x_axis(30, [(0, "1"), (20, "50"), (59, "147")], [(10, "epoch"), (40, "epoch")])
    text = "".join(chunk for chunk, _ in line)
    assert len(text) == 30 and text.startswith("1─") and text.endswith("─147")
    assert text[5] == "┴" and text[20] == "┴" and text[9:11] == "50"  # centred on its tick
    # a resume mark is never hidden: the label on it goes instead
    line = axes.x_axis(30, [(0, "1"), (20, "50"), (59, "147")], [(20, axes.RESUME_MARK)])
    text = "".join(chunk for chunk, _ in line)
    assert text[10] == "↻" and "50" not in text
    assert (("↻", axes.RESUME_MARK)) in line
    # crowded: the middle label gives way to both ends, which never run past the line
    text = "".join(c for c, _ in axes.x_axis(10, [(0, "1000"), (10, "1500"), (19, "2000")]))
    assert text == "1000──2000"


@pytest.fixture
def long_run(tmp_path) -> RunModel:
    """10 epochs of 20 steps, resumed after epoch 4 (global step 80), 7 steps into epoch 8."""
    model = model_of(scenario(tmp_path / "exp", "long_running").dir)
    assert len(model.history) == 147
    return model


def model_of(run_dir, epochs: int | None = None) -> RunModel:
    """A RunModel of a run directory as read once (its first `epochs` epochs if given)."""
    snapshot = load_run(run_dir)
    model = RunModel(run_dir)
    model.run, model.state, model.history = snapshot.run, snapshot.state, snapshot.history
    model.set_epochs(snapshot.epochs[:epochs], snapshot.best_epoch)
    return model


def test_step_chart_x_ticks_epoch_boundaries_and_the_resume_point(long_run):
    columns = 100
    data = step_chart(long_run, LOSS, columns)
    assert data.x_ticks[0] == (0, "1") and data.x_ticks[-1] == (columns - 1, "147")
    assert [label for _, label in data.x_ticks] == ["1", "50", "100", "147"]
    # boundaries after global steps 20, 40, ... 140: the column of the next epoch's first step
    epochs = [c for c, kind in data.x_marks if kind == axes.EPOCH_MARK]
    assert epochs == [i * columns // 147 for i in range(20, 147, 20)]  # (binned: 147 > 100)
    (resume,) = [c for c, kind in data.x_marks if kind == axes.RESUME_MARK]
    assert resume == 80 * columns // 147  # resumed at step 80: drawn at step 81


def test_x_ticks_follow_the_x_axis(long_run):
    from entrenar_tui.charts.views import ChartView

    by_epoch = step_chart(long_run, LOSS, 100, view=ChartView(x_axis="epoch"))
    assert [label for _, label in by_epoch.x_ticks] == ["0.05", "2", "4", "6", "7.35"]
    by_time = step_chart(long_run, LOSS, 100, view=ChartView(x_axis="time"))
    assert by_time.x_ticks[0] == (0, "0:00") and by_time.x_ticks[-1][1] == "1:13"


def test_a_lone_point_is_a_marker_not_a_line():
    points = interpolate([0.5], 40)
    drawn = [x for x, p in enumerate(points) if p is not None]
    assert drawn == [18, 19]  # one cell, mid-chart
    assert interpolate([None], 40) == [None] * 40


def test_one_epoch_validation_chart_is_a_marker_with_its_tick(tmp_path):
    model = model_of(scenario(tmp_path / "exp", "running").dir, epochs=1)
    model.set_epochs(model.epochs, 1)
    data = epoch_chart(model, EpochMetric("val_loss"), 40)
    assert [x for x, p in enumerate(data.points) if p is not None] == [18, 19]
    assert data.x_ticks == [(19, "1")] and data.highlight == {18, 19}


@pytest.mark.parametrize(
    ("rest", "table_rows", "log_on", "expected"),
    [
        (18, 9, False, (5, 0)),  # 80×24 running: the table shows its last rows
        (18, 9, True, (0, 4)),  # ... with the log pane: the table gives way, the log keeps 2 lines
        (19, 9, True, (3, 4)),  # 80×24 completed (no resources line): both at their minimum
        (28, 9, True, (8, 7)),  # 120×34
        (28, 3, False, (3, 0)),  # a short table takes only its rows
        (10, 9, True, (0, 0)),  # a tiny terminal: the charts keep what there is
    ],
)
def test_pane_heights_give_the_charts_their_rows_first(rest, table_rows, log_on, expected):
    table, log = pane_heights(rest, table_rows, log_on)
    assert (table, log) == expected
    assert rest - table - log >= min(rest, CHARTS_MIN)
    assert table == 0 or table >= min(TABLE_MIN, table_rows)
    assert log == 0 or log >= LOG_MIN
