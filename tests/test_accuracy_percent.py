"""Accuracy reads as a percentage in every place the app shows it (the run screen's epoch table,
charts and cursor readout, the browser, the comparison, `--once`), and stays a raw fraction in
what `export` writes (data for a script, not for a reader). Over scripted runs (tests/fake_run.py)
whose numbers are read back from their files."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import orjson

from entrenar_tui import formatting as fmt
from entrenar_tui.app import MonitorApp
from entrenar_tui.output.export import export
from entrenar_tui.output.plain import summary
from entrenar_tui.screens.compare import CompareScreen
from entrenar_tui.widgets.cursor_line import CursorLine
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.metric_chart import MetricChart
from entrenar_tui.widgets.overlay_chart import OverlayChart
from entrenar_tui.widgets.runs_table import RunsTable
from tests.fake_run import FakeRun, scenario
from tests.helpers import run_app, run_model, until
from trainer.monitor.schema import Files


def by_hand(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def steps(run_dir: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run_dir / Files.STEPS).read_bytes().splitlines()]


def epochs(run_dir: Path) -> list[dict]:
    return orjson.loads((run_dir / Files.EPOCHS).read_bytes())["epochs"]


def stats(chart: MetricChart) -> str:
    """A chart's numbers line, its runs of spaces as one."""
    return " ".join(str(chart.render()).split("\n")[0].split())


def test_the_exact_readout_of_an_accuracy_is_a_percentage():
    assert fmt.exact(0.40625, fmt.percent) == "40.625%"
    assert fmt.exact(0.123456789, fmt.percent) == "12.3457%"
    assert fmt.exact(0.40625) == "0.40625" and fmt.exact(1.23456789e-5, fmt.lr) == "1.23457e-05"
    assert fmt.exact(None, fmt.percent) == fmt.DASH
    assert fmt.exact(float("nan"), fmt.percent) == "NaN"


def test_the_run_screen_shows_accuracy_as_a_percentage_in_table_charts_and_cursor(tmp_path):
    run = scenario(tmp_path / "exp", "completed")
    app = MonitorApp(run.dir, probe=lambda _s: "gone", tick_interval=3600)
    written, records = epochs(run.dir), steps(run.dir)

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) == len(records), "the run loads")
        await pilot.pause()
        table = app.screen.query_one(EpochTable)
        columns = [str(c.label) for c in table.ordered_columns]
        acc, val_acc = columns.index("acc"), columns.index("val acc")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert [r[acc] for r in rows] == [by_hand(e["train_accuracy"]) for e in written]
        assert [r[val_acc] for r in rows] == [by_hand(e["val_accuracy"]) for e in written]
        train_acc = app.screen.query_one("#train-acc", MetricChart)
        val_chart = app.screen.query_one("#val-acc", MetricChart)
        assert stats(val_chart).startswith(f"val acc {by_hand(written[-1]['val_accuracy'])} ")
        assert stats(train_acc).startswith(f"train acc {by_hand(records[-1]['accuracy'])} ")
        await pilot.press("c")  # the cursor, on the last step
        await pilot.pause()
        readout, last = app.screen.query_one(CursorLine).text, records[-1]
        assert f"train acc {last['accuracy'] * 100:.6g}%" in readout, readout
        assert f"{last['accuracy']:.6g}" not in readout  # no longer the fraction
        assert f"train loss {last['loss']:.6g} · " in readout  # a loss stays a number

    run_app(app, body, size=(100, 32))


def test_the_browser_and_the_comparison_show_accuracy_as_a_percentage(tmp_path):
    root = tmp_path / "runs"
    for name, losses in (("exp-a", (0.62, 0.48)), ("exp-b", (0.58, 0.41))):
        run = FakeRun(root / name, epochs=2, steps_per_epoch=5, val_losses=losses).start()
        run.play_epoch()
        run.play_epoch()
        run.finish()
    best = {
        name: orjson.loads((root / name / Files.RESULT).read_bytes())["best"]["val_accuracy"]
        for name in ("exp-a", "exp-b")
    }
    app = MonitorApp(root=root, probe=lambda _s: "gone")

    async def main():
        async with app.run_test(size=(120, 34)) as pilot:
            table = app.screen.query_one(RunsTable)
            await until(pilot, lambda: len(table.row_keys()) == 2, "both runs are listed")
            for name in ("exp-a", "exp-b"):
                cell = table.get_cell(str(root / name), "best val acc").plain
                assert cell == by_hand(best[name])
            await pilot.press("space", "down", "space", "c")
            await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the comparison")
            await until(pilot, lambda: app.screen.loaded, "the runs are loaded")
            await pilot.pause()
            legend = app.screen.query_one("#compare-val-acc", OverlayChart).render().plain
            for name in ("exp-a", "exp-b"):
                last = epochs(root / name)[-1]["val_accuracy"]
                assert f"{name} {by_hand(last)}" in legend, legend

    asyncio.run(main())


def test_once_shows_percentages_and_export_keeps_the_raw_fractions(tmp_path):
    run = scenario(tmp_path / "exp", "completed")
    out = summary(run.dir)
    last_step, last_epoch = steps(run.dir)[-1], epochs(run.dir)[-1]
    assert f"acc {by_hand(last_step['accuracy'])}" in out
    assert f"val acc {by_hand(last_epoch['val_accuracy'])}" in out
    written = export(run.dir, "csv", tmp_path / "out")
    epochs_csv = next(p for p in written if p.name == "epochs.csv")
    with epochs_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["val_accuracy"]) == last_epoch["val_accuracy"]  # 0.8033, not 80.3%
    assert "%" not in epochs_csv.read_text()
