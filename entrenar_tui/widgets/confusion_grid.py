"""One epoch's confusion matrix as a heat-shaded grid: rows the true class, columns the predicted,
class names abbreviated on both axes, each cell's background shaded by its count (against the
matrix's largest) or by its share of the row (row-normalized %). The diagonal (right) shades in
one hue, the confusions in another, so a weak class shows at a glance.

Above GRID_MAX_CLASSES classes no grid is drawn (a 1000×1000 grid is no view): the most-confused
pairs are listed instead, each shaded the same way. Labels come printable (model/confusion.py);
everything is drawn as Text, never markup."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from entrenar_tui.model.confusion import Confusion, abbreviate, axis_labels

ROW_LABEL_MAX = 12  # cells for a row's class name
CELL_MIN = 4  # a column is at least this wide, so its header holds a short name
LIST_PAIRS = 20  # pairs listed in the large-K mode
FAINTEST = 0.18  # the shade of the smallest non-zero cell: any confusion is visible


def heat(fraction: float) -> float:
    """How strongly a cell is shaded (0 none) for its fraction of the scale."""
    return 0.0 if fraction <= 0 else FAINTEST + (1 - FAINTEST) * min(fraction, 1.0)


class ConfusionGrid(Widget):
    COMPONENT_CLASSES: ClassVar = {
        "confusion-grid--hit",
        "confusion-grid--miss",
        "confusion-grid--axis",
    }
    DEFAULT_CSS = "ConfusionGrid { width: auto; height: auto; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.confusion: Confusion | None = None
        self.percent = False  # row-normalized % instead of counts

    def show(self, confusion: Confusion | None, percent: bool) -> None:
        """Sized to the whole grid (its box scrolls where the screen is smaller), never wrapped."""
        self.confusion, self.percent = confusion, percent
        lines = self.render().split()
        self.styles.width = max((line.cell_len for line in lines), default=0)
        self.styles.height = len(lines) if any(line.plain for line in lines) else 0
        self.refresh(layout=True)

    # ------------------------------------------------------------------------ drawing

    def _cell_style(self, diagonal: bool, fraction: float) -> Style:
        strength = heat(fraction)
        if not strength:
            return self.get_component_rich_style("confusion-grid--axis")
        name = "confusion-grid--hit" if diagonal else "confusion-grid--miss"
        hue = self.get_component_styles(name).background
        base = self.background_colors[1]
        shade: Color = base.blend(hue, strength)
        text = shade.get_contrast_text(1.0)
        return Style(color=text.rich_color, bgcolor=shade.rich_color)

    def _value(self, row: int, column: int) -> tuple[str, float]:
        """A cell's text and its fraction of the shading scale."""
        c = self.confusion
        count = c.matrix[row][column]
        share = c.row_share(row, column)
        if self.percent:
            if share is None:
                return "–", 0.0
            shown = "·" if not count else ("<1" if share < 0.005 else f"{100 * share:.0f}")
            return shown, share
        top = c.max_count()
        return (str(count) if count else "·"), (count / top if top else 0.0)

    def render(self) -> Text:
        c = self.confusion
        if c is None or c.matrix is None:
            return Text("")
        return self._pairs() if c.large else self._grid()

    def _grid(self) -> Text:
        c = self.confusion
        axis = self.get_component_rich_style("confusion-grid--axis")
        k = c.k
        widest = 3 if self.percent else len(str(c.max_count()))
        cell = max(CELL_MIN, widest)
        columns = axis_labels(c.labels, cell)
        if columns is None:  # names that would look the same: the classes are numbered
            columns = [str(i) for i in range(k)]
            names = [f"{i} {x}" for i, x in enumerate(c.labels)]
        else:
            names = c.labels
        rows = [abbreviate(x, ROW_LABEL_MAX) for x in names]
        row_width = max(4, max(len(x) for x in rows))
        text = Text(no_wrap=True)
        text.append("true ↓ · predicted →".ljust(row_width + 1 + k * (cell + 1)), axis)
        text.append("\n" + " " * row_width, axis)
        for name in columns:
            text.append(" " + name.rjust(cell), axis)
        for r in range(k):
            text.append("\n" + rows[r].ljust(row_width), axis)
            for col in range(k):
                value, fraction = self._value(r, col)
                text.append(" " + value.rjust(cell), self._cell_style(r == col, fraction))
        return text

    def _pairs(self) -> Text:
        c = self.confusion
        axis = self.get_component_rich_style("confusion-grid--axis")
        pairs = c.top_pairs(LIST_PAIRS)
        text = Text(no_wrap=True)
        text.append(f"{c.k} classes: the top confusions (true → predicted)", axis)
        if not pairs:
            text.append("\nno confusions: every sample predicted right", axis)
        top = pairs[0].count if pairs else 0
        for p in pairs:
            share = "" if p.share is None else f"{100 * p.share:.0f}%"
            fraction = (p.share or 0.0) if self.percent else p.count / top
            name = f"{abbreviate(c.label(p.true), 20)} → {abbreviate(c.label(p.predicted), 20)}"
            text.append("\n" + name.ljust(43), axis)
            text.append(f" {p.count:>6} {share:>5} ", self._cell_style(False, fraction))
        return text
