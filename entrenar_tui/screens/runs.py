"""The runs browser: every run under a root in a table (sortable, filtered by name, live), Enter
opens one in the monitor, space selects runs, `c` compares the selected ones. On a sweep (a
sweep.json in the root or in a folder holding runs) the table has a column per grid key and marks
each sweep's best run; `p` shows a sweep's parallel coordinates and hyperparameter importances."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from entrenar_tui import formatting as fmt
from entrenar_tui import settings as user_settings
from entrenar_tui.messages import RunsChanged
from entrenar_tui.model.discovery import (
    GRID_ID,
    RunSummary,
    name_filter,
    sort_runs,
    table_columns,
)
from entrenar_tui.model.run_alerts import RootAlerts
from entrenar_tui.screens.compare import CompareScreen
from entrenar_tui.screens.help import HELP
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.watch.root_watcher import RootWatcher
from entrenar_tui.widgets.parallel_coordinates import SweepPanel
from entrenar_tui.widgets.runs_table import RunsTable
from trainer.monitor.text import printable


def shown_path(path: Path) -> str:
    """The root relative to the working directory when it is below it (short, and the same on
    every machine), else absolute; printable (a directory's name may hold escape sequences)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return printable(path)
    return printable(path if rel.startswith("..") else rel)


SWEEP_PANEL = (
    "on a sweep, show or hide the sweep panel: the parallel coordinates of the sweep under the cursor (an axis "
    "per grid key and one for the objective, a line per run, the best ★ highlighted, runs that did "
    "not complete dimmed) and how much each key mattered (the trainer's importances, sweep.json)"
)
FOOTER_ROOM_FOR_P = 88  # the footer's width with `p Sweep` in it, `q Quit` still shown


class RunsScreen(Screen):
    BINDINGS: ClassVar = [
        # (enter on the table is the DataTable's own row selection: the same as this action)
        Binding("enter", "open", "Open", show=False, tooltip="open the run under the cursor in the monitor (`escape` comes back)"),
        Binding("space", "toggle_select", "Select", tooltip="select or unselect the run under the cursor"),
        Binding("c", "compare", "Compare", tooltip="compare the selected runs: their loss, val loss and val accuracy overlaid, one colour a run, and the config keys that differ"),
        Binding("o", "sort", "Sort", tooltip="sort by the next column (a click on a header sorts by it)"),
        # (off the footer, so that ? Help and q Quit fit 80 columns; in the help and the palette)
        Binding("v", "reverse", "Reverse", show=False, tooltip="reverse the sort"),
        # On a sweep only (check_action); on the footer where it leaves room for ? Help and q Quit
        # (FOOTER_ROOM_FOR_P columns), else the second binding: the same key, off the footer.
        Binding("p", "sweep_panel", "Sweep", tooltip=SWEEP_PANEL),
        Binding("p", "sweep_panel_narrow", "Sweep", show=False, tooltip=SWEEP_PANEL),
        Binding("slash", "filter", "Filter", key_display="/", tooltip="filter by name: a glob (`exp-*`), a word found anywhere in the name, or a regular expression after `re:`"),
        Binding("escape", "leave_filter", "Table", show=False, tooltip="leave the filter for the table"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip=HELP),
    ]  # fmt: skip
    HELP_NOTES = """\
Every run directory under the root, up to 3 levels down, each listed once (a symlink back up the
tree is not followed twice). **Status** as the monitor works it out (a run whose trainer is gone
is *crashed*); **best val acc / loss** of the best epoch; **started** in UTC. On a sweep (a
sweep.json in the root or beside its runs), a column per grid key after status, and ★ after the
name of each sweep's best run: the completed run with the lowest best val loss, as sweep.json's
`best_run` says; `o` sorts by a grid column too. Where the table is narrow, **best acc / loss** are
the best's, **started** reads as an age (`3y ago`) and the model's name is cut in the middle;
then the date, model, duration and val loss give way (then grid columns), never a number cut.

**Sweep panel** (`p`): the sweep of the run under the cursor (else the first under the root) as
parallel coordinates: an axis per grid key (numbers scaled between the lowest and highest tried,
on a log scale past two decades; other values as evenly spaced categories), the last axis the
objective (↓: lower is better); one line a run. Beside it, how much each key mattered to the
objective (sweep.json's `importance`, computed by `entrenar-train sweep` as runs end).
"""
    AUTO_FOCUS = "RunsTable"

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.runs: list[RunSummary] = []
        self.grid: tuple[str, ...] = ()  # the sweeps' grid keys: columns after status
        self.sweep_problems: tuple[str, ...] = ()
        self.plots: tuple = ()  # each sweep's panel data (model/sweeps.py SweepPlot)
        self.selected: list[str] = []  # run directories, in the order they were selected
        self.sort_column, self.reverse = "name", False
        self.pattern, self.pattern_error = "", None
        self.mode = ""
        self.watcher: RootWatcher | None = None
        self.alerts = RootAlerts()  # with the user's thresholds once the settings are loaded
        self.title = "runs"
        self.sub_title = shown_path(self.root)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        yield Input(
            placeholder="filter by name: exp-* (glob) or re:^exp-\\d+ (regex)", id="runs-filter"
        )
        yield RunsTable(id="runs")
        yield SweepPanel(id="sweep-panel")
        yield Static(id="runs-info", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RunsTable).set_sort(self.sort_column, self.reverse)
        app = self.app
        chosen, notice = user_settings.load()
        self.alerts = RootAlerts(chosen.alerts)
        if notice:
            app.notify(notice, severity="warning", timeout=8)
        self.watcher = RootWatcher(
            self.root,
            self,
            clock=app.clock,
            probe=app.injected_probe,
            poll_interval=app.poll_interval,
            force_polling=app.force_polling,
        )
        self.watcher.start()
        self.update_view()

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def on_runs_changed(self, message: RunsChanged) -> None:
        self.runs, self.mode = message.runs, message.mode or self.mode
        self.grid, self.sweep_problems = message.grid, message.problems
        if bool(self.plots) != bool(message.plots):
            self.refresh_bindings()  # `p` on the footer only where there is a sweep
        self.plots = message.plots
        if self.sort_column not in self.sort_columns():  # a grid key that is gone
            self.sort_column, self.reverse = "name", False
            self.query_one(RunsTable).set_sort(self.sort_column, self.reverse)
        present = {r.key for r in self.runs}
        self.selected = [k for k in self.selected if k in present]
        self._tell_alerts()
        self.update_view()

    def _tell_alerts(self) -> None:
        """A run under the root that crashed or ended since the browser opened: told by the app,
        unless a run screen shows that run (it tells its own)."""
        shown = {s.model.dir for s in self.app.screen_stack if isinstance(s, MonitorScreen)}
        for run, alert in self.alerts.update(self.runs, self.app.clock()):
            if run.dir not in shown:
                self.app.announce(run.name, alert)

    # ------------------------------------------------------------------------------ the view

    def sort_columns(self) -> list[str]:
        """What `o` cycles through and a header click sorts by: the table's columns in order, a
        sweep's grid columns included."""
        return list(table_columns(self.grid))

    def visible(self) -> list[RunSummary]:
        """The runs the filter lets through, in the chosen order."""
        try:
            match = name_filter(self.pattern)
            self.pattern_error = None
        except re.error as e:
            match, self.pattern_error = (lambda _name: True), f"bad regex: {e}"
        return sort_runs((r for r in self.runs if match(r.name)), self.sort_column, self.reverse)

    def update_view(self) -> None:
        shown = self.visible()
        self.query_one(RunsTable).show(shown, self.selected, self.app.clock(), self.grid)
        self.query_one("#runs-filter", Input).set_class(bool(self.pattern_error), "-invalid")
        parts = [f"{fmt.plural(len(self.runs), 'run')} under {shown_path(self.root)}"]
        best = [r.name for r in self.runs if r.best]
        if best:
            parts.append(f"best ★ {', '.join(best)}")
        if len(shown) != len(self.runs):
            parts.append(f"{len(shown)} shown")
        if self.selected:
            parts.append(f"{len(self.selected)} selected (c compares)")
        sorted_by = self.sort_column.removeprefix(GRID_ID)
        parts.append(f"sorted by {sorted_by}{' ▼' if self.reverse else ' ▲'}")
        parts.extend(self.sweep_problems)
        if self.pattern_error:
            parts.append(self.pattern_error)
        elif self.mode:
            parts.append(self.mode)
        self.query_one("#runs-info", Static).update(printable(" · ".join(parts)))
        self._show_sweep()

    def sweep_under_cursor(self):
        """The panel's sweep: the one whose folder holds the run under the cursor, else the first
        (the root's own, when the root is a sweep's directory)."""
        if not self.plots:
            return None
        key = self.query_one(RunsTable).current_key()
        folder = Path(key).parent if key else None
        return next((p for p in self.plots if p.folder == folder), self.plots[0])

    def _show_sweep(self) -> None:
        panel = self.query_one(SweepPanel)
        if panel.has_class("-shown"):
            plot = self.sweep_under_cursor()
            if plot != panel.plot:
                panel.show(plot)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_sweep()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.pattern = event.value
        self.update_view()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one(RunsTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.open_run(Path(event.row_key.value))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it; on the sorted one, reverses."""
        event.stop()
        column = str(event.column_key.value)
        if column not in self.sort_columns():
            return
        if column == self.sort_column:
            self.reverse = not self.reverse
        else:
            self.sort_column, self.reverse = column, False
        self._sorted()

    def _sorted(self) -> None:
        self.query_one(RunsTable).set_sort(self.sort_column, self.reverse)
        self.update_view()

    # ------------------------------------------------------------------------------ actions

    def action_open(self) -> None:
        key = self.query_one(RunsTable).current_key()
        if key:
            self.open_run(Path(key))

    def open_run(self, run_dir: Path) -> None:
        """Watch that run on a run screen of its own (escape comes back here)."""
        self.app.push_screen(MonitorScreen(run_dir))

    def action_toggle_select(self) -> None:
        key = self.query_one(RunsTable).current_key()
        if key is None:
            return
        if key in self.selected:
            self.selected.remove(key)
        else:
            self.selected.append(key)
        self.update_view()

    def action_compare(self) -> None:
        if len(self.selected) < 2:
            self.app.notify("select two runs or more (space) to compare them", severity="warning")
            return
        self.app.push_screen(CompareScreen([Path(k) for k in self.selected]))

    def action_sort(self) -> None:
        """Sort by the next column (name, status, model, epoch, best val acc, ...)."""
        columns = self.sort_columns()
        at = columns.index(self.sort_column) if self.sort_column in columns else -1
        self.sort_column = columns[(at + 1) % len(columns)]
        self.reverse = False
        self._sorted()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._sorted()

    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one(RunsTable).focus()

    def action_sweep_panel(self) -> None:
        panel = self.query_one(SweepPanel)
        panel.toggle_class("-shown")
        if panel.has_class("-shown"):
            panel.show(self.sweep_under_cursor())

    def action_sweep_panel_narrow(self) -> None:
        self.action_sweep_panel()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`p` only where the root holds a sweep (elsewhere the footer leaves it out); on the
        footer only where it fits beside `q Quit`."""
        if action == "sweep_panel":
            return bool(self.plots) and self.app.size.width >= FOOTER_ROOM_FOR_P
        if action == "sweep_panel_narrow":
            return bool(self.plots) and self.app.size.width < FOOTER_ROOM_FOR_P
        return True

    def on_resize(self, _event) -> None:
        self.refresh_bindings()  # `p` on the footer or off it

    def action_help(self) -> None:
        self.app.show_help()

    def system_commands(self):
        """This screen's actions for the command palette (MonitorApp.get_system_commands)."""
        yield SystemCommand(
            "Open the run", "Watch the run under the cursor (enter)", self.action_open
        )
        yield SystemCommand(
            "Select the run",
            "Mark the run under the cursor for comparison (space)",
            self.action_toggle_select,
        )
        yield SystemCommand(
            "Compare the selected runs",
            "Overlay their charts, list config differences (c)",
            self.action_compare,
        )
        yield SystemCommand(
            "Sort by the next column", "Cycle the sort column (o)", self.action_sort
        )
        if self.plots:
            yield SystemCommand(
                "Show the sweep panel",
                "Parallel coordinates and hyperparameter importance (p)",
                self.action_sweep_panel,
            )
        yield SystemCommand("Reverse the sort", "Ascending / descending (v)", self.action_reverse)
        yield SystemCommand(
            "Filter runs by name", "glob (exp-*) or re:REGEX (/)", self.action_filter
        )
