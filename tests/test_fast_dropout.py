"""train.fast_dropout: dropout masks from 4x fewer random draws (trainer.model.FastDropout).

The resume tests (tests/test_resume.py) run with the default (auto → on on a CPU) and the tiny BERT's
hidden dropout of 0.1, so a resumed run matching an uninterrupted one bit for bit covers this
sampler too (its draws come from torch's default generator, which checkpoints save).
"""

from __future__ import annotations

import orjson
import pytest
import torch
import torch.nn.functional as F

import trainer.train as train_module
from tests.conftest import write_config
from tests.helpers import record_returns
from trainer.config import load_config
from trainer.model import (
    FastDropout,
    fast_dropout,
    fast_dropout_wanted,
    sdpa_with_fast_dropout,
    use_fast_dropout,
)
from trainer.train import train


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_same_distribution_and_scaling_as_torch_dropout(p):
    torch.manual_seed(0)
    d = torch.nn.Dropout(p)
    d.__class__ = FastDropout
    d.train()
    y = d(torch.ones(400_000))
    keep = float((y > 0).float().mean())
    assert abs(keep - (1 - p)) < 0.003  # ~4 sigma at n = 400k
    assert torch.allclose(y[y > 0], torch.full_like(y[y > 0], 1 / (1 - p)))
    assert abs(float(y.mean()) - 1.0) < 0.01  # the expectation is kept, as torch's dropout does


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.999])
def test_the_mask_is_the_lanes_at_or_over_the_threshold_in_every_dtype(dtype, p):
    """The sign-arithmetic mask keeps exactly the elements whose 15-bit lane is >= p·32768, and
    the kept values are x / (1 - p) as torch computes it (x · 1 exact, then the scale)."""
    x = torch.randn(7, 33, 65, dtype=dtype, requires_grad=True)  # an odd count: a cut last word
    torch.manual_seed(3)
    y = FastDropout(p).train()(x)
    torch.manual_seed(3)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_()
    lanes = words.view(torch.int16)[: x.numel()].view(x.shape) & 0x7FFF
    keep = lanes >= round(p * 32768)
    want = torch.where(keep, x.detach() * (1.0 / (1.0 - p)), torch.zeros((), dtype=dtype))
    assert y.dtype == dtype and torch.equal(y.detach(), want)
    assert 0 < int(keep.sum()) < x.numel()
    y.sum().backward()
    assert torch.equal(x.grad, torch.where(keep, torch.ones_like(x) * (1.0 / (1.0 - p)), 0.0))


def test_eval_and_p0_are_identity_dtype_and_shape_kept_and_seeded():
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    d = FastDropout(0.1).eval()
    assert d(x) is x
    assert FastDropout(0.0).train()(x) is x
    d.train()
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    b = d(x)
    assert a.dtype == torch.bfloat16 and a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))


def test_use_fast_dropout_swaps_plain_dropouts_and_leaves_the_state_dict_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Dropout(0.2))
    keys = list(model.state_dict())
    assert use_fast_dropout(model) == 2
    assert all(type(m) is FastDropout for m in list(model)[1:]) and model[2].p == 0.2
    assert list(model.state_dict()) == keys
    assert fast_dropout_wanted("auto", torch.device("cpu"))
    assert not fast_dropout_wanted("auto", torch.device("cuda", 0))
    assert fast_dropout_wanted("on", torch.device("cuda", 0)) and not fast_dropout_wanted(
        "off", torch.device("cpu")
    )


@pytest.mark.parametrize("setting,swapped", [("on", True), ("off", False)])
def test_the_switch_is_applied_and_recorded(
    tmp_path, tiny_bert_dir, small_corpus, monkeypatch, setting, swapped
):
    calls = record_returns(monkeypatch, train_module, "use_fast_dropout")
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, small_corpus, tmp_path / "run",
        train={"epochs": 1, "fast_dropout": setting}, lora={"r": 4, "alpha": 8, "dropout": 0.1},
    )  # fmt: skip
    assert train(load_config(cfg)) == 0
    # 2 layers x (attention output + FFN output + LoRA on query + LoRA on value) + embeddings + head
    assert (calls and calls[0] >= 9) if swapped else not calls
    run = orjson.loads((tmp_path / "run" / "run.json").read_bytes())
    assert run["config"]["train"]["fast_dropout"] == setting


# ------------------------------------------------------------------- attention-probability dropout


