"""The browser's table: one row per run, keyed by its directory. Rows are rebuilt only when the set
or order of runs changes (a sort, a filter, a new run) or a column must widen; otherwise only the
cells that changed are updated, so a live run ticking over does not move the cursor. Every cell is
a Text (no markup: names and model folders come from run files).

Column widths are set here from the cells, not left to DataTable's measuring on idle, which in a
real terminal sometimes kept the header's widths (names cut to five characters) when rows arrived
just after mount."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from entrenar_tui.model.discovery import SORT_KEYS, RunSummary
from trainer.monitor.schema import LIVE_STATUSES

# name, status, model, epoch, best val acc, best val loss, started, duration
COLUMNS = tuple(SORT_KEYS)
MARK = "●"
BAD = frozenset({"failed", "crashed"})


class RunsTable(DataTable):
    COMPONENT_CLASSES: ClassVar = {
        "runs-table--mark",
        "runs-table--live",
        "runs-table--done",
        "runs-table--stopped",
        "runs-table--bad",
    }
    BINDINGS: ClassVar = [Binding("enter", "select_cursor", "Open")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: list[str] = []
        self._cells: dict[str, list[Text]] = {}
        self._labels = {"mark": Text(" "), **{name: Text(name) for name in COLUMNS}}
        self._widths: list[int] = []

    def on_mount(self) -> None:
        self._add_columns(self._widths_for({}))

    def _add_columns(self, widths: list[int]) -> None:
        for (key, label), width in zip(self._labels.items(), widths, strict=True):
            self.add_column(label, key=key, width=width)
        self._widths = widths

    def _widths_for(self, cells: dict[str, list[Text]]) -> list[int]:
        """Each column as wide as its label and its widest cell."""
        widths = [label.cell_len for label in self._labels.values()]
        for row in cells.values():
            widths = [max(w, cell.cell_len) for w, cell in zip(widths, row, strict=True)]
        return widths

    def set_sort(self, column: str, reverse: bool) -> None:
        """An arrow after the sorted column's name (a column may widen by it: `show` rebuilds)."""
        for name in COLUMNS:
            arrow = ("▼" if reverse else "▲") if name == column else ""
            self._labels[name] = self.columns[name].label = Text(f"{name}{arrow}")  # type: ignore[index]
        self.refresh()

    def row_keys(self) -> list[str]:
        """The runs' directories in the order shown."""
        return list(self._keys)

    def current_key(self) -> str | None:
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]

    def show(self, runs: list[RunSummary], selected: list[str], now: float) -> None:
        keys = [r.key for r in runs]
        cells = {r.key: self._row(r, r.key in selected, now) for r in runs}
        widths = self._widths_for(cells)
        if keys != self._keys or widths != self._widths:
            current = self.current_key()
            self.clear(columns=True)
            self._add_columns(widths)
            for key in keys:
                self.add_row(*cells[key], key=key)
            self._keys = keys
            if current in keys:
                self.move_cursor(row=keys.index(current), animate=False)
        else:
            for key in keys:
                for column, old, new in zip(
                    ("mark", *COLUMNS), self._cells[key], cells[key], strict=True
                ):
                    if old != new:
                        self.update_cell(key, column, new)
        self._cells = cells

    def _row(self, run: RunSummary, selected: bool, now: float) -> list[Text]:
        values = run.cells(now)
        row = [Text(MARK if selected else " ", style=self._style("mark"))]
        row += [Text(v, no_wrap=True) for v in values]
        row[2].stylize(self._status_style(run.status))
        for i in (4, 5, 6, 8):  # numbers align right
            row[i].justify = "right"
        return row

    def _status_style(self, status: str):
        if status in BAD:
            part = "bad"
        elif status in LIVE_STATUSES:
            part = "live"
        elif status == "completed":
            part = "done"
        else:
            part = "stopped"
        return self._style(part)

    def _style(self, part: str):
        return self.get_component_rich_style(f"runs-table--{part}")
