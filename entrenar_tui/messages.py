"""What a watcher thread tells the screen that owns it, and the alerts the screen's run raises.
Plain dataclass Messages; frequent ones replace older copies still in the queue (`can_replace`),
so a burst of writes costs one update."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from entrenar_tui.model.alerts import Alert
from trainer.monitor.reader import StepBatch


@dataclass
class RunMessage(Message):
    """Says which run directory it is about (a queued copy is replaced only by one about the same
    directory). Each run screen has its own watcher, stopped when the screen goes, so a message
    never reaches a screen about another run."""

    run_dir: Path


@dataclass
class DirectoryChanged(RunMessage):
    """The run directory appeared or disappeared."""

    exists: bool


@dataclass
class RunInfoChanged(RunMessage):
    """run.json was (re)written: at start and on resume."""

    run: dict[str, Any]


@dataclass
class StateChanged(RunMessage):
    """state.json was rewritten; only the newest matters."""

    state: dict[str, Any]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StateChanged) and message.run_dir == self.run_dir


@dataclass
class EpochsChanged(RunMessage):
    """epochs.json was rewritten; only the newest matters."""

    epochs: list[dict[str, Any]]
    best_epoch: int | None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EpochsChanged) and message.run_dir == self.run_dir


@dataclass
class ResultChanged(RunMessage):
    result: dict[str, Any]


@dataclass
class StepsAppended(RunMessage):
    """New complete lines of steps.jsonl. Never replaced: each batch carries history. `loaded`
    is how many bytes of the file have been read, `size` its size (for a loading indicator)."""

    batch: StepBatch
    loaded: int = 0
    size: int = 0


@dataclass
class FileProblem(RunMessage):
    """A file became unreadable (text) or readable again (None)."""

    file: str
    text: str | None


@dataclass
class FirstReadDone(RunMessage):
    """Everything the watcher's first read of the directory found has been posted: what comes
    after it happened while the screen watched (alerts before it are history, not news)."""


@dataclass
class WatchMode(RunMessage):
    """How the watcher learns about changes: "events" or "polling" (and why)."""

    mode: str


@dataclass
class AlertRaised(RunMessage):
    """An alert that happened while the screen watched (model/run_alerts.py decides which are
    new): the screen has it told (toast, bell, --notify-cmd) once."""

    alert: Alert


# ------------------------------------------------------------------------------ the runs browser


@dataclass
class RunsChanged(Message):
    """The runs under a browsed root (entrenar_tui.model.discovery.RunSummary, sorted by directory) and how
    the root watcher watches; only the newest matters. `grid`: the keys of the sweeps among them
    (their table columns); `problems`: what is wrong with a sweep.json; `plots`: each readable
    sweep.json's panel data (model/sweeps.py SweepPlot), its folder under the root first."""

    root: Path
    runs: list[Any]
    mode: str = ""
    grid: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    plots: tuple[Any, ...] = ()

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsChanged) and message.root == self.root