class Layer(torch.nn.Module):
    """Stands for a transformers attention layer: what sdpa_with_fast_dropout reads of it."""

    is_causal = False


def qkv(seed: int = 0, heads: int = 3, kv_heads: int = 3):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, 5, 8, generator=g, requires_grad=True)
    k = torch.randn(2, kv_heads, 7, 8, generator=g, requires_grad=True)
    v = torch.randn(2, kv_heads, 7, 8, generator=g, requires_grad=True)
    mask = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    mask[1, :, :, 4:] = False  # the second sample's last three keys are padding
    return q, k, v, mask


def opted_in() -> Layer:
    layer = Layer()
    use_fast_dropout(layer)  # registers the function as transformers' "sdpa" and flags the layer
    return layer


def test_attention_with_a_vanishing_dropout_is_sdpa_itself():
    """p small enough that every lane is kept: the fast path's softmax(q·kᵀ·scale + mask)·v is
    torch's SDPA, masks and scaling included; and the padded keys get no weight."""
    layer = opted_in()
    q, k, v, mask = qkv()
    got, _ = sdpa_with_fast_dropout(layer, q, k, v, mask, dropout=1e-9, scaling=0.3)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3).transpose(1, 2)
    assert torch.allclose(got, want, atol=1e-6)
    v2 = v.detach().clone()
    v2[1, :, 4:] = 1e6  # what padded keys hold must not reach the output
    again, _ = sdpa_with_fast_dropout(layer, q, k, v2, mask, dropout=1e-9, scaling=0.3)
    assert torch.allclose(again, got, atol=1e-6)


def test_attention_dropout_drops_probabilities_with_the_fast_mask_and_trains():
    layer = opted_in()
    q, k, v, mask = qkv()
    torch.manual_seed(5)
    got, _ = sdpa_with_fast_dropout(layer, q, k, v, mask, dropout=0.5, scaling=0.3)
    scores = (q @ k.transpose(-2, -1) * 0.3).masked_fill(~mask, torch.finfo(torch.float32).min)
    torch.manual_seed(5)
    dropped = fast_dropout(torch.softmax(scores, dim=-1), 0.5)
    assert torch.allclose(got, (dropped @ v).transpose(1, 2), atol=1e-6)
    assert 0 < int((dropped == 0).sum()) < dropped.numel()
    got.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize(
    "case", ["evaluation", "not opted in", "causal", "grouped-query", "extra argument"]
)
def test_every_other_call_is_transformers_sdpa_unchanged(case):
    """Same seed, same values as transformers' own function, bit for bit."""
    from trainer import model as model_module

    layer = opted_in()
    q, k, v, mask = qkv(kv_heads=1 if case == "grouped-query" else 3)
    kwargs = {"dropout": 0.0 if case == "evaluation" else 0.3, "scaling": 0.3}
    if case == "not opted in":
        layer = Layer()
    if case == "causal":
        layer.is_causal, mask = True, None
    if case == "grouped-query":
        layer.num_key_value_groups = 3
    if case == "extra argument":
        kwargs["position_bias"] = torch.zeros(1, 3, 5, 7)
    torch.manual_seed(9)
    got, _ = sdpa_with_fast_dropout(layer, q, k, v, mask, **kwargs)
    torch.manual_seed(9)
    want, _ = model_module._SDPA(layer, q, k, v, mask, **kwargs)
    assert torch.equal(got, want)


def test_a_bert_trained_with_fast_dropout_drops_attention_with_the_fast_mask(
    tmp_path, tiny_bert_dir
):
    """The real model: in training, each layer's attention probabilities go through fast_dropout
    (one [batch, heads, query, key] call a layer); in evaluation none, and outputs are SDPA's."""
    from transformers import AutoModelForSequenceClassification

    from trainer import model as model_module

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    attention = (ids != 0).long()
    model.eval()
    before = model(input_ids=ids, attention_mask=attention).logits
    use_fast_dropout(model)
    shapes: list[tuple[int, ...]] = []
    real = model_module.fast_dropout

    def spy(x, p):
        shapes.append(tuple(x.shape))
        return real(x, p)

    model_module.fast_dropout = spy
    try:
        assert torch.equal(model(input_ids=ids, attention_mask=attention).logits, before)
        assert shapes == []  # evaluation: no dropout at all
        model.train()
        model(input_ids=ids, attention_mask=attention).logits.sum().backward()
    finally:
        model_module.fast_dropout = real
    assert shapes.count((2, 2, 5, 5)) == 2  # the two layers' attention probabilities
