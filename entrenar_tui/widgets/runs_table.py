"""The browser's table: one row per run, keyed by its directory. Rows are rebuilt only when the set
or order of runs changes (a sort, a filter, a new run) or a column must widen, appear or go;
otherwise only the cells that changed are updated, so a live run ticking over does not move the
cursor. Every cell is a Text (no markup: names, model folders and grid values come from run files).

On a sweep the screen hands over its grid keys: one column each after `status`, and the best run's
name ends in ★. The columns then fit the table's width: date, model, duration, val loss and epoch
go first, then grid columns from the last; name, status and best val acc always stay.

Column widths are set here from the cells, not left to DataTable's measuring on idle, which in a
real terminal sometimes kept the header's widths (names cut to five characters) when rows arrived
just after mount."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import DataTable

from entrenar_tui.model.discovery import (
    GRID_ID,
    RIGHT_ALIGNED,
    SORT_KEYS,
    RunSummary,
    row_texts,
    table_columns,
)
from entrenar_tui.model.sweeps import BEST_MARK
from trainer.monitor.schema import LIVE_STATUSES

# name, status, model, epoch, best val acc, best val loss, started, duration
COLUMNS = tuple(SORT_KEYS)
MARK = "●"
BAD = frozenset({"failed", "crashed"})
# With grid columns, what gives way first when the table is too narrow (then grid columns, last
# first); name, status and best val acc are never dropped.
GIVES_WAY = ("started", "model", "duration", "best val loss", "epoch")


class RunsTable(DataTable):
    COMPONENT_CLASSES: ClassVar = {
        "runs-table--mark",
        "runs-table--best",
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
        self._shown: list[str] = []  # column ids, "mark" first
        self._widths: list[int] = []
        self._sort: tuple[str, bool] = ("name", False)
        self._last: tuple[list[RunSummary], list[str], float, tuple[str, ...]] | None = None

    def on_mount(self) -> None:
        labels = self._labels(())
        self._add_columns(labels, [label.cell_len for label in labels.values()])

    def _labels(self, grid: tuple[str, ...]) -> dict[str, Text]:
        """Column id → header: the sorted column with an arrow after its name."""
        column, reverse = self._sort
        arrow = "▼" if reverse else "▲"
        return {
            "mark": Text(" "),
            **{
                c: Text(f"{label}{arrow if c == column else ''}")
                for c, label in table_columns(grid).items()
            },
        }

    def _add_columns(self, labels: dict[str, Text], widths: list[int]) -> None:
        for (key, label), width in zip(labels.items(), widths, strict=True):
            self.add_column(label, key=key, width=width)
        self._shown, self._widths = list(labels), widths

    def set_sort(self, column: str, reverse: bool) -> None:
        """An arrow after the sorted column's name (a column may widen by it: `show` rebuilds)."""
        self._sort = (column, reverse)
        labels = self._labels(self._last[3] if self._last else ())
        for name in self._shown:
            if name in self.columns and name in labels:
                self.columns[name].label = labels[name]  # type: ignore[index]
        self.refresh()

    def row_keys(self) -> list[str]:
        """The runs' directories in the order shown."""
        return list(self._keys)

    def shown_columns(self) -> list[str]:
        """The ids of the columns shown, `mark` first (grid columns: `grid:` and the key)."""
        return list(self._shown)

    def current_key(self) -> str | None:
        if not self._keys or not 0 <= self.cursor_row < len(self._keys):
            return None
        return self._keys[self.cursor_row]

    def show(
        self, runs: list[RunSummary], selected: list[str], now: float, grid: tuple[str, ...] = ()
    ) -> None:
        self._last = (runs, selected, now, grid)
        labels = self._labels(grid)
        keys = [r.key for r in runs]
        rows = {r.key: self._row(r, list(labels), r.key in selected, now) for r in runs}
        widths = [label.cell_len for label in labels.values()]
        for row in rows.values():
            widths = [max(w, cell.cell_len) for w, cell in zip(widths, row, strict=True)]
        kept = self._fit(list(labels), widths) if grid else list(labels)
        index = [list(labels).index(c) for c in kept]
        cells = {k: [row[i] for i in index] for k, row in rows.items()}
        widths = [widths[i] for i in index]
        if keys != self._keys or kept != self._shown or widths != self._widths:
            current = self.current_key()
            self.clear(columns=True)
            self._add_columns({c: labels[c] for c in kept}, widths)
            for key in keys:
                self.add_row(*cells[key], key=key)
            self._keys = keys
            if current in keys:
                self.move_cursor(row=keys.index(current), animate=False)
        else:
            for key in keys:
                for column, old, new in zip(kept, self._cells[key], cells[key], strict=True):
                    if old != new:
                        self.update_cell(key, column, new)
        self._cells = cells

    def _fit(self, columns: list[str], widths: list[int]) -> list[str]:
        """The columns that fit the table's width, dropping GIVES_WAY, then grid columns from the
        last, while they do not. All of them before the table has a size."""
        room = self.scrollable_content_region.width
        if room <= 0:
            return columns
        width = dict(zip(columns, widths, strict=True))
        kept = list(columns)
        grid = [c for c in columns if c.startswith(GRID_ID)]
        for column in (*GIVES_WAY, *reversed(grid)):
            if sum(width[c] + 2 * self.cell_padding for c in kept) <= room:
                break
            kept.remove(column)
        return kept

    def on_resize(self, _event: Resize) -> None:
        """A sweep's columns fit the new width."""
        if self._last is not None and self._last[3]:
            self.show(*self._last)

    def _row(self, run: RunSummary, columns: list[str], selected: bool, now: float) -> list[Text]:
        texts = row_texts(run, columns[1:], now)
        row = [Text(MARK if selected else " ", style=self._style("mark"))]
        row += [Text(v, no_wrap=True) for v in texts]
        for cell, column in zip(row[1:], columns[1:], strict=True):
            if column == "status":
                cell.stylize(self._status_style(run.status))
            elif column in RIGHT_ALIGNED:
                cell.justify = "right"
            elif column == "name" and run.best:
                cell.stylize(self._style("best"), len(cell) - len(BEST_MARK))
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
