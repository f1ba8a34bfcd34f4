"""The run screen: one run directory, watched and steered. It owns its RunModel and its watcher
(started on mount, stopped on unmount) and folds the watcher's messages into the model itself; the
app lends it shared services only (clock, liveness probe, controller, poll settings).

Header, progress, resources, validation bar, charts, the cursor line, epoch table, the log pane,
problems, footer.
The chart controls (smoothing, log-Y, x axis, outliers, zoom, cursor) and the log pane are keys
here; what the user chose is remembered (settings.py; the theme by the app). x/r/s act through
the app's Controller; nothing here ever stops training on quit."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.scalar import Scalar
from textual.screen import Screen
from textual.widgets import Footer, Header

from entrenar_tui import messages
from entrenar_tui import settings as user_settings
from entrenar_tui.charts.views import (
    SMOOTHING_MAX,
    SMOOTHING_STEP,
    X_AXES,
    ZOOMS,
    ChartView,
    cursor_readout,
    epoch_chart,
    step_chart,
)
from entrenar_tui.model.controller import ACTIONS, Refused, StartPlan
from entrenar_tui.model.run import Request, RunModel
from entrenar_tui.model.run_alerts import RunAlerts
from entrenar_tui.model.validation import clean_epochs, clean_result, clean_run, clean_state
from entrenar_tui.output import formatting as fmt
from entrenar_tui.screens.confirm import ConfirmScreen
from entrenar_tui.screens.help import HELP
from entrenar_tui.watch.run_watcher import RunWatcher
from entrenar_tui.widgets.cursor_line import CursorLine
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.log_pane import LogPane
from entrenar_tui.widgets.metric_chart import MetricChart
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.resources_line import ResourcesLine
from entrenar_tui.widgets.run_progress import RunProgress
from entrenar_tui.widgets.validation_bar import ValidationBar
from trainer.monitor.safe_files import UnsafeFile
from trainer.monitor.schema import LIVE_STATUSES, Files
from trainer.monitor.text import printable

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


CHARTS_MIN = 12  # three stacked charts of 4 rows each: title, 2 plot rows, the x axis
TABLE_MIN = 3  # the epoch table's header and its last two rows
LOG_MIN, LOG_MAX = 4, 12  # the log pane's border and at least 2 lines


def pane_heights(rest: int, table_rows: int, log_on: bool) -> tuple[int, int]:
    """(epoch table, log pane) heights when `rest` rows are left below the fixed lines (0: hidden).
    The charts take what the panes leave, never less than CHARTS_MIN while the panes can give way:
    first the log pane shrinks to its minimum, then the table to its last rows, then the table
    goes, and only then the log pane (shown because the user asked for it)."""
    room = rest - CHARTS_MIN
    table = min(table_rows, max(TABLE_MIN, rest * 3 // 10))
    log = min(LOG_MAX, max(LOG_MIN, rest // 4)) if log_on else 0
    if table + log > room and log:
        log = max(LOG_MIN, room - table)
    if table + log > room:
        table = max(min(TABLE_MIN, table_rows), room - log)
    if table + log > room:
        table = 0
    if table + log > room:
        log = 0
    return table, log


class MonitorScreen(Screen):
    BINDINGS: ClassVar = [
        Binding("x", "stop", "Stop", tooltip="stop the run: asks first, writes `control.json`, sends SIGINT to the trainer (only if it is ours, on this host). The trainer finishes its batch, saves `checkpoints/last`, says **stopped**. `x` again while stopping forces it."),
        Binding("r", "resume", "Resume", tooltip="resume a stopped, failed or crashed run: `entrenar-train --resume DIR`, detached; the steps after its checkpoint are redone (it says which)"),
        Binding("s", "start", "Start", tooltip="start a run from the config (asks first, showing the command) when none is active"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip=HELP),
        # x, r, s where they do not apply now (check_action hides them): the key still says why.
        *(Binding(k, f"refused('{a}')", show=False) for k, a in zip("xrs", ACTIONS, strict=True)),
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

**FLOP/s · MFU** (right of the position): the model FLOPs a second the run achieves and their share
of the device's peak, labelled: `(last 10 steps)` while it trains, `(run)`, the whole run's, once
it is over (`--once` prints the same); blank while it validates. Where the row is short, the MFU
alone. **samples/s (epoch N)**: that epoch's training so far; `–` until the epoch logs a step.
**x r s** show in the footer only where they act on this run; pressed elsewhere, they say why.
**Alerts**: stalled, NaN/Inf loss, loss spike, val loss rising, crashed, finished: on the problems
line while they hold; one that happens while you watch also toasts, rings the bell and runs
`--notify-cmd`, once. Thresholds: the `alerts` table of `settings.json`.

**Charts**: braille, each column the min–max of its steps, so spikes survive; gaps are NaN/Inf;
the best epoch is highlighted (★ best = its value). Train series are per step; validation per epoch.
The epoch table's last row is the epoch in progress (▸), or where a stopped, failed or crashed run
ended inside an epoch (■ stopped 7/12).
"""

    def __init__(self, run_dir: str | Path, *, launched: subprocess.Popen | None = None) -> None:
        """`launched`: the trainer that `entrenar-tui run` (or `s`) just started ("starting…" until
        it writes its state)."""
        super().__init__()
        self.launched = launched
        self.model: RunModel = RunModel(run_dir)
        self.watcher: RunWatcher | None = None
        self.view = ChartView()
        self.settings = user_settings.Settings()
        self.log_wanted = False  # the log pane is on (l); fit_panes may still hide it
        self.alerts = RunAlerts()  # with the user's thresholds once the settings are loaded
        self._keys_apply: tuple[bool, ...] = ()  # x, r, s as the footer last showed them

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
        yield CursorLine(id="cursor-line")
        yield EpochTable(id="epochs")
        yield LogPane(id="log-pane")
        yield ProblemsLine()
        yield Footer()

    # ------------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        app = self.app
        self.model.clock = app.clock
        self.model.now = app.clock()
        if self.launched is not None:
            self.model.begin(Request("start", "starting…", app.clock(), self.launched))
            app.adopt(self.launched)
        self._load_settings()
        self.update_view(steps=True, epochs=True)
        if app.watch_enabled:
            self.watcher = RunWatcher(
                self.model.dir,
                self,
                poll_interval=app.poll_interval,
                force_polling=app.force_polling,
            )
            self.watcher.start()
        self.set_interval(app.tick_interval, self.tick)

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def tick(self) -> None:
        """The clock moved: elapsed, heartbeat age, crashed-or-not; and where the trainer is."""
        self.model.tick(self.app.clock(), self._liveness(self.model.state))
        self.update_view()

    def _liveness(self, state: dict[str, Any] | None) -> str:
        return self.app.liveness(state, self.model.dir)

    # ------------------------------------------------------------------------ watcher messages
    # What the files say is checked (model/validation.py) before the model sees it: a value of the
    # wrong type is dropped and named on the problems line ("<file> values"), text made printable.

    def on_directory_changed(self, message: messages.DirectoryChanged) -> None:
        self.model.exists = message.exists
        self.update_view()

    def on_run_info_changed(self, message: messages.RunInfoChanged) -> None:
        previous = self.model.run
        self.model.run, problem = clean_run(message.run)
        self.model.set_problem(f"{Files.RUN} values", problem)
        note = new_resume_note(previous, self.model.run)
        if note:  # e.g. "resumed from checkpoints/last at step 3; steps 4–52 are redone"
            self.app.notify(note, timeout=15)
        self.update_view(epochs=True)

    def on_state_changed(self, message: messages.StateChanged) -> None:
        previous = self.model.state or {}
        state, problem = clean_state(message.state)
        self.model.set_problem(f"{Files.STATE} values", problem)
        self.model.set_state(state)
        if any(previous.get(k) != state.get(k) for k in ("pid", "host", "pid_create_time")):
            self.model.trainer = self._liveness(state)  # a new trainer: now, not at the tick
        self.update_view()

    def on_epochs_changed(self, message: messages.EpochsChanged) -> None:
        epochs, best_epoch, problem = clean_epochs(message.epochs, message.best_epoch)
        self.model.set_problem(f"{Files.EPOCHS} values", problem)
        self.model.set_epochs(epochs, best_epoch)
        self.update_view(epochs=True)

    def on_result_changed(self, message: messages.ResultChanged) -> None:
        self.model.result, problem = clean_result(message.result)
        self.model.set_problem(f"{Files.RESULT} values", problem)
        self.update_view()

    def on_steps_appended(self, message: messages.StepsAppended) -> None:
        self.model.add_steps(message.batch, message.loaded, message.size)
        self.update_view(steps=True)

    def on_file_problem(self, message: messages.FileProblem) -> None:
        self.model.set_problem(message.file, message.text)
        self.update_view()

    def on_first_read_done(self, _message: messages.FirstReadDone) -> None:
        """What the run held when the screen opened it is history: shown, never told."""
        self.alerts.prime(self.model)
        self.update_view()

    def on_watch_mode(self, message: messages.WatchMode) -> None:
        self.model.watch_mode = message.mode
        self.update_view()

    # ------------------------------------------------------------------------ the view

    def update_view(self, *, steps: bool = False, epochs: bool = False) -> None:
        """Redraw from the model; charts only when their data changed."""
        model = self.model
        self._check_alerts()
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
            readout = [(title, series, smooth) for _, title, series, *_, smooth in STEP_CHARTS]
            width = self.size.width - 3  # the line's padding and its ▏
            self.query_one(CursorLine).show(cursor_readout(model, view, readout, width))
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
        self._refresh_keys()
        self.fit_panes()

    def on_resize(self) -> None:
        self.fit_panes()

    def fit_panes(self) -> None:
        """Give the charts their rows first (pane_heights): the epoch table scrolls to its last
        rows, the log pane shrinks, before any chart gets too short to read."""
        table, log = self.query_one(EpochTable), self.query_one(LogPane)
        fixed = (RunProgress, ResourcesLine, ValidationBar, CursorLine, ProblemsLine)
        used = 2 + sum(  # the header and the footer: one row each
            w.outer_size.height or 1 for kind in fixed for w in self.query(kind) if w.display
        )
        wanted = 1 + table.row_count  # its header and every row
        heights = pane_heights(self.size.height - used, wanted, self.log_wanted)
        for pane, height in zip((table, log), heights, strict=True):
            pane.display = height > 0
            if height and pane.styles.height != Scalar.from_number(height):
                pane.styles.height = height
        if heights[0] and heights[0] < wanted:
            table.call_after_refresh(table.scroll_end, animate=False)

    def _check_alerts(self) -> None:
        """The active alerts onto the model (the problems line, `?`); each new one, once the
        first read is in, told by the app (toast, bell, --notify-cmd)."""
        for alert in self.alerts.update(self.model):
            self.app.announce(self.model.name, alert)
        self.model.alerts = self.alerts.active

    # ------------------------------------------------------------------------ x / r / s / ?

    def _look_up_trainer(self) -> None:
        """Before a key acts: is the trainer alive right now (not as of the last tick)?"""
        self.model.trainer = self._liveness(self.model.state)

    def action_stop(self) -> None:
        """x: confirm, then stop; while a stop is on its way, confirm, then force."""
        self._look_up_trainer()
        model, controller = self.model, self.app.controller
        if (why := controller.refusal("stop", model)) is not None:
            self.app.notify(why, severity="warning")
            return
        if controller.stopping(model):
            question = f"Force {model.name} to stop now?"
            detail = "A second SIGINT: the trainer exits at once; the batch in flight is not saved."
            act = controller.force_stop
        else:
            question = f"Stop {model.name}?"
            detail = (
                "The trainer finishes its batch, writes checkpoints/last and stops (r resumes it)."
            )
            act = controller.stop
        self.app.push_screen(
            ConfirmScreen(question, detail, yes="Stop"),
            lambda yes: self._act(act) if yes else None,
        )

    def action_resume(self) -> None:
        self._look_up_trainer()
        self._act(self.app.controller.resume)
        if self.model.request is not None:
            self.app.adopt(self.model.request.process)

    def action_start(self) -> None:
        """s: show the command, then start it detached (in a new directory if this one has a run)."""
        self._look_up_trainer()
        try:
            plan = self.app.controller.plan_start(self.model)
        except Refused as e:
            self.app.notify(str(e), severity="warning")
            return
        where = (  # (printable before joining: a name's own newline must not start a line)
            ""
            if plan.run_dir == self.model.dir
            else f"\nin a new run directory (this one holds a run): {printable(plan.run_dir)}"
        )
        self.app.push_screen(
            ConfirmScreen("Start a new run?", f"$ {printable(plan.command)}{where}", yes="Start"),
            lambda yes: self._start(plan) if yes else None,
        )

    def _start(self, plan: StartPlan) -> None:
        try:
            text, process = self.app.controller.start(plan, self.model)
        except (Refused, OSError) as e:
            self.app.notify(str(e), severity="error")
            return
        if plan.run_dir != self.model.dir:  # a new directory: a screen that watches it instead
            self.app.switch_screen(MonitorScreen(plan.run_dir, launched=process))
        else:
            self.app.adopt(process)
            self.model.begin(Request("start", "starting…", self.app.clock(), process))
            self.update_view()
        self.app.notify(text)

    def _act(self, act: Callable[[RunModel], str]) -> None:
        try:
            self.app.notify(act(self.model))
        except Refused as e:
            self.app.notify(str(e), severity="warning")
        except OSError as e:  # (an UnsafeFile names the file and what it is)
            self.app.notify(f"failed: {e}", severity="error")
        self.update_view()

    def action_refused(self, action: str) -> None:
        """x, r or s where the footer does not show it: the trainer is looked up again (it may
        have ended since the last tick), then the key acts after all or says why not."""
        self._look_up_trainer()
        why = self.app.controller.refusal(action, self.model)
        if why is None:
            getattr(self, f"action_{action}")()
        else:
            self.app.notify(why, severity="warning")
        self._refresh_keys()

    def _refresh_keys(self) -> None:
        """The footer shows x, r and s only where they apply (check_action, Controller.refusal):
        redrawn when that changes."""
        apply = tuple(self.check_action(action, ()) for action in ACTIONS)
        if apply != self._keys_apply:
            self._keys_apply = apply
            self.refresh_bindings()

    def action_help(self) -> None:
        self.app.show_help(self.model.problems())

    # ------------------------------------------------------------------------ settings

    def _load_settings(self) -> None:
        self.settings, notice = user_settings.load()
        st = self.settings
        self.view = ChartView(st.smoothing, st.log_y, st.x_axis, st.outliers, st.zoom)
        self.log_wanted = st.log_pane
        self.alerts = RunAlerts(st.alerts)
        if notice:
            self.app.notify(notice, severity="warning", timeout=8)

    def _save_settings(self) -> None:
        """Remember the layout now (a few hundred bytes, atomically); a failure is only noted."""
        v, st = self.view, self.settings
        st.smoothing, st.log_y, st.x_axis = v.smoothing, v.log_y, v.x_axis
        st.outliers, st.zoom = v.outliers, v.zoom
        st.log_pane = self.log_wanted
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
        self.log_wanted = not self.log_wanted
        self._changed()
        pane = self.query_one(LogPane)
        if pane.display:
            pane.poll()
        elif self.log_wanted:
            self.app.notify("no room for the log pane at this size: the charts come first")

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
        n = len(self.model.history)
        self.view.cursor = None if self.view.cursor is not None or not n else n - 1
        self.update_view(steps=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The arrows belong to the cursor only while it is on (else to the focused widget); x, r
        and s are the footer's only where they apply."""
        if action == "move_cursor":
            return self.view.cursor is not None
        if action in ACTIONS:  # shown and bound only where they apply; else `refused` says why
            return self.app.controller.refusal(action, self.model) is None
        return True

    def action_move_cursor(self, direction: int) -> None:
        """One dot column of the chart (at least one step) to the left or right."""
        from entrenar_tui.charts.math import cursor_move, zoom_window

        n = len(self.model.history)
        start, stop = zoom_window(n, self.view.zoom)
        chart = self.query_one("#train-loss", MetricChart)
        columns = max(1, len(chart.last_data.points) if chart.last_data else 2 * chart.size.width)
        stride = max(1, (stop - start) // columns)
        self.view.cursor = cursor_move(self.view.cursor or 0, direction * stride, start, stop)
        self.update_view(steps=True)

    def action_export(self) -> None:
        """e: the run's steps and epochs as CSV next to the run directory (else in the cwd)."""
        from entrenar_tui.output.export import export_for_screen

        run_dir = Path(self.model.dir)

        def work() -> None:
            try:
                out = export_for_screen(run_dir)
            except UnsafeFile as e:  # a link planted where the export goes: name its whole path
                self.app.call_from_thread(
                    self.notify_plain, f"export failed: {e.naming()}", "error"
                )
                return
            except (OSError, ValueError) as e:
                self.app.call_from_thread(self.notify_plain, f"export failed: {e}", "error")
                return
            self.app.call_from_thread(self.notify_plain, f"exported to {out}", "information")

        self.run_worker(work, thread=True, exclusive=True, group="export")

    def notify_plain(self, text: str, severity: str) -> None:
        """A notice whose text holds paths: printable and without markup (a folder named
        `[b]x` is shown as it is)."""
        self.app.notify(printable(text), severity=severity, markup=False)

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
        run_commands = (  # each offered where its key applies (check_action)
            ("stop", "Stop the run", "Finish the batch, save checkpoints/last, stop (x)"),
            ("resume", "Resume the run", "entrenar-train --resume this directory (r)"),
            ("start", "Start a run", "From the config, after showing the command (s)"),
        )
        for action, title, text in run_commands:
            if self.check_action(action, ()):
                yield SystemCommand(title, text, getattr(self, f"action_{action}"))
        yield SystemCommand(
            "Help", "Keys, statuses and every current problem (?)", self.action_help
        )


def new_resume_note(before: dict[str, Any] | None, after: dict[str, Any]) -> str | None:
    """The trainer's note on a resume that happened while the screen watched (run.json's
    resumed_from grew), or None; resumes from before it looked are history."""
    if before is None:
        return None
    old, new = before.get("resumed_from") or [], after.get("resumed_from") or []
    if len(new) <= len(old) or not isinstance(new[-1], dict):
        return None
    note = new[-1].get("note")
    return note if isinstance(note, str) and note else None
