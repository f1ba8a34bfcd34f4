"""The run's one clock: every training step's seconds are measured and added up here, once, and
every time figure the trainer writes reads them (the epoch's time and rate, the ETA's pace, the
achieved FLOP/s and MFU, `elapsed_s`).

A step is timed by its logging window, as the device sees it: the window's clock runs from its
first step's start to the end of the flush's host read, which waits for the device (a CUDA host
runs ahead of it), and each step gets the window's time in proportion to its samples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from trainer.flops import FlopMeter


class TimedStep(Protocol):
    """What the clock needs of a step (trainer.run_recorder.StepResult)."""

    samples: int
    tokens: int
    seconds: float


class StepClock:
    """This process's step time (the ETA's pace and the FLOP/s read it: earlier processes of a
    resumed run do not count), and the current epoch's (which a checkpoint carries across a resume)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()  # this process's start, for elapsed_s
        self.flops = FlopMeter(None)  # this process's steps: seconds and FLOPs, overall and recent
        self.steps = 0  # this process's steps
        self.epoch_seconds = 0.0  # the current epoch's training time, earlier processes' included
        self.validation_seconds: float | None = None  # the last validation's
        self.tokens_per_sec = 0.0  # the last flushed window's
        self._window_started = 0.0
        self._validation_started = 0.0

    def set_peak(self, flops_per_sec: float | None) -> None:
        """MFU's denominator: the run's peak (one device's × the world size), None if unknown."""
        self.flops.peak = flops_per_sec

    def process_seconds(self) -> float:
        """Seconds since this process's recipe started."""
        return time.perf_counter() - self.started

    # ------------------------------------------------------------------------------ training steps

    def start_window(self) -> None:
        """A logging window starts with its first step: its clock runs to the flush's read."""
        self._window_started = time.perf_counter()

    def end_window(self, steps: Sequence[TimedStep]) -> None:
        """Right after the flush's host read: each step's share of the window's time, by samples."""
        window_seconds = time.perf_counter() - self._window_started
        window_samples = sum(step.samples for step in steps)
        for step in steps:
            step.seconds = window_seconds * step.samples / window_samples
        self.tokens_per_sec = sum(step.tokens for step in steps) / window_seconds

    def add_step(self, seconds: float, flops: int) -> None:
        """Count one recorded step's time: the one place step seconds add up."""
        self.steps += 1
        self.epoch_seconds += seconds
        self.flops.add(flops, seconds)

    def start_epoch(self) -> None:
        self.epoch_seconds = 0.0

    # ------------------------------------------------------------------------------ validation

    def start_validation(self) -> None:
        self._validation_started = time.perf_counter()

    def end_validation(self) -> None:
        self.validation_seconds = time.perf_counter() - self._validation_started

    # ------------------------------------------------------------------------------ what it tells

    def eta(self, steps_left: int, validations_left: int) -> float:
        """Seconds left at this process's pace (its steps' mean, its last validation's time)."""
        eta = self.flops.total_seconds / self.steps * steps_left
        return eta + (self.validation_seconds or 0.0) * validations_left

    def epoch_time(self) -> float:
        """The epoch's training and validation time (epochs.json's epoch_time_s)."""
        return self.epoch_seconds + (self.validation_seconds or 0.0)
