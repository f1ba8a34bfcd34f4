"""Where a run healed (issue 30, the monitor's side): run.json `recoveries` checked as untrusted
input, the ↺ marks on the step charts' x axis, the problems line, `--once`, the alerts' keys and
the JSON export. The app itself (the alert told once, the snapshot) is in test_app_alerts.py and
test_app_snapshots.py."""

from __future__ import annotations

from pathlib import Path

import orjson

from entrenar_tui.app import MonitorApp
from entrenar_tui.charts import axes
from entrenar_tui.charts.views import ChartView, step_chart
from entrenar_tui.model.alerts import AlertLog, AlertSettings, Detector
from entrenar_tui.model.discovery import RunIndex, plain_table
from entrenar_tui.model.loading import load_run_model
from entrenar_tui.model.recoveries import MAX_KEPT, clean_recoveries
from entrenar_tui.model.run import RunModel
from entrenar_tui.output.export import collect_one
from entrenar_tui.output.plain import summary
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.run_charts import STEP_METRICS
from tests.fake_run import FakeRun, scenario
from tests.helpers import run_app, run_model, run_screen, until
from trainer.monitor.schema import Files

GOOD = {
    "step": 5,
    "reason": "non-finite loss",
    "rolled_back_to": 4,
    "batches_skipped": [[1, 5]],
    "samples_skipped": [64, 65],
    "lr_scale": 0.5,
    "at": "2026-12-06T09:00:00+00:00",
}


def with_recoveries(tmp_path: Path, recoveries) -> Path:
    """A scripted run of 39 steps, `exp` under tmp_path, whose run.json then says `recoveries`
    (as a file may)."""
    run = FakeRun(tmp_path / "exp").start()
    run.play_epoch()
    for _ in range(19):
        run.train_step()
    info = orjson.loads((run.dir / Files.RUN).read_bytes())
    run.writer.write_run({**info, "recoveries": recoveries})
    return run.dir


def test_good_entries_are_kept_as_written_and_none_is_no_problem():
    assert clean_recoveries(None) == ([], None)
    assert clean_recoveries([]) == ([], None)
    kept, problem = clean_recoveries([GOOD, {**GOOD, "step": 6, "rolled_back_to": 5}])
    assert problem is None
    assert kept[0] == GOOD
    assert [(r["step"], r["rolled_back_to"]) for r in kept] == [(5, 4), (6, 5)]


def test_a_million_entries_negative_steps_and_escapes_are_bounded_and_named():
    """10⁶ entries (only the first MAX_KEPT looked at), negative steps, a step past int64, a bool
    step, a reason that is not text, escapes in a reason, junk in the optional fields: never a
    crash, each named."""
    hostile = [
        {**GOOD, "step": -3},
        {**GOOD, "rolled_back_to": 2**63},
        {**GOOD, "step": True},
        {**GOOD, "reason": 7},
        "not an object",
        {
            **GOOD,
            "reason": "loss spike\x1b]0;pwned\x07\x1b[2J\u202e",
            "batches_skipped": [[1, -2], "x", [3, 4]],
            "samples_skipped": [-1, 2, "3"],
            "lr_scale": float("nan"),
            "at": 12,
        },
    ]
    million = hostile + [GOOD] * (1_000_000 - len(hostile))
    model = RunModel("/nowhere")
    model.apply_run_info({"name": "exp", "recoveries": million})
    assert len(model.recoveries) == MAX_KEPT - 5  # of the first MAX_KEPT, five were dropped
    odd = model.recoveries[0]
    assert odd["reason"] == "loss spike\\x1b]0;pwned\\x07\\x1b[2J\\u202e"
    assert odd["batches_skipped"] == [[3, 4]] and odd["samples_skipped"] == [2]
    assert odd["lr_scale"] is None and odd["at"] is None
    problem = model.file_problems[f"{Files.RUN} recoveries"]
    assert problem == (
        "run.json: ignored recoveries [0] (step not a whole number ≥ 0), "
        "[1] (rolled_back_to not a whole number ≥ 0), [2] (step not a whole number ≥ 0) and 2 more; "
        "read the first 1,000 of 1,000,000 recoveries"
    )
    texts = [p.text for p in model.problems()]
    assert problem in texts
    assert all("\x1b" not in text for text in texts)
    assert texts[-1].startswith("recovered 995× (steps 5, 5, 5, 5 … 5): loss spike\\x1b")


