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

# Every wait in the tests is on an event or a condition, bounded by a deadline that is generous on
# a busy 2-core box: `seconds` on a quiet machine times this factor. A test never depends on being
# fast; raise ENTRENAR_TEST_TIMEOUT_SCALE on a slower or busier machine still.
TIMEOUT_SCALE = float(os.environ.get("ENTRENAR_TEST_TIMEOUT_SCALE", "4"))


def patience(seconds: float) -> float:
    """The bound of a wait that takes well under `seconds` on a quiet machine."""
    return seconds * TIMEOUT_SCALE


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
def no_dropout_bert(tmp_path_factory, tiny_bert_dir) -> Path:
    """The tiny BERT with its own dropout off: one process and several see the same arithmetic."""
    import shutil

    folder = tmp_path_factory.mktemp("bert-nodrop")
    shutil.copytree(tiny_bert_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def build_tiny_qwen2(folder: Path, texts: list[str], dtype: str = "float32") -> Path:
    """A tiny Qwen2 causal-LM checkpoint (no pad token) saved in `dtype`, with a byte-level BPE
    tokenizer trained here (bench/qwen2_shape.py builds it, as it builds Qwen2-0.5B's shape)."""
    spec = importlib.util.spec_from_file_location("qwen2_shape", REPO / "bench" / "qwen2_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_qwen2_dir(
        folder,
        texts,
        tokenizer_vocab=400,
        dtype=dtype,
        hidden_size=64,  # bitsandbytes packs NF4 in blocks of 64 input features: QLoRA needs >= 64
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory, corpus_texts) -> Path:
    """The session's tiny Qwen2, in fp32 (`build_tiny_qwen2`)."""
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), corpus_texts)


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """120 labelled commands: the corpus of the exact-resume, auto-resume and disk-full runs (a
    module may define its own `data`, as test_distributed does)."""
    return write_corpus(tmp_path_factory.mktemp("data") / "train.jsonl", n=120)


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
    """Run `python -m trainer ARGS` in a subprocess (a real process: exit codes, signals, stderr).
    `timeout` only guards against a hang: patience(timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=patience(timeout),
    )


@pytest.fixture(autouse=True)
def _settings_in_tmp(tmp_path_factory, monkeypatch):
    """The monitor remembers the user's layout (entrenar_tui/settings.py): in tests, never in the
    real home. A test that checks settings points ENTRENAR_TUI_CONFIG_DIR elsewhere itself."""
    monkeypatch.setenv("ENTRENAR_TUI_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(autouse=True, scope="session")
def _session_cache_in_tmp(tmp_path_factory):
    """The trainer keeps each machine's best CPU peak in the user's cache (trainer/peak_cache.py):
    never the real one, for session fixtures' runs too (they start before a test's own fixtures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENTRENAR_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """A fresh cache per test, so a run measures at its start unless the test says otherwise."""
    monkeypatch.setenv("ENTRENAR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


RUNS_ROOT_RUNS = {  # name under the root -> (train overrides, how it ends)
    "exp-lr-high": ({"learning_rate": 5e-3}, "completed"),
    "exp-lr-low": ({"learning_rate": 1e-3}, "completed"),
    "sweep/exp-3ep": ({"learning_rate": 5e-3, "epochs": 3}, "completed"),
    "exp-crashed": ({"epochs": 1000, "log_interval": 1}, "crashed"),
}


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory, tiny_bert_dir) -> Path:
    """A ROOT holding runs written by the real trainer on the tiny BERT (RUNS_ROOT_RUNS): two
    2-epoch runs that differ only in learning rate, a 3-epoch one one level down (sweep/), and a
    crashed one (its trainer SIGKILLed after a few steps: state.json still says running, its pid
    is gone). Session-scoped: copy it before changing it."""
    from trainer.cli import main as train

    root = tmp_path_factory.mktemp("runs-root")
    work = tmp_path_factory.mktemp("runs-root-configs")
    corpus = write_corpus(work / "train.jsonl", n=96)

    def config(name: str) -> Path:
        train_keys, _ = RUNS_ROOT_RUNS[name]
        return write_config(
            work / f"{name.replace('/', '-')}.toml",
            tiny_bert_dir,
            corpus,
            root / name,
            train={"save_every": 100, **train_keys},
        )

    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", str(config("exp-crashed"))],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # the trainer prints a line a step (log_interval 1): kill it on its third
        seen = 0
        for line in process.stderr:
            seen += line.startswith("epoch")
            if seen >= 3:
                break
        assert seen >= 3, "the trainer to crash exited before its third step"
    finally:
        process.kill()
        process.wait(patience(30))
        process.stderr.close()
    for name, (_, end) in RUNS_ROOT_RUNS.items():
        if end == "completed":
            assert train([str(config(name))]) == 0, name
    return root


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory, tiny_bert_dir) -> Path:
    """One completed 1-epoch run of the real trainer on the tiny BERT (64 samples; checkpoints
    best, last, epoch-1): `--resume RUN train.epochs=2` continues it. Shared by the resume, lock,
    bad-input and hostile-write tests: session-scoped, so copy it before changing it."""
    from trainer.cli import main as train

    work = tmp_path_factory.mktemp("one-epoch-run")
    corpus = write_corpus(work / "train.jsonl", n=64)
    config = write_config(work / "c.toml", tiny_bert_dir, corpus, work / "run", train={"epochs": 1})
    assert train([str(config)]) == 0
    return work / "run"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_bert_dir) -> Path:
    """One finished real run on the tiny BERT with more than 100 steps (2 epochs × 75 batches of
    4), for the run screen's chart controls, the log pane and export. Session-scoped: copy it
    before changing it."""
    from trainer.cli import main as train

    work = tmp_path_factory.mktemp("trained-run")
    corpus = write_corpus(work / "train.jsonl", n=400)
    config = write_config(
        work / "c.toml",
        tiny_bert_dir,
        corpus,
        work / "run",
        train={"epochs": 2, "batch_size": 4, "save_every": 100, "log_interval": 50},
    )
    assert train([str(config)]) == 0
    return work / "run"
