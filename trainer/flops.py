"""How close a run comes to the hardware's limit: the model FLOPs of a training step, the device's
peak FLOP/s, and their ratio, MFU (model FLOPs utilisation, as PaLM defines it: the FLOPs the model
needs, whatever the implementation spends, over the time it took, over the peak).

Model FLOPs are counted from the architecture, never measured (docs/contract.md has the formula).
Per sample of L non-pad tokens, a training step (forward and backward) costs

    (4·N + 2·T)·L + 12·A·L² + 4·H + 2·H_t

N  the weights of the matmuls every token goes through: every Linear of the backbone, LoRA's A
   and B included; not the embedding tables (lookups). Forward 2·N·L; backward 2·N·L for the
   activation gradients (through the frozen weights too), plus 2·T·L for the weight gradients of
   T, the trainable (LoRA) part of N.
A  the attention width summed over layers (query heads × head size): QKᵀ and AV are 4·A·L²
   forward (the full L×L square, causal or not, as PaLM counts it), twice that backward. L is each
   sample's own length: padding is work the model does not need, so MFU shows it as waste.
H  the matmuls applied once per sequence: the classification head (trained in full: its weight
   gradients are H_t) and a backbone's pooler (BERT's). Forward 2·H, backward 2·H + 2·H_t.

Norms, softmax, activations and the optimizer are not counted (a few percent at most). The peak is
a table of known GPUs (vendors' dense tensor-core figures) or, on a CPU, the best short matmul
measurement in the run's precision this machine has made (trainer/peak_cache.py keeps it across
runs); an unknown GPU has none, and then MFU is null.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from trainer import peak_cache
from trainer.monitor.schema import FLOPS_WINDOW_STEPS
from trainer.monitor.text import utc_now
from trainer.monitor.units import flops_rate

# ======================================================================= model FLOPs per step


@dataclass(frozen=True)
class MatmulParams:
    """What the formula above needs from a model, counted once at setup."""

    per_token: int  # N
    per_token_trainable: int  # T
    per_sequence: int  # H
    per_sequence_trainable: int  # H_t
    attention_width: int  # A


@dataclass(frozen=True)
class StepFlops:
    """A training step's model FLOPs as a function of its samples' non-pad lengths:
    Σ (per_token·L + per_token_squared·L² + per_sequence)."""

    per_token: int
    per_token_squared: int
    per_sequence: int

    @classmethod
    def of(cls, p: MatmulParams) -> StepFlops:
        return cls(
            per_token=4 * p.per_token + 2 * p.per_token_trainable,
            per_token_squared=12 * p.attention_width,
            per_sequence=4 * p.per_sequence + 2 * p.per_sequence_trainable,
        )

    def per_sample(self, lengths: Iterable[int]) -> np.ndarray:
        """Each sample's FLOPs (int64), so that a step's are one sum over its batch's indices."""
        n = np.fromiter(lengths, np.int64)
        return self.per_token * n + self.per_token_squared * n * n + self.per_sequence

    def of_lengths(self, lengths: Iterable[int]) -> int:
        return int(self.per_sample(lengths).sum())


def matmul_size(module: torch.nn.Module) -> int | None:
    """Weights of the matmul a module does per input vector (in × out), or None if it is no
    matmul layer. nn.Linear covers bitsandbytes' 4-bit layers (their packed weight's shape is
    not the matrix's: in_features and out_features are); GPT-2's Conv1D is a transposed Linear."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features * module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return int(module.weight.numel())
    return None


def count_matmuls(model: torch.nn.Module, head: Sequence[str]) -> MatmulParams:
    """N, T, H, H_t and A of a classifier (a peft model or the transformers model under it).
    `head` names its top-level head modules (ModelPlan.head); a module named `pooler` is per
    sequence too. peft's frozen copy of a trained-in-full head (`original_module`) does not run."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    sums = {"token": 0, "token_t": 0, "seq": 0, "seq_t": 0}
    for name, module in base.named_modules():
        parts = name.split(".")
        size = matmul_size(module)
        if size is None or "original_module" in parts:
            continue
        where = "seq" if parts[0] in head or "pooler" in parts else "token"
        sums[where] += size
        if module.weight.requires_grad:
            sums[where + "_t"] += size
    return MatmulParams(
        per_token=sums["token"],
        per_token_trainable=sums["token_t"],
        per_sequence=sums["seq"],
        per_sequence_trainable=sums["seq_t"],
        attention_width=attention_width(base.config),
    )