def test_recoveries_of_the_wrong_type_are_named_and_the_rest_of_run_json_kept():
    model = RunModel("/nowhere")
    model.apply_run_info({"name": "exp", "recoveries": {"step": 5}})
    assert model.recoveries == [] and model.name == "exp"
    assert model.file_problems[f"{Files.RUN} recoveries"] == (
        "run.json: ignored recoveries (not a list)"
    )
    model.apply_run_info({"name": "exp", "recoveries": [GOOD]})  # fixed: the problem goes
    assert f"{Files.RUN} recoveries" not in model.file_problems and len(model.recoveries) == 1


def test_the_problems_line_lists_them_and_once_says_how_often_and_the_last_reason(tmp_path):
    run = scenario(tmp_path / "exp", "recovered")
    model = load_run_model(run.dir)
    [healed] = [p for p in model.problems() if p.kind == "recovered"]
    assert (healed.level, healed.text) == (
        "warning",
        "recovered 2× (steps 28, 33): non-finite loss, loss spike",
    )
    text = summary(run.dir)
    assert (
        "healed    recovered 2 times (steps 28, 33), last: loss spike at step 33, "
        "rolled back to step 30" in text.splitlines()
    )
    assert "recovered 2×" not in text  # said once, by the healed line
    assert "alert     recovered" not in text


def test_a_run_that_never_recovered_says_nothing_of_it(tmp_path):
    run = scenario(tmp_path / "exp", "running")
    model = load_run_model(run.dir)
    assert model.recoveries == []
    assert not [p for p in model.problems() if "recovered" in p.text]
    assert "healed" not in summary(run.dir)


def test_the_mark_is_on_the_step_after_the_one_rolled_back_to_on_every_x_axis(tmp_path):
    run = scenario(tmp_path / "exp", "recovered")
    model = load_run_model(run.dir)
    steps = list(model.history.global_steps.array)
    assert steps == list(range(1, 40))  # the steps played again replaced the first ones
    columns = 2 * 39  # a dot column a step: step s is drawn at column (s - 1) * 77 // 38
    for view in (None, ChartView(x_axis="epoch"), ChartView(x_axis="time"), ChartView(zoom=100)):
        data = step_chart(model, STEP_METRICS[0], columns, view=view)
        marks = [column for column, kind in data.x_marks if kind == axes.RECOVERY_MARK]
        assert marks == [round(25 * 77 / 38), round(30 * 77 / 38)], view  # steps 26 and 31
    line = "".join(text for text, _ in axes.x_axis(39, data.x_ticks, data.x_marks))
    assert line.count("↺") == 2


def test_a_mark_rolled_back_to_before_the_window_is_left_off(tmp_path):
    run = scenario(tmp_path / "exp", "recovered")
    model = load_run_model(run.dir)
    data = step_chart(model, STEP_METRICS[0], 40, view=ChartView(zoom=100))
    assert len([k for _, k in data.x_marks if k == axes.RECOVERY_MARK]) == 2
    model.recoveries = [{**model.recoveries[0], "rolled_back_to": 10_000}]
    data = step_chart(model, STEP_METRICS[0], 40)
    assert [k for _, k in data.x_marks if k == axes.RECOVERY_MARK] == []


def test_a_recovery_mark_is_never_hidden_by_a_label_or_an_epoch_mark():
    ticks = [(0, "0"), (20, "100"), (38, "200")]
    marks = [(20, axes.EPOCH_MARK), (20, axes.RECOVERY_MARK), (0, axes.RECOVERY_MARK)]
    runs = axes.x_axis(20, ticks, marks)
    line = "".join(text for text, _ in runs)
    assert line[10] == "↺" and line[0] == "↺"
    assert "100" not in line  # the label that would cover the mark gives way
    assert ("↺", axes.RECOVERY_MARK) in runs


