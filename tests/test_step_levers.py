"""The training step's speed levers that must not change a number: the frozen base stored in the
autocast dtype once, and no dropout op at all where LoRA's dropout is 0."""

from __future__ import annotations

import pytest
import torch

from trainer.config import LoraSection, ModelSection
from trainer.model import autocast, load_model, store_frozen_matmuls


def tiny(model_dir, dropout: float = 0.1):
    torch.manual_seed(0)
    model_cfg = ModelSection(path=str(model_dir), max_length=32, precision="bf16")
    return load_model(
        model_cfg, LoraSection(r=4, alpha=8, dropout=dropout), ["a", "b", "c"], torch.device("cpu")
    )


def step(loaded, inputs, labels):
    """One bf16-autocast forward and backward in train mode, dropout streams seeded alike."""
    model = loaded.model
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with autocast(loaded.device, "bf16"):
        logits = model(**inputs).logits.float()
    torch.nn.functional.cross_entropy(logits, labels).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def test_frozen_matmuls_stored_in_bf16_give_the_same_step(tiny_bert_dir):
    a, b = tiny(tiny_bert_dir), tiny(tiny_bert_dir)
    stored = store_frozen_matmuls(b.model, "bf16")
    assert stored > 0
    frozen = [
        m for m in b.model.modules() if type(m) is torch.nn.Linear and not m.weight.requires_grad
    ]
    assert frozen and all(m.weight.dtype == torch.bfloat16 for m in frozen)
    trainable = [p for p in b.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # LoRA and the head
    enc = a.tokenizer(
        ["ls -la src", "rm -rf $dir/ now", "echo x >> log"], padding=True, return_tensors="pt"
    )
    labels = torch.tensor([0, 1, 2])
    logits_a, grads_a = step(a, dict(enc), labels)
    logits_b, grads_b = step(b, dict(enc), labels)
    assert torch.equal(logits_a, logits_b)
    assert grads_a.keys() == grads_b.keys()
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)


@pytest.mark.parametrize("precision", ["fp32"])
def test_nothing_is_cast_outside_a_half_precision_run(tiny_bert_dir, precision):
    loaded = tiny(tiny_bert_dir)
    assert store_frozen_matmuls(loaded.model, precision) == 0
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_lora_dropout_zero_runs_no_dropout_op(tiny_bert_dir):
    """peft puts an Identity where lora.dropout is 0: the adapted inputs go straight to A."""
    with_dropout, without = tiny(tiny_bert_dir, 0.1), tiny(tiny_bert_dir, 0.0)
    kinds = lambda loaded: {  # noqa: E731
        type(m).__name__ for name, m in loaded.model.named_modules() if "lora_dropout." in name
    }
    assert kinds(with_dropout) == {"Dropout"}
    assert kinds(without) == {"Identity"}
