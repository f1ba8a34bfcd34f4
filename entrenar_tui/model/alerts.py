"""What the monitor warns about, decided from plain data (the steps, the epochs, the status, the
clock) with no Textual: a stalled trainer, a NaN/Inf loss, a loss spike, validation loss rising,
a crash, the end of the run; and, for a classifier that is not learning, a flat first epoch
(flat_loss.py) or a validation predicted as one class, no better than the majority class, or
never naming a class (class_alerts.py). Each alert carries a key naming its event, so that AlertLog lets
each event through once however often detection runs; notify_command and run_notify hand an alert
to the user's `--notify-cmd` without a shell."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from entrenar_tui import formatting as fmt
from entrenar_tui.model.alert import Alert
from entrenar_tui.model.class_alerts import ClassAlerts
from entrenar_tui.model.flat_loss import FLAT_DROP, FlatLoss
from entrenar_tui.model.recoveries import describe
from entrenar_tui.smoothing import ema_continue
from trainer.monitor.reader import StepHistory
from trainer.monitor.schema import FINAL_STATUSES
from trainer.monitor.spike_rule import (
    SPIKE_MIN_RISE,
    SPIKE_SPAN,
    SPIKE_WARMUP,
    SPIKE_Z,
    ema_weight,
    rises_above,
)
from trainer.monitor.step_rows import finite
from trainer.monitor.text import duration, printable
from trainer.monitor.values import is_number

KINDS = (
    "stalled",
    "nan",
    "spike",
    "val_rising",
    "crashed",
    "finished",
    "recovered",
    "single_class",
    "below_baseline",
    "never_predicted",
    "flat_loss",
)


@dataclass
class AlertSettings:
    """Thresholds of the alerts (the monitor's settings hold them)."""

    # both below the reader's STALE_STEPS (20) and STALE_MIN_S (60 s), after which a run whose
    # heartbeat stopped is shown crashed: a hung trainer is told stalled first
    stall_factor: float = 10.0  # stalled: no step for this many × the median step interval...
    stall_min_s: float = 30.0  # ...and for at least this many seconds
    stall_window: int = 100  # the median is of this many last intervals between steps
    stall_min_steps: int = 3  # steps seen before a median interval is trusted
    spike_z: float = SPIKE_Z  # spike: loss above the EMA by more than this many EMA σ...
    spike_min_rise: float = SPIKE_MIN_RISE  # ...and by more than this fraction of the EMA
    spike_span: int = (
        SPIKE_SPAN  # EMA span in steps (weight 1 - 2/(span+1)); the quiet after a spike
    )
    spike_warmup: int = SPIKE_WARMUP  # finite losses seen before spikes are looked for
    nan_max_alerts: int = 5  # NaN/Inf: at most this many alerts a run (one per stretch of them)
    rising_epochs: int = 3  # val_rising: this many epochs in a row, each above the one before
    baseline_epochs: int = 2  # below_baseline, never_predicted: from this epoch on
    flat_loss_drop: float = FLAT_DROP  # flat_loss: epoch 1's loss fell by less than this fraction
    stalled: bool = True  # warn when the trainer stalls
    nan: bool = True  # warn on a NaN/Inf loss
    spike: bool = True  # warn on a loss spike
    val_rising: bool = True  # warn when validation loss keeps rising
    crashed: bool = True  # warn when the trainer crashed
    finished: bool = True  # tell when the run completed, stopped or failed
    recovered: bool = True  # tell when the trainer healed the run (run.json recoveries)
    single_class: bool = True  # warn when validation was predicted as one class only
    below_baseline: bool = True  # warn when val accuracy is no better than the majority class
    never_predicted: bool = True  # warn when a class present in validation is never predicted
    flat_loss: bool = True  # warn when the training loss stayed flat over its first epoch


@dataclass(frozen=True)
class StepColumns:
    """What the alerts read of the steps, as float64 columns in step order: `global_step`, `loss`
    and `t` (NaN where a line's value was null or missing: the writer writes NaN/Inf as null).
    `edits` (Series.edits of the monitor's loss column) tells a Detector that the column only
    grew since its last look; None: look at it all again."""

    global_step: np.ndarray
    loss: np.ndarray
    t: np.ndarray
    edits: int | None = None  # the loss column's edit count, where it can grow in place

    @classmethod
    def from_records(cls, steps: Sequence[Mapping[str, Any]]) -> StepColumns:
        """From step dicts as in steps.jsonl (a script's, a test's)."""

        def column(name: str) -> np.ndarray:
            return np.fromiter((finite(s.get(name)) for s in steps), np.float64, len(steps))

        return cls(column("global_step"), column("loss"), column("t"))

    @classmethod
    def from_history(cls, history: StepHistory) -> StepColumns:
        """The monitor's own columns (a million steps cost no dict per step)."""
        return cls(
            history.global_steps.array.astype(np.float64),
            history.series["loss"].values.array,
            history.series["t"].values.array,
            history.series["loss"].edits,
        )

    def __len__(self) -> int:
        return len(self.global_step)

    def step(self, i: int) -> str:
        """The global step at index i as the keys and messages write it."""
        value = self.global_step[i]
        return str(int(value)) if math.isfinite(value) else "?"


class Detector:
    """detect() for one run watched over time: its spike scan goes on from where it stopped, epoch
    1's flat-loss verdict and each epoch record's classes are kept (the rest is cheap to redo).
    One per run a monitor shows; a new one for another run."""

    def __init__(self, settings: AlertSettings | None = None) -> None:
        self.settings = settings or AlertSettings()
        self.spikes = SpikeScan(self.settings)
        self.classes = ClassAlerts()
        self.flat_loss = FlatLoss()

    def detect(
        self,
        steps: StepColumns | Sequence[Mapping[str, Any]],
        epochs: Sequence[Mapping[str, Any]],
        status: str | None,
        now: float,
        running_since: float | None = None,
        error: str | None = None,
        recoveries: Sequence[Mapping[str, Any]] = (),
        steps_per_epoch: int = 0,
        warmup_steps: int = 0,
    ) -> list[Alert]:
        """As the module's detect()."""
        settings = self.settings
        columns = steps if isinstance(steps, StepColumns) else StepColumns.from_records(steps)
        alerts: list[Alert] = []
        if settings.nan:
            alerts += _nan_alerts(columns, settings)
        if settings.spike:
            alerts += self.spikes.update(columns)
        if settings.val_rising:
            alerts += _rising_alerts(epochs, settings)
        if settings.stalled:
            alerts += _stall_alerts(columns, status, now, settings, running_since)
        if settings.recovered:
            alerts += _recovery_alerts(recoveries)
        if settings.flat_loss:
            alerts += self.flat_loss.update(
                columns.global_step,
                columns.loss,
                steps_per_epoch,
                settings.flat_loss_drop,
                columns.edits,
                warmup_steps,
            )
        alerts += self.classes.detect(
            epochs,
            after=settings.baseline_epochs,
            single_class=settings.single_class,
            below_baseline=settings.below_baseline,
            never_predicted=settings.never_predicted,
        )
        if status == "crashed" and settings.crashed:
            alerts.append(_end_alert("crashed", "crashed", "the trainer crashed", columns, error))
        if status in FINAL_STATUSES and settings.finished:
            key = f"finished:{status}"
            alerts.append(_end_alert(key, "finished", f"the run {status}", columns, error))
        return alerts


def detect(
    steps: StepColumns | Sequence[Mapping[str, Any]],
    epochs: Sequence[Mapping[str, Any]],
    status: str | None,
    now: float,
    settings: AlertSettings | None = None,
    running_since: float | None = None,
    error: str | None = None,
    steps_per_epoch: int = 0,
    warmup_steps: int = 0,
) -> list[Alert]:
    """Every alert the run's data shows now: the steps (StepColumns, or dicts as in steps.jsonl:
        `global_step`, `loss`, `t`), epochs as in epochs.json (`epoch`, `val_loss`, `val_accuracy`,
        `per_class`, `confusion`), the status the monitor shows (`crashed` included), the time `now`
        (unix), the run's error text, if any, its steps per epoch (0: unknown, no flat_loss) and its
    LR warm-up's steps (flat_loss judges the epoch after them).
        `running_since` is when the status last became `running` (after validation, or a resume): a
        stall is counted from it where it is later than the last step, so a long validation is not
        a stall. What is found for a step depends only on the steps up to it, so an event keeps its
        key while the run grows. (A Detector does the same at the cost of the new steps only.)"""
    return Detector(settings).detect(
        steps, epochs, status, now, running_since, error,
        steps_per_epoch=steps_per_epoch, warmup_steps=warmup_steps,
    )  # fmt: skip


def _end_alert(key: str, kind: str, what: str, steps: StepColumns, error: str | None) -> Alert:
    """A crash or an end, keyed by the last step (a resumed run that ends again is a new event),
    its error text after it."""
    last = steps.step(len(steps) - 1) if len(steps) else None
    at = f" at step {last}" if last is not None else " before its first step"
    why = f": {error}" if error else ""
    return Alert(f"{key}@step:{last or 0}", kind, f"{what}{at}{why}")


def _recovery_alerts(recoveries: Sequence[Mapping[str, Any]]) -> list[Alert]:
    """One alert per recovery the trainer wrote (checked: model/recoveries.py), keyed by its place
    in the list and its step, so that a rewritten run.json does not tell an old one again."""
    return [
        Alert(f"recovered@step:{r['step']}#{i}", "recovered", describe(r))
        for i, r in enumerate(recoveries)
    ]


def _nan_alerts(steps: StepColumns, settings: AlertSettings) -> list[Alert]:
    """One alert per stretch of consecutive steps whose loss is NaN/Inf (null in steps.jsonl),
    keyed by its first step, and no more than settings.nan_max_alerts a run: a trainer that goes
    on through a run of NaNs is one event, not one a step."""
    bad = ~np.isfinite(steps.loss)
    starts = np.flatnonzero(bad & ~np.concatenate(([False], bad[:-1])))
    return [
        Alert(
            f"nan@step:{steps.step(i)}", "nan", f"non-finite loss (NaN/Inf) at step {steps.step(i)}"
        )
        for i in starts[: settings.nan_max_alerts].tolist()
    ]


class SpikeScan:
    """Spike detection over a growing loss column, kept between calls so that a live run costs
    its new steps only (a million steps are ~0.3 s from scratch). A loss is a spike when it is
    above the EMA of the finite losses before it by more than spike_z × their EMA standard
    deviation and by more than spike_min_rise × the EMA, once spike_warmup finite losses have been
    seen. The spike itself enters the EMA; after one, spikes are not looked for during spike_span
    steps (a loss that jumps and stays up, or a burst of spikes, is one event). Starts again from
    the first step when the column shrinks or was edited in place (a resume redid steps)."""

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self.weight = ema_weight(settings.spike_span)
        self.restart(None)

    def restart(self, edits: int | None) -> None:
        self.edits = edits
        self.done = 0  # steps of the column consumed
        self.seen = 0  # finite losses among them
        self.mean_state, self.square_state = 0.0, 0.0  # the EMAs' undebiased states
        self.mean, self.spread = math.nan, math.nan  # after the last finite loss, debiased
        self.quiet_until = -1  # finite losses up to this one are not looked at
        self.alerts: list[Alert] = []

    def update(self, steps: StepColumns) -> list[Alert]:
        """Every spike up to the column's end."""
        if steps.edits is None or steps.edits != self.edits or len(steps) < self.done:
            self.restart(steps.edits)
        new = steps.loss[self.done :]
        where = self.done + np.flatnonzero(np.isfinite(new))
        self.done = len(steps)
        if not len(where):
            return self.alerts
        x = steps.loss[where]
        k0 = self.seen
        # A finite loss near the float limit (a hostile or broken steps.jsonl) overflows its
        # square: the spread becomes inf/NaN and nothing compares above it; no warning printed.
        with np.errstate(over="ignore", invalid="ignore"):
            mean, self.mean_state, _ = ema_continue(x, self.weight, self.mean_state, k0)
            square, self.square_state, self.seen = ema_continue(
                x * x, self.weight, self.square_state, k0
            )
            spread = np.sqrt(np.maximum(square - mean * mean, 0.0))
            before = np.concatenate(([self.mean], mean[:-1]))  # the EMA of the losses before each
            before_spread = np.concatenate(([self.spread], spread[:-1]))
            self.mean, self.spread = float(mean[-1]), float(spread[-1])
            s = self.settings
            hit = rises_above(x, before, before_spread, s.spike_z, s.spike_min_rise)
        hit &= k0 + np.arange(len(x)) >= s.spike_warmup  # the finite losses seen before each
        for j in np.flatnonzero(hit).tolist():
            if k0 + j <= self.quiet_until:
                continue
            self.quiet_until = k0 + j + s.spike_span
            at = steps.step(int(where[j]))
            message = (
                f"loss spiked to {fmt.metric(x[j])} at step {at} "
                f"(recent average {fmt.metric(before[j])} ± {fmt.metric(before_spread[j])})"
            )
            self.alerts.append(Alert(f"spike@step:{at}", "spike", message))
        return self.alerts


def _rising_alerts(epochs: Sequence[Mapping[str, Any]], settings: AlertSettings) -> list[Alert]:
    """An alert where validation loss has risen rising_epochs epochs in a row, keyed by the epoch
    that makes the streak that long; a streak that goes on is the same event, a new one after a
    fall is another. Epochs without a finite val_loss are left out."""
    known = [(e.get("epoch"), float(e["val_loss"])) for e in epochs if is_number(e.get("val_loss"))]
    alerts: list[Alert] = []
    streak = 0
    for i in range(1, len(known)):
        epoch, loss = known[i]
        streak = streak + 1 if loss > known[i - 1][1] else 0
        if streak == settings.rising_epochs:
            message = (
                f"validation loss rose {streak} epochs in a row, "
                f"{fmt.metric(known[i - streak][1])} → {fmt.metric(loss)} at epoch {epoch}"
            )
            alerts.append(Alert(f"val_rising@epoch:{epoch}", "val_rising", message))
    return alerts


def _stall_alerts(
    steps: StepColumns,
    status: str | None,
    now: float,
    settings: AlertSettings,
    running_since: float | None,
) -> list[Alert]:
    """Running, and no new step for stall_factor × the median of the last stall_window intervals
    between steps (and at least stall_min_s): keyed by the last step, so one stall is one alert."""
    if status != "running":
        return []
    tail = steps.t[-2 * (settings.stall_window + 1) :]  # the last intervals are all it needs
    times = tail[np.isfinite(tail)]
    if len(times) < max(settings.stall_min_steps, 2):
        return []
    intervals = np.diff(times[-(settings.stall_window + 1) :])
    intervals = intervals[intervals > 0]
    if not len(intervals):
        return []
    median = float(np.median(intervals))
    since = float(times[-1])
    if is_number(running_since):
        since = max(since, running_since)
    waited = now - since
    if waited < max(settings.stall_factor * median, settings.stall_min_s):
        return []
    last = steps.step(len(steps) - 1)
    message = (
        f"no step for {duration(waited)} since step {last} (a step takes {median:.3g} s, median)"
    )
    return [Alert(f"stall@step:{last}", "stalled", message)]


def level(alert: Alert) -> str:
    """How serious: `error` (crashed, NaN/Inf, the run failed), `warning` (stalled, a spike,
    validation loss rising, a recovery) or `info` (the run completed or was stopped): the problems line's
    levels, the toast's severity."""
    if alert.kind in ("crashed", "nan") or alert.key.startswith("finished:failed"):
        return "error"
    return "info" if alert.kind == "finished" else "warning"


class AlertLog:
    """Which events have been told: new() lets each key through once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def new(self, alerts: Iterable[Alert]) -> list[Alert]:
        """The alerts whose key has not been seen before (now seen)."""
        fresh = []
        for alert in alerts:
            if alert.key not in self.seen:
                self.seen.add(alert.key)
                fresh.append(alert)
        return fresh


def notify_command(cmd: str, alert: Alert) -> list[str]:
    """The argv that runs `--notify-cmd CMD` for an alert: CMD split as a shell would split it
    (shlex) but never run through one, then the alert's kind and its message (made printable: it
    can hold names from the run directory) as two arguments of their own, so `; rm -rf ~` or
    `$(...)` in a message is only text. ValueError for a CMD that is empty or not well quoted."""
    argv = split_notify_command(cmd)
    return [*argv, alert.kind, printable(alert.message)]


def split_notify_command(cmd: str) -> list[str]:
    """CMD split by shlex; ValueError naming --notify-cmd when it is empty or its quotes do not
    close (the CLI checks it at start with this, before any alert)."""
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise ValueError(f"--notify-cmd: {e}: {printable(cmd)}") from None
    if not argv:
        raise ValueError("--notify-cmd: empty command")
    return argv


def run_notify(argv: Sequence[str], timeout: float = 30.0) -> str | None:
    """Start the notify command detached (its own session, stdin/stdout/stderr on /dev/null), so
    the app neither waits for it nor shares its terminal; a watcher thread kills its process
    group if it runs past `timeout` seconds and reaps it. Never raises: None when it started, else
    the one line to show instead."""
    if not argv:
        return "--notify-cmd: empty command"
    try:
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except Exception as e:  # never raises: whatever Popen refuses becomes the line to show
        name = printable(argv[0])
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return f"--notify-cmd: cannot run {name}: {printable(reason)}"
    threading.Thread(target=_reap, args=(child, timeout), daemon=True).start()
    return None


def _reap(child: subprocess.Popen, timeout: float) -> None:
    """Wait for the notify command; past the timeout, kill its process group, then reap it."""
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
