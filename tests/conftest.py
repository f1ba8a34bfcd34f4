"""Shared fixtures: tiny real models built locally (no hub), small corpora, and run helpers.

The tiny BERT and Qwen2 folders are made once per session with a tokenizer trained here by the
`tokenizers` library, saved with save_pretrained and loaded through the product's real code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
LABELS = ["safe", "needs-quoting", "non-deterministic", "non-idempotent", "unsafe"]


def _corpus_module():
    spec = importlib.util.spec_from_file_location(
        "make_corpus", REPO / "examples" / "make_corpus.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_corpus(path: Path, n: int, seed: int = 42) -> Path:
    """A small shell-safety corpus from the project's own generator."""
    rows = _corpus_module().generate(n=n, seed=seed)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    return [r["input"] for r in _corpus_module().generate(n=400, seed=1)]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, corpus_texts) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer trained on shell commands."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        corpus_texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    BertTokenizerFast(tokenizer_object=tok).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory, corpus_texts) -> Path:
    """A tiny Qwen2 causal-LM checkpoint (no pad token) with a byte-level BPE tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus_texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"])
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,  # bitsandbytes packs NF4 in blocks of 64 input features: QLoRA needs >= 64
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.token_to_id("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "train.jsonl", n=160)


def write_config(path: Path, model_dir: Path, data_file: Path, out: Path, **sections: dict) -> Path:
    """A TOML config for a tiny, fast run; sections override the defaults given here."""
    base = {
        "model": {"path": str(model_dir), "max_length": 32, "precision": "fp32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"train": str(data_file), "val_split": 0.25},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "learning_rate": 5e-3,
            "save_every": 1,
            "log_interval": 5,
        },
        "output": {"dir": str(out)},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    import tomli_w

    path.write_text(tomli_w.dumps(base), encoding="utf-8")
    return path


@pytest.fixture
def tiny_run_config(tmp_path, tiny_bert_dir, small_corpus) -> Path:
    """A config that trains the tiny BERT on 160 samples for 2 epochs (a few seconds)."""
    return write_config(tmp_path / "tiny.toml", tiny_bert_dir, small_corpus, tmp_path / "run")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `python -m trainer ARGS` in a subprocess (a real process: exit codes, signals, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
