"""The main screen: header, progress, resources, validation bar, charts, epoch table, the log
pane, problems, footer. The chart controls (smoothing, log-Y, x axis, outliers, zoom, cursor) and
the log pane are keys here; what the user chose is remembered (settings.py; the theme by the app)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from entrenar_tui import formatting as fmt
from entrenar_tui import settings as user_settings
from entrenar_tui.charts import (
    SMOOTHING_MAX,
    SMOOTHING_STEP,
    X_AXES,
    ZOOMS,
    ChartView,
    epoch_chart,
    step_chart,
)
from entrenar_tui.screens.help import HELP
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.log_pane import LogPane
from entrenar_tui.widgets.metric_chart import MetricChart
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.resources_line import ResourcesLine
from entrenar_tui.widgets.run_progress import RunProgress
from entrenar_tui.widgets.validation_bar import ValidationBar
from trainer.monitor.schema import LIVE_STATUSES, Files

if TYPE_CHECKING:
    from entrenar_tui.app import MonitorApp

STEP_CHARTS = (  # id, title, series, epochs.json key for "best", format, narrow format, smoothed
    ("train-loss", "train loss", "loss", "train_loss", fmt.metric, fmt.metric3, True),
    ("lr", "learning rate", "lr", "lr", fmt.lr, fmt.lr, False),
    ("train-acc", "train acc", "accuracy", "train_accuracy", fmt.percent, fmt.percent, True),
)
SMOOTHING_HELP = (
    "chart smoothing (TensorBoard's debiased EMA) down/up by 0.05, 0 = off; the raw curve stays dim"
)
CURSOR_HELP = "move the cursor (while it is on)"
EPOCH_CHARTS = (  # id, title, epochs.json key, format, narrow format
    ("val-loss", "val loss", "val_loss", fmt.metric, fmt.metric3),
    ("val-acc", "val acc", "val_accuracy", fmt.percent, fmt.percent),
)


class MonitorScreen(Screen):
    BINDINGS: ClassVar = [
        Binding("x", "stop", "Stop", tooltip="stop the run: asks first, writes `control.json`, sends SIGINT to the trainer (only if it is ours, on this host). The trainer finishes its batch, saves `checkpoints/last`, says **stopped**. `x` again while stopping forces it."),
        Binding("r", "resume", "Resume", tooltip="resume a stopped, failed or crashed run: `entrenar-train --resume DIR`, detached; the steps after its checkpoint are redone (it says which)"),
        Binding("s", "start", "Start", tooltip="start a run from the config (asks first, showing the command) when none is active"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip=HELP),
        # Secondary keys: off the 80-column footer, in the help screen and the command palette.
        Binding("l", "toggle_log", "Log", show=False, tooltip="show/hide the log pane (`train.log`, the trainer's own output)"),
        Binding("left_square_bracket", "smoothing(-1)", "Smooth less", show=False, tooltip=SMOOTHING_HELP),
        Binding("right_square_bracket", "smoothing(1)", "Smooth more", show=False, tooltip=SMOOTHING_HELP),
        Binding("y", "toggle_log_y", "Log-Y", show=False, tooltip="log-Y scale (values ≤ 0 are gaps)"),
        Binding("a", "cycle_x_axis", "X axis", show=False, tooltip="x axis: step → epoch → wall time"),
        Binding("o", "toggle_outliers", "Outliers", show=False, tooltip="ignore outliers (y range from the 1st–99th percentile)"),
        Binding("z", "cycle_zoom", "Zoom", show=False, tooltip="zoom: all → last 10k → 1k → 100 steps"),
        Binding("c", "toggle_cursor", "Cursor", show=False, tooltip="cursor on/off: the exact value and global step under it"),
        Binding("left", "move_cursor(-1)", "Cursor left", show=False, priority=True, tooltip=CURSOR_HELP),
        Binding("right", "move_cursor(1)", "Cursor right", show=False, priority=True, tooltip=CURSOR_HELP),
        Binding("e", "export", "Export", show=False, tooltip="export this run's steps and epochs as CSV (next to the run directory)"),
    ]  # fmt: skip
    HELP_NOTES = """\
