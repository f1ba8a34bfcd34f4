"""Axis ticks (entrenar_tui/charts/ticks.py) pinned on known series: which values are labelled on a linear
and a log axis, how each label reads in its series' format, and on which row each one lands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entrenar_tui.charts.ticks import (
    log_ticks,
    nice_ticks,
    place,
    tick_label,
    time_ticks,
    y_label_kind,
)


@pytest.mark.parametrize(
    ("lo", "hi", "max_ticks", "expected"),
    [
        # an accuracy 0..1: the ends and the half
        (0.0, 1.0, 3, [0.0, 0.5, 1.0]),
        (0.0, 1.0, 5, [0.0, 0.5, 1.0]),  # 0.2 steps would be 6 ticks
        (0.0, 1.0, 6, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),  # exact decimals, not 0.6000000000000001
        # a loss 0.12..2.37: its min and max, and whole numbers between
        (0.12, 2.37, 5, [0.12, 1.0, 2.0, 2.37]),
        (0.12, 2.37, 6, [0.12, 0.5, 1.0, 1.5, 2.0, 2.37]),
        # a learning rate 1e-5..3e-4 (3e-4 is both a multiple and the max: once)
        (1e-5, 3e-4, 5, [1e-5, 1e-4, 2e-4, 3e-4]),
        # negative to positive
        (-1.0, 1.0, 5, [-1.0, -0.5, 0.0, 0.5, 1.0]),
        # a narrow range around an accuracy
        (0.431, 0.433, 3, [0.431, 0.432, 0.433]),
        (0.11, 0.52, 4, [0.11, 0.2, 0.4, 0.52]),
        # an inner multiple within a quarter step of an end is left out: 2 next to 2.05
        (0.12, 2.05, 5, [0.12, 0.5, 1.0, 1.5, 2.05]),
        # lo > hi is the same range
        (2.37, 0.12, 5, [0.12, 1.0, 2.0, 2.37]),
    ],
)
def test_linear_ticks_of_known_series(lo, hi, max_ticks, expected):
    ticks = nice_ticks(lo, hi, max_ticks)
    assert ticks == expected
    assert len(ticks) <= max_ticks


def test_every_range_gets_its_ends_and_a_tick_between():
    for lo, hi in [(0.12, 0.13), (3.0, 4.0), (0.9999, 1.0001), (17.3, 17.31), (0.0, 1e-9)]:
        for max_ticks in (3, 4, 5, 8):
            ticks = nice_ticks(lo, hi, max_ticks)
            assert ticks[0] == lo and ticks[-1] == hi, (lo, hi, ticks)
            assert 3 <= len(ticks) <= max_ticks, (lo, hi, max_ticks, ticks)
            assert ticks == sorted(set(ticks)), ticks
    assert nice_ticks(0.12, 0.13, 3) == [0.12, 0.125, 0.13]


def test_integer_axes_step_by_whole_numbers():
    assert nice_ticks(0, 52, 5, integer=True) == [0.0, 20.0, 40.0, 52.0]
    assert nice_ticks(1, 3, 5, integer=True) == [1.0, 2.0, 3.0]  # not 1.5, 2.5
    assert nice_ticks(3, 4, 5, integer=True) == [3.0, 4.0]  # no whole number between


@pytest.mark.parametrize(
    ("lo", "hi", "labels"),
    [
        (0, 90, ["0:00", "0:30", "1:00", "1:30"]),
        (0, 1500, ["0:00", "10:00", "20:00", "25:00"]),  # not 0:00, 8:20, 16:40
        (0, 5 * 3600, ["0:00", "2:00:00", "4:00:00", "5:00:00"]),
        (100, 4000, ["1:40", "30:00", "1:06:40"]),  # 1:00:00 crowds the end: left out
        (0, 12 * 86400, ["0:00", "5d00h", "10d00h", "12d00h"]),
    ],
)
def test_wall_time_ticks_are_clock_round(lo, hi, labels):
    assert [tick_label(v, "time") for v in time_ticks(lo, hi, 5)] == labels


def test_degenerate_linear_ranges():
    assert nice_ticks(0.5, 0.5, 5) == [0.5]  # a one-point series: one tick
    assert nice_ticks(0.0, 1.0, 2) == [0.0, 1.0]
    assert nice_ticks(math.nan, 1.0, 5) == []
    assert nice_ticks(0.0, math.inf, 5) == []


def test_log_ticks_are_powers_of_ten():
    assert log_ticks(1e-4, 10.0) == [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]
    # a loss 0.05..2.4: the powers inside plus its min and max (neither near a power)
    assert log_ticks(0.05, 2.4) == [0.05, 0.1, 1.0, 2.4]
    # an end within a quarter decade of a power is left to the power
    assert log_ticks(9e-5, 1.1e-2) == [1e-4, 1e-3, 1e-2]
    # a learning rate 1e-5..3e-4
    assert log_ticks(1e-5, 3e-4) == [1e-5, 1e-4, 3e-4]


def test_log_ticks_within_a_decade_are_the_bounds_and_the_power_inside():
    assert log_ticks(0.3, 0.9) == [0.3, 0.9]
    assert log_ticks(2.0, 30.0) == [2.0, 10.0, 30.0]
    assert log_ticks(0.5, 0.5) == [0.5]
    assert log_ticks(0.0, 1.0) == []  # log of 0: the caller gaps it
    assert log_ticks(-1.0, 1.0) == []


@pytest.mark.parametrize(
    ("value", "kind", "label"),
    [
        (0.432, "percent", "43.2%"),
        (0.5, "percent", "50%"),
        (0.0, "percent", "0%"),
        (1.0, "percent", "100%"),
        (1.5e-4, "sci", "1.5e-04"),
        (3e-4, "sci", "3.0e-04"),
        (0.573, "plain", "0.573"),
        (2.37, "plain", "2.37"),
        (12.5, "plain", "12.5"),
        (1.0, "plain", "1"),
        (0.0, "plain", "0"),
        (950, "count", "950"),
        (1200, "count", "1.2k"),
        (15000, "count", "15k"),
        (2_500_000, "count", "2.5M"),
        (0, "count", "0"),
        (2.0, "epoch", "2"),
        (2.5, "epoch", "2.5"),
        (90, "time", "1:30"),
        (7500, "time", "2:05:00"),
        (math.nan, "plain", "NaN"),
    ],
)
def test_labels_in_each_series_format(value, kind, label):
    assert tick_label(value, kind) == label


def test_an_unknown_label_kind_is_refused():
    with pytest.raises(ValueError, match="unknown tick label kind 'loss'"):
        tick_label(1.0, "loss")


def test_the_y_label_kind_follows_the_magnitudes():
    assert y_label_kind(0.0, 1.0, fraction=True) == "percent"
    assert y_label_kind(1e-5, 3e-4) == "sci"
    assert y_label_kind(0.12, 2.37) == "plain"
    assert y_label_kind(0.0, 0.0) == "plain"


def test_ticks_land_on_rows_from_the_low_end():
    assert place([0.0, 0.5, 1.0], 0.0, 1.0, 11) == [0, 5, 10]
    assert place([0.12, 1.0, 2.0, 2.37], 0.12, 2.37, 10) == [0, 4, 8, 9]


def test_colliding_ticks_keep_the_extremes():
    # three rows for 0..4: 1 and 3 would share a row with a neighbour
    assert place([0.0, 1.0, 2.0, 3.0, 4.0], 0.0, 4.0, 3) == [0, None, 1, None, 2]
    # a tick next to the max on the max's row: the max wins, whichever comes first in the list
    assert place([0.12, 2.3, 2.37], 0.12, 2.37, 4) == [0, None, 3]
    assert place([2.37, 2.3, 0.12], 0.12, 2.37, 4) == [3, None, 0]
    # columns with labels 4 wide: ticks closer than 5 columns give way to the extremes
    assert place([0, 10, 20, 30, 40], 0, 40, 21, gap=5) == [0, 5, 10, 15, 20]
    assert place([0, 10, 20, 30, 40], 0, 40, 11, gap=5) == [0, None, 5, None, 10]


def test_placing_degenerate_ranges():
    assert place([0.5], 0.5, 0.5, 10) == [0]  # one point: one tick
    assert place([0.0, 2.0, math.nan], 0.0, 1.0, 10) == [0, None, None]  # outside, NaN: none
    assert place([0.0, 1.0], 0.0, 1.0, 0) == [None, None]
    assert place([0.0, 1.0], 0.0, 1.0, 1) == [0, None]


def test_ticks_of_random_ranges_keep_their_promises(monkeypatch):
    """Seeded random ranges over 16 decades: sorted distinct ticks, the ends first and last, at
    most max_ticks, at least one between; clock-round ticks of spans up to decades are found
    without listing the multiples of steps that are too small (a few hundred values at most)."""
    from entrenar_tui.charts import ticks as ticks_module

    made = [0]
    decimal = ticks_module._decimal

    def counted(mantissa, exponent):
        made[0] += 1
        return decimal(mantissa, exponent)

    monkeypatch.setattr(ticks_module, "_decimal", counted)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        exponent = int(rng.integers(-8, 8))
        lo = float(rng.uniform(-1, 1) * 10.0**exponent)
        hi = lo + float(rng.uniform(1e-3, 1) * 10.0 ** (exponent + int(rng.integers(-3, 3))))
        max_ticks = int(rng.integers(3, 9))
        ticks = nice_ticks(lo, hi, max_ticks)
        assert ticks == sorted(set(ticks)) and ticks[0] == lo and ticks[-1] == hi, (lo, hi, ticks)
        assert 3 <= len(ticks) <= max_ticks, (lo, hi, max_ticks, ticks)
        seconds = abs(hi - lo) * 10.0 ** (7 - exponent)  # up to ~30 years
        made[0] = 0
        ticks = time_ticks(0, seconds, max_ticks)
        assert made[0] < 500, (seconds, made[0])  # not a billion 1-second multiples listed
        assert ticks == sorted(set(ticks)) and len(ticks) <= max_ticks, (seconds, ticks)
        if lo > 0:
            ticks = log_ticks(lo, hi)
            assert ticks == sorted(set(ticks)) and lo <= ticks[0] and ticks[-1] <= hi, (lo, hi)


def test_a_span_past_the_float_range_gets_its_two_ends():
    big = 1.7e308
    assert nice_ticks(-big, big) == [-big, big]
    assert time_ticks(-big, big) == [-big, big]
