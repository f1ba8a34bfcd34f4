"""Short inputs attend through plain matmuls while training on a CPU (trainer.model.use_short_attention):
the same attention as transformers' SDPA, causal and grouped-query layers and padding masks
included, within rounding; everything else goes to SDPA unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer import model as model_module
from trainer.config import LoraSection, ModelSection
from trainer.model import (
    MATH_ATTENTION_MAX_LENGTH,
    autocast,
    load_model,
    sdpa_with_fast_dropout,
    store_frozen_matmuls,
    use_short_attention,
)

TEXTS = [
    "ls -la src",  # the short one: right-padded, so the mask has padded keys
    "rm -rf $dir/ now and then echo done",
    "echo x >> log",
]


class Layer(torch.nn.Module):
    """Stands for a causal grouped-query attention layer (Qwen2's): what the function reads."""

    is_causal = True
    num_key_value_groups = 2


def opted_in() -> Layer:
    layer = Layer()
    use_short_attention(layer)
    return layer


def qkv(length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, length, 8, generator=g, requires_grad=True)
    k = torch.randn(2, 2, length, 8, generator=g, requires_grad=True)
    v = torch.randn(2, 2, length, 8, generator=g, requires_grad=True)
    return q, k, v


def padded_causal_mask(length: int) -> torch.Tensor:
    mask = torch.ones(2, 1, length, length, dtype=torch.bool).tril()
    mask[1, :, :, length - 2 :] = False  # the second sample's last two positions are padding
    return mask


@pytest.mark.parametrize("masked", [True, False], ids=["padding mask", "causal, no mask"])
def test_short_attention_is_sdpa_with_its_gradients(masked):
    """fp32: the plain path and torch's SDPA (grouped-query, causal) agree to float rounding,
    output and the gradients of q, k and v."""
    layer = opted_in()
    mask = padded_causal_mask(6) if masked else None
    q, k, v = qkv(6)
    got, _ = sdpa_with_fast_dropout(layer, q, k, v, mask, scaling=0.3)
    got.square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    want = F.scaled_dot_product_attention(
        q2, k2, v2, attn_mask=mask, is_causal=not masked, scale=0.3, enable_gqa=True
    ).transpose(1, 2)
    want.square().sum().backward()
    assert got.shape == want.shape == (2, 6, 4, 8)
    assert torch.allclose(got, want, atol=1e-5)
    for mine, theirs in zip(grads, (q2.grad, k2.grad, v2.grad), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5)


@pytest.mark.parametrize("form", ["float", "per head", "bool"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_mask_form_is_the_same_attention(form, precision):
    """transformers may hand the layer an additive float mask (0 / the fp32 minimum, which bf16
    cannot hold: it must not turn into -inf and a padded row into NaN) or one mask per query head;
    each gives what the boolean mask gives, and what SDPA gives."""
    layer = opted_in()
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    allowed = padded_causal_mask(6)
    allowed[0, :, 2, :] = False  # a query that sees nothing (a fully padded row)
    mask = {
        "bool": allowed,
        "per head": allowed.expand(2, 4, 6, 6),
        "float": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min),
    }[form]
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in qkv(6))
    got, _ = sdpa_with_fast_dropout(layer, q, k, v, mask, scaling=0.3)
    got.float().square().sum().backward()
    assert torch.isfinite(got).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))
    want, _ = sdpa_with_fast_dropout(layer, q, k, v, allowed, scaling=0.3)
    assert torch.equal(got, want)
    seen = [r for r in range(6) if r != 2]  # SDPA's fully masked row is NaN or 0 by kernel
    sdpa = F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=allowed, scale=0.3, enable_gqa=True
    ).transpose(1, 2)
    tolerance = 1e-5 if precision == "fp32" else 3e-2
    assert torch.allclose(got.float()[0, seen], sdpa[0, seen], atol=tolerance)
    assert torch.allclose(got.float()[1], sdpa[1], atol=tolerance)


def test_padded_keys_get_no_weight():
    layer = opted_in()
    mask = padded_causal_mask(5)
    q, k, v = qkv(5)
    got, _ = sdpa_with_fast_dropout(layer, q, k, v, mask, scaling=0.3)
    v_far = v.detach().clone()
    v_far[1, :, 3:] = 1e6
    again, _ = sdpa_with_fast_dropout(layer, q, k, v_far, mask, scaling=0.3)
    assert torch.allclose(again, got)


@pytest.mark.parametrize("case", ["no gradients", "long input", "not opted in"])
def test_every_other_call_is_transformers_sdpa_unchanged(case):
    layer = Layer() if case == "not opted in" else opted_in()
    length = MATH_ATTENTION_MAX_LENGTH + 1 if case == "long input" else 6
    q, k, v = qkv(length)
    mask = padded_causal_mask(length)
    with torch.set_grad_enabled(case != "no gradients"):
        got, _ = sdpa_with_fast_dropout(layer, q, k, v, mask, scaling=0.3)
        want, _ = model_module._SDPA(layer, q, k, v, mask, scaling=0.3)
    assert torch.equal(got, want)


def loaded_qwen2(folder, short: bool, precision: str):
    torch.manual_seed(0)
    loaded = load_model(
        ModelSection(path=str(folder), max_length=64, precision=precision),
        LoraSection(r=4, alpha=8, dropout=0.0),
        ["a", "b", "c"],
        torch.device("cpu"),
    )
    store_frozen_matmuls(loaded.model, precision)  # as the trainer does
    if short:
        use_short_attention(loaded.model)
    return loaded


def train_step(loaded, precision: str):
    model = loaded.model.train()
    model.zero_grad(set_to_none=True)
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert not bool(batch["attention_mask"].all())  # the batch is padded
    with autocast(loaded.device, precision):
        logits = model(**batch).logits.float()
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_qwen2_step_matches_the_unpatched_model(tiny_qwen2_dir, precision, monkeypatch):
    """The tiny Qwen2 (causal, 4 heads on 2 key/value heads), a right-padded batch: logits and
    every LoRA and head gradient as with transformers' SDPA. fp32: within 1e-5 of the largest
    value; bf16: within 2% of the largest (the two paths round their bf16 matmuls differently)."""
    plain = loaded_qwen2(tiny_qwen2_dir, False, precision)
    short = loaded_qwen2(tiny_qwen2_dir, True, precision)
    sdpa_calls = []
    original = model_module._SDPA
    monkeypatch.setattr(
        model_module, "_SDPA", lambda *a, **kw: sdpa_calls.append(1) or original(*a, **kw)
    )
    logits_a, grads_a = train_step(plain, precision)
    assert len(sdpa_calls) == 2  # the unpatched model: SDPA in each of its 2 layers
    logits_b, grads_b = train_step(short, precision)
    assert len(sdpa_calls) == 2  # the opted-in one: the plain path in both
    tolerance = 1e-5 if precision == "fp32" else 2e-2

    def close(a, b):
        return (a - b).abs().max() <= tolerance * max(a.abs().max(), 1e-6)

    assert close(logits_a, logits_b), (logits_a, logits_b)
    assert grads_a.keys() == grads_b.keys() and any("lora_A" in n for n in grads_a)
    far = [n for n in grads_a if not close(grads_a[n], grads_b[n])]
    assert not far, far