The layout (log pane, smoothing, log-Y, x axis, outliers, zoom, theme) is remembered in
`$XDG_CONFIG_HOME/entrenar-tui/settings.json`.

**Statuses**: initializing · running · validating · stopping · stopped · completed · failed ·
**crashed** (the state says running but the trainer's pid is gone on this host, or its heartbeat is far
older than a typical step).

**Charts**: braille, each column the min–max of its steps, so spikes survive; gaps are NaN/Inf;
the best epoch is highlighted (★ best = its value). Train series are per step; validation per epoch.
The epoch table's last row is the epoch in progress (▸), or where a stopped, failed or crashed run
ended inside an epoch (■ stopped 7/12).
"""

    app: MonitorApp
    ready = False  # children composed and mounted; False again while the screen is torn down

    def __init__(self) -> None:
        super().__init__()
        self.view = ChartView()
        self.settings = user_settings.Settings()

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        yield RunProgress()
        yield ResourcesLine(id="resources")
        yield ValidationBar()
        with Horizontal(id="charts"):
            with Vertical(id="train-charts"):
                for chart_id, title, *_ in STEP_CHARTS:
                    yield MetricChart(title, id=chart_id)
            with Vertical(id="val-charts"):
                for chart_id, title, *_ in EPOCH_CHARTS:
                    yield MetricChart(title, id=chart_id)
        yield EpochTable(id="epochs")
        yield LogPane(id="log-pane")
        yield ProblemsLine()
        yield Footer()

    def on_mount(self) -> None:
        self._load_settings()
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
        self.query_one(ResourcesLine).show(model.state, live=model.status in LIVE_STATUSES)
        self.query_one(LogPane).follow(Path(model.dir) / Files.LOG)
        self.query_one(ValidationBar).show(
            (model.state or {}).get("validation") if model.status == "validating" else None
        )
        if steps or epochs:
            view = self.view
            for chart_id, _title, series, best_key, f, short, smooth in STEP_CHARTS:
                self.query_one(f"#{chart_id}", MetricChart).show(
                    lambda columns, s=series, b=best_key, f=f, sh=short, sm=smooth: step_chart(
                        model, s, b, columns, f, sh, view, sm
                    )
                )
        if epochs:
            view = self.view
            for chart_id, _title, key, f, short in EPOCH_CHARTS:
                self.query_one(f"#{chart_id}", MetricChart).show(
                    lambda columns, k=key, f=f, sh=short: epoch_chart(
                        model, k, columns, f, sh, view
                    )
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

    # ------------------------------------------------------------------------ settings

    def _load_settings(self) -> None:
        self.settings, notice = user_settings.load()
        st = self.settings
        self.view = ChartView(st.smoothing, st.log_y, st.x_axis, st.outliers, st.zoom)
        self.query_one(LogPane).display = st.log_pane
        if notice:
            self.app.notify(notice, severity="warning", timeout=8)

    def _save_settings(self) -> None:
        """Remember the layout now (a few hundred bytes, atomically); a failure is only noted."""
        v, st = self.view, self.settings
        st.smoothing, st.log_y, st.x_axis = v.smoothing, v.log_y, v.x_axis
        st.outliers, st.zoom = v.outliers, v.zoom
        st.log_pane = bool(self.query_one(LogPane).display)
        st.theme = self.app.theme  # the app remembers it as it changes (settings.follow_theme)
        try:
            user_settings.save(st)
        except OSError as e:
            self.app.notify(f"settings not saved: {e}", severity="warning")

    def _changed(self) -> None:
        self._save_settings()
        self.update_view(steps=True, epochs=True)

    # ------------------------------------------------------------------------ chart controls, log

    def action_toggle_log(self) -> None:
        pane = self.query_one(LogPane)
        pane.display = not pane.display
        if pane.display:
            pane.poll()
        self._changed()

    def action_smoothing(self, direction: int) -> None:
        """[ / ]: the EMA weight in steps of 0.05 within [0, 0.99] (0 = off)."""
        w = round(self.view.smoothing + direction * SMOOTHING_STEP, 2)
        self.view.smoothing = min(SMOOTHING_MAX, max(0.0, w))
        self._changed()

    def action_toggle_log_y(self) -> None:
        self.view.log_y = not self.view.log_y
        self._changed()

    def action_cycle_x_axis(self) -> None:
        self.view.x_axis = X_AXES[(X_AXES.index(self.view.x_axis) + 1) % len(X_AXES)]
        self._changed()

    def action_toggle_outliers(self) -> None:
        self.view.outliers = not self.view.outliers
        self._changed()

    def action_cycle_zoom(self) -> None:
        self.view.zoom = ZOOMS[(ZOOMS.index(self.view.zoom) + 1) % len(ZOOMS)]
        self._changed()

    def action_toggle_cursor(self) -> None:
        """c: the cursor starts on the last step; the arrows move it (not remembered)."""
        n = len(self.app.model.history)
        self.view.cursor = None if self.view.cursor is not None or not n else n - 1
        self.update_view(steps=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The arrows belong to the cursor only while it is on (else to the focused widget)."""
        if action == "move_cursor":
            return self.view.cursor is not None
        return True

    def action_move_cursor(self, direction: int) -> None:
        """One dot column of the chart (at least one step) to the left or right."""
        from entrenar_tui.chart_math import cursor_move, zoom_window

        n = len(self.app.model.history)
        start, stop = zoom_window(n, self.view.zoom)
        columns = max(1, 2 * self.query_one("#train-loss", MetricChart).size.width)
        stride = max(1, (stop - start) // columns)
        self.view.cursor = cursor_move(self.view.cursor or 0, direction * stride, start, stop)
        self.update_view(steps=True)

    def action_export(self) -> None:
        """e: the run's steps and epochs as CSV next to the run directory (else in the cwd)."""
        from entrenar_tui.export import export_for_screen

        run_dir = Path(self.app.model.dir)

        def work() -> None:
            try:
                out = export_for_screen(run_dir)
            except (OSError, ValueError) as e:
                self.app.call_from_thread(self.app.notify, f"export failed: {e}", severity="error")
                return
            self.app.call_from_thread(self.app.notify, f"exported to {out}")

        self.run_worker(work, thread=True, exclusive=True, group="export")

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's actions for the command palette (MonitorApp.get_system_commands)."""
        yield SystemCommand("Log pane", "Show or hide train.log (l)", self.action_toggle_log)
        yield SystemCommand(
            "Smooth more", "Raise the EMA weight by 0.05 (])", lambda: self.action_smoothing(1)
        )
        yield SystemCommand(
            "Smooth less",
            "Lower the EMA weight by 0.05; 0 = off ([)",
            lambda: self.action_smoothing(-1),
        )
        yield SystemCommand("Log-Y scale", "Toggle a log10 y axis (y)", self.action_toggle_log_y)
        yield SystemCommand("X axis", "Step, epoch or wall time (a)", self.action_cycle_x_axis)
        yield SystemCommand(
            "Ignore outliers",
            "Y range from the 1st-99th percentile (o)",
            self.action_toggle_outliers,
        )
        yield SystemCommand("Zoom", "All, last 10k, 1k or 100 steps (z)", self.action_cycle_zoom)
        yield SystemCommand(
            "Cursor", "Show a step's exact values; arrows move it (c)", self.action_toggle_cursor
        )
        yield SystemCommand(
            "Export metrics", "Steps and epochs as CSV next to the run (e)", self.action_export
        )
