"""The runs browser on a sweep: a column per grid key, each run's grid values, the best run marked,
`c` on runs of a sweep, `--once`'s table, a hostile sweep.json, the fit at 80 columns, and a
snapshot. Sweeps are scripted (tests/fake_run.py fake_sweep: runs through the real MonitorWriter,
sweep.json through the trainer's own SweepRecord)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.model.discovery import RunIndex, find_runs, plain_table, sort_runs
from entrenar_tui.model.sweeps import headers, value_text
from entrenar_tui.screens.compare import CompareScreen
from entrenar_tui.screens.runs import RunsScreen
from entrenar_tui.widgets.runs_table import RunsTable
from tests.conftest import REPO, patience
from tests.fake_run import FakeRun, fake_sweep
from tests.helpers import browse, until
from trainer.monitor.schema import Files
from trainer.monitor.writer import MonitorWriter

AXES = {"lora.r": [4, 8], "lora.target_modules": [["query", "value"], ["query", "key", "value"]]}
GRID = ["grid:lora.r", "grid:lora.target_modules"]


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Four runs of a 2×2 grid; run 3 (the lowest val loss) is still training."""
    directory = tmp_path / "lora-sweep"
    fake_sweep(directory, AXES, ["completed", "completed", "running", "completed"])
    return directory


def sweep_doc(directory: Path) -> dict:
    return orjson.loads((directory / Files.SWEEP).read_bytes())


def run_values(run_dir: Path) -> dict:
    """run.json's sweep.values, as a script would read them."""
    return orjson.loads((run_dir / Files.RUN).read_bytes())["sweep"]["values"]


def table(app: MonitorApp) -> RunsTable:
    return app.screen.query_one(RunsTable)


def cell(app: MonitorApp, run_dir: Path, column: str) -> str:
    return table(app).get_cell(str(run_dir), column).plain


def best_by_the_files(directory: Path) -> str:
    """The completed run with the lowest best val loss, straight from each run's result.json."""
    scored = []
    for run_dir in find_runs(directory):
        result_file = run_dir / Files.RESULT
        if result_file.exists():
            result = orjson.loads(result_file.read_bytes())
            if result["status"] == "completed":
                scored.append((result["best"]["val_loss"], run_dir.name))
    return min(scored)[1]


# ------------------------------------------------------------------------------ the browser


def test_the_grid_keys_are_columns_holding_each_runs_values(sweep):
    app = MonitorApp(root=sweep)

    async def body(pilot):
        await until(pilot, lambda: GRID[0] in table(app).shown_columns(), "the grid columns")
        shown = table(app).shown_columns()
        assert shown[:5] == ["mark", "name", "status", *GRID]  # sweep.json's key order
        labels = [table(app).columns[c].label.plain for c in GRID]  # type: ignore[index]
        assert labels == ["r", "target_modules"]
        for run_dir in find_runs(sweep):
            values = run_values(run_dir)
            assert cell(app, run_dir, "grid:lora.r") == str(values["lora.r"])
            assert cell(app, run_dir, "grid:lora.target_modules") == ",".join(
                values["lora.target_modules"]
            )
        assert cell(app, sweep / "lora-sweep-2", "grid:lora.target_modules") == "query,key,value"

    browse(app, body, rows=4)


def test_the_best_run_is_the_one_sweep_json_names_and_a_running_run_is_not_yet_best(sweep):
    best = f"lora-sweep-{sweep_doc(sweep)['best_run']}"
    assert best == best_by_the_files(sweep) == "lora-sweep-2"  # run 3's loss is lower: not done
    app = MonitorApp(root=sweep)

    async def body(pilot):
        await until(pilot, lambda: cell(app, sweep / best, "name").endswith("★"), "the mark")
        marked = [
            Path(k).name for k in table(app).row_keys() if cell(app, Path(k), "name")[-1] == "★"
        ]
        assert marked == [best]
        info = str(app.screen.query_one("#runs-info").render())
        assert f"best ★ {best}" in info

    browse(app, body, rows=4)


