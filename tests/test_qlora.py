"""QLoRA on the CPU (bitsandbytes 0.50): NF4 frozen base, LoRA + head trained, adapter reloads unquantized."""

from __future__ import annotations

import orjson
import torch

from tests.conftest import write_config
from trainer.config import LoraSection, ModelSection, load_config
from trainer.inference import load_classifier
from trainer.model import load_model
from trainer.train import train


def test_nf4_loads_the_frozen_base_in_4_bit(tiny_qwen2_dir):
    import bitsandbytes as bnb

    loaded = load_model(ModelSection(path=str(tiny_qwen2_dir), quantize="nf4"), LoraSection(r=4), ["a", "b"], torch.device("cpu"))
    four_bit = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit, "no Linear4bit layers: the base was not quantized"
    assert all(m.weight.quant_state.quant_type == "nf4" for m in four_bit)
    assert all(not p.requires_grad for m in four_bit for p in m.parameters(recurse=False))
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert all(p.dtype == torch.float32 for n, p in loaded.model.named_parameters() if p.requires_grad)


def test_qlora_trains_and_the_adapter_predicts_on_the_unquantized_base(tmp_path, tiny_qwen2_dir, small_corpus):
    cfg = write_config(
        tmp_path / "c.toml", tiny_qwen2_dir, small_corpus, tmp_path / "run",
        model={"quantize": "nf4", "precision": "auto"}, train={"epochs": 2},
    )  # fmt: skip
    assert train(load_config(cfg)) == 0
    run = tmp_path / "run"
    assert orjson.loads((run / "run.json").read_bytes())["model"]["quantize"] == "nf4"
    epochs = orjson.loads((run / "epochs.json").read_bytes())["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]

    clf = load_classifier(run / "checkpoints" / "best")  # the base loads in full precision here
    assert not any("4bit" in type(m).__name__ for m in clf.model.modules())
    texts = ["ls -la /tmp", "rm -rf $DIR/", "echo $RANDOM >> log.txt"]
    probs = clf.logits(texts).softmax(-1)
    assert probs.shape == (3, 5) and torch.allclose(probs.sum(-1), torch.ones(3))
    assert clf.labels == ["needs-quoting", "non-deterministic", "non-idempotent", "safe", "unsafe"]
