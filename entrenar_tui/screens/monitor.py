"""The run screen: one run directory, watched and steered. It owns its RunModel and its watcher
(started on mount, stopped on unmount) and folds the watcher's messages into the model itself; the
app lends it shared services only (clock, liveness probe, controller, poll settings).

Header, progress, resources, validation bar, charts, the cursor line, epoch table, the log pane,
problems, footer: each a widget made once and held here, told what to show from the model. The
chart controls' keys change a ChartControls (charts/controls.py) and what the user chose is
remembered (settings.py; the theme by the app); the alerts are the model layer's (RunAlerts), and
a new one comes back as an AlertRaised message to be told. The command palette is read from
BINDINGS (help.palette_commands). x/r/s act through the app's Controller; nothing here ever stops
training on quit."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.scalar import Scalar
from textual.screen import Screen
from textual.widgets import Footer

from entrenar_tui import messages
from entrenar_tui import settings as user_settings
from entrenar_tui.charts.controls import ChartControls
from entrenar_tui.charts.views import ChartView
from entrenar_tui.controller import ACTIONS
from entrenar_tui.model.confusion import has_per_class
from entrenar_tui.model.run import Request, RunModel
from entrenar_tui.model.run_alerts import RunAlerts
from entrenar_tui.screens.confusion import ConfusionScreen
from entrenar_tui.screens.help import HELP, RUN_SCREEN_NOTES, Command, palette_commands
from entrenar_tui.screens.steering import Steering
from entrenar_tui.watch.run_watcher import RunWatcher
from entrenar_tui.widgets.cursor_line import CursorLine
from entrenar_tui.widgets.epoch_table import EpochTable
from entrenar_tui.widgets.log_pane import LogPane
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.resources_line import ResourcesLine
from entrenar_tui.widgets.run_charts import RunCharts
from entrenar_tui.widgets.run_header import RunHeader
from entrenar_tui.widgets.run_progress import RunProgress
from entrenar_tui.widgets.validation_bar import ValidationBar
from trainer.monitor.schema import LIVE_STATUSES, Files

SMOOTHING_HELP = (
    "chart smoothing (TensorBoard's debiased EMA) down/up by 0.05, 0 = off; the raw curve stays dim"
)
CURSOR_HELP = "move the cursor (while it is on)"


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
        Command("x", "stop", "Stop", title="Stop the run", tooltip="stop the run: asks first, writes `control.json`, sends SIGINT to the trainer (only if it is ours, on this host). The trainer finishes its batch, saves `checkpoints/last`, says **stopped**. `x` again while stopping forces it."),
        Command("r", "resume", "Resume", title="Resume the run", tooltip="resume a stopped, failed or crashed run: `entrenar-train --resume DIR`, detached; the steps after its checkpoint are redone (it says which)"),
        Command("s", "start", "Start", title="Start a run", tooltip="start a run from the config (asks first, showing the command) when none is active"),
        Command("m", "confusion", "Confusion", title="Confusion matrix", tooltip="the confusion matrix, per-class P/R/F1 and the most-confused pairs, epoch by epoch (shown in the footer once an epoch has them)"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip=HELP),
        # x, r, s where they do not apply now (check_action hides them): the key still says why.
        *(Binding(k, f"refused('{a}')", show=False) for k, a in zip("xrs", ACTIONS, strict=True)),
        Binding("m", "confusion(1)", show=False),  # m on a run without per-class data says so
        # Secondary keys: off the 80-column footer, in the help screen and the command palette
        # (palette_commands: each binding a command, titled by its description or its `title`).
        Binding("l", "toggle_log", "Log pane", show=False, tooltip="show/hide the log pane (`train.log`, the trainer's own output)"),
        Binding("left_square_bracket", "chart('smooth', -1)", "Smooth less", show=False, tooltip=SMOOTHING_HELP),
        Binding("right_square_bracket", "chart('smooth', 1)", "Smooth more", show=False, tooltip=SMOOTHING_HELP),
        Binding("y", "chart('toggle_log_y')", "Log-Y scale", show=False, tooltip="log-Y scale (values ≤ 0 are gaps)"),
        Binding("a", "chart('cycle_x_axis')", "X axis", show=False, tooltip="x axis: step → epoch → wall time"),
        Binding("o", "chart('toggle_outliers')", "Ignore outliers", show=False, tooltip="ignore outliers (y range from the 1st–99th percentile)"),
        Binding("z", "chart('cycle_zoom')", "Zoom", show=False, tooltip="zoom: all → last 10k → 1k → 100 steps"),
        Binding("c", "toggle_cursor", "Cursor", show=False, tooltip="cursor on/off: the exact value and global step under it"),
        Binding("left", "move_cursor(-1)", "Cursor left", show=False, priority=True, tooltip=CURSOR_HELP),
        Binding("right", "move_cursor(1)", "Cursor right", show=False, priority=True, tooltip=CURSOR_HELP),
        Binding("e", "export", "Export metrics", show=False, tooltip="export this run's steps and epochs as CSV (next to the run directory)"),
    ]  # fmt: skip
    HELP_NOTES = RUN_SCREEN_NOTES

    def __init__(self, run_dir: str | Path, *, launched: subprocess.Popen | None = None) -> None:
        """`launched`: the trainer that `entrenar-tui run` (or `s`) just started ("starting…" until
        it writes its state)."""
        super().__init__()
        self.launched = launched
        self.model: RunModel = RunModel(run_dir)
        self.watcher: RunWatcher | None = None
        self.settings = user_settings.Settings()
        self.controls = ChartControls()  # as the user left them once the settings are loaded
        self.log_wanted = False  # the log pane is on (l); fit_panes may still hide it
        self.alerts = RunAlerts()  # with the user's thresholds once the settings are loaded
        self.steering: Steering | None = None  # x, r, s: once mounted (it acts through the app)
        self.header, self.progress = RunHeader(), RunProgress()
        self.resources, self.validation = ResourcesLine(id="resources"), ValidationBar()
        self.charts, self.cursor_line = RunCharts(), CursorLine(id="cursor-line")
        self.epoch_table, self.log_pane = EpochTable(id="epochs"), LogPane(id="log-pane")
        self.problems_line = ProblemsLine()
        self.confusion: ConfusionScreen | None = None  # m's view while open: told of new epochs
        self._keys_apply: tuple[bool, ...] = ()  # x, r, s as the footer last showed them

    @property
    def view(self) -> ChartView:
        """How the charts are drawn now (the chart controls' view)."""
        return self.controls.view

    def compose(self) -> ComposeResult:
        yield from (self.header, self.progress, self.resources, self.validation, self.charts)
        yield from (self.cursor_line, self.epoch_table, self.log_pane, self.problems_line, Footer())

    # ------------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        app = self.app
        self.model.clock = app.clock
        self.model.now = app.clock()
        if self.launched is not None:
            self.model.begin(Request("start", "starting…", app.clock(), self.launched))
            app.adopt(self.launched)
        self.steering = Steering(app, self.model, self.update_view, self._open_run)
        self._load_settings()
        self.update_view(steps=True, epochs=True)
        if app.watch_enabled:
            poll, force = app.poll_interval, app.force_polling
            self.watcher = RunWatcher(self.model.dir, self, poll_interval=poll, force_polling=force)
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
    # Folded in through RunModel.apply_*: the one way a run's files get into a model (checked
    # there, model/validation.py), the way --once, the browser and the comparison read a run too.

    def on_directory_changed(self, message: messages.DirectoryChanged) -> None:
        self.model.exists = message.exists
        self.update_view()

    def on_run_info_changed(self, message: messages.RunInfoChanged) -> None:
        previous = self.model.run
        self.model.apply_run_info(message.run)
        note = new_resume_note(previous, self.model.run)
        if note:  # e.g. "resumed from checkpoints/last at step 3; steps 4–52 are redone"
            self.app.notify(note, timeout=15)
        self.update_view(epochs=True)

    def on_state_changed(self, message: messages.StateChanged) -> None:
        if self.model.apply_state(message.state):  # a new trainer: looked up now, not at the tick
            self.model.trainer = self._liveness(self.model.state)
        self.update_view()

    def on_epochs_changed(self, message: messages.EpochsChanged) -> None:
        self.model.apply_epochs(message.epochs, message.best_epoch)
        self.update_view(epochs=True)

    def on_result_changed(self, message: messages.ResultChanged) -> None:
        self.model.apply_result(message.result)
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

    def on_alert_raised(self, message: messages.AlertRaised) -> None:
        """A new alert of this run: a toast, the bell and --notify-cmd (the app's announce)."""
        self.app.announce(self.model.name, message.alert)

    # ------------------------------------------------------------------------ the view

    def update_view(self, *, steps: bool = False, epochs: bool = False) -> None:
        """The model changed (a file, the clock, a key): its alerts are brought up to date (by the
        model layer; each new one comes back as an AlertRaised message), then the view redrawn."""
        for alert in self.alerts.update(self.model):
            self.post_message(messages.AlertRaised(self.model.dir, alert))
        self.draw(steps=steps, epochs=epochs)

    def draw(self, *, steps: bool = False, epochs: bool = False) -> None:
        """Every widget from the model; the charts only when their data changed."""
        model = self.model
        self.header.show(model)
        self.progress.show(model)
        self.resources.show(model.state, live=model.status in LIVE_STATUSES)
        self.log_pane.follow(Path(model.dir) / Files.LOG)
        self.validation.show(model)
        self.charts.show(model, self.view, steps=steps, epochs=epochs)
        if steps or epochs:
            width = self.size.width - 3  # the line's padding and its ▏
            self.cursor_line.show(self.charts.cursor_text(model, self.view, width))
        self.epoch_table.show(model)
        self.problems_line.show(model)
        if epochs and self.confusion is not None:
            self.confusion.show()
        self._refresh_keys()
        self.fit_panes()

    def on_resize(self) -> None:
        self.fit_panes()

    def fit_panes(self) -> None:
        """Give the charts their rows first (pane_heights): the epoch table scrolls to its last
        rows, the log pane shrinks, before any chart gets too short to read."""
        table, log = self.epoch_table, self.log_pane
        fixed = (
            self.progress,
            self.resources,
            self.validation,
            self.cursor_line,
            self.problems_line,
        )
        used = 2 + sum(w.outer_size.height or 1 for w in fixed if w.display)  # + header, footer
        wanted = 1 + table.row_count  # its header and every row
        heights = pane_heights(self.size.height - used, wanted, self.log_wanted)
        for pane, height in zip((table, log), heights, strict=True):
            pane.display = height > 0
            if height and pane.styles.height != Scalar.from_number(height):
                pane.styles.height = height
        if heights[0] and heights[0] < wanted:
            table.call_after_refresh(table.scroll_end, animate=False)

    # ------------------------------------------------------------------------ x / r / s / ?

    def action_stop(self) -> None:
        self.steering.stop()

    def action_resume(self) -> None:
        self.steering.resume()

    def action_start(self) -> None:
        self.steering.start()

    def _open_run(self, run_dir: Path, process: subprocess.Popen) -> None:
        """A run started in a new directory (s): a screen that watches it instead."""
        self.app.switch_screen(MonitorScreen(run_dir, launched=process))

    def action_refused(self, action: str) -> None:
        """x, r or s where the footer does not show it (Steering.refused)."""
        self.steering.refused(action, getattr(self, f"action_{action}"))
        self._refresh_keys()

    def _refresh_keys(self) -> None:
        """The footer shows x, r and s only where they apply (check_action, Controller.refusal):
        redrawn when that changes."""
        apply = tuple(self.check_action(action, ()) for action in (*ACTIONS, "confusion"))
        if apply != self._keys_apply:
            self._keys_apply = apply
            self.refresh_bindings()

    def action_help(self) -> None:
        self.app.show_help(self.model.problems())

    def action_confusion(self, _anyway: int = 0) -> None:
        self.confusion = ConfusionScreen(self.model)
        self.app.push_screen(self.confusion)

    # ------------------------------------------------------------------------ settings

    def _load_settings(self) -> None:
        self.settings, notice = user_settings.load()
        self.controls = ChartControls.remembered(self.settings)
        self.log_wanted = self.settings.log_pane
        self.alerts = RunAlerts(self.settings.alerts)
        if notice:
            self.app.notify(notice, severity="warning", timeout=8)

    def _changed(self) -> None:
        """A control changed: remembered at once (a few hundred bytes, atomically; a failure is
        only noted), and the charts redrawn."""
        st = self.settings
        self.controls.remember(st)
        st.log_pane = self.log_wanted
        st.theme = self.app.theme  # the app remembers it as it changes (settings.follow_theme)
        try:
            user_settings.save(st)
        except OSError as e:
            self.app.notify(f"settings not saved: {e}", severity="warning")
        self.update_view(steps=True, epochs=True)

    # ------------------------------------------------------------------------ chart controls, log

    def action_toggle_log(self) -> None:
        self.log_wanted = not self.log_wanted
        self._changed()
        if self.log_pane.display:
            self.log_pane.poll()
        elif self.log_wanted:
            self.app.notify("no room for the log pane at this size: the charts come first")

    def action_chart(self, control: str, *args: int) -> None:
        """A chart key ([ ] y a o z): its ChartControls method, remembered, the charts redrawn."""
        getattr(self.controls, control)(*args)
        self._changed()

    def action_toggle_cursor(self) -> None:
        """c: the cursor (not remembered)."""
        self.controls.toggle_cursor(len(self.model.history))
        self.update_view(steps=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The arrows belong to the cursor only while it is on (else to the focused widget); x, r
        and s are the footer's only where they apply."""
        if action == "move_cursor":
            return self.view.cursor is not None
        if action == "confusion":  # in the footer once an epoch has per-class data
            return bool(parameters) or has_per_class(self.model.epochs)
        if action in ACTIONS:  # shown and bound only where they apply; else `refused` says why
            return self.app.controller.refusal(action, self.model) is None
        return True

    def action_move_cursor(self, direction: int) -> None:
        steps = len(self.model.history)
        self.controls.move_cursor(direction, steps, self.charts.cursor_columns())
        self.update_view(steps=True)

    def action_export(self) -> None:
        """e: the run's steps and epochs as CSV next to the run directory (else in the cwd), in a
        worker thread; the notice holds paths (app.notify shows them as they are)."""
        from entrenar_tui.output.export import export_notice

        run_dir = Path(self.model.dir)

        def work() -> None:
            text, severity = export_notice(run_dir)
            self.app.call_from_thread(self.app.notify, text, severity=severity)

        self.run_worker(work, thread=True, exclusive=True, group="export")

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's actions for the command palette (MonitorApp.get_system_commands)."""
        return palette_commands(self)


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
