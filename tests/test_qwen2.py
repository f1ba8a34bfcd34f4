"""Qwen2 as it ships, proven on the tiny Qwen2 (tests/conftest.py): a causal-LM folder with no pad
token loads as a sequence classifier, and the classifier pools each text's last real token
whichever side the batch is padded on."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding

from trainer.config import LoraSection, ModelSection
from trainer.data import tokenize
from trainer.model import inspect_model, load_model, load_tokenizer

TEXTS = [
    "stop",  # the short one, padded in every batch below
    "turn the lights in the kitchen off please",
    "what is the weather going to be like tomorrow morning in the city",
]


@pytest.fixture(scope="module")
def no_pad_dir(tiny_qwen2_dir, tmp_path_factory):
    """The tiny Qwen2 causal-LM folder with a tokenizer that names no pad token (transformers'
    Qwen2Tokenizer would otherwise default it to <|endoftext|>)."""
    folder = tmp_path_factory.mktemp("qwen2-no-pad") / "model"
    shutil.copytree(tiny_qwen2_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": None}))
    return folder


@pytest.fixture(scope="module")
def qwen2(no_pad_dir):
    model, lora = ModelSection(path=str(no_pad_dir)), LoraSection(r=4)
    loaded = load_model(
        model, lora, ["a", "b", "c"], torch.device("cpu"), inspect_model(model, lora)
    )
    # the fresh head is drawn small: scale it so that a wrong pooled token shows in the logits
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.requires_grad and p.dim() == 2 and p.shape[0] == 3:
                p.mul_(100)
    return loaded.model.eval(), loaded.tokenizer


def logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """Through the trainer's own tokenize and collate (DataCollatorWithPadding)."""
    features = tokenize(tokenizer, texts, [0] * len(texts), max_length=64)
    batch = DataCollatorWithPadding(tokenizer, return_tensors="pt")(features)
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_texts_logits_do_not_depend_on_the_padding_around_it(qwen2, side, monkeypatch):
    model, tokenizer = qwen2
    monkeypatch.setattr(tokenizer, "padding_side", side)
    alone = torch.cat([logits(model, tokenizer, [t]) for t in TEXTS])
    batched = logits(model, tokenizer, TEXTS)
    features = tokenize(tokenizer, TEXTS, [0, 0, 0], max_length=64)
    padded = DataCollatorWithPadding(tokenizer, return_tensors="pt")(features)["input_ids"]
    pad = tokenizer.pad_token_id
    first_column, last_column = padded[0, 0].item(), padded[0, -1].item()
    assert (first_column == pad) == (side == "left") and (last_column == pad) == (side == "right")
    assert torch.allclose(batched, alone, atol=1e-4), (batched, alone)
    # the pooled token matters: the short text's logits differ from its padded row's last token
    assert not torch.allclose(alone[0], alone[1], atol=1e-2)


def test_a_tokenizer_without_a_pad_token_pads_with_eos_and_the_model_agrees(no_pad_dir, qwen2):
    from transformers import AutoTokenizer

    shipped = AutoTokenizer.from_pretrained(no_pad_dir)
    assert shipped.pad_token is None and shipped.eos_token == "<|endoftext|>"
    assert json.loads((no_pad_dir / "config.json").read_text()).get("pad_token_id") is None
    tokenizer = load_tokenizer(str(no_pad_dir))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    model, loaded_tokenizer = qwen2
    assert loaded_tokenizer.pad_token_id == tokenizer.pad_token_id == shipped.eos_token_id
    assert model.get_base_model().config.pad_token_id == tokenizer.pad_token_id


def test_a_causal_lm_folder_loads_as_a_classifier_with_a_new_head(tiny_qwen2_dir, qwen2):
    model, _ = qwen2
    base = model.get_base_model()
    assert type(base).__name__ == "Qwen2ForSequenceClassification"
    assert not hasattr(base, "lm_head")  # the LM head is not loaded
    saved = load_file(tiny_qwen2_dir / "model.safetensors")
    # the backbone is the checkpoint's, bit for bit; the score head is new (num_labels × hidden)
    embed = base.model.embed_tokens.weight
    assert torch.equal(embed, saved["model.embed_tokens.weight"])
    layer = base.model.layers[0].mlp.down_proj.weight
    assert torch.equal(layer, saved["model.layers.0.mlp.down_proj.weight"])
    score = [p for n, p in model.named_parameters() if "score" in n and "modules_to_save" in n]
    assert score and score[0].shape == (3, base.config.hidden_size)


def test_loading_a_causal_lm_folder_says_nothing_about_missing_or_unexpected_weights(
    tiny_qwen2_dir, caplog, capfd
):
    """transformers reports the new `score` head and the unused LM head when it loads; the trainer
    knows (it trains the head) and says nothing of it."""
    model, lora = ModelSection(path=str(tiny_qwen2_dir)), LoraSection(r=4)
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        load_model(model, lora, ["a", "b"], torch.device("cpu"), inspect_model(model, lora))
    out, err = capfd.readouterr()
    said = (out + err + caplog.text).lower()
    for word in (
        "newly initialized",
        "score.weight",
        "lm_head",
        "missing",
        "unexpected",
        "train this model",
    ):
        assert word not in said, (word, said)
