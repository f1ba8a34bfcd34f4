"""What the trainer's process uses, from state.json's `resources` (sampled by the trainer at most
once a second): `RSS 1.2 GB · CPU 180% · GPU 3.1/80 GB 45%`. Hidden when the state has none (an
older trainer, or before its first batch) and once the run is over (final or crashed)."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static

from entrenar_tui.output import formatting as fmt
from trainer.monitor.values import is_number


def gigabytes(n: Any) -> str:
    return f"{n / 1e9:.1f}" if is_number(n) else fmt.DASH


def resources_text(resources: dict[str, Any] | None) -> str:
    """The line for a (checked) resources object; "" when there is nothing to say."""
    if not resources:
        return ""
    parts = []
    rss, cpu = resources.get("rss_bytes"), resources.get("cpu_percent")
    if is_number(rss):
        parts.append(f"RSS {gigabytes(rss)} GB")
    if is_number(cpu):
        parts.append(f"CPU {cpu:.0f}%")
    allocated = resources.get("gpu_memory_allocated_bytes")
    if is_number(allocated):
        total = resources.get("gpu_memory_total_bytes")
        gpu = f"GPU {gigabytes(allocated)}" + (
            f"/{total / 1e9:.0f} GB" if is_number(total) else " GB"
        )
        util = resources.get("gpu_utilization_percent")
        if is_number(util):
            gpu += f" {util:.0f}%"
        parts.append(gpu)
    return " · ".join(parts)


class ResourcesLine(Static):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, **kwargs)

    def show(self, state: dict[str, Any] | None, live: bool = True) -> None:
        """`live`: the trainer is (believed) at work. A finished or crashed run's last sample
        describes a process that is gone: not shown."""
        text = resources_text((state or {}).get("resources")) if live else ""
        self.display = bool(text)
        self.update(text)
