"""A Qwen2 checkpoint folder of a chosen shape with random weights and a tokenizer trained here: no
download. The default is Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads, MLP 4864)
with a 32,768-token vocabulary instead of 151,936 (the embedding is 117M parameters smaller; every
layer is the real size), saved in bf16 as the published checkpoint is.

    python bench/qwen2_shape.py --out /tmp/qwen2-0.5b-shape

The tests' tiny Qwen2 (tests/conftest.py) is built by the same function, so a folder made here loads
through the trainer exactly as that fixture does: a causal LM (no pad token) that
`entrenar-train` loads as a classifier with a fresh `score` head.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

QWEN2_05B_SHAPE = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    vocab_size=32768,
)


def project_texts(n: int = 4000) -> list[str]:
    """Texts that ship with the project: examples/data's corpus, else its generator's output."""
    data = REPO / "examples" / "data" / "shell-safety.jsonl"
    if data.is_file():
        rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
        return [r["input"] for r in rows[:n]]
    spec = importlib.util.spec_from_file_location(
        "make_corpus", REPO / "examples" / "make_corpus.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [r["input"] for r in module.generate(n=n, seed=1)]


def build_qwen2_dir(
    folder: Path,
    texts: list[str],
    tokenizer_vocab: int,
    dtype: str = "float32",
    seed: int = 0,
    **shape: int,
) -> Path:
    """Train a byte-level BPE tokenizer on `texts` (up to `tokenizer_vocab` tokens), then save it and
    a random-init Qwen2ForCausalLM of `shape` (Qwen2Config keys; vocab_size defaults to the
    tokenizer's) into `folder` with save_pretrained. Tied embeddings, as Qwen2-0.5B has."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=tokenizer_vocab, special_tokens=["<|endoftext|>"])
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(seed)
    config = Qwen2Config(
        **{"vocab_size": tok.get_vocab_size(), "tie_word_embeddings": True, **shape},
        eos_token_id=tok.token_to_id("<|endoftext|>"),
    )
    Qwen2ForCausalLM(config).to(getattr(torch, dtype)).save_pretrained(folder)
    return folder


def build_qwen2_05b_shape(folder: Path) -> Path:
    """Qwen2-0.5B's shape (QWEN2_05B_SHAPE), random bf16 weights, tokenizer from the project's texts."""
    return build_qwen2_dir(folder, project_texts(), 8000, dtype="bfloat16", **QWEN2_05B_SHAPE)


def short_corpus(n: int) -> list[dict]:
    """The first `n` rows of the project's corpus: real texts, ~13 tokens with the shape's tokenizer."""
    data = REPO / "examples" / "data" / "shell-safety.jsonl"
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    return rows[:n]


def long_corpus(n: int, tokenizer, tokens: int = 200) -> list[dict]:
    """`n` rows of ~`tokens` tokens each: real texts of one label joined by newlines until the
    tokenizer counts `tokens` or more, the labels taking turns (each row's label is its texts')."""
    data = REPO / "examples" / "data" / "shell-safety.jsonl"
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r["input"])
    labels = sorted(by_label)
    cursor = dict.fromkeys(labels, 0)
    out = []
    while len(out) < n:
        label = labels[len(out) % len(labels)]
        pool, parts, count = by_label[label], [], 0
        while count < tokens:
            text = pool[cursor[label] % len(pool)]
            cursor[label] += 1
            parts.append(text)
            count = len(tokenizer("\n".join(parts), add_special_tokens=False)["input_ids"])
        out.append({"input": "\n".join(parts), "label": label})
    return out


def cached_shape(folder: Path) -> Path:
    """The Qwen2-0.5B-shaped folder at `folder`, built there on first use (~10 s, ~770 MB)."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        build_qwen2_05b_shape(folder)
    return folder


SHAPE_BATCH = 16
SHAPE_MAX_LENGTH = 256


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def shape_corpus(folder: Path, inputs: str, n_train: int, out: Path) -> Path:
    """A jsonl of `n_train` training rows plus one batch for validation, short or long texts."""
    n = n_train + SHAPE_BATCH
    if inputs == "short":
        rows = short_corpus(n)
    else:
        from transformers import AutoTokenizer

        rows = long_corpus(n, AutoTokenizer.from_pretrained(folder, trust_remote_code=False))
    return write_rows(out / f"{inputs}-{n_train}.jsonl", rows)


def shape_run_overrides(folder: Path, inputs: str, tmp: Path, steps: int) -> list[str]:
    """entrenar-train overrides (on examples/quickstart.toml) for `steps` steps of batch 16 on the
    shape: the model, the data, LoRA's default targets (q_proj/v_proj), no checkpoints."""
    folder = cached_shape(folder)
    n_train = steps * SHAPE_BATCH
    data = shape_corpus(folder, inputs, n_train, tmp)
    return [
        f"model.path={folder}",
        f"model.max_length={SHAPE_MAX_LENGTH}",
        "lora.target_modules=auto",
        f"data.train={data}",
        f"data.val_split={(SHAPE_BATCH - 0.5) / (n_train + SHAPE_BATCH)}",  # one batch
        f"train.batch_size={SHAPE_BATCH}",
        "train.save_every=0",
        "train.early_stopping_patience=0",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the folder to write (made if missing)")
    args = p.parse_args(argv)
    folder = build_qwen2_05b_shape(Path(args.out))
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
