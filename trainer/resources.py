"""What the trainer's process uses, for state.json's `resources` (the monitor's resources line):
resident memory, CPU %, and on CUDA the memory allocated/reserved by torch and the GPU's
utilisation. Sampled at most once a second (cheap calls, but never per batch on fast runs); between
samples the last one is returned. Lives outside trainer/monitor because it touches torch."""

from __future__ import annotations

import time
from typing import Any

import psutil

MIN_INTERVAL_S = 1.0


class ResourceSampler:
    def __init__(self, device: Any = None, *, min_interval: float = MIN_INTERVAL_S) -> None:
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first call only starts the measurement
        self.cuda = getattr(device, "type", None) == "cuda"
        self.device = device
        self.min_interval = min_interval
        self._at = -float("inf")
        self._last: dict[str, Any] | None = None
        self._total: int | None = None

    def sample(self) -> dict[str, Any]:
        """The resources object for state.json (the previous one if sampled under a second ago)."""
        now = time.monotonic()
        if self._last is not None and now - self._at < self.min_interval:
            return self._last
        self._at = now
        with self.process.oneshot():
            rss = self.process.memory_info().rss
            cpu = self.process.cpu_percent(None)
        out: dict[str, Any] = {
            "rss_bytes": int(rss),
            "cpu_percent": float(cpu),
            "gpu_memory_allocated_bytes": None,
            "gpu_memory_reserved_bytes": None,
            "gpu_memory_total_bytes": None,
            "gpu_utilization_percent": None,
        }
        if self.cuda:
            out.update(self._cuda())
        self._last = out
        return out

    def _cuda(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {
            "gpu_memory_allocated_bytes": int(torch.cuda.memory_allocated(self.device)),
            "gpu_memory_reserved_bytes": int(torch.cuda.memory_reserved(self.device)),
        }
        if self._total is None:
            self._total = int(torch.cuda.get_device_properties(self.device).total_memory)
        out["gpu_memory_total_bytes"] = self._total
        try:  # needs pynvml (or amdsmi); absent on many installs
            out["gpu_utilization_percent"] = float(torch.cuda.utilization(self.device))
        except Exception:
            out["gpu_utilization_percent"] = None
        return out
