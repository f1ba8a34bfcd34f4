"""The learning-rate range test's arithmetic (Smith 2015, as fastai's `lr_find`), without torch:
the exponential LR schedule, the smoothed loss, the stop rule and the suggested LR. Pure functions,
so that the rules are tested on synthetic curves and the run (trainer/lr_find.py) only feeds them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTHING_BETA = 0.98  # fastai's: the EMA's weight of the previous smoothed value
DIVERGE_FACTOR = 4.0  # fastai's rule: stop once the smoothed loss passes 4× its minimum
SKIP_BEGIN = 10  # the first steps' smoothed values rest on few losses: no suggestion from them
MIN_DESCENT_POINTS = 3  # fewer points before the minimum than this: no gradient to read

STEEPEST = "steepest descent"
MINIMUM_OVER_10 = "minimum / 10"
RULES = (STEEPEST, MINIMUM_OVER_10)

DIVERGED = "diverged"  # the smoothed loss passed DIVERGE_FACTOR × its minimum
NON_FINITE = "non-finite loss"
ALL_STEPS = "num_steps reached"
STOPPED_BECAUSE = (DIVERGED, NON_FINITE, ALL_STEPS)


def lr_schedule(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """The LR of each step: start_lr at the first, end_lr at the last, a constant factor between
    (equal steps on a log axis)."""
    if num_steps == 1:
        return [start_lr]
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


class SmoothedLoss:
    """fastai's smoothed loss: an exponential moving average with bias correction (without it the
    first values would be pulled towards 0), and the stop rule read on it."""

    def __init__(self, beta: float = SMOOTHING_BETA, factor: float = DIVERGE_FACTOR):
        self.beta, self.factor = beta, factor
        self.average, self.count = 0.0, 0
        self.minimum = math.inf

    def add(self, loss: float) -> float:
        """The smoothed value after this step's loss."""
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        smoothed = self.average / (1 - self.beta**self.count)
        self.minimum = min(self.minimum, smoothed)
        return smoothed

    def stop_reason(self, loss: float, smoothed: float) -> str | None:
        """Why the test ends after this step (a non-finite loss, a diverged one), or None."""
        if not (math.isfinite(loss) and math.isfinite(smoothed)):
            return NON_FINITE
        if self.count > 1 and smoothed > self.factor * self.minimum:
            return DIVERGED
        return None


@dataclass(frozen=True)
class Suggestion:
    lr: float
    rule: str  # STEEPEST or MINIMUM_OVER_10
    why: str  # one line: why this rule gave it
    minimum_lr: float  # where the smoothed loss was lowest


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> Suggestion | None:
    """The LR to train with: where the smoothed loss falls fastest (its most negative gradient on
    log10 LR), looked for between the first SKIP_BEGIN steps and the minimum (past the minimum
    the loss only rises); the minimum's LR ÷ 10 where that reads nothing (too few points before
    the minimum, or no descent at all). None without a finite point."""
    points = [(lr, s) for lr, s in zip(lrs, smoothed) if _finite_positive(lr) and math.isfinite(s)]
    if not points:
        return None
    lowest = min(range(len(points)), key=lambda i: points[i][1])
    minimum_lr = points[lowest][0]
    fallback_lr = minimum_lr / 10
    skip = min(SKIP_BEGIN, len(points) // 10)
    descent = points[skip : lowest + 1]
    if len(descent) < MIN_DESCENT_POINTS:
        why = (
            f"only {len(descent)} points before the smoothed loss's minimum at {minimum_lr:.2e}, "
            "too few to read a slope"
        )
        return Suggestion(fallback_lr, MINIMUM_OVER_10, why, minimum_lr)
    slopes = _gradient([math.log10(lr) for lr, _ in descent], [s for _, s in descent])
    steepest = min(range(len(slopes)), key=lambda i: slopes[i])
    if not slopes[steepest] < 0:
        why = f"the smoothed loss never falls before its minimum at {minimum_lr:.2e}"
        return Suggestion(fallback_lr, MINIMUM_OVER_10, why, minimum_lr)
    lr = descent[steepest][0]
    why = f"the smoothed loss falls fastest there; its minimum is at {minimum_lr:.2e}"
    return Suggestion(lr, STEEPEST, why, minimum_lr)


def _finite_positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _gradient(x: Sequence[float], y: Sequence[float]) -> list[float]:
    """dy/dx at each point: (y[i+1] - y[i-1]) / (x[i+1] - x[i-1]) inside, one-sided at the
    ends; 0 where the two x are equal."""
    n = len(x)

    def slope(i: int, j: int) -> float:
        dx = x[j] - x[i]
        return (y[j] - y[i]) / dx if dx else 0.0

    return [slope(max(i - 1, 0), min(i + 1, n - 1)) for i in range(n)]
