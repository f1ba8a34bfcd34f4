"""One line that says what is wrong (NaN, failed, crashed, unreadable files), most serious first;
when nothing is, how fresh the data is. The text quotes run files and train.log: shown without
markup and with control characters spelled out."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from entrenar_tui.model.run import Problem, RunModel
from trainer.monitor.reader import format_age
from trainer.monitor.text import printable

LEVELS = ("error", "warning", "info", "ok")


class ProblemsLine(Static):
    DEFAULT_CSS = "ProblemsLine { height: 1; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, **kwargs)

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
            return f"{mark}{printable(problems[0].text)}{more}"
        age = model.heartbeat_age()
        fresh = f"last update {format_age(age)} ago" if age is not None else ""
        return printable(" · ".join(p for p in ("✓ no problems", fresh, model.watch_mode) if p))
