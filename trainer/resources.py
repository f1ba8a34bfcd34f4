"""What the trainer's process uses, for state.json's `resources` (the monitor's resources line):
resident memory, CPU %, and on CUDA the memory allocated/reserved by torch and, through NVML
(nvidia-ml-py, the optional `gpu` extra), the GPU's own counters: utilisation, memory used by
every process on it, power draw and limit. Sampled at most once a second (cheap calls, but never
per batch on fast runs); between samples the last one is returned. Lives outside trainer/monitor
because it touches torch."""

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
        self._nvml: Nvml | None = None

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
            out.update(NVML_FIELDS)
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
            self._nvml = Nvml.open(self.device)
        out["gpu_memory_total_bytes"] = self._total
        if self._nvml is not None:
            out.update(self._nvml.sample())
            return out
        try:  # torch's own reading (pynvml or amdsmi underneath); absent on many installs
            out["gpu_utilization_percent"] = float(torch.cuda.utilization(self.device))
        except Exception:
            out["gpu_utilization_percent"] = None
        return out


# What NVML adds on CUDA (null where a counter cannot be read, all null without nvidia-ml-py).
NVML_FIELDS: dict[str, Any] = {
    "gpu_memory_used_bytes": None,  # the whole GPU's, every process (torch's are its own)
    "gpu_power_watts": None,
    "gpu_power_limit_watts": None,
}


class Nvml:
    """One GPU's counters through NVML (`import pynvml`, from nvidia-ml-py: optional, the trainer
    works without it). The GPU is found by the UUID torch reports, so CUDA_VISIBLE_DEVICES'
    renumbering does not matter; by index where torch gives no UUID."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle

    @classmethod
    def open(cls, device: Any) -> Nvml | None:
        """None without nvidia-ml-py or when NVML does not answer (no driver, a container)."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            return cls(pynvml, cls._handle(pynvml, device))
        except Exception:
            return None

    @staticmethod
    def _handle(nvml: Any, device: Any) -> Any:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            return nvml.nvmlDeviceGetHandleByUUID(
                text if text[:4] in ("GPU-", "MIG-") else f"GPU-{text}"
            )
        return nvml.nvmlDeviceGetHandleByIndex(getattr(device, "index", None) or 0)

    def sample(self) -> dict[str, Any]:
        """Each counter on its own: a GPU that does not report power still reports the rest."""
        nvml, handle = self.nvml, self.handle
        return {
            "gpu_utilization_percent": _read(
                lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            ),
            "gpu_memory_used_bytes": _read(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).used)),
            "gpu_power_watts": _read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000),
            "gpu_power_limit_watts": _read(
                lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
            ),
        }


def _read(counter: Any) -> Any:
    try:
        return counter()
    except Exception:  # NVMLError_NotSupported and kin
        return None
