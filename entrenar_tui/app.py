"""MonitorApp: watches one run directory and steers its trainer.

The watcher thread posts Messages (messages.py); the handlers here fold them into the RunModel and
redraw the screen. A one-second tick moves the clock (elapsed, "crashed") and looks the trainer's
pid up. Keys act through the Controller; nothing here ever stops training on quit.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen

from entrenar_tui.control import Controller, Refused, StartPlan, StartSpec
from entrenar_tui.messages import (
    DirectoryChanged,
    EpochsChanged,
    FileProblem,
    ResultChanged,
    RunInfoChanged,
    RunMessage,
    StateChanged,
    StepsAppended,
    WatchMode,
)
from entrenar_tui.run_model import Request, RunModel
from entrenar_tui.screens.confirm import ConfirmScreen
from entrenar_tui.screens.help import PALETTE, HelpScreen, key_rows
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.screens.runs import RunsScreen
from entrenar_tui.settings import follow_theme
from entrenar_tui.untrusted import clean_epochs, clean_result, clean_run, clean_state
from entrenar_tui.watcher import RunWatcher
from trainer.monitor.control import trainer_liveness
from trainer.monitor.schema import Files
from trainer.monitor.text import printable


class MonitorApp(App):
    """`clock` and `probe` (is the state's pid our live trainer?) are injected so that tests and
    snapshots do not depend on wall time or on the process table (without a probe, the run's own
    lock is asked: control.trainer_liveness); `launched` is the trainer that `entrenar-tui run`
    just started ("starting…" until it writes its state)."""

    CSS_PATH = "app.tcss"
    TITLE = "entrenar-tui"
    BINDINGS: ClassVar = [
        Binding("q", "quit", "Quit", tooltip="quit the monitor; training goes on (`entrenar-tui monitor DIR` re-attaches)"),
        # Only with a browser under the run screen (check_action): back to the list of runs.
        Binding("escape", "back_to_runs", "Runs", tooltip="back to the list of runs"),
        Binding("backspace", "back_to_runs", "Runs", show=False, tooltip="back to the list of runs"),
    ]  # fmt: skip

    def __init__(
        self,
        run_dir: str | Path | None = None,
        *,
        root: str | Path | None = None,
        start: StartSpec | None = None,
        launched: subprocess.Popen | None = None,
        controller: Controller | None = None,
        clock: Callable[[], float] = time.time,
        probe: Callable[[dict[str, Any] | None], str] | None = None,
        watch: bool = True,
        force_polling: bool = False,
        poll_interval: float = 1.0,
        tick_interval: float = 1.0,
        notice: str | None = None,
    ):
        super().__init__()
        if run_dir is None and root is None:
            raise ValueError("MonitorApp needs a run directory or a root of runs")
        # With `root`, the app opens on the runs browser (screens/runs.py) and `model` follows the
        # run opened from it; until then it is an empty placeholder.
        self.root = Path(root) if root is not None else None
        self.clock, self.injected_probe = clock, probe
        self.controller = controller or Controller(start_spec=start)
        self.model = RunModel(run_dir if run_dir is not None else root, clock)
        self.started_trainers: list[subprocess.Popen] = []  # until reaped (see reap)
        if launched is not None:
            self.model.begin(Request("start", "starting…", clock(), launched))
            self.adopt(launched)
        self.watch_enabled, self.force_polling = watch, force_polling
        self.poll_interval, self.tick_interval = poll_interval, tick_interval
        self.watcher: RunWatcher | None = None
        self.notice = notice

    # ------------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        follow_theme(self)  # the theme chosen in the palette, remembered (settings.py)
        if self.root is not None:
            self.push_screen(RunsScreen(self.root))
        else:
            self.push_screen(MonitorScreen())
            self._start_watcher()
        self.set_interval(self.tick_interval, self.tick)
        if self.notice:
            self.notify(self.notice, timeout=10)

    def on_unmount(self) -> None:
        self._stop_watcher()

    def _start_watcher(self) -> None:
        if self.watch_enabled:
            self.watcher = RunWatcher(
                self.model.dir,
                self,
                poll_interval=self.poll_interval,
                force_polling=self.force_polling,
            )
            self.watcher.start()

    def _stop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def follow_run(self, run_dir: Path) -> None:
        """Follow another run directory (after `s` started a run in a new one)."""
        self._stop_watcher()
        self.model = RunModel(run_dir, self.clock)
        self._start_watcher()
        self._redraw(steps=True, epochs=True)

    # ------------------------------------------------------------------------ the runs browser

    def open_run(self, run_dir: Path) -> None:
        """Enter on the browser: watch that run on the run screen (escape comes back)."""
        self.follow_run(run_dir)
        self.push_screen(MonitorScreen())

    def action_back_to_runs(self) -> None:
        self._stop_watcher()  # the browser's own watcher keeps the list fresh
        self.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back_to_runs":
            return self.root is not None and isinstance(self.screen, MonitorScreen)
        return super().check_action(action, parameters)

    def probe(self, state: dict[str, Any] | None) -> str:
        """alive / gone / remote / unknown: the trainer `state` names, as the run's lock proves."""
        if self.injected_probe is not None:
            return self.injected_probe(state)
        return trainer_liveness(state, self.model.dir)

    def tick(self) -> None:
        """The clock moved: elapsed, heartbeat age, crashed-or-not; and where the trainer is."""
        self.model.tick(self.clock(), self.probe(self.model.state))
        self.reap()
        self._redraw()

    def adopt(self, process: subprocess.Popen | None) -> None:
        """A trainer this app started: its exit status is collected by `reap`."""
        if process is not None and all(p is not process for p in self.started_trainers):
            self.started_trainers.append(process)

    def reap(self) -> None:
        """Collect the exit status of every trainer this app started that has ended, so that none
        stays a zombie while the app is open (Popen.poll waits for it without blocking)."""
        self.started_trainers = [p for p in self.started_trainers if p.poll() is None]

    def _redraw(self, *, steps: bool = False, epochs: bool = False) -> None:
        screen = self._monitor_screen()
        if screen is not None:
            screen.update_view(steps=steps, epochs=epochs)

    def _monitor_screen(self) -> MonitorScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, MonitorScreen):
                return screen
        return None

    # ------------------------------------------------------------------------ watcher messages

    def _stale(self, message: RunMessage) -> bool:
        """True for what a watcher of a previous directory posted before it stopped."""
        return message.run_dir != self.model.dir

    def on_directory_changed(self, message: DirectoryChanged) -> None:
        if self._stale(message):
            return
        self.model.exists = message.exists
        self._redraw()

    # What the files say is checked (untrusted.py) before the model sees it: a value of the wrong
    # type is dropped and named on the problems line ("<file> values"), text is made printable.

    def on_run_info_changed(self, message: RunInfoChanged) -> None:
        if self._stale(message):
            return
        previous = self.model.run
        self.model.run, problem = clean_run(message.run)
        self.model.set_problem(f"{Files.RUN} values", problem)
        note = new_resume_note(previous, self.model.run)
        if note:  # e.g. "resumed from checkpoints/last at step 3; steps 4–52 are redone"
            self.notify(note, timeout=15)
        self._redraw(epochs=True)

    def on_state_changed(self, message: StateChanged) -> None:
        if self._stale(message):
            return
        previous = self.model.state or {}
        state, problem = clean_state(message.state)
        self.model.set_problem(f"{Files.STATE} values", problem)
        self.model.set_state(state)
        if any(previous.get(k) != state.get(k) for k in ("pid", "host", "pid_create_time")):
            self.model.trainer = self.probe(state)  # a new trainer: look it up now, not at the tick
        self._redraw()

    def on_epochs_changed(self, message: EpochsChanged) -> None:
        if self._stale(message):
            return
        epochs, best_epoch, problem = clean_epochs(message.epochs, message.best_epoch)
        self.model.set_problem(f"{Files.EPOCHS} values", problem)
        self.model.set_epochs(epochs, best_epoch)
        self._redraw(epochs=True)

    def on_result_changed(self, message: ResultChanged) -> None:
        if self._stale(message):
            return
        self.model.result, problem = clean_result(message.result)
        self.model.set_problem(f"{Files.RESULT} values", problem)
        self._redraw()

    def on_steps_appended(self, message: StepsAppended) -> None:
        if self._stale(message):
            return
        self.model.add_steps(message.batch, message.loaded, message.size)
        self._redraw(steps=True)

    def on_file_problem(self, message: FileProblem) -> None:
        if self._stale(message):
            return
        self.model.set_problem(message.file, message.text)
        self._redraw()

    def on_watch_mode(self, message: WatchMode) -> None:
        if self._stale(message):
            return
        self.model.watch_mode = message.mode
        self._redraw()

    def notify(self, message: str, *, markup: bool = False, **kwargs: Any) -> None:
        """Notifications quote run files (pid, host, paths, error text): never markup, never a
        control character."""
        super().notify(printable(message), markup=markup, **kwargs)

    # ------------------------------------------------------------------------ keys

    def _look_up_trainer(self) -> None:
        """Before a key acts: is the trainer alive right now (not as of the last tick)?"""
        self.model.trainer = self.probe(self.model.state)

    def stop_run(self) -> None:
        """x: confirm, then stop; while a stop is on its way, confirm, then force."""
        self._look_up_trainer()
        model, controller = self.model, self.controller
        if not model.live:
            self.notify(f"nothing to stop: the run is {model.status}", severity="warning")
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
        self.push_screen(
            ConfirmScreen(question, detail, yes="Stop"),
            lambda yes: self._act(act, model) if yes else None,
        )

    def resume_run(self) -> None:
        self._look_up_trainer()
        self._act(self.controller.resume, self.model)
        if self.model.request is not None:
            self.adopt(self.model.request.process)

    def start_run(self) -> None:
        """s: show the command, then start it detached (in a new directory if this one has a run)."""
        self._look_up_trainer()
        try:
            plan = self.controller.plan_start(self.model)
        except Refused as e:
            self.notify(str(e), severity="warning")
            return
        where = (  # (printable before joining: a name's own newline must not start a line)
            ""
            if plan.run_dir == self.model.dir
            else f"\nin a new run directory (this one holds a run): {printable(plan.run_dir)}"
        )
        self.push_screen(
            ConfirmScreen("Start a new run?", f"$ {printable(plan.command)}{where}", yes="Start"),
            lambda yes: self._start(plan) if yes else None,
        )

    def _start(self, plan: StartPlan) -> None:
        try:
            text, process = self.controller.start(plan, self.model)
        except (Refused, OSError) as e:
            self.notify(str(e), severity="error")
            return
        self.adopt(process)
        if plan.run_dir != self.model.dir:
            self.follow_run(plan.run_dir)
        self.model.begin(Request("start", "starting…", self.clock(), process))
        self.notify(text)
        self._redraw()

    def _act(self, act: Callable[[RunModel], str], model: RunModel) -> None:
        try:
            self.notify(act(model))
        except Refused as e:
            self.notify(str(e), severity="warning")
        except OSError as e:  # (an UnsafeFile names the file and what it is)
            self.notify(f"failed: {e}", severity="error")
        self._redraw()

    def show_help(self) -> None:
        """`?` on any screen: that screen's keys and the app's that apply there (from their
        BINDINGS), its notes, and on the run screen every current problem."""
        screen = next(s for s in reversed(self.screen_stack) if not isinstance(s, ModalScreen))
        own = [b for b in self.BINDINGS if self.check_action(b.action, ()) is not False]
        keys = key_rows([*getattr(type(screen), "BINDINGS", []), *own], self.get_key_display)
        problems = self.model.problems() if isinstance(screen, MonitorScreen) else []
        notes = getattr(screen, "HELP_NOTES", "")
        self.push_screen(HelpScreen(problems, [*keys, PALETTE], notes))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        # The browser and the comparison bring their own (screens/runs.py, screens/compare.py).
        yield from getattr(screen, "system_commands", tuple)()
        if self.root is not None and not isinstance(screen, MonitorScreen):
            return  # no run is open: stop/resume/start/help act on the run screen's run
        if self.root is not None:
            yield SystemCommand(
                "Back to the runs",
                "The list of runs under the root (escape)",
                self.action_back_to_runs,
            )
        yield SystemCommand(
            "Stop the run", "Finish the batch, save checkpoints/last, stop (x)", self.stop_run
        )
        yield SystemCommand(
            "Resume the run", "entrenar-train --resume this directory (r)", self.resume_run
        )
        yield SystemCommand(
            "Start a run", "From the config, after showing the command (s)", self.start_run
        )
        yield SystemCommand("Help", "Keys, statuses and every current problem (?)", self.show_help)


def new_resume_note(before: dict[str, Any] | None, after: dict[str, Any]) -> str | None:
    """The trainer's note on a resume that happened while the app watched (run.json's
    resumed_from grew), or None; resumes from before the app looked are history."""
    if before is None:
        return None
    old, new = before.get("resumed_from") or [], after.get("resumed_from") or []
    if len(new) <= len(old) or not isinstance(new[-1], dict):
        return None
    note = new[-1].get("note")
    return note if isinstance(note, str) and note else None
