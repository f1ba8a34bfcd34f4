"""The browser's sweep panel (`p`): a sweep's parallel coordinates in braille beside its
hyperparameter importances as bars. The plot's math is charts/parallel.py; the importances are the
trainer's (sweep.json `importance`), read, never computed here.

The plot: a row of axis headers (a key's last part), each axis's highest value (or last
category), the canvas, each axis's lowest; one line a run, the best run highlighted, runs that did
not complete (pruned, failed, stopped, still running) dimmed, runs not started yet left out."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget

from entrenar_tui.charts import parallel
from entrenar_tui.model.sweeps import BEST_MARK, SweepPlot, headers
from trainer.monitor.text import printable

BAR_CELLS = 8  # an importance bar at 100%
EIGHTHS = " ▏▎▍▌▋▊▉█"


def run_layers(plot: SweepPlot) -> tuple[list, list[str]]:
    """The runs drawn (those that started) and each one's layer: the best run's `best`, a
    completed run's `line`, any other's `dim` (drawn first, so the others cover it)."""
    drawn = [r for r in plot.runs if r.status != "pending"]
    order = {parallel.DIM: 0, parallel.LINE: 1, parallel.BEST: 2}

    def layer(run) -> str:
        if run.index == plot.best:
            return parallel.BEST
        return parallel.LINE if run.status == "completed" else parallel.DIM

    ranked = sorted(drawn, key=lambda r: order[layer(r)])
    return ranked, [layer(r) for r in ranked]


class ParallelCoordinates(Widget):
    COMPONENT_CLASSES: ClassVar = {
        "parallel--header",
        "parallel--label",
        "parallel--axis",
        "parallel--line",
        "parallel--best",
        "parallel--dim",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.plot: SweepPlot | None = None
        self.drawing: parallel.Drawing | None = None  # what the last render drew (tests read it)
        self.axes: list[parallel.Axis] = []

    def show(self, plot: SweepPlot | None) -> None:
        self.plot = plot
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        plot = self.plot
        muted = self.get_component_rich_style("parallel--label")
        if plot is None or width <= 0:
            self.drawing, self.axes = None, []
            return Text("no sweep here", style=muted)
        runs, layers = run_layers(plot)
        if not runs:
            self.drawing, self.axes = None, []
            return Text(f"{plot.name}: no run has started yet", style=muted)
        names = headers(plot.keys, taken=(plot.metric,))
        axes = parallel.axes_of(plot, runs, names, parallel.max_axes(width))
        rows = max(1, height - 3)
        drawing = parallel.draw(axes, layers, width, rows)
        self.drawing, self.axes = drawing, axes
        columns = drawing.columns
        text = Text(no_wrap=True, overflow="crop")
        head = parallel.labels_row([a.header for a in axes], columns, width)
        text.append(head + "\n", self.get_component_rich_style("parallel--header"))
        text.append(parallel.labels_row([a.top for a in axes], columns, width) + "\n", muted)
        styles = {layer: self.get_component_rich_style(f"parallel--{layer}") for layer in parallel.LAYERS}  # fmt: skip
        for row, where in zip(drawing.rows, drawing.layers, strict=True):
            for char, layer in zip(row, where, strict=True):
                text.append(char, styles[layer] if layer else None)
            text.append("\n")
        text.append(parallel.labels_row([a.bottom for a in axes], columns, width), muted)
        return text


def bar(share: float, cells: int = BAR_CELLS) -> str:
    """A share of 1 as a bar of `cells` characters in eighths."""
    eighths = round(max(0.0, min(1.0, share)) * cells * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(cells)


class ImportanceBars(Widget):
    COMPONENT_CLASSES: ClassVar = {"importance--title", "importance--bar", "importance--label"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.plot: SweepPlot | None = None

    def show(self, plot: SweepPlot | None) -> None:
        self.plot = plot
        self.refresh()

    def lines(self, width: int) -> list[tuple[str, str, str]]:
        """(name, bar, percent) per key, most important first; names cut to what fits."""
        plot = self.plot
        if plot is None:
            return []
        names = headers([k for k, _ in plot.importance], taken=(plot.metric,))
        room = max(3, width - BAR_CELLS - 6)
        out = []
        for key, share in plot.importance:
            name = printable(names.get(key, key))
            name = name if len(name) <= room else name[: room - 1] + "…"
            out.append((name.ljust(room), bar(share), f"{100 * share:3.0f}%"))
        return out

    def render(self) -> Text:
        width = self.size.width
        title = self.get_component_rich_style("importance--title")
        label = self.get_component_rich_style("importance--label")
        text = Text("importance", style=title, no_wrap=True, overflow="crop")
        rows = self.lines(width)
        if not rows:
            text.append("\nnone yet: 2 completed runs and 2 keys that vary", style=label)
            return text
        for name, shown, percent in rows[: max(0, self.size.height - 1)]:
            text.append(f"\n{name} ", style=label)
            text.append(shown, style=self.get_component_rich_style("importance--bar"))
            text.append(f" {percent}", style=label)
        return text


class SweepPanel(Horizontal):
    """The plot and the bars side by side, titled with the sweep, its objective and best run."""

    def compose(self) -> ComposeResult:
        yield ParallelCoordinates(id="sweep-plot")
        yield ImportanceBars(id="sweep-importance")

    def show(self, plot: SweepPlot | None) -> None:
        self.query_one(ParallelCoordinates).show(plot)
        self.query_one(ImportanceBars).show(plot)
        self.border_title = printable(title(plot)) if plot else "sweep"

    @property
    def plot(self) -> SweepPlot | None:
        return self.query_one(ParallelCoordinates).plot


def title(plot: SweepPlot) -> str:
    """`lora-sweep · val_loss ↓ · ★ lora-sweep-3`: the sweep, its objective (↓ lower is better),
    its best run."""
    arrow = "↓" if plot.direction == "minimize" else "↑"
    best = next((r.name for r in plot.runs if r.index == plot.best), None)
    return f"{plot.name} · {plot.metric} {arrow}" + (f" · {BEST_MARK} {best}" if best else "")
