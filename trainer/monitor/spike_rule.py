"""The loss-spike rule, one definition for the monitor's alerts (entrenar_tui/model/alerts.py) and the
trainer's recovery (trainer/recovery.py). Torch-free: the monitor imports it.

A loss is a spike when it rises above the EMA of the finite losses before it by more than
SPIKE_Z × their EMA standard deviation AND by more than min_rise × the EMA (the trainer's
`train.spike_factor` is 1 + min_rise), once SPIKE_WARMUP finite losses have been seen. The EMA's
span is SPIKE_SPAN steps (weight 1 - 2/(span + 1)).
"""

from __future__ import annotations

import math
from typing import Any

SPIKE_Z = 6.0  # the rise above the EMA, in EMA standard deviations
SPIKE_MIN_RISE = 0.5  # ...and as a fraction of the EMA (a spike_factor of 1.5)
SPIKE_SPAN = 50  # EMA span in steps
SPIKE_WARMUP = 20  # finite losses seen before spikes are looked for


def ema_weight(span: int) -> float:
    """The EMA's weight of its past for a span in steps."""
    return 1 - 2 / (span + 1)


def rises_above(loss: Any, mean: Any, spread: Any, z: float, min_rise: float) -> Any:
    """Whether `loss` is a spike over the EMA `mean` ± `spread` of the losses before it: scalars or
    numpy arrays alike (elementwise). NaN anywhere compares False."""
    above = loss - mean
    return (above > z * spread) & (above > min_rise * abs(mean))


class LossEMA:
    """The debiased EMA and EMA standard deviation of a stream of losses, a step at a time (the
    monitor's SpikeScan computes the same over a column). Its state is JSON: a checkpoint keeps it."""

    def __init__(self, span: int = SPIKE_SPAN, state: dict[str, Any] | None = None) -> None:
        self.weight = ema_weight(span)
        self.mean_state, self.square_state, self.seen = 0.0, 0.0, 0
        if state:
            self.mean_state = float(state["mean_state"])
            self.square_state = float(state["square_state"])
            self.seen = int(state["seen"])

    def state(self) -> dict[str, Any]:
        return {"mean_state": self.mean_state, "square_state": self.square_state, "seen": self.seen}

    def mean_spread(self) -> tuple[float, float]:
        """The debiased EMA and standard deviation so far (NaN before the first loss)."""
        if not self.seen:
            return math.nan, math.nan
        debias = 1 - self.weight**self.seen
        mean, square = self.mean_state / debias, self.square_state / debias
        return mean, math.sqrt(max(square - mean * mean, 0.0))

    def add(self, loss: float) -> None:
        w = self.weight
        self.mean_state = w * self.mean_state + (1 - w) * loss
        self.square_state = w * self.square_state + (1 - w) * loss * loss
        self.seen += 1