def test_c_compares_two_runs_of_a_sweep_and_their_grid_values_differ(sweep):
    app = MonitorApp(root=sweep)

    async def body(pilot):
        rows = table(app).row_keys()
        for name in ("lora-sweep-1", "lora-sweep-4"):
            table(app).move_cursor(row=rows.index(str(sweep / name)))
            await pilot.press("space")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), "the comparison opens")
        screen = app.screen
        assert screen.dirs == [sweep / "lora-sweep-1", sweep / "lora-sweep-4"]
        await until(pilot, lambda: screen.loaded, "the two runs are loaded")
        differing = [key for key, _values in screen.differences]
        assert "lora.r" in differing and "lora.target_modules" in differing
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "back in the browser")

    browse(app, body, rows=4)


def test_o_sorts_by_a_grid_column_numbers_by_value(tmp_path):
    directory = tmp_path / "r-sweep"
    fake_sweep(directory, {"lora.r": [16, 4, 8]})
    app = MonitorApp(root=directory)

    def r_column() -> list[str]:
        return [cell(app, Path(k), "grid:lora.r") for k in table(app).row_keys()]

    async def main():
        async with app.run_test(size=(130, 30)) as pilot:
            await until(pilot, lambda: r_column() == ["16", "4", "8"], "listed by name")
            while app.screen.sort_column != "grid:lora.r":
                await pilot.press("o")
            await until(pilot, lambda: r_column() == ["4", "8", "16"], "sorted by r, as numbers")
            assert table(app).columns["grid:lora.r"].label.plain == "r▲"  # type: ignore[index]
            assert "sorted by lora.r ▲" in str(app.screen.query_one("#runs-info").render())
            await pilot.press("v")
            await until(pilot, lambda: r_column() == ["16", "8", "4"], "reversed")
            await pilot.press("o")  # the next column after the grid: model
            assert app.screen.sort_column == "model"

    asyncio.run(main())


def test_at_80_columns_name_status_and_best_val_acc_stay_and_dates_give_way(sweep):
    app = MonitorApp(root=sweep)

    async def body(pilot):
        await until(pilot, lambda: GRID[0] in table(app).shown_columns(), "the grid columns")
        shown = table(app).shown_columns()
        assert {"name", "status", "best val acc", *GRID} <= set(shown)
        assert "started" not in shown and "model" not in shown
        widths = sum(table(app).columns[c].get_render_width(table(app)) for c in shown)  # type: ignore[index]
        assert widths <= 80
        await pilot.resize_terminal(160, 24)
        await until(pilot, lambda: "started" in table(app).shown_columns(), "dates come back")

    browse(app, body, size=(80, 24), rows=4)


def test_a_sweep_found_under_the_root_gives_its_columns_and_other_runs_dashes(tmp_path):
    root = tmp_path / "runs"
    fake_sweep(root / "sweeps" / "lr", {"train.learning_rate": [1e-4, 2e-5]})
    FakeRun(root / "solo").start()
    index = RunIndex(root)
    runs = sort_runs(index.scan(), "name")
    assert index.grid == ("train.learning_rate",)
    text = plain_table(runs, grid=index.grid).splitlines()
    assert text[0].split()[:3] == ["name", "status", "learning_rate"]
    rows = {line.split()[0]: line.split() for line in text[1:]}
    assert rows["solo"][2] == "–"
    assert rows["sweeps/lr/lr-1"][2] == "0.0001" and rows["sweeps/lr/lr-2"][3] == "2e-05"
    assert [r.name for r in runs if r.best] == ["sweeps/lr/lr-2"]  # the lower val loss


# ------------------------------------------------------------------------------ --once


def once(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "entrenar_tui", "monitor", str(root), "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=patience(60),
    )


