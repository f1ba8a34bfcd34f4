"""The browser's columns fit the terminal, never a horizontal scroll: the rule
(entrenar_tui.model.column_fit) against hand sums, then the real app at 80×24 and 120×34 over
scripted runs (tests/fake_run.py), reading the headers and cells it shows."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.model.column_fit import FLOOR, fit_columns
from entrenar_tui.model.discovery import RunIndex, row_texts, started_age
from entrenar_tui.widgets.runs_table import COLUMNS, RunsTable
from tests.fake_run import FakeRun, scenario
from tests.helpers import browse, until
from trainer.monitor.schema import Files

# The widths of the scripted root's columns (below), full and short, as the table measures them.
FULL = {
    "mark": 1,
    "name": 13,
    "status": 9,
    "model": 19,
    "epoch": 5,
    "best val acc": 12,
    "best val loss": 13,
    "started": 12,
    "duration": 8,
}
SHORT = {"best val acc": 8, "best val loss": 9, "started": 7}
PRIORITY = ("name", "status", "epoch", "best val acc")
NUMBERS = ("epoch", "best val acc", "best val loss", "duration")


def total(widths: dict[str, int]) -> int:
    return sum(w + 2 for w in widths.values())


# ------------------------------------------------------------------------------ the rule


def test_everything_at_full_width_when_it_fits_or_the_width_is_not_known():
    assert total(FULL) == 110
    for room in (110, 200, 0):
        fit = fit_columns(FULL, SHORT, room, 2)
        assert fit.widths == FULL and not fit.short


def test_short_forms_come_before_anything_is_cut_or_dropped():
    fit = fit_columns(FULL, SHORT, 102, 2)  # the short headers save 4 + 4 = 8: enough
    assert fit.short == {"best val acc", "best val loss"}
    assert fit.widths == {**FULL, "best val acc": 8, "best val loss": 9}
    fit = fit_columns(FULL, SHORT, 100, 2)  # then `started` as an age (12 → 7)
    assert fit.short == {"best val acc", "best val loss", "started"}
    assert list(fit.widths) == list(FULL) and fit.widths["model"] == 19


def test_at_80_the_model_is_cut_the_date_dropped_and_duration_stays():
    fit = fit_columns(FULL, SHORT, 80, 2)
    assert list(fit.widths) == [c for c in FULL if c != "started"]
    # 3 + 15 + 11 + 7 + 10 + 11 + 10 = 67 without the model: 80 - 67 - 2 = 11 cells for it
    assert fit.widths["model"] == 11 and total(fit.widths) == 80
    assert all(fit.widths[c] == FULL[c] for c in ("name", "status", "epoch", "duration"))


def test_dates_then_model_then_numbers_give_way_and_the_priority_columns_stay():
    dropped = []
    for room in range(110, 20, -1):
        fit = fit_columns(FULL, SHORT, room, 2)
        dropped += [c for c in FULL if c not in fit.widths and c not in dropped]
        # epoch goes last of all, when even the name at its floor leaves too little:
        # 3 + (12 + 2) + 11 + 7 + 10 = 45
        assert set(PRIORITY) - ({"epoch"} if room < 45 else set()) <= set(fit.widths), room
        for c in NUMBERS:  # a number is shown whole or not at all
            assert fit.widths.get(c, FULL[c]) >= min(FULL[c], SHORT.get(c, FULL[c]))
        assert fit.widths["name"] >= FLOOR["name"]
    assert dropped == ["started", "model", "duration", "best val loss", "epoch"]


def test_grid_columns_give_way_last_first_after_val_loss_and_before_epoch():
    full = {**FULL, "grid:lora.r": 1, "grid:lora.alpha": 5}
    order = []
    for room in range(total(full), 20, -1):
        kept = fit_columns(full, SHORT, room, 2).widths
        order += [c for c in full if c not in kept and c not in order]
    assert order == [
        "started",
        "model",
        "duration",
        "best val loss",
        "grid:lora.alpha",
        "grid:lora.r",
        "epoch",
    ]


def test_the_name_is_cut_to_its_floor_only_when_nothing_else_can_give_way():
    fit = fit_columns({**FULL, "name": 40}, SHORT, 60, 2)
    assert set(fit.widths) == {"mark", "name", "status", "epoch", "best val acc"}
    # 3 + 11 + 7 + 10 = 31 besides the name: 60 - 31 - 2 = 27
    assert fit.widths["name"] == 27


def test_started_as_an_age():
    now = datetime(2026, 11, 30, 12, tzinfo=timezone.utc).timestamp()
    assert started_age("2026-11-30T11:59:30+00:00", now) == "now"
    assert started_age("2026-11-30T11:55:00+00:00", now) == "5m ago"
    assert started_age("2026-11-30T10:30:00+01:00", now) == "2h ago"  # 09:30 UTC
    assert started_age("2026-11-27T12:00:00+00:00", now) == "3d ago"
    assert started_age("2026-10-01T12:00:00+00:00", now) == "8w ago"
    assert started_age("2023-11-14T22:13:20+00:00", now) == "3y ago"
    assert started_age("2026-12-01T12:00:00+00:00", now) == "now"  # another machine's clock
    assert started_age("", now) == "–"
    assert started_age("yesterday", now) == "yesterday"


# ------------------------------------------------------------------------------ the app


@pytest.fixture
def scripted(tmp_path) -> Path:
    """Three scripted runs: long model names (Qwen2-0.5B-instruct), started in 2023."""
    root = tmp_path / "runs"
    for name in ("completed", "failed", "running"):
        scenario(root / f"exp-{name}", name)
    return root


def table(app: MonitorApp) -> RunsTable:
    return app.screen.query_one(RunsTable)


def headers(app: MonitorApp) -> dict[str, str]:
    """Column id → the header it shows (the sort arrow left out)."""
    t = table(app)
    return {str(c.key.value): c.label.plain.rstrip("▲▼") for c in t.ordered_columns}


def cells(app: MonitorApp, column: str) -> list[str]:
    t = table(app)
    return [t.get_cell(k, column).plain for k in t.row_keys()]


def no_horizontal_scroll(app: MonitorApp) -> bool:
    t = table(app)
    widths = sum(c.get_render_width(t) for c in t.ordered_columns)
    return t.max_scroll_x == 0 and widths <= t.scrollable_content_region.width


def browser(root: Path) -> MonitorApp:
    """The app on a root whose trainers are all gone (no process check can flip a status)."""
    return MonitorApp(root=root, probe=lambda _s: "gone")


def test_at_80x24_the_priority_columns_and_duration_show_whole_with_no_scroll(scripted):
    app = browser(scripted)

    async def body(pilot):
        shown = headers(app)
        assert {"name", "status", "epoch", "best val acc", "duration"} <= set(shown), shown
        assert shown["duration"] == "duration" and shown["best val acc"] == "best acc"
        assert no_horizontal_scroll(app)
        assert cells(app, "name") == ["exp-completed", "exp-failed", "exp-running"]
        assert cells(app, "epoch") == ["4/4", "2/4", "3/4"]
        assert cells(app, "best val acc") == ["80.3%", "74.3%", "79.0%"]
        assert cells(app, "duration") == ["0:40", "0:13", "0:23"]
        for column in set(NUMBERS) & set(shown):
            assert not any("…" in c for c in cells(app, column)), column
        # The model's name (Qwen2-0.5B-instruct) cut in the middle to the 11 cells left for it.
        assert cells(app, "model") == ["Qwen2…truct"] * 3
        assert "started" not in shown  # the date gave way before any number

    browse(app, body, size=(80, 24), rows=3)


def test_at_120x34_every_column_shows_as_once_prints_it(scripted):
    app = browser(scripted)

    async def body(pilot):
        assert list(headers(app).values()) == [" ", *COLUMNS]
        assert no_horizontal_scroll(app)
        runs = RunIndex(scripted, probe=lambda _s: "gone").scan()
        t = table(app)
        assert t.row_keys() == [r.key for r in runs]
        for run in runs:
            shown = [t.get_cell(run.key, c).plain for c in COLUMNS]
            assert shown == row_texts(run, COLUMNS, app.clock())  # what --once prints
        assert cells(app, "model") == ["Qwen2-0.5B-instruct"] * 3
        assert cells(app, "started") == ["Nov 14  2023"] * 3

    browse(app, body, size=(120, 34), rows=3)


def test_resizing_fits_the_columns_again(scripted):
    app = browser(scripted)

    async def body(pilot):
        assert "started" in headers(app)
        await pilot.resize_terminal(100, 34)
        await until(pilot, lambda: headers(app).get("started") == "started", "an age at 100")
        assert "best loss" in headers(app).values() and no_horizontal_scroll(app)
        assert set(cells(app, "started")) == {started_age("2023-11-14T22:13:20+00:00")}
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: "started" not in headers(app), "the date gives way at 80")
        assert no_horizontal_scroll(app)
        await pilot.resize_terminal(120, 34)
        await until(pilot, lambda: headers(app).get("best val acc") == "best val acc", "at 120")
        assert cells(app, "model") == ["Qwen2-0.5B-instruct"] * 3

    browse(app, body, size=(120, 34), rows=3)


def test_more_runs_than_rows_leave_room_for_the_scrollbar_not_a_horizontal_scroll(tmp_path):
    root = tmp_path / "runs"
    for i in range(30):
        run = FakeRun(root / f"exp-{i:03d}", epochs=1, steps_per_epoch=2, pid=999_999).start()
        run.play_epoch()
        run.finish()
    assert orjson.loads((root / "exp-000" / Files.RESULT).read_bytes())["status"] == "completed"

    app = browser(root)

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 30, "all thirty runs")
        await until(pilot, lambda: table(app).show_vertical_scrollbar, "the scrollbar")
        await pilot.pause()
        assert no_horizontal_scroll(app)
        assert {"name", "status", "epoch", "best val acc", "duration"} <= set(headers(app))

    browse(app, body, size=(80, 24), rows=3)
