"""A run's step history in memory: numpy columns with per-block min/max (Series), sorted by global
step, a redone step replaced by its later line (StepHistory). No torch, no file reading: what
step_tail.py parses from steps.jsonl is added here. A million steps are columns, not Python
objects (columns.py)."""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from trainer.monitor.columns import Column, block_summaries
from trainer.monitor.step_rows import STEP_FIELDS

if TYPE_CHECKING:
    from trainer.monitor.step_tail import StepBatch

NAN = float("nan")
INF = float("inf")


class Series:
    """A float column (8 bytes a value) with per-block min/max, so that any range's min/max costs
    O(range / BLOCK) and a chart of a million steps bins 8k block summaries, not the steps.

    Non-finite values (NaN, Inf) are kept as they are and counted per block, so charts can draw them
    as gaps and the summary can say they happened.
    """

    BLOCK = 128

    def __init__(self) -> None:
        self.values = Column(np.float64)
        self._lo = np.empty(0)  # per block: min of its finite values (+inf when none)
        self._hi = np.empty(0)  # per block: max of its finite values (-inf when none)
        self._bad = np.empty(0, np.int64)  # per block: how many non-finite values
        # Changes other than appends (put, insert, clear): a cache of something computed over the
        # values (the charts' smoothing) may be extended while this stays the same, else redone.
        self.edits = 0

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> float:
        return self.values[i]

    def _resummarize(self, first: int, last: int | None = None) -> None:
        """Summaries of blocks first..last (to the end when last is None) from the values."""
        stop = len(self.values) if last is None else min(len(self.values), (last + 1) * self.BLOCK)
        lo, hi, bad = block_summaries(self.values.array[first * self.BLOCK : stop], self.BLOCK)
        if last is None:
            self._lo = np.concatenate((self._lo[:first], lo))
            self._hi = np.concatenate((self._hi[:first], hi))
            self._bad = np.concatenate((self._bad[:first], bad))
        else:
            self._lo[first : last + 1], self._hi[first : last + 1] = lo, hi
            self._bad[first : last + 1] = bad

    def extend(self, values: np.ndarray | Iterable[float], *, take: bool = False) -> None:
        """Append values (take: Column.extend's, the array handed over)."""
        start = len(self.values)
        self.values.extend(values, take=take)
        self._resummarize(start // self.BLOCK)

    def put(self, positions: np.ndarray, values: np.ndarray) -> None:
        """Replace the values at these (existing) positions."""
        if len(positions):
            self.edits += 1
            self.values.array[positions] = values
            self._resummarize(
                int(positions.min()) // self.BLOCK, int(positions.max()) // self.BLOCK
            )

    def insert(self, positions: np.ndarray | int, values: np.ndarray | float) -> None:
        """Insert before these positions (np.insert's meaning)."""
        self.edits += 1
        self.values.insert(positions, values)
        self._resummarize(int(np.min(positions)) // self.BLOCK)

    def set(self, index: int, value: float) -> None:
        self.put(np.array([index]), np.array([value]))

    def clear(self) -> None:
        self.edits += 1
        self.values.clear()
        self._lo, self._hi, self._bad = self._lo[:0], self._hi[:0], self._bad[:0]

    def stats(self, start: int = 0, stop: int | None = None) -> tuple[float, float, int]:
        """(min, max, non-finite count) over values[start:stop]; min/max are NaN if nothing is finite."""
        stop = len(self.values) if stop is None else min(stop, len(self.values))
        first_full, last_full = -(-start // self.BLOCK), stop // self.BLOCK
        values = self.values.array
        if first_full >= last_full:
            return _scan(values[start:stop])
        parts = [
            _scan(values[start : first_full * self.BLOCK]),
            _scan(values[last_full * self.BLOCK : stop]),
            (
                float(self._lo[first_full:last_full].min()),
                float(self._hi[first_full:last_full].max()),
                int(self._bad[first_full:last_full].sum()),
            ),
        ]
        lo = min((p[0] for p in parts if p[0] == p[0]), default=NAN)
        hi = max((p[1] for p in parts if p[1] == p[1]), default=NAN)
        lo, hi = (NAN, NAN) if lo > hi or math.isinf(lo) else (lo, hi)
        return lo, hi, sum(p[2] for p in parts)

    def downsample(self, bins: int) -> list[tuple[float, float] | None]:
        """At most `bins` (min, max) pairs covering the whole series in order; None for a bin that
        holds a non-finite value (drawn as a gap). Spikes survive: each bin keeps its extremes.
        Long series are binned on whole blocks, from the block summaries alone."""
        n = len(self.values)
        if n <= bins:
            return [(v, v) if math.isfinite(v) else None for v in self.values]
        blocks = len(self._lo)
        if blocks >= bins:
            edges = np.arange(bins) * blocks // bins
            lo, hi, bad = self._lo, self._hi, self._bad
        else:
            edges = np.arange(bins) * n // bins
            values = self.values.array
            good = np.isfinite(values)
            lo, hi, bad = np.where(good, values, INF), np.where(good, values, -INF), ~good
        lows, highs = np.minimum.reduceat(lo, edges), np.maximum.reduceat(hi, edges)
        gaps = np.add.reduceat(bad, edges, dtype=np.int64)
        return [
            None if gap else (low, high)
            for low, high, gap in zip(lows.tolist(), highs.tolist(), gaps.tolist(), strict=True)
        ]


def _scan(values: np.ndarray) -> tuple[float, float, int]:
    """(min, max, non-finite count) of a few values; NaN min/max when none is finite."""
    good = values[np.isfinite(values)]
    bad = len(values) - len(good)
    return (float(good.min()), float(good.max()), bad) if len(good) else (NAN, NAN, bad)


class StepHistory:
    """Per-step history in columns (40 bytes a step: int64 steps, four float64 series), global
    steps sorted, a repeated global step replaced by its later line."""

    def __init__(self) -> None:
        self.global_steps = Column(np.int64)
        self.series: dict[str, Series] = {name: Series() for name in STEP_FIELDS}
        self._recent_t: deque[float] = deque(maxlen=33)

    def __len__(self) -> int:
        return len(self.global_steps)

    def clear(self) -> None:
        self.global_steps.clear()
        for s in self.series.values():
            s.clear()
        self._recent_t.clear()

    def add(self, batch: StepBatch) -> None:
        """Apply a batch of step lines in file order (later lines win). The batch is handed over:
        an empty history takes its arrays rather than copying them."""
        if batch.reset:
            self.clear()
        steps = batch.steps
        breaks = np.flatnonzero(steps[1:] <= steps[:-1]) + 1  # runs of increasing steps
        for a, b in pairwise([0, *breaks.tolist(), len(steps)]):
            self._add_run(steps[a:b], {name: batch.values[name][a:b] for name in STEP_FIELDS})
        self._recent_t.extend(batch.recent_t)

    def _add_run(self, steps: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Steps in increasing order: past the last known one they are appended; the others
        replace a known step (a resumed run redid it) or fill a gap."""
        known = self.global_steps.array
        k = int(np.searchsorted(steps, known[-1], "right")) if len(known) else 0
        if k:
            self._merge(steps[:k], {name: v[:k] for name, v in values.items()})
        if k < len(steps):
            self.global_steps.extend(steps[k:], take=True)
            for name, s in self.series.items():
                s.extend(values[name][k:], take=True)

    def _merge(self, steps: np.ndarray, values: dict[str, np.ndarray]) -> None:
        at = np.searchsorted(self.global_steps.array, steps)  # every step <= the last known one
        known = self.global_steps.array[at] == steps
        for name, s in self.series.items():
            s.put(at[known], values[name][known])
        if not known.all():
            new = ~known
            self.global_steps.insert(at[new], steps[new])
            for name, s in self.series.items():
                s.insert(at[new], values[name][new])

    def index_range(self, first_step: int, last_step: int) -> tuple[int, int]:
        """Indexes (first, last) of the steps within [first_step, last_step]; first > last if none."""
        steps = self.global_steps.array
        first = int(np.searchsorted(steps, first_step, "left"))
        return first, int(np.searchsorted(steps, last_step, "right")) - 1

    def typical_step_s(self) -> float | None:
        """The median wall time between recent step lines, or None before there are two."""
        ts = list(self._recent_t)
        gaps = [b - a for a, b in pairwise(ts) if b >= a]
        return statistics.median(gaps) if gaps else None

    def last(self, name: str) -> float:
        s = self.series[name]
        return s[len(s) - 1] if len(s) else NAN
