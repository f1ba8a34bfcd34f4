"""How the contract's throughput reads, the same in the trainer's lines and the monitor (no torch)."""

from __future__ import annotations


def flops_rate(value: float) -> str:
    """`402 GFLOP/s`, `1.23 TFLOP/s`: three significant digits."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}FLOP/s"
    return f"{value:.3g} FLOP/s"
