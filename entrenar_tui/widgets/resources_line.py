"""What the trainer's process uses, from state.json's `resources` (sampled by the trainer at most
once a second): `RSS 1.2 GB · CPU 180% · GPU 3.1/80 GB 45%`, and where the trainer read the GPU's
own counters (NVML) `RSS 1.2 GB · CPU 100% · GPU 45% 40.2/80 GB (torch 3.1) 312/700 W`. Hidden
when the state has none (an older trainer, or before its first batch) and once the run is over
(final or crashed). A value outside what the hardware can report (a hostile or broken file) is
left out, never printed as it stands."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from entrenar_tui import formatting as fmt
from trainer.monitor.values import is_number


def gigabytes(n: Any) -> str:
    return f"{n / 1e9:.1f}" if is_number(n) else fmt.DASH


MAX_BYTES = 2**53  # 9 PB: beyond any device's memory
MAX_WATTS = 100_000.0  # 100 kW: beyond any board


def bounded(value: Any, high: float) -> Any:
    """The value when it is a number in [0, high], else None."""
    return value if is_number(value) and 0 <= value <= high else None


def resources_text(resources: dict[str, Any] | None) -> str:
    """The line for a (checked) resources object; "" when there is nothing to say."""
    if not resources:
        return ""
    parts = []
    rss, cpu = bounded(resources.get("rss_bytes"), MAX_BYTES), resources.get("cpu_percent")
    if rss is not None:
        parts.append(f"RSS {gigabytes(rss)} GB")
    if bounded(cpu, 1e6) is not None:
        parts.append(f"CPU {cpu:.0f}%")
    gpu = gpu_text(resources)
    if gpu:
        parts.append(gpu)
    return " · ".join(parts)


def gpu_text(resources: dict[str, Any]) -> str:
    """`GPU 3.1/80 GB 45%` (torch's memory of this process, of the total), or with NVML's counters
    `GPU 45% 40.2/80 GB (torch 3.1) 312/700 W` (the whole GPU's memory in use); "" off CUDA."""
    allocated = bounded(resources.get("gpu_memory_allocated_bytes"), MAX_BYTES)
    total = bounded(resources.get("gpu_memory_total_bytes"), MAX_BYTES)
    used = bounded(resources.get("gpu_memory_used_bytes"), MAX_BYTES)
    util = bounded(resources.get("gpu_utilization_percent"), 100)
    watts = bounded(resources.get("gpu_power_watts"), MAX_WATTS)
    limit = bounded(resources.get("gpu_power_limit_watts"), MAX_WATTS)
    of_total = f"/{total / 1e9:.0f} GB" if total is not None else " GB"
    if used is None and watts is None:
        if allocated is None:
            return ""
        return f"GPU {gigabytes(allocated)}{of_total}" + (
            f" {util:.0f}%" if util is not None else ""
        )
    parts = ["GPU"]
    if util is not None:
        parts.append(f"{util:.0f}%")
    if used is not None:
        parts.append(f"{gigabytes(used)}{of_total}")
    if allocated is not None:
        parts.append(f"(torch {gigabytes(allocated)})")
    if watts is not None:
        parts.append(f"{watts:.0f}/{limit:.0f} W" if limit is not None else f"{watts:.0f} W")
    return " ".join(parts)


class ResourcesLine(Static):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, **kwargs)

    def show(self, state: dict[str, Any] | None, live: bool = True) -> None:
        """`live`: the trainer is (believed) at work. A finished or crashed run's last sample
        describes a process that is gone: not shown."""
        text = resources_text((state or {}).get("resources")) if live else ""
        self.display = bool(text)
        self.update(text)
