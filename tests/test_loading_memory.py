"""trainer.model.loading_memory: what the model's loading frees goes back to the system at once
(on glibc), so the run's resident memory keeps neither the fp32 copies NF4 or the bf16 store drop
nor a peak that moves with how those frees fell."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainer import model as model_module
from trainer.model import (
    LOADING_MMAP_THRESHOLD,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    STEADY_MMAP_THRESHOLD,
    STEADY_TRIM_THRESHOLD,
    loading_memory,
)

# A fresh process: a 16 MiB tensor freed raises glibc's dynamic mmap threshold to 16 MiB, as a
# run's first large frees do; then an 8 MiB tensor (a fp32 weight, say) is made and freed, inside
# loading_memory or not, and after it a 48 MiB one (an activation: over glibc's own 32 MiB cap).
# Prints the MiB that leave the process when each is freed.
CHILD = """
import contextlib, sys
from pathlib import Path
import torch
from trainer.model import loading_memory
def resident():
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096
def returned_when_freed(size):
    tensor = torch.ones(size // 4)  # every page touched
    held = resident()
    del tensor
    return held - resident()
returned_when_freed(16 << 20)
with loading_memory() if sys.argv[1] == "inside" else contextlib.nullcontext():
    print(returned_when_freed(8 << 20) / (1 << 20))
print(returned_when_freed(48 << 20) / (1 << 20))
"""


def returned_mib(where: str) -> tuple[float, float]:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, where], capture_output=True, text=True, check=True
    )
    weight, activation = run.stdout.split()[-2:]
    return float(weight), float(activation)


@pytest.mark.skipif(model_module._glibc() is None, reason="glibc's mallopt only")
def test_loading_returns_what_it_frees_and_training_reuses_its_large_activations():
    weight, activation = returned_mib("inside")
    assert weight >= 7.5  # a fp32 copy loading drops leaves the process
    assert activation < 1  # a 48 MiB activation stays in the heap for the next step
    weight, activation = returned_mib("outside")
    assert weight < 1  # glibc's own thresholds: the dropped copy stays in the process
    assert activation >= 47  # and a large activation is mapped afresh (and zeroed) every step


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_the_thresholds_are_set_for_loading_and_fixed_after_even_on_an_error(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(model_module, "_glibc", lambda: libc)
    with pytest.raises(KeyError), loading_memory():
        assert libc.calls == [("mallopt", M_MMAP_THRESHOLD, LOADING_MMAP_THRESHOLD)]
        raise KeyError("a load that fails")
    assert libc.calls[1:] == [
        ("mallopt", M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD),
        ("mallopt", M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD),
        ("malloc_trim", 0),
    ]
    assert (LOADING_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD) == (1 << 20, 256 << 20)


def test_without_glibc_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(model_module, "_glibc", lambda: None)
    with loading_memory():
        pass
