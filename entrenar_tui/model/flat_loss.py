"""The flat_loss alert: the training loss did not fall over the first epoch, so the learning rate
is probably too low (issue 28: a 300-row CSV at lr 1e-4 ended at chance after 3 epochs with no
word; at 1e-3 it reached 100%). Told once, as soon as epoch 1's last step is in, with what to try.

"Flat" is judged on the smoothed loss: the median of the first quarter of epoch 1's finite
losses (its start) against the median of the last quarter (its end). Medians of quarters, not
single values or an EMA's end: a batch's loss is noisy (±5% on the quickstart) and a spike is
common early on, and a median of a quarter is moved by neither. The loss is flat when its end is
less than FLAT_DROP below its start. The choice of FLAT_DROP, measured on real runs of the
quickstart (examples/quickstart.toml, whose epoch 1 is mostly its warm-up): see docs/monitor.md.

Where the LR warm-up is longer than an epoch (the trainer's own count, from run.json's
`train.warmup_fraction` and the run's total steps: the default warm-up is 10% of all steps, five
epochs of a 50-epoch run), the span runs on to half an epoch past the warm-up's end: a loss that
barely moves while the LR is still near 0 says nothing about the LR it will reach. (Judging only
the steps after the warm-up was tried: on the quickstart, whose warm-up is 45 of epoch 1's 75
steps, the loss of a healthy run rose 2.2% between step 45 and 82 — noise at the peak LR and the
epoch's turn — so a learning run read flat.)"""

from __future__ import annotations

import numpy as np

from entrenar_tui import formatting as fmt
from entrenar_tui.model.alert import Alert

FLAT_DROP = 0.01  # flat: epoch 1's smoothed loss fell by less than this fraction of its start
FLAT_MIN_STEPS = 8  # finite losses of epoch 1 needed to judge (a quarter is then 2 or more)
KEY = "flat_loss@epoch:1"


def epoch_one_fall(
    global_steps: np.ndarray,
    losses: np.ndarray,
    steps_per_epoch: int,
    warmup_steps: int = 0,
):
    """(start, end) of the smoothed loss from the first step to epoch 1's last, or, where the
    warm-up (`warmup_steps`: the trainer's ceil(train.warmup_fraction × total steps)) is longer
    than an epoch, to half an epoch past its end; None until that step is in, or where it cannot
    be judged (no steps_per_epoch, fewer than FLAT_MIN_STEPS finite losses, a start that is not
    above 0). Steps are in global-step order."""
    if steps_per_epoch <= 0 or not len(global_steps):
        return None
    begin = 1
    last = steps_per_epoch
    if warmup_steps > steps_per_epoch:
        last = warmup_steps + steps_per_epoch // 2
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
    warmup_steps: int = 0,
) -> list[Alert]:
    """The alert when the first epoch's smoothed loss fell by less than `drop` of its start."""
    fall = epoch_one_fall(global_steps, losses, steps_per_epoch, warmup_steps)
    if fall is None:
        return []
    start, end = fall
    change = (end - start) / start
    if -change >= drop:
        return []
    message = (
        f"training loss flat over the first epoch ({fmt.metric(start)} → {fmt.metric(end)}, "
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
        warmup_steps: int = 0,
    ) -> list[Alert]:
        over = steps_per_epoch > 0 and len(global_steps) and global_steps[-1] >= steps_per_epoch
        if not over:
            return []
        key = (edits, steps_per_epoch, drop, warmup_steps)
        if edits is not None and self._kept is not None and self._kept[0] == key:
            return self._kept[1]
        alerts = flat_loss_alerts(global_steps, losses, steps_per_epoch, drop, warmup_steps)
        if (
            not alerts
            and epoch_one_fall(global_steps, losses, steps_per_epoch, warmup_steps) is None
        ):
            return []  # not judged yet (the warm-up or its epoch not over): look again
        self._kept = (key, alerts)
        return alerts
