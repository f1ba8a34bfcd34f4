"""The frozen embedding tables stored in bf16 where bf16 holds them exactly (a checkpoint saved in
bf16, as Qwen2's are): half the memory, and the step's numbers bit for bit as before."""

from __future__ import annotations

import orjson
import pytest
import torch

from tests.conftest import build_tiny_qwen2
from trainer.config import LoraSection, ModelSection
from trainer.model import (
    _holds,
    autocast,
    load_model,
    store_exact_embeddings,
    store_frozen_matmuls,
)


@pytest.fixture(scope="module")
def bf16_qwen2_dir(tmp_path_factory, corpus_texts):
    """A tiny Qwen2 saved in bf16, as real Qwen2 checkpoints are (the session's tiny Qwen2 is fp32)."""
    return build_tiny_qwen2(tmp_path_factory.mktemp("bf16-qwen2"), corpus_texts, dtype="bfloat16")


def tiny(model_dir, gradient_checkpointing: bool = False):
    torch.manual_seed(0)
    return load_model(
        ModelSection(path=str(model_dir), max_length=32, precision="bf16"),
        LoraSection(r=4, alpha=8, dropout=0.1),
        ["a", "b", "c"],
        torch.device("cpu"),
        gradient_checkpointing=gradient_checkpointing,
    )


def table(loaded) -> torch.nn.Embedding:
    (embedding,) = [m for m in loaded.model.modules() if type(m) is torch.nn.Embedding]
    return embedding


def step(loaded, inputs, labels):
    model = loaded.model
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with autocast(loaded.device, "bf16"):
        out = model(**inputs, output_hidden_states=True)
    torch.nn.functional.cross_entropy(out.logits.float(), labels).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.hidden_states[0].detach(), out.logits.detach(), grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_a_bf16_checkpoints_table_is_stored_in_bf16_and_the_step_is_bit_for_bit(
    bf16_qwen2_dir, checkpointing
):
    """With gradient checkpointing transformers also hooks the table, to make its output require
    grad: the two hooks compose."""
    a, b = tiny(bf16_qwen2_dir, checkpointing), tiny(bf16_qwen2_dir, checkpointing)
    for loaded in (a, b):  # as the trainer stores the base
        store_frozen_matmuls(loaded.model, "bf16")
    fp32_bytes = table(b).weight.nbytes
    assert store_exact_embeddings(b.model, "bf16") == 1
    assert table(a).weight.dtype == torch.float32
    assert table(b).weight.dtype == torch.bfloat16
    assert table(b).weight.nbytes * 2 == fp32_bytes
    assert (
        b.model.get_base_model().dtype == torch.bfloat16
    )  # transformers' first floating parameter
    assert torch.equal(table(b).weight.float(), table(a).weight)
    enc = a.tokenizer(["ls -la src", "rm -rf $dir/ now", "echo x >> log"], padding=True)
    inputs = {k: torch.tensor(v) for k, v in enc.items()}
    labels = torch.tensor([0, 1, 2])
    embedded_a, logits_a, grads_a = step(a, inputs, labels)
    embedded_b, logits_b, grads_b = step(b, inputs, labels)
    assert embedded_b.dtype == torch.float32  # the stream is fp32, as before
    assert torch.equal(embedded_a, embedded_b)
    assert torch.equal(logits_a, logits_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)


def test_a_table_with_one_value_bf16_would_round_is_left_alone(bf16_qwen2_dir):
    loaded = tiny(bf16_qwen2_dir)
    with torch.no_grad():
        table(loaded).weight[-1, -1] = 1 + 2**-12
    assert store_exact_embeddings(loaded.model, "bf16") == 0
    assert table(loaded).weight.dtype == torch.float32


def test_the_exactness_check_reads_every_chunk():
    weight = torch.randn(30, 4).bfloat16().float()
    assert _holds(weight, torch.bfloat16, rows=7)
    weight[29, 3] = 1 + 2**-12  # in the last, partial chunk
    assert not _holds(weight, torch.bfloat16, rows=7)
    weight[29, 3] = float("nan")
    assert not _holds(weight, torch.bfloat16, rows=7)


def test_a_model_whose_logits_the_store_would_change_keeps_its_tables(bf16_qwen2_dir):
    """As a model that builds a value from transformers' `model.dtype` (now the table's bf16) or
    reads the table's weight without a lookup: the probe sees other logits, and all is undone."""
    loaded = tiny(bf16_qwen2_dir)
    base = loaded.model.get_base_model()
    loaded.model.register_forward_hook(
        lambda module, args, out: out.__class__(logits=out.logits + torch.finfo(base.dtype).eps)
    )
    loaded.model.train()
    rng = torch.get_rng_state()
    assert store_exact_embeddings(loaded.model, "bf16") == 0
    assert table(loaded).weight.dtype == torch.float32 and not table(loaded)._forward_hooks
    assert loaded.model.training  # the probe ran in eval mode and put train mode back
    assert torch.equal(torch.get_rng_state(), rng)  # and drew nothing


def test_a_model_the_probe_cannot_run_keeps_its_tables(bf16_qwen2_dir, monkeypatch):
    loaded = tiny(bf16_qwen2_dir)

    def needs_more(*args, **kwargs):
        raise ValueError("pixel_values are required")

    monkeypatch.setattr(loaded.model, "forward", needs_more)
    assert store_exact_embeddings(loaded.model, "bf16") == 0
    assert table(loaded).weight.dtype == torch.float32


def test_an_fp32_checkpoints_table_is_left_alone(tiny_qwen2_dir):
    loaded = tiny(tiny_qwen2_dir)  # random fp32 values: bf16 would round them
    assert store_exact_embeddings(loaded.model, "bf16") == 0
    assert table(loaded).weight.dtype == torch.float32


@pytest.mark.parametrize("change", ["trainable", "max_norm", "fp32 run"])
def test_a_table_the_step_could_change_or_an_fp32_run_is_left_alone(bf16_qwen2_dir, change):
    loaded = tiny(bf16_qwen2_dir)
    precision = "bf16"
    if change == "trainable":
        table(loaded).weight.requires_grad_(True)
    elif change == "max_norm":  # renormalizes its rows in place on every lookup
        table(loaded).max_norm = 1.0
    else:
        precision = "fp32"
    assert store_exact_embeddings(loaded.model, precision) == 0
    assert table(loaded).weight.dtype == torch.float32


def test_the_trainer_stores_the_table_of_a_bf16_qwen2(
    tmp_path, bf16_qwen2_dir, small_corpus, monkeypatch
):
    import trainer.model as model_module
    from tests.conftest import write_config
    from tests.helpers import record_returns
    from trainer.config import load_config
    from trainer.train import train

    stored = record_returns(monkeypatch, model_module, "store_exact_embeddings")
    cfg = write_config(
        tmp_path / "c.toml", bf16_qwen2_dir, small_corpus, tmp_path / "run",
        model={"precision": "bf16"}, train={"epochs": 1}, lora={"r": 4, "alpha": 8},
    )  # fmt: skip
    assert train(load_config(cfg)) == 0
    assert stored == [1]
    (epoch,) = orjson.loads((tmp_path / "run" / "epochs.json").read_bytes())["epochs"]
    assert 0 < epoch["train_loss"] < 10 and 0 < epoch["val_loss"] < 10
