"""The main screen: header, progress, validation bar, charts, epoch table, problems, footer."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from entrenar_tui import formatting as fmt
from entrenar_tui.charts import epoch_chart, step_chart
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.metric_chart import MetricChart
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.run_progress import RunProgress
from entrenar_tui.widgets.validation_bar import ValidationBar

if TYPE_CHECKING:
    from entrenar_tui.app import MonitorApp

STEP_CHARTS = (  # id, title, series, epochs.json key for "best", format, narrow format
    ("train-loss", "train loss", "loss", "train_loss", fmt.metric, fmt.metric3),
    ("lr", "learning rate", "lr", "lr", fmt.lr, fmt.lr),
    ("train-acc", "train acc", "accuracy", "train_accuracy", fmt.percent, fmt.percent),
)
EPOCH_CHARTS = (  # id, title, epochs.json key, format, narrow format
    ("val-loss", "val loss", "val_loss", fmt.metric, fmt.metric3),
    ("val-acc", "val acc", "val_accuracy", fmt.percent, fmt.percent),
)


class MonitorScreen(Screen):
    BINDINGS: ClassVar = [
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("s", "start", "Start"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    app: MonitorApp
    ready = False  # children composed and mounted; False again while the screen is torn down

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        yield RunProgress()
        yield ValidationBar()
        with Horizontal(id="charts"):
            with Vertical(id="train-charts"):
                for chart_id, title, *_ in STEP_CHARTS:
                    yield MetricChart(title, id=chart_id)
            with Vertical(id="val-charts"):
                for chart_id, title, *_ in EPOCH_CHARTS:
                    yield MetricChart(title, id=chart_id)
        yield EpochTable(id="epochs")
        yield ProblemsLine()
        yield Footer()

    def on_mount(self) -> None:
        self.ready = True
        self.update_view(steps=True, epochs=True)

    def on_unmount(self) -> None:
        self.ready = False

    def update_view(self, *, steps: bool = False, epochs: bool = False) -> None:
        """Redraw from the app's model; charts only when their data changed. A tick or a message
        may arrive before the widgets are composed or while they are being removed (on exit,
        leaves go first): then there is nothing to draw."""
        if not (self.ready and self.display):
            return
        model = self.app.model
        # The header centres "name — model · world N" between its icon and its right edge.
        room = max(24, self.size.width - 20)
        title = fmt.truncate(model.name, max(12, room // 2))
        world = f"world {model.world_size}"
        left = room - len(title) - 3 - len(world) - 3
        names = [
            " · ".join(model.model_names),
            model.model_names[0],
            fmt.truncate(model.model_names[0], left),
        ]
        model_text = next(n for n in names if len(n) <= left or n is names[-1])
        self.app.title = title
        self.app.sub_title = f"{model_text} · {world}" if model_text else world
        self.query_one(RunProgress).show(model)
        self.query_one(ValidationBar).show(
            (model.state or {}).get("validation") if model.status == "validating" else None
        )
        if steps or epochs:
            for chart_id, _title, series, best_key, f, short in STEP_CHARTS:
                self.query_one(f"#{chart_id}", MetricChart).show(
                    lambda columns, s=series, b=best_key, f=f, sh=short: step_chart(
                        model, s, b, columns, f, sh
                    )
                )
        if epochs:
            for chart_id, _title, key, f, short in EPOCH_CHARTS:
                self.query_one(f"#{chart_id}", MetricChart).show(
                    lambda columns, k=key, f=f, sh=short: epoch_chart(model, k, columns, f, sh)
                )
        self.query_one(EpochTable).show(model)
        self.query_one(ProblemsLine).show(model)

    def action_stop(self) -> None:
        self.app.stop_run()

    def action_resume(self) -> None:
        self.app.resume_run()

    def action_start(self) -> None:
        self.app.start_run()

    def action_help(self) -> None:
        self.app.show_help()
