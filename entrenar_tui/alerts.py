"""What the monitor warns about, decided from plain data (the steps, the epochs, the status, the
clock) with no Textual: a stalled trainer, a NaN/Inf loss, a loss spike, validation loss rising,
a crash, the end of the run. Each alert carries a key naming its event, so that AlertLog lets
each event through once however often detection runs; notify_command and run_notify hand an alert
to the user's `--notify-cmd` without a shell."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shlex
import signal
import statistics
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from entrenar_tui import chart_math as cm
from entrenar_tui import formatting as fmt
from trainer.monitor.schema import FINAL_STATUSES
from trainer.monitor.text import printable

KINDS = ("stalled", "nan", "spike", "val_rising", "crashed", "finished")


@dataclass(frozen=True)
class Alert:
    """One event worth a warning. `key` names the event (`nan@step:152`, `spike@step:90`,
    `stall@step:40`, `val_rising@epoch:5`, `crashed@step:52`, `finished:completed@step:60`):
    the same event found again has the same key."""

    key: str
    kind: str  # one of KINDS
    message: str


@dataclass
class AlertSettings:
    """Thresholds of the alerts (the monitor's settings hold them)."""

    stall_factor: float = 10.0  # stalled: no step for this many × the median step interval...
    stall_min_s: float = 120.0  # ...and for at least this many seconds
    stall_min_steps: int = 3  # steps seen before a median interval is trusted
    spike_z: float = 6.0  # spike: loss above the EMA by more than this many EMA σ...
    spike_min_rise: float = 0.5  # ...and by more than this fraction of the EMA
    spike_span: int = (
        50  # EMA span in steps (weight 1 - 2/(span + 1)); also the quiet time after a spike
    )
    spike_warmup: int = 20  # finite losses seen before spikes are looked for
    nan_max_alerts: int = 5  # NaN/Inf: at most this many alerts a run (one per stretch of them)
    rising_epochs: int = 3  # val_rising: this many epochs in a row, each above the one before
    stalled: bool = True  # warn when the trainer stalls
    nan: bool = True  # warn on a NaN/Inf loss
    spike: bool = True  # warn on a loss spike
    val_rising: bool = True  # warn when validation loss keeps rising
    crashed: bool = True  # warn when the trainer crashed
    finished: bool = True  # tell when the run completed, stopped or failed


def detect(
    steps: Sequence[Mapping[str, Any]],
    epochs: Sequence[Mapping[str, Any]],
    status: str | None,
    now: float,
    settings: AlertSettings | None = None,
    running_since: float | None = None,
) -> list[Alert]:
    """Every alert the run's data shows now: steps as in steps.jsonl (`global_step`, `loss`, `t`),
    epochs as in epochs.json (`epoch`, `val_loss`), the status the monitor shows (`crashed`
    included) and the time `now` (unix). `running_since` is when the status last became
    `running` (after validation, or a resume): a stall is counted from it where it is later than
    the last step, so a long validation is not a stall. What is found for a step depends only on
    the steps up to it, so an event keeps its key while the run grows."""
    settings = settings or AlertSettings()
    alerts: list[Alert] = []
    if settings.nan:
        alerts += _nan_alerts(steps, settings)
    if settings.spike:
        alerts += _spike_alerts(steps, settings)
    if settings.val_rising:
        alerts += _rising_alerts(epochs, settings)
    if settings.stalled:
        alerts += _stall_alerts(steps, status, now, settings, running_since)
    last = _last_step(steps)
    at = f" at step {last}" if last is not None else ""
    if status == "crashed" and settings.crashed:
        alerts.append(Alert(f"crashed@step:{last}", "crashed", f"the trainer crashed{at}"))
    if status in FINAL_STATUSES and settings.finished:
        key = f"finished:{status}@step:{last}"
        alerts.append(Alert(key, "finished", f"the run {status}{at}"))
    return alerts


def _last_step(steps: Sequence[Mapping[str, Any]]) -> int | None:
    return steps[-1].get("global_step") if steps else None


def _loss(step: Mapping[str, Any]) -> float | None:
    """The step's loss as a float (NaN/Inf kept), None when it is missing or not a number."""
    loss = step.get("loss")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        return None
    return float(loss)


def _nan_alerts(steps: Sequence[Mapping[str, Any]], settings: AlertSettings) -> list[Alert]:
    """One alert per stretch of consecutive steps whose loss is NaN/Inf, keyed by its first step,
    and no more than settings.nan_max_alerts a run: a trainer that keeps going on NaN (or a run
    of them) is one event, not one a step."""
    alerts: list[Alert] = []
    previous_bad = False
    for step in steps:
        loss = _loss(step)
        bad = loss is not None and not math.isfinite(loss)
        if bad and not previous_bad:
            if len(alerts) >= settings.nan_max_alerts:
                break
            where = step.get("global_step")
            alerts.append(
                Alert(f"nan@step:{where}", "nan", f"loss is {fmt.metric(loss)} at step {where}")
            )
        previous_bad = bad
    return alerts


def _spike_alerts(steps: Sequence[Mapping[str, Any]], settings: AlertSettings) -> list[Alert]:
    """A loss above the EMA of the finite losses before it by more than spike_z × their EMA
    standard deviation and by more than spike_min_rise × the EMA, once spike_warmup finite losses
    have been seen. The spike itself enters the EMA; after one, spikes are not looked for during
    spike_span steps (a loss that jumps and stays up is one event)."""
    where = [
        i for i, step in enumerate(steps) if (x := _loss(step)) is not None and math.isfinite(x)
    ]
    if len(where) <= settings.spike_warmup:
        return []
    x = np.array([_loss(steps[i]) for i in where], np.float64)
    weight = 1 - 2 / (settings.spike_span + 1)
    mean = cm.ema(x, weight)
    spread = np.sqrt(np.maximum(cm.ema(x * x, weight) - mean * mean, 0.0))
    before, above = mean[:-1], x[1:] - mean[:-1]  # each loss against the EMA of those before it
    hit = (above > settings.spike_z * spread[:-1]) & (
        above > settings.spike_min_rise * np.abs(before)
    )
    hit[: settings.spike_warmup - 1] = False
    alerts: list[Alert] = []
    quiet_until = -1
    for j in np.flatnonzero(hit).tolist():
        if j + 1 <= quiet_until:
            continue
        quiet_until = j + 1 + settings.spike_span
        step = steps[where[j + 1]]
        at = step.get("global_step")
        message = (
            f"loss spiked to {fmt.metric(x[j + 1])} at step {at} "
            f"(recent average {fmt.metric(before[j])} ± {fmt.metric(spread[j])})"
        )
        alerts.append(Alert(f"spike@step:{at}", "spike", message))
    return alerts


def _rising_alerts(epochs: Sequence[Mapping[str, Any]], settings: AlertSettings) -> list[Alert]:
    """An alert where validation loss has risen rising_epochs epochs in a row, keyed by the epoch
    that makes the streak that long; a streak that goes on is the same event, a new one after a
    fall is another. Epochs without a finite val_loss are left out."""
    known = [
        (e.get("epoch"), float(e["val_loss"])) for e in epochs if fmt.is_number(e.get("val_loss"))
    ]
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
    steps: Sequence[Mapping[str, Any]],
    status: str | None,
    now: float,
    settings: AlertSettings,
    running_since: float | None,
) -> list[Alert]:
    """Running, and no new step for stall_factor × the median interval between steps (and at
    least stall_min_s): keyed by the last step, so one stall is one alert."""
    if status != "running":
        return []
    times = [t for step in steps if fmt.is_number(t := step.get("t"))]
    if len(times) < max(settings.stall_min_steps, 2):
        return []
    intervals = [b - a for a, b in itertools.pairwise(times) if b > a]
    if not intervals:
        return []
    median = statistics.median(intervals)
    since = max(times[-1], running_since) if fmt.is_number(running_since) else times[-1]
    waited = now - since
    if waited < max(settings.stall_factor * median, settings.stall_min_s):
        return []
    last = _last_step(steps)
    message = (
        f"no step for {fmt.duration(waited)} since step {last} "
        f"(a step takes {median:.3g} s, median)"
    )
    return [Alert(f"stall@step:{last}", "stalled", message)]


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
