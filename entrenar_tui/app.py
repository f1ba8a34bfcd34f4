"""MonitorApp: routes the screens, the theme and the notifications, and lends the screens the
services they share: the clock, the liveness probe, the Controller, the poll settings.

It opens on a run (screens/monitor.py: MonitorScreen owns that run's model and watcher) or on a
root of runs (screens/runs.py: the browser pushes a MonitorScreen for the run it opens). Trainers
started from any screen are reaped here, so that none stays a zombie while the app is open.
Nothing here ever stops training on quit.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen

from entrenar_tui.controller import Controller, StartSpec
from entrenar_tui.model.alerts import Alert, level, notify_command, run_notify
from entrenar_tui.model.lr_find import is_lr_find_dir
from entrenar_tui.model.run import Problem
from entrenar_tui.screens.help import PALETTE, HelpScreen, key_rows
from entrenar_tui.screens.lr_find import LrFindScreen
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.screens.runs import RunsScreen
from entrenar_tui.settings import follow_theme
from trainer.monitor.control import trainer_liveness
from trainer.monitor.text import printable

SEVERITY = {"error": "error", "warning": "warning", "info": "information"}  # level -> toast's
ALERT_TIMEOUT_S = 15.0


class MonitorApp(App):
    """`clock` and `probe` (is the state's pid our live trainer?) are injected so that tests and
    snapshots do not depend on wall time or on the process table (without a probe, the run's own
    lock is asked: control.trainer_liveness); `launched` is the trainer that `entrenar-tui run`
    just started ("starting…" until it writes its state); `notify_cmd` is `--notify-cmd CMD`, run
    for each alert (announce)."""

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
        notify_cmd: str | None = None,
    ):
        super().__init__()
        if run_dir is None and root is None:
            raise ValueError("MonitorApp needs a run directory or a root of runs")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.root = Path(root) if root is not None else None
        self.launched = launched
        self.clock, self.injected_probe = clock, probe
        self.controller = controller or Controller(start_spec=start)
        self.started_trainers: list[subprocess.Popen] = []  # until reaped (see reap)
        self.watch_enabled, self.force_polling = watch, force_polling
        self.poll_interval, self.tick_interval = poll_interval, tick_interval
        self.notice = notice
        self.notify_cmd = notify_cmd

    def on_mount(self) -> None:
        follow_theme(self)  # the theme chosen in the palette, remembered (settings.py)
        if self.root is not None:
            self.push_screen(RunsScreen(self.root))
        elif self.launched is None and is_lr_find_dir(self.run_dir):  # `entrenar-train lr-find`'s
            self.push_screen(LrFindScreen(self.run_dir))
        else:
            self.push_screen(MonitorScreen(self.run_dir, launched=self.launched))
        self.set_interval(self.tick_interval, self.reap)
        if self.notice:
            self.notify(self.notice, timeout=10)

    # ------------------------------------------------------------------------ shared services

    def liveness(self, state: dict[str, Any] | None, run_dir: Path) -> str:
        """alive / gone / remote / unknown: the trainer `state` names, as the run's lock proves."""
        if self.injected_probe is not None:
            return self.injected_probe(state)
        return trainer_liveness(state, run_dir)

    def adopt(self, process: subprocess.Popen | None) -> None:
        """A trainer this app started: its exit status is collected by `reap`."""
        if process is not None and all(p is not process for p in self.started_trainers):
            self.started_trainers.append(process)

    def reap(self) -> None:
        """Collect the exit status of every trainer this app started that has ended, so that none
        stays a zombie while the app is open (Popen.poll waits for it without blocking)."""
        self.started_trainers = [p for p in self.started_trainers if p.poll() is None]

    def notify(self, message: str, *, markup: bool = False, **kwargs: Any) -> None:
        """Notifications quote run files (pid, host, paths, error text): never markup, never a
        control character."""
        super().notify(printable(message), markup=markup, **kwargs)

    def announce(self, run_name: str, alert: Alert) -> None:
        """An alert that happened while the app watched: a toast (severity by its level), the
        terminal bell, and `--notify-cmd` with its kind and "run: message" as arguments (started
        detached, no shell); a notify command that cannot start is a warning toast."""
        text = f"{run_name}: {alert.message}"
        self.notify(text, severity=SEVERITY[level(alert)], timeout=ALERT_TIMEOUT_S)
        self.bell()
        if self.notify_cmd:
            try:  # (the CLI refuses a bad CMD at start; an app built in code may hold one)
                failure = run_notify(notify_command(self.notify_cmd, replace(alert, message=text)))
            except ValueError as e:
                failure = str(e)
            if failure:
                self.notify(failure, severity="warning", timeout=ALERT_TIMEOUT_S)

    # ------------------------------------------------------------------------ routing

    def action_back_to_runs(self) -> None:
        self.pop_screen()  # the run screen stops its watcher; the browser's keeps the list fresh

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back_to_runs":
            return self.root is not None and isinstance(self.screen, MonitorScreen)
        return super().check_action(action, parameters)

    def show_help(self, problems: Sequence[Problem] = ()) -> None:
        """`?` on any screen: that screen's keys and the app's that apply there (from their
        BINDINGS), its notes, and the problems it passes (the run screen: every current one)."""
        screen = next(s for s in reversed(self.screen_stack) if not isinstance(s, ModalScreen))
        own = [b for b in self.BINDINGS if self.check_action(b.action, ()) is not False]
        keys = key_rows([*getattr(type(screen), "BINDINGS", []), *own], self.get_key_display)
        notes = getattr(screen, "HELP_NOTES", "")
        self.push_screen(HelpScreen(list(problems), [*keys, PALETTE], notes))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        # Each screen brings its own (screens/monitor.py, screens/runs.py, screens/compare.py).
        yield from getattr(screen, "system_commands", tuple)()
        if self.root is not None and isinstance(screen, MonitorScreen):
            yield SystemCommand(
                "Back to the runs",
                "The list of runs under the root (escape)",
                self.action_back_to_runs,
            )
