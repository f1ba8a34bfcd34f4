"""How the contract's throughput reads, the same in the trainer's lines and the monitor (no torch)."""

from __future__ import annotations


def flops_rate(value: float) -> str:
    """`402 GFLOP/s`, `1.23 TFLOP/s`: three significant digits."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}FLOP/s"
    return f"{value:.3g} FLOP/s"


def mfu_text(mfu: float, over: str | None = None) -> str:
    """`MFU 36.2%`, with what it is over where said: `MFU 36.2% (run)`."""
    return f"MFU {mfu:.1%}" + (f" ({over})" if over else "")


def speed_text(
    flops_per_sec: float, mfu: float | None, *, over: str | None = None, sep: str = " · "
) -> str:
    """A run's model FLOP/s and MFU as one string, the one way both are written: the trainer's
    lines (`1.23 TFLOP/s MFU 38.2%`, sep " "), the run screen and `--once`
    (`38.1 GFLOP/s · MFU 36.2% (run)`); the rate alone, with its scope, without a peak's MFU."""
    rate = flops_rate(flops_per_sec)
    if mfu is None:
        return f"{rate} ({over})" if over else rate
    return f"{rate}{sep}{mfu_text(mfu, over)}"
