"""The runs browser: every run under a root in a table (sortable, filtered by name, live), Enter
opens one in the monitor, space selects runs, `c` compares the selected ones."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from entrenar_tui.messages import RunsChanged
from entrenar_tui.runs import SORT_KEYS, RunSummary, name_filter, sort_runs
from entrenar_tui.runs_watcher import RootWatcher
from entrenar_tui.screens.compare import CompareScreen
from entrenar_tui.widgets.runs_table import COLUMNS, RunsTable
from trainer.monitor.text import printable

if TYPE_CHECKING:
    from entrenar_tui.app import MonitorApp


def shown_path(path: Path) -> str:
    """The root relative to the working directory when it is below it (short, and the same on
    every machine), else absolute; printable (a directory's name may hold escape sequences)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return printable(path)
    return printable(path if rel.startswith("..") else rel)


class RunsScreen(Screen):
    BINDINGS: ClassVar = [
        Binding("space", "toggle_select", "Select"),
        Binding("c", "compare", "Compare"),
        Binding("o", "sort", "Sort"),
        Binding("v", "reverse", "Reverse"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "leave_filter", "Table", show=False),
    ]
    AUTO_FOCUS = "RunsTable"

    app: MonitorApp

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.runs: list[RunSummary] = []
        self.selected: list[str] = []  # run directories, in the order they were selected
        self.sort_column, self.reverse = "name", False
        self.pattern, self.pattern_error = "", None
        self.mode = ""
        self.watcher: RootWatcher | None = None
        self.title = "runs"
        self.sub_title = shown_path(self.root)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        yield Input(
            placeholder="filter by name: exp-* (glob) or re:^exp-\\d+ (regex)", id="runs-filter"
        )
        yield RunsTable(id="runs")
        yield Static(id="runs-info", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RunsTable).set_sort(self.sort_column, self.reverse)
        app = self.app
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
        present = {r.key for r in self.runs}
        self.selected = [k for k in self.selected if k in present]
        self.update_view()

    # ------------------------------------------------------------------------------ the view

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
        self.query_one(RunsTable).show(shown, self.selected)
        self.query_one("#runs-filter", Input).set_class(bool(self.pattern_error), "-invalid")
        parts = [f"{len(self.runs)} runs under {shown_path(self.root)}"]
        if len(shown) != len(self.runs):
            parts.append(f"{len(shown)} shown")
        if self.selected:
            parts.append(f"{len(self.selected)} selected (c compares)")
        parts.append(f"sorted by {self.sort_column}{' ▼' if self.reverse else ' ▲'}")
        if self.pattern_error:
            parts.append(self.pattern_error)
        elif self.mode:
            parts.append(self.mode)
        self.query_one("#runs-info", Static).update(printable(" · ".join(parts)))

    def on_input_changed(self, event: Input.Changed) -> None:
        self.pattern = event.value
        self.update_view()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one(RunsTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.app.open_run(Path(event.row_key.value))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it; on the sorted one, reverses."""
        event.stop()
        column = str(event.column_key.value)
        if column not in SORT_KEYS:
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
            self.app.open_run(Path(key))

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
        self.sort_column = COLUMNS[(COLUMNS.index(self.sort_column) + 1) % len(COLUMNS)]
        self.reverse = False
        self._sorted()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._sorted()

    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one(RunsTable).focus()

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
        yield SystemCommand("Reverse the sort", "Ascending / descending (v)", self.action_reverse)
        yield SystemCommand(
            "Filter runs by name", "glob (exp-*) or re:REGEX (/)", self.action_filter
        )