def test_each_recovery_is_one_alert_told_once_with_what_was_done():
    detector, log = Detector(), AlertLog()
    first = [GOOD]
    [alert] = [a for a in detector.detect([], [], "running", 0.0, recoveries=first)]
    assert alert.kind == "recovered" and alert.key == "recovered@step:5#0"
    assert alert.message == (
        "recovered from non-finite loss at step 5: rolled back to step 4, skipped 1 batch, "
        "learning rate ×0.5"
    )
    assert log.new([alert]) == [alert]
    both = [*first, {**GOOD, "step": 9, "reason": "loss spike", "lr_scale": 0.25}]
    again = detector.detect([], [], "running", 0.0, recoveries=both)
    assert [a.key for a in log.new(again)] == ["recovered@step:9#1"]
    off = Detector(AlertSettings(recovered=False))
    assert off.detect([], [], "running", 0.0, recoveries=both) == []


def test_the_json_export_carries_the_checked_recoveries(tmp_path):
    run_dir = with_recoveries(tmp_path, [GOOD, {**GOOD, "step": -1}])
    record = collect_one(run_dir, "exp")
    assert record["recoveries"] == [GOOD]
    assert len(record["steps"]) == 39
    (run_dir / Files.RUN).write_text("{not json", encoding="utf-8")
    assert collect_one(run_dir, "exp")["recoveries"] == []  # the metrics still export


def test_a_hostile_run_json_on_disk_opens_bounded_named_and_quiet(tmp_path):
    """The real app on a run.json whose recoveries hold an escape-laden reason, a negative step
    and a million numbers: it opens, draws the one good ↺, names the rest on one problem line
    (the reader's 16 MB bound holds the file), tells nothing (history), and --once says the same."""
    hostile = [
        {**GOOD, "step": 28, "rolled_back_to": 25, "reason": "spike\x1b[31m\x07\u202e"},
        {**GOOD, "step": -28, "rolled_back_to": -1},
        *([-1] * 1_000_000),
    ]
    run_dir = with_recoveries(tmp_path, hostile)
    app = MonitorApp(run_dir, probe=lambda _s: "alive", tick_interval=3600)
    toasts: list[str] = []
    app.notify = lambda message, **_kw: toasts.append(message)  # type: ignore[method-assign]
    named = (
        "run.json: ignored recoveries [1] (step not a whole number ≥ 0), [2] (not an object), "
        "[3] (not an object) and 996 more; read the first 1,000 of 1,000,002 recoveries"
    )

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) == 39, "the run loads")
        await until(pilot, lambda: run_screen(app).alerts.primed, "the first read is in")
        model = run_model(app)
        assert [r["step"] for r in model.recoveries] == [28]
        texts = [p.text for p in model.problems()]
        assert named in texts
        assert "recovered 1× (step 28): spike\\x1b[31m\\x07\\u202e" in texts
        line = str(app.screen.query_one(ProblemsLine).render())
        assert "\x1b" not in line and "\u202e" not in line
        chart = app.screen.query_one("#train-loss")
        await until(pilot, lambda: chart.last_data and chart.last_data.x_marks, "the chart draws")
        marks = [k for _, k in chart.last_data.x_marks if k == axes.RECOVERY_MARK]
        assert marks == [axes.RECOVERY_MARK]
        assert toasts == []

    run_app(app, body)
    text = summary(run_dir)
    assert named in text and "\x1b" not in text
    assert "healed    recovered 1 time (step 28), last: spike\\x1b[31m" in text


def test_the_runs_browser_marks_a_healed_run_and_names_a_bad_list(tmp_path):
    """The browser's status cell says ↺N after a healed run's status (the same in its --once
    table); a run.json whose recoveries are broken has that in its problem column."""
    scenario(tmp_path / "root" / "healed", "recovered")
    scenario(tmp_path / "root" / "plain", "running")
    with_recoveries(tmp_path / "root", [{**GOOD, "reason": None}]).rename(tmp_path / "root" / "bad")
    runs = {r.name: r for r in RunIndex(tmp_path / "root", probe=lambda _s: "alive").scan()}
    assert runs["healed"].recoveries == 2 and runs["healed"].problem is None
    assert runs["plain"].recoveries == 0 and runs["bad"].recoveries == 0
    assert runs["bad"].problem == "run.json: ignored recoveries [0] (reason not text)"
    table = plain_table(list(runs.values()))
    [healed] = [line for line in table.splitlines() if line.startswith("healed ")]
    assert healed.split()[1:3] == ["running", "↺2"]
    [plain] = [line for line in table.splitlines() if line.startswith("plain ")]
    assert "↺" not in plain
