"""The flat_loss alert: the training loss did not fall over the first epoch, so the learning rate
is probably too low (issue 28: a 300-row CSV at lr 1e-4 ended at chance after 3 epochs with no
word; at 1e-3 it reached 100%). Told once, as soon as epoch 1's last step is in, with what to try.

"Flat" is judged on the smoothed loss: the median of the first quarter of epoch 1's finite
losses (its start) against the median of the last quarter (its end). Medians of quarters, not
single values or an EMA's end: a batch's loss is noisy (±5% on the quickstart) and a spike is
common early on, and a median of a quarter is moved by neither. The loss is flat when its end is
less than FLAT_DROP below its start. The choice of FLAT_DROP, measured on real runs of the
quickstart (examples/quickstart.toml, whose epoch 1 is mostly its warm-up): see docs/monitor.md.

"The first epoch" starts where the warm-up ends (the first step whose lr is not above the one
before it, from steps.jsonl's `lr`) and ends with epoch 1, or half an epoch after the warm-up
where that is later: a run of many epochs warms its LR up for more than one epoch (the default
warm-up is 10% of all steps), and a loss that barely moves while the LR is still near 0 says
nothing about the LR it will reach. Without an lr column, epoch 1 as it is."""

from __future__ import annotations

import numpy as np

from entrenar_tui import formatting as fmt
from entrenar_tui.model.alert import Alert

FLAT_DROP = 0.01  # flat: epoch 1's smoothed loss fell by less than this fraction of its start
FLAT_MIN_STEPS = 8  # finite losses of epoch 1 needed to judge (a quarter is then 2 or more)
KEY = "flat_loss@epoch:1"


def warm_up_end(global_steps: np.ndarray, lrs: np.ndarray | None) -> float | None:
    """The global step the warm-up ends at (its peak LR): the step before the first whose lr is
    not above its predecessor's; 1 without an lr column; None while the LR still rises."""
    known = np.isfinite(lrs) & np.isfinite(global_steps) if lrs is not None else None
    if known is None or not known.any():
        return 1.0
    steps, rates = global_steps[known], lrs[known]
    after_peak = np.flatnonzero(rates[1:] <= rates[:-1])
    return float(steps[after_peak[0]]) if len(after_peak) else None


def epoch_one_fall(
    global_steps: np.ndarray,
    losses: np.ndarray,
    steps_per_epoch: int,
    lrs: np.ndarray | None = None,
):
    """(start, end) of the smoothed loss over the first epoch from the warm-up's end: to epoch 1's
    last step, or half an epoch past the warm-up where it took more than half of epoch 1; None
    until that step is in, or where it cannot be judged (no steps_per_epoch, fewer than
    FLAT_MIN_STEPS finite losses, a start that is not above 0). Steps are in global-step order."""
    if steps_per_epoch <= 0 or not len(global_steps):
        return None
    begin = warm_up_end(global_steps, lrs)
    if begin is None:
        return None
    last = max(steps_per_epoch, begin + steps_per_epoch // 2)
    if not global_steps[-1] >= last:
        return None
    end = int(np.searchsorted(global_steps, last, "right"))
    first = losses[:end][global_steps[:end] >= begin]
    first = first[np.isfinite(first)]
    if len(first) < FLAT_MIN_STEPS:
        return None
    quarter = len(first) // 4
    start, finish = float(np.median(first[:quarter])), float(np.median(first[-quarter:]))
    return (start, finish) if start > 0 else None


def flat_loss_alerts(
    global_steps: np.ndarray,
    losses: np.ndarray,
    steps_per_epoch: int,
    drop: float = FLAT_DROP,
    lrs: np.ndarray | None = None,
) -> list[Alert]:
    """The alert when the first epoch's smoothed loss fell by less than `drop` of its start."""
    fall = epoch_one_fall(global_steps, losses, steps_per_epoch, lrs)
    if fall is None:
        return []
    start, end = fall
    change = (end - start) / start
    if -change >= drop:
        return []
    message = (
        f"training loss flat over the first epoch, after the warm-up ({fmt.metric(start)} → {fmt.metric(end)}, "
        f"{change * 100:+.1f}%): the learning rate is probably too low; try "
        f"`entrenar-train lr-find CONFIG` or a higher train.learning_rate"
    )
    return [Alert(KEY, "flat_loss", message)]


class FlatLoss:
    """flat_loss_alerts for a run watched over time: once epoch 1 is over its verdict is kept
    while the loss column is only appended to (`edits`, as StepColumns has it, unchanged), so a
    tick of a run whose first epoch was a million steps costs nothing. None for `edits`: no
    cache (steps from a script)."""

    def __init__(self) -> None:
        self._kept: tuple[tuple[int, int, float], list[Alert]] | None = None

    def update(
        self,
        global_steps: np.ndarray,
        losses: np.ndarray,
        steps_per_epoch: int,
        drop: float,
        edits: int | None,
        lrs: np.ndarray | None = None,
    ) -> list[Alert]:
        over = steps_per_epoch > 0 and len(global_steps) and global_steps[-1] >= steps_per_epoch
        if not over:
            return []
        key = (edits, steps_per_epoch, drop)
        if edits is not None and self._kept is not None and self._kept[0] == key:
            return self._kept[1]
        alerts = flat_loss_alerts(global_steps, losses, steps_per_epoch, drop, lrs)
        if not alerts and epoch_one_fall(global_steps, losses, steps_per_epoch, lrs) is None:
            return []  # not judged yet (the warm-up or its epoch not over): look again
        self._kept = (key, alerts)
        return alerts
