"""The browser's table: one row per run, keyed by its directory. Rows are rebuilt only when the set
or order of runs changes (a sort, a filter, a new run) or a column must widen, appear, go or take
its short form; otherwise only the cells that changed are updated, so a live run ticking over does
not move the cursor. Every cell is a Text (no markup: names, model folders and grid values come
from run files).

On a sweep the screen hands over its grid keys: one column each after `status`, and the best run's
name ends in ★. The columns fit the table's width, never a horizontal scroll, by the rule of
model/column_fit.py: short headers and `started` as an age first, the model name cut in the
middle, then dates, model, duration and val loss dropped (then grid columns, from the last); name,
status, epoch and best val acc stay. Resizing fits them again.

Column widths are set here from the cells, not left to DataTable's measuring on idle, which in a
real terminal sometimes kept the header's widths (names cut to five characters) when rows arrived
just after mount."""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import DataTable

from entrenar_tui import formatting as fmt
from entrenar_tui.model.column_fit import ColumnFit, fit_columns
from entrenar_tui.model.discovery import (
    RIGHT_ALIGNED,
    SORT_KEYS,
    RunSummary,
    row_texts,
    started_age,
    table_columns,
)
from entrenar_tui.model.sweeps import BEST_MARK
from trainer.monitor.schema import LIVE_STATUSES

# name, status, model, epoch, best val acc, best val loss, started, duration
COLUMNS = tuple(SORT_KEYS)
MARK = "●"
BAD = frozenset({"failed", "crashed"})
# The short forms of the headers, where the table is narrow (the help says they are the best's).
SHORT_HEADERS = {"best val acc": "best acc", "best val loss": "best loss"}


class RunsTable(DataTable):
    COMPONENT_CLASSES: ClassVar = {
        "runs-table--mark",
        "runs-table--best",
        "runs-table--live",
        "runs-table--done",
        "runs-table--stopped",
        "runs-table--pruned",
        "runs-table--bad",
    }
    BINDINGS: ClassVar = [Binding("enter", "select_cursor", "Open")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._keys: list[str] = []
        self._cells: dict[str, list[Text]] = {}
        self._shown: list[str] = []  # column ids, "mark" first
        self._widths: list[int] = []
        self._short: frozenset[str] = frozenset()  # columns in their short form
        self._sort: tuple[str, bool] = ("name", False)
        self._last: tuple[list[RunSummary], list[str], float, tuple[str, ...]] | None = None

    def on_mount(self) -> None:
        labels = self._labels(())
        self._add_columns(labels, [label.cell_len for label in labels.values()])

    def _labels(
        self, grid: tuple[str, ...], short: frozenset[str] = frozenset()
    ) -> dict[str, Text]:
        """Column id → header: the sorted column with an arrow after its name; a column in
        `short` by its short header."""
        column, reverse = self._sort
        arrow = "▼" if reverse else "▲"
        return {
            "mark": Text(" "),
            **{
                c: Text(
                    f"{SHORT_HEADERS.get(c, label) if c in short else label}"
                    f"{arrow if c == column else ''}"
                )
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
        labels = self._labels(self._last[3] if self._last else (), self._short)
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
        columns = list(table_columns(grid))
        texts = {r.key: dict(zip(columns, row_texts(r, columns, now), strict=True)) for r in runs}
        shorter = {r.key: {"started": started_age(r.started, now)} for r in runs}
        fit = self._fit(grid, texts, shorter)
        labels = self._labels(grid, fit.short)
        cells = {}
        for run in runs:
            text = texts[run.key] | {c: t for c, t in shorter[run.key].items() if c in fit.short}
            row = [fmt.truncate(text[c], width) for c, width in fit.widths.items() if c != "mark"]
            cells[run.key] = self._row(run, list(fit.widths), row, run.key in selected)
        shown, widths = list(fit.widths), list(fit.widths.values())
        if (
            [r.key for r in runs] != self._keys
            or shown != self._shown
            or widths != self._widths
            or fit.short != self._short
        ):
            current = self.current_key()
            self.clear(columns=True)
            self._add_columns({c: labels[c] for c in shown}, widths)
            for run in runs:
                self.add_row(*cells[run.key], key=run.key)
            self._keys, self._short = [r.key for r in runs], fit.short
            if current in self._keys:
                self.move_cursor(row=self._keys.index(current), animate=False)
        else:
            for key in self._keys:
                for column, old, new in zip(shown, self._cells[key], cells[key], strict=True):
                    if old != new:
                        self.update_cell(key, column, new)
        self._cells = cells

    def _fit(
        self,
        grid: tuple[str, ...],
        texts: dict[str, dict[str, str]],
        shorter: dict[str, dict[str, str]],
    ) -> ColumnFit:
        """The columns that fit the table's width (model/column_fit.py), `mark` first, from each
        run's cell texts and their short forms (`shorter`: `started` as an age). All at full
        width before the table has a size."""
        full_labels = self._labels(grid)
        short_labels = self._labels(grid, frozenset(full_labels))

        def widest(labels: dict[str, Text], rows) -> dict[str, int]:
            width = {c: label.cell_len for c, label in labels.items()}
            for row in rows:
                for c, text in row.items():
                    width[c] = max(width[c], cell_len(text))
            return width

        full = widest(full_labels, texts.values())
        short = widest(short_labels, (texts[k] | shorter[k] for k in texts))
        return fit_columns(full, short, self._room(len(texts)), 2 * self.cell_padding)

    def _room(self, rows: int) -> int:
        """The cells the columns may take: the table's width, less a vertical scrollbar's when
        `rows` will not fit its height (the scrollbar comes after the rows, and would leave the
        columns two cells too wide: a horizontal scroll). 0 before the table has a size."""
        region = self.region.shrink(self.styles.gutter)
        if region.width <= 0:
            return 0
        if rows + (self.header_height if self.show_header else 0) > region.height:
            return region.width - self.styles.scrollbar_size_vertical
        return region.width

    def on_resize(self, _event: Resize) -> None:
        """The columns fit the new width."""
        if self._last is not None:
            self.show(*self._last)

    def _row(
        self, run: RunSummary, columns: list[str], texts: list[str], selected: bool
    ) -> list[Text]:
        row = [Text(MARK if selected else " ", style=self._style("mark"))]
        row += [Text(v, no_wrap=True) for v in texts]
        for cell, column in zip(row[1:], columns[1:], strict=True):
            if column == "status":
                cell.stylize(self._status_style(run.status))
            elif column in RIGHT_ALIGNED:
                cell.justify = "right"
            elif column == "name" and run.best and cell.plain.endswith(BEST_MARK):
                cell.stylize(self._style("best"), len(cell) - len(BEST_MARK))
        return row

    def _status_style(self, status: str):
        if status in BAD:
            part = "bad"
        elif status in LIVE_STATUSES:
            part = "live"
        elif status == "completed":
            part = "done"
        elif status == "pruned":  # a sweep's pruner stopped it: dimmed, not a warning
            part = "pruned"
        else:
            part = "stopped"
        return self._style(part)

    def _style(self, part: str):
        return self.get_component_rich_style(f"runs-table--{part}")
