"""`m` on the run screen: one epoch's confusion matrix (widgets/confusion_grid.py) with each
class's precision, recall, F1 and support beside it and the most-confused pairs below; ←/→ step
through the epochs (the best one marked ★), `%` toggles counts / row-normalized %.

It reads the run screen's RunModel and is told by that screen when the epochs change (show):
while it looks at the last epoch it follows the new one, else it stays where the user stepped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from entrenar_tui.model.confusion import Confusion, abbreviate, confusion_of, run_labels
from entrenar_tui.model.run import RunModel
from entrenar_tui.screens.help import HELP, palette_commands
from entrenar_tui.widgets.confusion_grid import ConfusionGrid
from trainer.monitor.values import is_number

EPOCHS = Binding.Group("Epoch")  # ← and → share one footer entry
STEP_HELP = "the epoch before / after (★: the best)"
SCROLL_HELP = "scroll a grid wider than the screen sideways (↑ ↓ scroll it down and up)"
PAIRS_SHOWN = 4  # the most-confused pairs on the line under the grid
CLASS_NAME_CELLS = 10


def score(value: float | None) -> str:
    """A precision, recall or F1 as sklearn's report prints it (0.85), a dash when unknown."""
    return f"{value:.2f}" if is_number(value) else "–"


class ConfusionScreen(Screen):
    BINDINGS: ClassVar = [
        Binding("escape,q", "close", "Back", tooltip="back to the run"),
        Binding("left", "step(-1)", "Epoch before", key_display="←", priority=True, group=EPOCHS, tooltip=STEP_HELP),
        Binding("right", "step(1)", "Epoch after", key_display="→", priority=True, group=EPOCHS, tooltip=STEP_HELP),
        Binding("percent_sign,p", "toggle_percent", "Counts/%", key_display="%", tooltip="counts ↔ row-normalized % (each true class's row sums to 100)"),
        Binding("shift+left", "scroll_grid(-8)", "Grid left", show=False, tooltip=SCROLL_HELP),
        Binding("shift+right", "scroll_grid(8)", "Grid right", show=False, tooltip=SCROLL_HELP),
        Binding("question_mark", "help", "Help", key_display="?", tooltip=HELP),
    ]  # fmt: skip
    HELP_NOTES = """\
Rows are the true class, columns the predicted one, in the run's label order; a cell's background
shades by its count (or its share of the row, with `%`): the diagonal (right) in one hue, the
confusions in another. Beside it each class's precision, recall, F1 and support (validation
samples); under it the most-confused pairs. Over 30 classes the grid gives way to the top
confusions and the classes they involve. ★: the best epoch (lowest val loss).
"""

    def __init__(self, model: RunModel) -> None:
        super().__init__()
        self.model = model
        self.index: int | None = None  # the epoch record shown; None: the last, following new ones
        self.percent = False
        self.closed = False
        self.confusion: Confusion | None = None
        self.title_line = Static(id="confusion-title", markup=False)
        self.grid = ConfusionGrid(id="confusion-grid")
        self.grid_box = ScrollableContainer(id="confusion-grid-box")
        self.class_table = DataTable(id="confusion-classes", cursor_type="none", zebra_stripes=True)
        self.pairs_line = Static(id="confusion-pairs", markup=False)

    def compose(self) -> ComposeResult:
        yield self.title_line
        with Horizontal(id="confusion-body"):
            with self.grid_box:
                yield self.grid
            yield self.class_table
        yield self.pairs_line
        yield Footer()

    def on_mount(self) -> None:
        for label, key, width in (("class", "label", CLASS_NAME_CELLS), ("P", "p", 4),
                                  ("R", "r", 4), ("F1", "f1", 4), ("n", "support", 5)):  # fmt: skip
            self.class_table.add_column(label, key=key, width=width)
        self.show()

    def on_unmount(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------------ what it shows

    @property
    def shown_index(self) -> int | None:
        epochs = self.model.epochs
        if not epochs:
            return None
        return len(epochs) - 1 if self.index is None else min(self.index, len(epochs) - 1)

    def show(self) -> None:
        """The epoch chosen (or the last), from the model as it is now."""
        if self.closed:
            return
        at = self.shown_index
        if at is None:
            self.confusion = None
            self.title_line.update("confusion matrix · no epoch has finished yet")
        else:
            record = self.model.epochs[at]
            self.confusion = confusion_of(record, run_labels(self.model.run))
            self.title_line.update(self._title(record, at))
        self.grid.show(self.confusion, self.percent)
        self._show_classes()
        self._show_pairs()

    def _title(self, record: dict, at: int) -> Text:
        c = self.confusion
        best = record is self.model.best_record()
        text = Text()
        text.append(f"confusion · epoch {c.epoch if c.epoch is not None else '?'}", "bold")
        text.append(f" ({at + 1} of {len(self.model.epochs)})")
        if best:
            text.append(" ★ best", style="bold")
        text.append(f" · macro-F1 {score(c.macro_f1)}")
        text.append(" · % of true class" if self.percent else " · counts")
        if c.matrix is None:
            text.append(f" · {c.problem or 'no confusion matrix in this epoch'}")
        return text

    def _show_classes(self) -> None:
        """Every class in label order; over 30 only those the top confusions involve."""
        table, c = self.class_table, self.confusion
        table.clear()
        if c is None:
            return
        scores = c.scores
        if c.large:
            involved = dict.fromkeys(i for p in c.top_pairs() for i in (p.true, p.predicted))
            scores = [c.scores[i] for i in involved if i < len(c.scores)]
        for s in scores:
            table.add_row(
                Text(abbreviate(s.label, CLASS_NAME_CELLS)),
                *(Text(score(v), justify="right") for v in (s.precision, s.recall, s.f1)),
                Text("–" if s.support is None else str(s.support), justify="right"),
            )

    def _show_pairs(self) -> None:
        c = self.confusion
        pairs = c.top_pairs(PAIRS_SHOWN) if c is not None else []
        self.pairs_line.display = not (c is not None and c.large)
        if not pairs:
            self.pairs_line.update("" if c is None or c.matrix is None else "no confusions")
            return
        text = Text()
        text.append("most confused: ", "bold")
        for i, p in enumerate(pairs):
            share = "" if p.share is None else f" ({100 * p.share:.0f}%)"
            sep = " · " if i else ""
            text.append(f"{sep}{c.label(p.true)} → {c.label(p.predicted)} {p.count}{share}")
        self.pairs_line.update(text)

    # ------------------------------------------------------------------------ keys

    def action_step(self, direction: int) -> None:
        at = self.shown_index
        if at is None:
            return
        at = max(0, min(len(self.model.epochs) - 1, at + direction))
        self.index = None if at == len(self.model.epochs) - 1 else at
        self.show()

    def action_scroll_grid(self, cells: int) -> None:
        """shift+←/→: ← and → step the epochs, so a wide grid scrolls sideways with shift."""
        self.grid_box.scroll_relative(x=cells, animate=False)

    def action_toggle_percent(self) -> None:
        self.percent = not self.percent
        self.show()

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_help(self) -> None:
        self.app.show_help()

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's keys as palette commands (help.palette_commands: from BINDINGS)."""
        return palette_commands(self)
