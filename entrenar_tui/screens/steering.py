"""x, r and s on a run screen: the trainer looked up again before a key acts (not as of the last
tick), a question before a stop or a start, the app's Controller acting on the run, and what it
did told. The screen lends its model, a redraw, and how to open a run started in a new directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from entrenar_tui.controller import Refused, StartPlan
from entrenar_tui.model.run import Request, RunModel
from entrenar_tui.screens.confirm import ConfirmScreen
from trainer.monitor.text import printable


class Steering:
    def __init__(
        self,
        app: Any,
        model: RunModel,
        redraw: Callable[[], None],
        open_run: Callable[[Path, subprocess.Popen], None],
    ) -> None:
        """`app`: the MonitorApp (its controller, clock, liveness probe, notices and screens)."""
        self.app, self.model = app, model
        self.redraw, self.open_run = redraw, open_run

    def look_up_trainer(self) -> None:
        """Before a key acts: is the trainer alive right now (not as of the last tick)?"""
        self.model.trainer = self.app.liveness(self.model.state, self.model.dir)

    def refused(self, action: str, act: Callable[[], None]) -> None:
        """x, r or s where the footer does not show it: the trainer is looked up again (it may
        have ended since the last tick), then the key acts after all or says why not."""
        self.look_up_trainer()
        why = self.app.controller.refusal(action, self.model)
        if why is None:
            act()
        else:
            self.app.notify(why, severity="warning")

    def stop(self) -> None:
        """x: confirm, then stop; while a stop is on its way, confirm, then force."""
        self.look_up_trainer()
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

    def resume(self) -> None:
        """r: resume it detached (the Controller refuses a run that is not stopped, failed or
        crashed)."""
        self.look_up_trainer()
        self._act(self.app.controller.resume)
        if self.model.request is not None:
            self.app.adopt(self.model.request.process)

    def start(self) -> None:
        """s: show the command, then start it detached (in a new directory if this one has a run)."""
        self.look_up_trainer()
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
            self.open_run(plan.run_dir, process)
        else:
            self.app.adopt(process)
            self.model.begin(Request("start", "starting…", self.app.clock(), process))
            self.redraw()
        self.app.notify(text)

    def _act(self, act: Callable[[RunModel], str]) -> None:
        try:
            self.app.notify(act(self.model))
        except Refused as e:
            self.app.notify(str(e), severity="warning")
        except OSError as e:  # (an UnsafeFile names the file and what it is)
            self.app.notify(f"failed: {e}", severity="error")
        self.redraw()