def test_once_prints_the_grid_columns_and_marks_the_best(sweep):
    done = once(sweep)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n\n")[0].splitlines()  # the table (the importances follow)
    assert lines[0].split()[:4] == ["name", "status", "r", "target_modules"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {f"lora-sweep-{i}" for i in range(1, 5)}
    assert rows["lora-sweep-2"].split()[1] == "★"
    assert [n for n, line in rows.items() if "★" in line] == ["lora-sweep-2"]
    assert rows["lora-sweep-4"].split()[1:5] == [
        "completed",
        "8",
        "query,key,value",
        "all-MiniLM-L6-v2",
    ]
    # run 3 says running, but no trainer holds its lock (a scripted run): --once works that out
    assert rows["lora-sweep-3"].split()[1] == "crashed"


def test_a_fifo_sweep_json_is_a_problem_line_never_a_hang(sweep):
    (sweep / Files.SWEEP).unlink()
    os.mkfifo(sweep / Files.SWEEP)
    started = time.monotonic()
    done = once(sweep)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < patience(30)
    assert "problem   sweep.json is a FIFO" in done.stdout
    # the runs' own run.json still give the grid columns
    assert done.stdout.splitlines()[0].split()[:4] == ["name", "status", "r", "target_modules"]


def test_a_sweep_json_of_the_wrong_types_is_a_problem_line_and_keys_fall_back(sweep):
    doc = sweep_doc(sweep)
    doc["keys"] = [7, "lora.target_modules"]
    doc["runs"] = "many"
    (sweep / Files.SWEEP).write_bytes(orjson.dumps(doc))
    done = once(sweep)
    assert done.returncode == 0, done.stderr
    problem = [line for line in done.stdout.splitlines() if line.startswith("problem")]
    assert len(problem) == 1
    assert "sweep.json: ignored values of the wrong type" in problem[0]
    assert "keys[0] (7, expected a string)" in problem[0] and "runs ('many'" in problem[0]
    header = done.stdout.splitlines()[0].split()
    assert header[:4] == ["name", "status", "target_modules", "r"]  # sweep.json's key first


def test_escape_sequences_in_grid_keys_and_values_are_shown_as_text(tmp_path):
    root = tmp_path / "evil"
    fake_sweep(root, {"lora.r": [4]})
    writer = MonitorWriter(root / "evil-1")
    run = orjson.loads((root / "evil-1" / Files.RUN).read_bytes())
    run["sweep"]["values"] = {
        "lora.\x1b]0;pwned\x07r": "\x1b[31mred\x1b[0m",
        "lora.r": [1, "\x9b2J"],
    }
    writer.write_run({k: v for k, v in run.items() if k not in ("schema", "version")})
    doc = sweep_doc(root)
    doc["keys"] = ["lora.r", "lora.\x1b]0;pwned\x07r"]
    (root / Files.SWEEP).write_bytes(orjson.dumps(doc))
    done = once(root)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x9b" not in done.stdout and "\x07" not in done.stdout
    assert "\\x1b[31mred" in done.stdout and "1,\\x9b2J" in done.stdout
    assert "\\x1b]0;pwned\\x07r" in done.stdout.splitlines()[0]


def test_a_sweep_directory_before_its_first_run_is_browsed_not_waited_on_as_a_run(tmp_path):
    directory = tmp_path / "new-sweep"
    fake_sweep(directory, {"lora.r": [4]})
    shutil.rmtree(directory / "new-sweep-1")  # sweep.json is written before the first run starts
    done = once(directory)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no run directories under")


# ------------------------------------------------------------------------------ cells and headers


def test_headers_are_the_last_part_unless_that_is_ambiguous():
    keys = ["lora.r", "train.learning_rate", "lora.dropout", "model.dropout", "x.status"]
    assert headers(keys, taken=["status"]) == {
        "lora.r": "r",
        "train.learning_rate": "learning_rate",
        "lora.dropout": "lora.dropout",
        "model.dropout": "model.dropout",
        "x.status": "x.status",
    }


def test_values_are_short_printable_cells():
    assert value_text(["query", "key", "value"]) == "query,key,value"
    assert value_text(True) == "true" and value_text(None) == "–" and value_text(2e-05) == "2e-05"
    long = value_text("a" * 40)
    assert len(long) == 16 and long.endswith("…")
    assert value_text("\x1b[2J") == "\\x1b[2J"


# ------------------------------------------------------------------------------ snapshot


def test_snapshot_browser_on_a_sweep_at_80_columns(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)
    fake_sweep(tmp_path / "lora-sweep", AXES, ["completed", "completed", "running", "completed"])
    now = (
        max(
            orjson.loads((d / Files.STATE).read_bytes())["heartbeat"]
            for d in find_runs(tmp_path / "lora-sweep")
        )
        + 2.0
    )
    app = MonitorApp(
        root=Path("lora-sweep"), clock=lambda: now, probe=lambda _s: "alive", tick_interval=3600
    )

    async def listed(pilot):
        deadline = time.monotonic() + patience(10)
        while len(table(pilot.app).row_keys()) < 4 or not pilot.app.screen.mode:
            assert time.monotonic() < deadline, "the runs did not load"
            await pilot.pause(0.02)
        await pilot.press("space", "down", "space")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=listed)
