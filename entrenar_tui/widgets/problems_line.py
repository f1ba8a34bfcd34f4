"""One line that says what is wrong (NaN, failed, crashed, unreadable files), most serious first;
when nothing is, how fresh the data is."""

from __future__ import annotations

from textual.widgets import Static

from entrenar_tui.run_model import Problem, RunModel
from trainer.monitor.reader import format_age

LEVELS = ("error", "warning", "info", "ok")


class ProblemsLine(Static):
    DEFAULT_CSS = "ProblemsLine { height: 1; }"

    def show(self, model: RunModel) -> None:
        problems = model.problems()
        level = problems[0].level if problems else "ok"
        for name in LEVELS:
            self.set_class(name == level, f"-{name}")
        self.update(self._text(problems, model))

    @staticmethod
    def _text(problems: list[Problem], model: RunModel) -> str:
        if problems:
            more = f"  (+{len(problems) - 1} more, ? for all)" if len(problems) > 1 else ""
            mark = {"error": "✗ ", "warning": "! "}.get(problems[0].level, "")
            return f"{mark}{problems[0].text}{more}"
        age = model.heartbeat_age()
        fresh = f"last update {format_age(age)} ago" if age is not None else ""
        return " · ".join(p for p in ("✓ no problems", fresh, model.watch_mode) if p)
