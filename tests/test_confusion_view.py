"""Issue 28 in the monitor: `m` opens one epoch's confusion matrix (←/→ through the epochs, the
best marked, counts ↔ row %, live as epochs arrive, the top confusions over 30 classes, hostile
labels shown as text), the epoch table's macro-F1 column, `--once`'s macro-F1 and weakest
classes, and the comparison's per-class F1 overlay. Runs are scripted (tests/fake_run.py) with
per-class validation written as the contract defines it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from textual.widgets._footer import FooterKey

from entrenar_tui.app import MonitorApp
from entrenar_tui.model.confusion import (
    GRID_MAX_CLASSES,
    axis_labels,
    common_labels,
    confusion_of,
    weakest,
)
from entrenar_tui.output.plain import summary
from entrenar_tui.screens.compare import CompareScreen
from entrenar_tui.screens.confusion import ConfusionScreen
from entrenar_tui.screens.help import HelpScreen
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.overlay_chart import OverlayChart
from entrenar_tui.widgets.runs_table import RunsTable
from tests.conftest import patience
from tests.fake_run import FakeRun, per_class_record
from tests.helpers import run_app, run_model, until
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.schema import Files

SENTIMENT = ["negative", "neutral", "positive"]
SIZE = (80, 24)


def classified_run(run_dir: Path, labels=SENTIMENT, epochs: int = 3, total: int = 4) -> FakeRun:
    """A run that has finished `epochs` of `total` epochs, each with per-class validation
    (val losses 0.62, 0.48, 0.51, 0.44: epoch 2 is the best of the first three)."""
    run = FakeRun(run_dir, classes=labels, epochs=total).start()
    for _ in range(epochs):
        run.play_epoch()
    return run


def view(app) -> ConfusionScreen:
    assert isinstance(app.screen, ConfusionScreen), app.screen
    return app.screen


async def open_view(pilot, epochs: int) -> ConfusionScreen:
    app = pilot.app
    await until(pilot, lambda: len(run_model(app).epochs) == epochs, f"{epochs} epochs are read")
    await pilot.press("m")
    await until(pilot, lambda: isinstance(app.screen, ConfusionScreen), "m opens the view")
    await pilot.pause()
    return app.screen


def grid_text(screen: ConfusionScreen) -> str:
    return screen.grid.render().plain


def class_rows(screen: ConfusionScreen) -> list[list[str]]:
    table = screen.class_table
    return [[c.plain for c in table.get_row_at(i)] for i in range(table.row_count)]


# ------------------------------------------------------------------------------ the view


def test_m_shows_the_matrix_steps_through_epochs_marks_the_best_and_toggles_percent(tmp_path):
    run = classified_run(tmp_path / "exp")
    app = MonitorApp(run.dir)

    async def body(pilot):
        screen = await open_view(pilot, 3)
        c = screen.confusion
        assert c.epoch == 3 and c.labels == SENTIMENT
        assert c.matrix == run.confusion_at(3)  # the last epoch's, as written
        title = str(screen.title_line.render())
        assert "epoch 3 (3 of 3)" in title and "★" not in title
        assert "macro-F1 0.86" in title  # per_class_record's macro F1 of epoch 3, 2 decimals
        want = per_class_record(SENTIMENT, run.confusion_at(3))["per_class"]
        assert class_rows(screen) == [
            [p["label"], f"{p['precision']:.2f}", f"{p['recall']:.2f}", f"{p['f1']:.2f}",
             str(p["support"])]
            for p in want
        ]  # fmt: skip
        # counts: the diagonal cell of `positive` is 15 of its 16 samples
        lines = grid_text(screen).splitlines()
        assert lines[1].split() == ["neg…", "neu…", "pos…"]  # abbreviated column names
        assert lines[4].split() == ["positive", "1", "·", "15"]
        await pilot.press("left")
        assert screen.confusion.epoch == 2 and screen.confusion.matrix == run.confusion_at(2)
        assert "★ best" in str(screen.title_line.render())
        await pilot.press("p")  # row-normalized %: each row sums to (about) 100
        assert screen.percent and "% of true class" in str(screen.title_line.render())
        row = grid_text(screen).splitlines()[4].split()
        matrix = run.confusion_at(2)
        assert row == ["positive"] + [
            f"{100 * n / sum(matrix[2]):.0f}" if n else "·" for n in matrix[2]
        ]
        await pilot.press("left", "left", "left")  # stops at the first epoch
        assert screen.confusion.epoch == 1
        await pilot.press("right", "right", "right")
        assert screen.confusion.epoch == 3 and screen.index is None  # following the last again
        titles = {c.title for c in screen.system_commands()}
        assert {"Back", "Epoch before", "Epoch after", "Counts/%"} <= titles  # the palette
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MonitorScreen), "escape closes it")

    run_app(app, body, size=SIZE)


def test_the_view_follows_new_epochs_unless_stepped_back(tmp_path):
    run = classified_run(tmp_path / "exp", epochs=2, total=5)
    app = MonitorApp(run.dir)

    async def body(pilot):
        screen = await open_view(pilot, 2)
        assert screen.confusion.epoch == 2
        run.play_epoch()  # the trainer writes epoch 3 while the view is open
        await until(pilot, lambda: screen.confusion.epoch == 3, "the view shows the new epoch")
        assert screen.confusion.matrix == run.confusion_at(3)
        await pilot.press("left", "left")
        assert screen.confusion.epoch == 1
        run.play_epoch()
        await until(pilot, lambda: len(run_model(app).epochs) == 4, "epoch 4 is read")
        await until(pilot, lambda: "(1 of 4)" in str(screen.title_line.render()), "redrawn")
        assert screen.confusion.epoch == 1  # where the user stepped, not the new epoch

    run_app(app, body, size=SIZE)


def test_fifty_classes_list_the_top_confusions_not_a_grid(tmp_path):
    labels = [f"intent-{i:02d}" for i in range(50)]
    run = classified_run(tmp_path / "exp", labels=labels, epochs=1, total=2)
    app = MonitorApp(run.dir)

    async def body(pilot):
        screen = await open_view(pilot, 1)
        c = screen.confusion
        assert c.k == 50 > GRID_MAX_CLASSES and c.large
        text = grid_text(screen)
        assert "true ↓" not in text  # no grid
        assert text.splitlines()[0] == "50 classes: the top confusions (true → predicted)"
        top = c.top_pairs(1)[0]
        first = text.splitlines()[1].split()
        assert first[:4] == [labels[top.true], "→", labels[top.predicted], str(top.count)]
        counts = [p.count for p in c.top_pairs(20)]
        assert counts == sorted(counts, reverse=True) and len(counts) == 20
        involved = {labels[i] for p in c.top_pairs() for i in (p.true, p.predicted)}
        shown = [r[0] for r in class_rows(screen)]
        assert set(shown) == involved and len(shown) < 50
        assert not screen.pairs_line.display  # the grid's place lists them already

    run_app(app, body, size=SIZE)


def test_a_grid_wider_than_the_screen_scrolls_sideways_with_shift(tmp_path):
    labels = [f"c{i}" for i in range(20)]  # 20 columns of 5 cells: wider than 80 columns
    run = classified_run(tmp_path / "exp", labels=labels, epochs=1, total=2)
    app = MonitorApp(run.dir)

    async def body(pilot):
        screen = await open_view(pilot, 1)
        assert not screen.confusion.large and screen.grid_box.max_scroll_x > 0
        await pilot.press("shift+right")
        assert screen.grid_box.scroll_x == 8 and screen.confusion.epoch == 1
        await pilot.press("shift+left")
        assert screen.grid_box.scroll_x == 0

    run_app(app, body, size=SIZE)


HOSTILE = ["\x1b[31mred\x1b]0;pwned\x07", "[bold]markup[/bold]", "ok"]


def test_hostile_labels_are_shown_as_text_and_a_ragged_matrix_is_not_drawn(tmp_path):
    run = classified_run(tmp_path / "exp", labels=HOSTILE, epochs=2)
    epochs = orjson.loads((run.dir / Files.EPOCHS).read_bytes())
    epochs["epochs"][0]["confusion"] = [[1, 2, 3], [4, 5], [6, 7, 8]]  # not square
    atomic_write_json(run.dir / Files.EPOCHS, epochs)
    app = MonitorApp(run.dir)

    async def body(pilot):
        screen = await open_view(pilot, 2)
        shown = grid_text(screen) + "".join("".join(r) for r in class_rows(screen))
        shown += str(screen.pairs_line.render())
        assert "\x1b" not in shown and "\x07" not in shown
        assert "[bold]markup[/bold]"[:12] in shown  # markup printed, not interpreted
        assert class_rows(screen)[0][0].startswith("\\x1b[31m")  # escapes made visible
        await pilot.press("left")
        assert screen.confusion.matrix is None  # the reader dropped it and named it
        assert "no confusion matrix in this epoch" in str(screen.title_line.render())
        assert "confusion" in " ".join(p.text for p in run_model(app).problems())
        assert grid_text(screen) == ""
        await pilot.press("p", "right")  # nothing breaks after it
        assert screen.confusion.epoch == 2

    run_app(app, body, size=SIZE)


def test_m_is_in_the_footer_only_for_a_run_with_per_class_data_and_says_so_otherwise(tmp_path):
    older = FakeRun(tmp_path / "older").start()  # a trainer from before per-class validation
    older.play_epoch()
    app = MonitorApp(older.dir)

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).epochs) == 1, "the epoch is read")
        monitor = app.screen
        assert monitor.check_action("confusion", ()) is False  # not in the footer
        assert "Confusion matrix" not in {c.title for c in monitor.system_commands()}
        screen = await open_view(pilot, 1)  # m still answers
        assert "no confusion matrix in this epoch" in str(screen.title_line.render())
        await pilot.press("q")
        await until(pilot, lambda: app.screen is monitor, "q closes the view, not the app")

    run_app(app, body, size=SIZE)
    classified = classified_run(tmp_path / "new", epochs=1)
    app = MonitorApp(classified.dir)

    async def has_it(pilot):
        await until(pilot, lambda: len(run_model(app).epochs) == 1, "the epoch is read")
        assert app.screen.check_action("confusion", ()) is True
        assert "Confusion matrix" in {c.title for c in app.screen.system_commands()}
        shown = lambda: {k.key for k in app.screen.query(FooterKey)}  # noqa: E731
        await until(pilot, lambda: "m" in shown(), "the footer shows m")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "? opens the help")
        assert any(keys == ["m"] and "confusion matrix" in text for keys, text in app.screen.keys)

    run_app(app, has_it, size=SIZE)


# ------------------------------------------------------------------------------ the epoch table


def test_the_epoch_table_gains_macro_f1_only_for_runs_that_have_it(tmp_path):
    run = classified_run(tmp_path / "exp")
    app = MonitorApp(run.dir)

    async def body(pilot):
        table = app.screen.query_one(EpochTable)
        await until(pilot, lambda: table.row_count >= 3, "three epochs in the table")
        keys = [c.key.value for c in table.ordered_columns]
        assert keys.index("macro_f1") == keys.index("val_accuracy") + 1
        f1 = [table.get_row_at(i)[keys.index("macro_f1")].plain for i in range(3)]
        written = orjson.loads((run.dir / Files.EPOCHS).read_bytes())["epochs"]
        assert f1 == [f"{e['macro_f1']:.3f}" for e in written]
        total = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert total <= SIZE[0]  # fits 80 columns

    run_app(app, body, size=SIZE)
    older = FakeRun(tmp_path / "older").start()
    older.play_epoch()
    app = MonitorApp(older.dir)

    async def without(pilot):
        table = app.screen.query_one(EpochTable)
        await until(pilot, lambda: table.row_count >= 1, "the epoch in the table")
        assert "macro_f1" not in [c.key.value for c in table.ordered_columns]

    run_app(app, without, size=SIZE)


# ------------------------------------------------------------------------------ --once


def test_once_prints_macro_f1_and_the_weakest_classes_of_the_best_epoch(tmp_path):
    run = classified_run(tmp_path / "exp")
    out = summary(run.dir)
    rows = {p["label"]: p for p in per_class_record(SENTIMENT, run.confusion_at(2))["per_class"]}
    macro = {e: per_class_record(SENTIMENT, run.confusion_at(e))["macro_f1"] for e in (2, 3)}
    assert f"last val  epoch 3 · val loss 0.5100 · val acc 78.0% · macro-F1 {macro[3]:.3f}" in out
    assert f"best      epoch 2 · val loss 0.4800 · val acc 79.0% · macro-F1 {macro[2]:.3f}" in out
    low = sorted(rows.values(), key=lambda p: p["f1"])[:2]  # 3 classes: the 2 weakest
    assert (
        f"weakest   epoch 2 (best): {low[0]['label']} F1 {low[0]['f1']:.3f} "
        f"(n {low[0]['support']}) · {low[1]['label']} {low[1]['f1']:.3f} (n {low[1]['support']})"
    ) in out
    header = next(line for line in out.splitlines() if line.strip().startswith("ep"))
    assert header.split() == ["ep", "loss", "acc", "val", "loss", "val", "acc", "F1", "lr",
                              "time", "samples/s"]  # fmt: skip


def test_once_of_an_older_run_has_no_f1(tmp_path):
    run = FakeRun(tmp_path / "older").start()
    run.play_epoch()
    out = summary(run.dir)
    assert "macro-F1" not in out and "weakest" not in out and " F1 " not in out


def test_once_prints_hostile_labels_safely(tmp_path):
    run = classified_run(tmp_path / "exp", labels=HOSTILE, epochs=2)
    out = summary(run.dir)
    assert "weakest" in out
    assert "\x1b" not in out and "\x07" not in out


# ------------------------------------------------------------------------------ the model


def test_the_confusion_model_refuses_what_it_cannot_draw():
    labels = ["a", "b"]
    ok = confusion_of({"epoch": 1, "confusion": [[3, 1], [2, 4]]}, labels)
    assert ok.matrix == [[3, 1], [2, 4]] and ok.problem is None
    assert [(p.true, p.predicted, p.count) for p in ok.top_pairs()] == [(1, 0, 2), (0, 1, 1)]
    assert ok.row_share(1, 0) == pytest.approx(2 / 6)
    for bad, why in (
        ([[1, 2], [3]], "not square"),
        ([[1, -2], [3, 4]], "not counts"),
        ([[1, 2.5], [3, 4]], "not counts"),
        ([[1, 2, 3], [4, 5, 6], [7, 8, 9]], "3×3 for 2 labels"),
    ):
        c = confusion_of({"epoch": 1, "confusion": bad}, labels)
        assert c.matrix is None and why in c.problem
    none = confusion_of({"epoch": 1}, labels)
    assert none.matrix is None and none.problem is None and none.top_pairs() == []


def test_axis_labels_tell_columns_apart_and_weakest_orders_by_f1():
    assert axis_labels(["positive", "negative"], 4) == ["pos…", "neg…"]
    assert axis_labels(["intent-a", "intent-b", "x"], 4) is None  # same cut: the axis numbers
    record = per_class_record(["a", "b", "c"], [[5, 0, 0], [3, 2, 0], [0, 1, 4]])
    c = confusion_of(record)
    assert [s.label for s in weakest(c, 2)] == ["b", "a"]  # F1 0.57, 0.77 (c: 0.89)
    assert common_labels([["a", "b", "c"], ["c", "a"], ["a", "c", "d"]]) == ["a", "c"]


# ------------------------------------------------------------------------------ compare


def test_compare_overlays_one_class_f1_across_runs(tmp_path):
    root = tmp_path / "runs"
    runs = [
        classified_run(root / "exp-a", labels=SENTIMENT, epochs=3, total=3),
        classified_run(root / "exp-b", labels=["neutral", "positive", "mixed"], epochs=2, total=2),
    ]
    for run in runs:
        run.finish("completed")
    app = MonitorApp(root=root, probe=lambda _s: "gone", tick_interval=3600)

    async def main():
        async with app.run_test(size=(120, 34)) as pilot:
            table = app.screen.query_one(RunsTable)
            deadline = time.monotonic() + patience(10)
            while len(table.row_keys()) < 2:
                assert time.monotonic() < deadline, "the runs did not load"
                await pilot.pause(0.02)
            for run in runs:
                table.move_cursor(row=table.row_keys().index(str(run.dir)))
                await pilot.press("space")
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen), "compare opens")
            screen = app.screen
            await until(pilot, lambda: screen.loaded, "the runs are loaded")
            chart = screen.query_one("#compare-val-acc", OverlayChart)
            assert chart.title == "val acc"
            for label in ("neutral", "positive", None):  # the common classes, then val acc
                await pilot.press("f")
                if label is None:
                    assert chart.title == "val acc"
                    continue
                assert chart.title == f"F1 {label}"
                for run, series in zip(runs, chart.series, strict=True):
                    written = orjson.loads((run.dir / Files.EPOCHS).read_bytes())["epochs"]
                    want = [
                        next(c["f1"] for c in e["per_class"] if c["label"] == label)
                        for e in written
                    ]
                    assert series.values() == want and series.name == run.dir.name

    asyncio.run(main())


def test_a_matrix_over_the_bound_is_dropped_and_named_not_drawn(tmp_path):
    """A hostile epochs.json: 1025 classes (over the contract's 1024), negative counts. The model
    drops them as it reads them (model/validation.py) and names the file; the view draws none."""
    from entrenar_tui.model.run import RunModel

    model = RunModel(tmp_path)
    record = {"epoch": 1, "confusion": [[0]] * 1025, "per_class": [{"label": "x"}] * 1025}
    model.apply_epochs([record, {"epoch": 2, "confusion": [[1, -1], [0, 2]]}], 1)
    assert "epochs.json" in " ".join(p.text for p in model.problems())
    big = confusion_of(model.epochs[0], ["a", "b"])
    assert big.matrix is None and big.scores == []
    negative = confusion_of(model.epochs[1], ["a", "b"])
    assert negative.matrix is None  # dropped whole by the reader: one bad count shifts its row
