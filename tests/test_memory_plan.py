"""The memory plan (trainer/memory_plan.py): its parts on small shapes computed by hand, the
micro-batch `auto` picks, `--estimate` (prints, writes nothing) and the refusal of a micro-batch
that does not fit (one line, exit 2, before any weight loads or output.dir is touched)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import run_cli, write_config
from trainer.config import load_config
from trainer.errors import UserError
from trainer.memory_plan import (
    AVAILABLE_ENV,
    MARGIN,
    LayerShape,
    MiB,
    ModelMemory,
    Setting,
    WeightCounts,
    available_memory,
    base_bytes,
    choose_micro_batch,
    layer_bytes_per_token,
    load_bytes,
    nf4_bytes_per_weight,
    parse_size,
    plan_micro_batch,
    trainable_bytes,
    weight_counts,
)
from trainer.micro_batches import micro_batch_sizes
from trainer.model import _adapted, inspect_model

# A Qwen2 of hidden 64, MLP 128, 2 layers, 4 heads (head dim 16) / 2 KV heads, vocabulary 100, LoRA
# r = 4 on q_proj (64 -> 64) and v_proj (64 -> 32); the counts below are worked out by hand.
TINY_QWEN2 = dict(
    vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip
# Per layer: q 64x64, k 32x64, v 32x64, o 64x64, gate/up 128x64, down 64x128 = 36,864 weights;
# biases on q, k, v: 64 + 32 + 32 = 128.
LINEAR_WEIGHTS, LINEAR_BIASES = 2 * 36_864, 2 * 128
OTHER = 100 * 64 + 2 * 2 * 64 + 64  # embedding, 2 RMSNorms a layer, the final RMSNorm
HEAD = 64 * 2  # score: Linear(64, 2), no bias
LORA = 2 * (4 * (64 + 64) + 4 * (64 + 32))  # A and B of q_proj and v_proj, 2 layers


def qwen2_counts() -> WeightCounts:
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(
            Qwen2Config(**TINY_QWEN2, num_labels=2)
        )
    return weight_counts(model, ["score"], _adapted(model, ["q_proj", "v_proj"], ["score"]), 4)


def setting(**changes) -> Setting:
    values = dict(
        device="cpu", precision="bf16", quantize="none", double_quant=True, max_length=8,
        lora_r=4, lora_dropout=0.05, fast_dropout=True, gradient_checkpointing=False,
    )  # fmt: skip
    return Setting(**{**values, **changes})


QWEN2_SHAPE = LayerShape(
    layers=2, hidden=64, intermediate=128, heads=4, attention_width=64, decoder=True,
    hidden_dropout=0.0, attention_dropout=0.0,
)  # fmt: skip


def test_weights_counted_from_the_meta_model_by_how_they_are_stored():
    w = qwen2_counts()
    assert (w.linear_weights, w.linear_biases, w.other, w.head) == (
        LINEAR_WEIGHTS,
        LINEAR_BIASES,
        OTHER,
        HEAD,
    )
    assert (w.lora, w.lora_inputs, w.lora_layers) == (LORA, 4 * 64, 4)
    assert w.largest_linear == 128 * 64
    assert w.linear_inputs == 2 * (4 * 64 + 2 * 64 + 128)  # q, k, v, o, gate, up take 64; down 128


def test_frozen_base_bytes_per_storage():
    w = WeightCounts(LINEAR_WEIGHTS, LINEAR_BIASES, OTHER, HEAD, LORA, 256, 4, 8192, 0)
    # bf16: the frozen Linear layers (and the head's frozen copy) at 2 bytes, the rest fp32.
    assert base_bytes(w, setting()) == (LINEAR_WEIGHTS + LINEAR_BIASES) * 2 + OTHER * 4 + HEAD * 2
    assert (
        base_bytes(w, setting(precision="fp32"))
        == (LINEAR_WEIGHTS + LINEAR_BIASES + OTHER + HEAD) * 4
    )
    # NF4: 4 bits + an fp32 absmax per 64 weights = 0.5625 B; double quant: 8-bit absmax + an fp32
    # constant per 256 blocks = 0.515869140625 B. Biases stay fp32.
    assert nf4_bytes_per_weight(False) == 0.5625
    assert nf4_bytes_per_weight(True) == 0.515869140625
    nf4 = setting(quantize="nf4")
    assert base_bytes(w, nf4) == 38_034 + LINEAR_BIASES * 4 + OTHER * 4 + HEAD * 2
    assert base_bytes(w, setting(quantize="nf4", double_quant=False)) == (
        41_472 + LINEAR_BIASES * 4 + OTHER * 4 + HEAD * 2
    )
    # Loading: everything fp32, plus the safetensors file mapped into RAM on a CPU (not on CUDA).
    fp32 = (LINEAR_WEIGHTS + LINEAR_BIASES + OTHER + HEAD) * 4
    assert load_bytes(w, setting(checkpoint_bytes=1000)) == fp32 + 1000
    assert load_bytes(w, setting(device="cuda", checkpoint_bytes=1000)) == fp32
    assert load_bytes(w, nf4) == base_bytes(w, nf4) + 4 * 8192


def test_trainable_state_is_16_bytes_a_parameter():
    w = WeightCounts(0, 0, 0, HEAD, LORA, 0, 0, 0, 0)
    assert trainable_bytes(w) == 16 * (LORA + HEAD)  # fp32 weight, grad, exp_avg, exp_avg_sq


def test_decoder_layer_activations_by_hand():
    w = WeightCounts(
        0, 0, 0, 0, 0, lora_inputs=256, lora_layers=4, largest_linear=0, buffer_bytes=0
    )
    # 2 RMSNorm inputs fp32 (2·4·64 = 512); LoRA: 4 A inputs bf16 + 4 fp32 dropout multipliers of
    # 64, and 4 B inputs of r = 4 bf16, over 2 layers ((256·6 + 4·4·2) / 2 = 784); SDPA: q, k, v, out
    # bf16 + 4 fp32 log-sum-exps (4·2·64 + 4·4 = 528); on a CPU, short inputs' plain attention: the
    # bf16 softmax of 4 heads × 8 positions (4·8·2 = 64);
    # SiLU(gate)·up: 3 bf16 tensors of 128 (768).
    assert layer_bytes_per_token(QWEN2_SHAPE, w, setting()) == 512 + 784 + 528 + 64 + 768
    # No LoRA dropout: no multipliers (256·2 + 32) / 2 = 272.
    no_dropout = setting(lora_dropout=0)
    assert layer_bytes_per_token(QWEN2_SHAPE, w, no_dropout) == 512 + 272 + 528 + 64 + 768
    # CUDA's torch dropout keeps a bool mask: (256·3 + 32) / 2 = 400; its SDPA is fused at any length.
    cuda = setting(device="cuda", fast_dropout=False)
    assert layer_bytes_per_token(QWEN2_SHAPE, w, cuda) == 512 + 400 + 528 + 768
    # NF4: bitsandbytes' matmul keeps each quantized layer's bf16 input: 2·512 a layer.
    w.linear_inputs = 1024
    assert layer_bytes_per_token(QWEN2_SHAPE, w, setting(quantize="nf4")) == 2656 + 1024
    assert layer_bytes_per_token(QWEN2_SHAPE, w, setting()) == 2656  # unquantized: nothing


def test_encoder_layer_activations_by_hand():
    shape = LayerShape(
        layers=1, hidden=32, intermediate=64, heads=2, attention_width=32, decoder=False,
        hidden_dropout=0.1, attention_dropout=0.1,
    )  # fmt: skip
    w = WeightCounts(0, 0, 0, 0, 0, lora_inputs=64, lora_layers=2, largest_linear=0, buffer_bytes=0)
    s = setting(precision="fp32", lora_r=2, lora_dropout=0)
    # fp32: 2 LayerNorm inputs (256), 2 hidden-dropout multipliers (256), LoRA 64·4 + 2·2·4 (272),
    # attention with dropout on a CPU materialized: q, k, v (384) + 2 heads × 8 keys × (softmax
    # 4 + multiplier 4 + dropped 4) (192), GELU's input (256).
    assert layer_bytes_per_token(shape, w, s) == 256 + 256 + 272 + 384 + 192 + 256


def tiny_memory(**changes) -> ModelMemory:
    w = WeightCounts(LINEAR_WEIGHTS, LINEAR_BIASES, OTHER, HEAD, LORA, 256, 4, 8192, 0)
    return ModelMemory(QWEN2_SHAPE, w, setting(**changes))


def test_plan_adds_up_the_parts():
    plan = tiny_memory().plan(2, 10**9, "test")
    tokens = 2 * 8
    # layers (a CPU's: short inputs' plain attention included) + final norm and head input
    kept = 2 * 2656 * tokens + (4 + 2) * 64 * tokens
    assert plan.activations == kept == 91_136
    assert plan.workspace == kept  # a CPU heap keeps the forward's freed temporaries: as much again
    assert plan.training == plan.base_weights + plan.trainable + 2 * kept
    assert plan.total == max(plan.training, plan.loading)
    checkpointed = tiny_memory(gradient_checkpointing=True).plan(2, 10**9, "test")
    # Each layer keeps its fp32 input; one layer is recomputed whole.
    assert checkpointed.activations == 2 * 4 * 64 * tokens + 2656 * tokens + 6 * 64 * tokens
    assert checkpointed.workspace == kept  # recomputed in the backward: a CPU heap keeps it all
    assert tiny_memory(device="cuda").plan(2, 10**9, "t").workspace == 2592 * tokens


def test_auto_picks_the_largest_divisor_that_fits():
    memory = tiny_memory()
    # Enough for 4 samples a micro-batch, not for 6: of 24's divisors auto takes 4.
    available = int(memory.plan(4, 0, "").total / (1 - MARGIN)) + 1
    assert memory.plan(6, available, "").total > available * (1 - MARGIN)
    assert (
        choose_micro_batch(
            memory, micro_batch_sizes(24, 1), "auto", available, "test"
        ).micro_batch_size
        == 4
    )
    assert (
        choose_micro_batch(memory, micro_batch_sizes(24, 1), 3, available, "test").micro_batch_size
        == 3
    )
    with pytest.raises(UserError) as refused:
        choose_micro_batch(memory, micro_batch_sizes(24, 1), 6, available, "test")
    message = str(refused.value)
    assert "\n" not in message and "(4 fits)" in message
    for key in ("train.micro_batch_size", "train.gradient_checkpointing", "model.quantize"):
        assert key in message
    with pytest.raises(UserError, match="not even 1 sample fits"):
        choose_micro_batch(memory, micro_batch_sizes(24, 1), "auto", 1000, "test")


def test_sizes_and_the_pretend_variable(monkeypatch):
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("512 MiB") == 512 * 1024**2
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("123456") == 123456
    assert parse_size("lots") is None
    monkeypatch.setenv(AVAILABLE_ENV, "3MiB")
    assert available_memory(torch.device("cpu")) == (3 * MiB, AVAILABLE_ENV)
    monkeypatch.setenv(AVAILABLE_ENV, "3 apples")
    with pytest.raises(UserError, match=AVAILABLE_ENV):
        available_memory(torch.device("cpu"))


@pytest.fixture
def qwen2_config(tmp_path, tiny_qwen2_dir, small_corpus):
    return write_config(
        tmp_path / "qwen2.toml",
        tiny_qwen2_dir,
        small_corpus,
        tmp_path / "run",
        train={"batch_size": 16},
    )


def test_estimate_prints_the_plan_and_writes_nothing(tmp_path, qwen2_config, monkeypatch):
    monkeypatch.setenv(AVAILABLE_ENV, "1GiB")
    config = load_config(str(qwen2_config), [])
    plan = plan_micro_batch(config, inspect_model(config.model, config.lora))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_cli(str(qwen2_config), "--estimate")
    assert result.returncode == 0, result.stderr
    total = re.search(r"total \(the larger\)\s+([\d.]+) MiB", result.stdout)
    assert total and float(total.group(1)) == round(plan.total / MiB, 1)
    assert f"auto picks {plan.micro_batch_size}: the largest divisor of 16" in result.stdout
    assert plan.micro_batch_size == 16  # a tiny model: the whole batch fits in 1 GiB
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # not even output.dir
    assert not (tmp_path / "run").exists()


def test_a_micro_batch_that_does_not_fit_is_refused_before_loading(
    tmp_path, qwen2_config, monkeypatch
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setenv(AVAILABLE_ENV, "200KiB")  # under even the tiny model's weights
    result = run_cli(str(qwen2_config), "train.micro_batch_size=16")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("entrenar-train: error: train.micro_batch_size = 16 does not fit")
    for key in ("train.micro_batch_size", "train.gradient_checkpointing", "model.quantize"):
        assert key in lines[0]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_preflight_puts_the_plan_on_the_model_plan(qwen2_config, monkeypatch):
    """What the training loop reads: ModelPlan.micro_batch_size, per process (batch / WORLD_SIZE),
    and ModelPlan.memory for run.json's memory_plan."""
    import json

    from trainer.preflight import preflight

    monkeypatch.setenv(AVAILABLE_ENV, "1GiB")
    monkeypatch.setenv("WORLD_SIZE", "2")
    plan = preflight(load_config(str(qwen2_config), []))
    assert plan.micro_batch_size == 8  # batch_size 16 over 2 processes; the tiny model fits whole
    recorded = json.loads(json.dumps(plan.memory.to_json()))
    assert recorded["micro_batch_size"] == 8 and recorded["available"] == 1024**3
    assert recorded["total"] == plan.memory.total and recorded["fits"] is True
    assert recorded["available_from"] == AVAILABLE_ENV and recorded["margin"] == MARGIN
