"""The alerts of runs as the app watches them (model/alerts.py decides what they are): which are
active now (the problems line, `--once`) and which just happened (a toast, the bell,
`--notify-cmd`). Events already in a run's history when the app opened it are primed: shown on the
problems line, never told, so that opening a finished run does not ring. Plain Python, no Textual."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from entrenar_tui.model.alerts import Alert, AlertLog, AlertSettings, Detector, StepColumns, detect
from entrenar_tui.model.discovery import RunSummary
from entrenar_tui.model.run import RunModel
from trainer.monitor.schema import FINAL_STATUSES

CRASH_GRACE_S = 3.0  # a trainer that just exited has written its last state.json; give the watcher
# this long to deliver it before "crashed" (pid gone, status still live) is believed and told


def alerts_of(
    model: RunModel, detector: Detector, running_since: float | None = None
) -> list[Alert]:
    """Every alert the model's run shows now (its steps, epochs, status, error, the model's clock)."""
    return detector.detect(
        StepColumns.from_history(model.history),
        model.epochs,
        model.status,
        model.now,
        running_since,
        model.error,
        model.recoveries,
        model.steps_per_epoch,
        model.warmup_steps,
    )


class RunAlerts:
    """One run screen's alerts: a Detector for its run (new steps cost only themselves), an
    AlertLog, and whether the watcher's first read is in (`prime`). Until then everything found is
    history; after it, update() returns what is new."""

    def __init__(self, settings: AlertSettings | None = None) -> None:
        self.detector = Detector(settings)
        self.log = AlertLog()
        self.primed = False
        self.active: list[Alert] = []  # newest first
        self._order: dict[str, int] = {}  # key -> when it was first seen
        self._status: str | None = None
        self._running_since: float | None = None
        self._crashed_since: float | None = None

    def update(self, model: RunModel) -> list[Alert]:
        """Detect now; sets `active` (newest first; those found together, the last found first),
        and the model's alerts to them (the problems line, `?`), and returns the alerts to tell:
        the new ones, once primed."""
        status = model.status
        if status == "running" and self._status not in (None, "waiting", "running"):
            self._running_since = model.now  # back from validation, or resumed: not a stall
            # (from nothing or "waiting": the state just read, no change the screen saw)
        self._status = status
        found = alerts_of(model, self.detector, self._running_since)
        if status != "crashed":
            self._crashed_since = None
        elif self._crashed_since is None:
            self._crashed_since = model.now
        if self.primed and model.now - (self._crashed_since or model.now) < CRASH_GRACE_S:
            # just seen crashed: perhaps the trainer exited and its final state is on its way
            found = [a for a in found if a.kind != "crashed"]
        fresh = self.log.new(found)
        for alert in fresh:
            self._order[alert.key] = len(self._order)
        self.active = model.alerts = sorted(found, key=lambda a: self._order[a.key], reverse=True)
        return fresh if self.primed else []

    def prime(self, model: RunModel) -> None:
        """The watcher's first read has been folded into the model: what it shows is history."""
        self.update(model)
        self.primed = True


class RootAlerts:
    """The runs browser's alerts: only the end of a run (crashed, completed, stopped, failed), from
    each run's summary, since the browser does not read steps.jsonl (a Detector a run would read
    every run's history). A run is looked at again only when its status, last step or error
    changed. What a run shows when the browser first sees it (at open, or copied in later) is
    primed; `update` returns (run, alert) for what happens after."""

    def __init__(self, settings: AlertSettings | None = None) -> None:
        base = settings or AlertSettings()
        self.settings = replace(
            base,
            stalled=False,
            nan=False,
            spike=False,
            val_rising=False,
            flat_loss=False,
            single_class=False,
            below_baseline=False,
            never_predicted=False,
        )
        self.logs: dict[Path, AlertLog] = {}  # one a run seen
        self._seen: dict[Path, tuple[str, int | None, str | None]] = {}

    def update(self, runs: Iterable[RunSummary], now: float) -> list[tuple[RunSummary, Alert]]:
        news: list[tuple[RunSummary, Alert]] = []
        for run in runs:
            first_sight = run.dir not in self.logs
            log = self.logs.setdefault(run.dir, AlertLog())
            if run.status != "crashed" and run.status not in FINAL_STATUSES:
                self._seen.pop(run.dir, None)
                continue
            signature = (run.status, run.global_step, run.error)
            if self._seen.get(run.dir) == signature:
                continue
            self._seen[run.dir] = signature
            steps = [{"global_step": run.global_step}] if run.global_step is not None else []
            found = detect(steps, [], run.status, now, self.settings, error=run.error)
            fresh = log.new(found)
            if not first_sight:
                news += [(run, alert) for alert in fresh]
        return news
