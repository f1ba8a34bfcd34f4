"""The GPU's own counters (NVML, nvidia-ml-py's `pynvml`) in state.json's `resources` and on the run
screen's resources line. No GPU here: a fake pynvml module stands in, and torch.cuda's calls too."""

from __future__ import annotations

import sys
import types

import orjson
import pytest
import torch

from entrenar_tui.app import MonitorApp
from entrenar_tui.model.validation import clean_state
from entrenar_tui.widgets.resources_line import ResourcesLine, resources_text
from tests.fake_run import FakeRun
from tests.helpers import run_app, until
from trainer.monitor.schema import Files
from trainer.resources import ResourceSampler

GB = 1_000_000_000
CPU_FIELDS = {
    "rss_bytes",
    "cpu_percent",
    "gpu_memory_allocated_bytes",
    "gpu_memory_reserved_bytes",
    "gpu_memory_total_bytes",
    "gpu_utilization_percent",
}


class NotSupported(Exception):
    """pynvml's NVMLError_NotSupported (a counter this GPU does not have)."""


def fake_pynvml(*, power: bool = True) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.calls = []
    nvml.nvmlInit = lambda: nvml.calls.append("init")

    def by_uuid(uuid):
        nvml.calls.append(uuid)
        return "handle-0"

    nvml.nvmlDeviceGetHandleByUUID = by_uuid
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87, memory=40)
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        used=int(40.2 * GB), total=80 * GB, free=int(39.8 * GB)
    )

    def watts(milliwatts):
        def read(h):
            if not power:
                raise NotSupported
            return milliwatts

        return read

    nvml.nvmlDeviceGetPowerUsage = watts(312_500)
    nvml.nvmlDeviceGetEnforcedPowerLimit = watts(700_000)
    return nvml


@pytest.fixture
def cuda(monkeypatch):
    """torch.cuda's calls the sampler makes, stood in for; a CUDA device to sample."""
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: int(3.1 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 4 * GB)
    props = types.SimpleNamespace(total_memory=80 * GB, uuid="6f2c9d1e-0000-4000-8000-00000000abcd")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: props)
    return types.SimpleNamespace(type="cuda", index=0)


def test_nvml_counters_reach_the_sample(monkeypatch, cuda):
    nvml = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    sample = ResourceSampler(cuda).sample()
    assert nvml.calls == ["init", "GPU-6f2c9d1e-0000-4000-8000-00000000abcd"]  # by torch's UUID
    assert sample["gpu_utilization_percent"] == 87.0
    assert sample["gpu_memory_used_bytes"] == int(40.2 * GB)
    assert sample["gpu_memory_total_bytes"] == 80 * GB
    assert sample["gpu_memory_allocated_bytes"] == int(3.1 * GB)
    assert sample["gpu_power_watts"] == 312.5 and sample["gpu_power_limit_watts"] == 700.0
    assert clean_state({"resources": sample})[1] is None  # what the monitor accepts
    assert resources_text(sample).endswith("GPU 87% 40.2/80 GB (torch 3.1) 312/700 W")


def test_a_counter_the_gpu_lacks_is_null_and_the_rest_stay(monkeypatch, cuda):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(power=False))
    sample = ResourceSampler(cuda).sample()
    assert sample["gpu_power_watts"] is None and sample["gpu_power_limit_watts"] is None
    assert sample["gpu_utilization_percent"] == 87.0
    assert resources_text(sample).endswith("GPU 87% 40.2/80 GB (torch 3.1)")


def test_without_nvidia_ml_py_a_cuda_run_has_torchs_figures_and_null_counters(monkeypatch, cuda):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    monkeypatch.setattr(torch.cuda, "utilization", lambda d=None: 45)
    sample = ResourceSampler(cuda).sample()
    assert sample["gpu_memory_used_bytes"] is None and sample["gpu_power_watts"] is None
    assert resources_text(sample).endswith("GPU 3.1/80 GB 45%")


def test_a_cpu_runs_resources_are_unchanged(monkeypatch):
    nvml = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    sample = ResourceSampler(torch.device("cpu")).sample()
    assert set(sample) == CPU_FIELDS and nvml.calls == []  # NVML is not even started
    assert all(sample[k] is None for k in CPU_FIELDS if k.startswith("gpu_"))
    assert resources_text(sample).startswith("RSS ") and "GPU" not in resources_text(sample)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gpu_utilization_percent", 1e9),
        ("gpu_utilization_percent", -3.0),
        ("gpu_power_watts", 1e300),
        ("gpu_power_watts", -1.0),
        ("gpu_memory_used_bytes", 2**60),
    ],
)
def test_a_counter_out_of_bounds_is_left_out_of_the_line(field, value):
    good = {
        "gpu_utilization_percent": 87.0,
        "gpu_memory_used_bytes": int(40.2 * GB),
        "gpu_memory_total_bytes": 80 * GB,
        "gpu_power_watts": 312.5,
    }
    state, problem = clean_state({"resources": {**good, field: value}})
    assert problem is None  # a number of the right type: the line bounds it
    text = resources_text(state["resources"])
    assert str(value) not in text and f"{value:.0f}" not in text and "e+" not in text
    assert text.startswith("GPU ")
    state, problem = clean_state({"resources": {**good, field: "lots"}})
    assert f"resources.{field}" in problem and state["resources"][field] is None


def test_the_counters_flow_through_state_json_to_the_resources_line(monkeypatch, cuda, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    run.writer.update_state(resources=ResourceSampler(cuda).sample())
    written = orjson.loads((run.dir / Files.STATE).read_bytes())["resources"]
    assert written["gpu_power_watts"] == 312.5 and written["gpu_memory_used_bytes"] == int(
        40.2 * GB
    )
    app = MonitorApp(run.dir, probe=lambda _s: "alive", tick_interval=3600)

    async def body(pilot):
        line = app.screen.query_one(ResourcesLine)
        await until(pilot, lambda: line.display and "W" in str(line.render()), "the line shows")
        assert str(line.render()).endswith(" · GPU 87% 40.2/80 GB (torch 3.1) 312/700 W")

    run_app(app, body, size=(100, 24))
