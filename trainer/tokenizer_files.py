"""A tokenizer's files, checked before any is read: the one size cap and regular-file rule for a
model folder's and a checkpoint's tokenizer alike."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trainer.errors import UserError

# What a folder needs for AutoTokenizer to load a real vocabulary (transformers 5 otherwise builds an
# empty tokenizer that maps every word to [UNK], silently).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


# The largest real tokenizer files are a few tens of MB (Gemma's tokenizer.json: 33 MB); the
# tokenizers library holds several copies of one while parsing it, so a 2 GB file took 4.6 GB
# before failing. 256 MiB is 8x the largest, and bounds that to about 1 GB.
MAX_TOKENIZER_FILE_BYTES = 256 * 1024 * 1024
TOKENIZER_EXTRA_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "merges.txt",
)


def check_tokenizer_sizes(folder: Path, where: str = "") -> None:
    """Every tokenizer file of the folder a regular file (a FIFO would block the load) within
    MAX_TOKENIZER_FILE_BYTES, checked before any is read. Links are followed: the HF cache's
    snapshot folders are links to its blobs. `where` begins the error (model.path's by default)."""
    where = where or f"model.path {folder}"
    for name in (*TOKENIZER_FILES, *TOKENIZER_EXTRA_FILES):
        try:
            st = os.stat(folder / name)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise UserError(f"{where}: {name}: cannot read it ({e.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{where}: {name} is not a regular file; not read")
        if st.st_size > MAX_TOKENIZER_FILE_BYTES:
            raise UserError(
                f"{where}: {name} is {st.st_size / 2**20:,.0f} MiB, more than the "
                f"{MAX_TOKENIZER_FILE_BYTES // 2**20} MiB a tokenizer file can be (the largest "
                "real ones are tens of MB); not read"
            )