def attention_width(config: Any) -> int:
    """Σ over layers of query heads × head size (0 when the config does not say)."""
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if not isinstance(layers, int) or not isinstance(heads, int) or heads <= 0:
        return 0
    head_dim = getattr(config, "head_dim", None) or getattr(config, "hidden_size", 0) // heads
    return layers * heads * int(head_dim)


def step_flops(model: torch.nn.Module, head: Sequence[str]) -> StepFlops:
    return StepFlops.of(count_matmuls(model, head))


# ======================================================================= peak FLOP/s

TERA = 1e12

# Dense (no 2:4 sparsity) peak FLOP/s by precision, from each vendor datasheet. "tf32" is the
# tensor-core rate an fp32 run gets when torch allows TF32 matmuls; "fp32" the CUDA-core rate it
# gets otherwise (torch's default). A precision a device lacks is absent: its peak is unknown.
# Keys are whole words of torch.cuda.get_device_name() (so V100 is not V100S, nor L40 L40S), case
# ignored; most specific first: the first entry that matches wins.
GPU_PEAKS: list[tuple[str, str, dict[str, float]]] = [
    # NVIDIA H100 datasheet (SXM5 / PCIe / NVL columns; sparse figures halved)
    ("H100 NVL", "NVIDIA H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60}),
    ("H100 PCIe", "NVIDIA H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378, "fp32": 51}),
    ("H100", "NVIDIA H100 SXM", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67}),
    # NVIDIA H200 datasheet (SXM / NVL columns; sparse figures halved)
    ("H200 NVL", "NVIDIA H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60}),
    ("H200", "NVIDIA H200 SXM", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67}),
    # NVIDIA A100 datasheet (40 and 80 GB, SXM and PCIe alike)
    ("A100", "NVIDIA A100", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}),
    # NVIDIA L40S datasheet (sparse figures halved)
    ("L40S", "NVIDIA L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183, "fp32": 91.6}),
    # NVIDIA A10 datasheet (sparse figures halved); NVIDIA publishes none for the A10G (AWS's
    # GA102 part), which is given the A10's
    ("A10G", "NVIDIA A10G", {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2}),
    ("A10", "NVIDIA A10", {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2}),
    # NVIDIA Ada GPU architecture whitepaper, RTX 4090 (FP16/BF16 with FP32 accumulate)
    ("RTX 4090", "NVIDIA RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    # NVIDIA V100 / V100S datasheets (Volta: fp16 tensor cores, no bf16, no TF32)
    ("V100S", "NVIDIA V100S PCIe", {"fp16": 130, "fp32": 16.4}),
    ("V100-PCIE", "NVIDIA V100 PCIe", {"fp16": 112, "fp32": 14}),
    ("V100", "NVIDIA V100 SXM2", {"fp16": 125, "fp32": 15.7}),
    # NVIDIA T4 datasheet (Turing: fp16 tensor cores, no bf16, no TF32)
    ("T4", "NVIDIA T4", {"fp16": 65, "fp32": 8.1}),
]


def table_peak(device_name: str, precision: str) -> tuple[int, str] | None:
    """(dense peak FLOP/s, the entry's description) for a GPU name and a matmul precision, or
    None for a GPU not in the table or a precision it lacks."""
    for key, label, peaks in GPU_PEAKS:
        if re.search(rf"(?<![\w]){re.escape(key)}(?![\w])", device_name, re.IGNORECASE):
            if precision not in peaks:
                return None
            dense = "" if precision == "fp32" else " dense"  # (CUDA cores: no sparsity figure)
            return round(peaks[precision] * TERA), f"table: {label} {precision}{dense}"
    return None


@dataclass(frozen=True)
class Peak:
    """run.json's `peak_flops`: one device's peak in the precision its matmuls run in. `origin`:
    "table" (a GPU's datasheet), "measured" (at this start) or "cache" (the best this machine
    measured before, trainer/peak_cache.py); `measured_at` when a measurement was taken."""

    flops_per_sec: float | None
    precision: str
    source: str | None
    device: str
    origin: str | None = None
    measured_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """For the start line: `402 GFLOP/s bf16 (measured: ...)`, `(cache: ...)`, or why there is none."""
        if self.flops_per_sec is None:
            return f"unknown for {self.device} in {self.precision}: MFU is not computed"
        when = (
            f", the best this machine measured, on {self.measured_at}"
            if self.origin == "cache"
            else ""
        )
        return f"{flops_rate(self.flops_per_sec)} {self.precision} ({self.source}{when})"


def matmul_precision(device: torch.device, precision: str) -> str:
    """The precision the run's matmuls use: an fp32 run on CUDA uses TF32 where torch allows it."""
    if precision == "fp32" and device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return precision


def device_peak(device: torch.device, precision: str) -> Peak:
    """The table's figure on a GPU, this machine's best (cpu_peak) on a CPU. The trainer calls
    cpu_peak itself on a CPU, for its warning and its background re-measurement."""
    precision = matmul_precision(device, precision)
    if device.type != "cuda":
        return cpu_peak(precision).peak
    name = torch.cuda.get_device_name(device)
    found = table_peak(name, precision)
    if not found:
        return Peak(None, precision, None, name)
    return Peak(found[0], precision, found[1], name, origin="table")


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def measure_cpu_peak(precision: str, budget_s: float = 0.5) -> Peak:
    """The best rate of square matmuls in the run's dtype on the threads the run uses, for about
    `budget_s`: 1024³ (2048³ where one 1024³ takes under 5 ms, to reach a many-core machine's
    rate). Best, not mean: the peak is what this machine can do, and a shared box's neighbours
    only ever slow a try down."""
    dtype, threads = DTYPES[precision], torch.get_num_threads()
    n = 1024
    a, b = _operands(n, dtype)
    if _time_matmul(a, b) < 0.005:  # (the first call also warms the kernel up)
        n = 2048
        a, b = _operands(n, dtype)
        _time_matmul(a, b)
    best, tries = float("inf"), 0
    deadline = time.perf_counter() + budget_s
    while tries < 2 or time.perf_counter() < deadline:
        best, tries = min(best, _time_matmul(a, b)), tries + 1
    threads_text = f"{threads} thread{'s' * (threads != 1)}"
    source = f"measured: {precision} matmul {n}³ best of {tries} on {threads_text}"
    return Peak(2 * n**3 / best, precision, source, cpu_name(), "measured", utc_now())


# The instruction-set flags a CPU's matmul kernels choose between (x86 /proc/cpuinfo `flags`, Arm
# `Features`): two machines with one model name but other flags enabled (a VM) are other machines.
MATMUL_FLAGS = frozenset(
    [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "avx512_vnni",
        "amx_tile",
        "amx_bf16",
        "amx_fp16",
        "asimd",
        "asimdhp",
        "sve",
        "sve2",
        "bf16",
        "i8mm",
        "sme",
    ]
)


def machine_key(precision: str) -> str:
    """What a CPU peak belongs to: model, matmul flags, the run's threads, dtype, torch's version
    (its kernels change between versions). `AMD EPYC 7B13|avx2 fma|2 threads|bf16|torch 2.13`."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split()) & MATMUL_FLAGS
                    break
    except OSError:
        pass
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    threads = torch.get_num_threads()
    return "|".join(
        [
            cpu_name(),
            " ".join(sorted(flags)) or "-",
            f"{threads} threads",
            precision,
            f"torch {torch_version}",
        ]
    )


@dataclass
class CpuPeak:
    """A run's peak and what goes with it on a CPU: a warning about the cache file to say once,
    and the background re-measurement to start once setup is over (when the peak came from the
    cache). A GPU's has neither."""

    peak: Peak
    warning: str | None = None
    refresh: BackgroundPeak | None = None


def cpu_peak(precision: str, budget_s: float = 0.5) -> CpuPeak:
    """The best peak this machine has measured for the key, from the cache, without measuring at
    start (a BackgroundPeak re-measures during the run, for the next one); on a miss, a
    measurement now, stored. The run's MFU keeps the peak it started with: one denominator for
    its whole state.json and result.json, and run.json stays true."""
    key = machine_key(precision)
    cached, warning = peak_cache.lookup(key)
    if cached is not None:
        peak = Peak(
            cached.flops_per_sec,
            precision,
            cached.source,
            cached.device,
            "cache",
            cached.measured_at,
        )
        return CpuPeak(peak, warning, BackgroundPeak(key, precision, budget_s))
    peak = measure_cpu_peak(precision, budget_s)
    stored = _store(key, peak)
    return CpuPeak(peak, warning or stored)


def run_peak(device: torch.device, precision: str, is_main: bool) -> CpuPeak:
    """This rank's peak for MFU: rank 0's device (a GPU's table entry; a CPU's cached best, or a
    short measurement before the first step's clock starts). Other ranks write no state: they
    neither measure nor disturb rank 0's measurement."""
    if is_main and device.type != "cuda":
        return cpu_peak(precision)
    if is_main:
        return CpuPeak(device_peak(device, precision))
    return CpuPeak(Peak(None, precision, None, str(device)))


def _store(key: str, peak: Peak) -> str | None:
    """Keep a measurement in the cache if it is the best; a warning line when it cannot be."""
    entry = peak_cache.CachedPeak(
        float(peak.flops_per_sec or 0),
        (peak.source or "").replace("measured: ", "cache: ", 1),
        peak.measured_at or utc_now(),
        peak.device,
    )
    try:
        peak_cache.record(key, entry)
    except OSError as e:
        return f"peak cache not written ({e}); the next run measures again"
    return None


class BackgroundPeak:
    """One more measurement of the CPU's peak in a thread while the run trains: a few matmuls
    (about budget_s) once, at low cost; a better figure goes to the cache for the next run.
    Non-daemon: the interpreter waits for it (a second at most) rather than kill it mid-matmul."""

    def __init__(self, key: str, precision: str, budget_s: float):
        self.key, self.precision, self.budget_s = key, precision, budget_s
        self.thread = threading.Thread(target=self._run, name="entrenar-peak", daemon=False)
        self.measured: Peak | None = None
        self.warning: str | None = None

    def start(self) -> BackgroundPeak:
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def news(self, started_with: Peak) -> str | None:
        """What the re-measurement found, for the run's last lines (it ends within its budget of
        starting): a warning, a better peak kept for the next run, or nothing."""
        self.join()
        if self.warning:
            return f"warning: {self.warning}"
        if self.measured is not None and self.measured.flops_per_sec > (
            started_with.flops_per_sec or 0
        ):
            return (
                f"peak: measured {self.measured.describe()} during the run, kept for the next run "
                "(this run's MFU stays against the peak it started with)"
            )
        return None

    def _run(self) -> None:
        try:
            self.measured = measure_cpu_peak(self.precision, self.budget_s)
            self.warning = _store(self.key, self.measured)
        except Exception as e:  # a run never fails for its peak's second opinion
            self.warning = f"peak re-measurement failed: {e}"


def _operands(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random n×n matrices from a generator of their own: the run's seeded streams (dropout,
    and what an exact resume restores) must not move."""
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))


def _time_matmul(a: torch.Tensor, b: torch.Tensor) -> float:
    started = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - started


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else the machine type."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


# ======================================================================= achieved FLOP/s, MFU

WINDOW_STEPS = FLOPS_WINDOW_STEPS  # state.json's flops_per_sec: this process's last 10 steps


class FlopMeter:
    """Achieved FLOP/s and MFU from each step's model FLOPs and seconds: over the last
    WINDOW_STEPS steps (state.json, the progress lines) and over the whole process (result.json,
    the summary). `peak` is the run's total: one device's peak × the world size."""

    def __init__(self, peak: float | None, window: int = WINDOW_STEPS):
        self.peak = peak
        self.recent: deque[tuple[int, float]] = deque(maxlen=window)
        self.total_flops, self.total_seconds = 0, 0.0

    def add(self, flops: int, seconds: float) -> None:
        self.recent.append((flops, seconds))
        self.total_flops += flops
        self.total_seconds += seconds

    def rate(self, *, overall: bool = False) -> tuple[float | None, float | None]:
        """(FLOP/s, MFU): MFU None without a peak, both None before the first step."""
        if overall:
            flops, seconds = self.total_flops, self.total_seconds
        else:
            flops, seconds = sum(f for f, _ in self.recent), sum(s for _, s in self.recent)
        if seconds <= 0:
            return None, None
        achieved = flops / seconds
        return achieved, achieved / self.peak if self.peak else None
