"""A corpus of ~60-token real English texts, built from this machine's Python standard library.

    python bench/docstring_corpus.py --out /tmp/docstrings.jsonl

Each sample is a docstring of a public function, class or method of a standard-library module
(the Python Software Foundation License: permissive), its whitespace collapsed and cut to its
first WORDS words; its label is the topic of the module it comes from (TOPICS). Docstrings
shorter than MIN_WORDS words and repeated texts are left out. Nothing is downloaded and nothing is
committed: the same interpreter gives the same file (a sorted walk, then a shuffle with a fixed
seed). The quickstart's shell commands are ~11 tokens a sample; these are ~60 (MiniLM's tokenizer).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
import sys
from pathlib import Path

TOPICS = {
    "text": ["string", "re", "textwrap", "difflib", "unicodedata", "codecs", "locale", "gettext", "shlex", "pprint", "reprlib"],
    "files-and-os": ["os", "shutil", "pathlib", "glob", "tempfile", "io", "stat", "filecmp", "zipfile", "tarfile", "fileinput", "posixpath", "shelve", "mmap"],
    "internet": ["http.client", "http.server", "http.cookiejar", "urllib.request", "urllib.parse", "smtplib", "email.message", "email.utils", "socket", "ssl", "imaplib", "ftplib"],
    "numbers": ["math", "cmath", "statistics", "decimal", "fractions", "random", "numbers", "heapq", "bisect"],
    "concurrency": ["threading", "multiprocessing.pool", "multiprocessing.managers", "asyncio.tasks", "asyncio.events", "asyncio.streams", "concurrent.futures", "queue", "subprocess", "sched", "asyncio.locks", "asyncio.queues", "selectors", "signal"],
    "data-formats": ["json", "csv", "pickle", "xml.dom.minidom", "xml.etree.ElementTree", "html.parser", "configparser", "plistlib", "base64", "struct", "gzip", "bz2", "lzma", "zlib", "email.parser", "xml.sax.saxutils"],
}  # fmt: skip
MIN_WORDS = 30
WORDS = 45  # ~60 MiniLM tokens


def docstrings(module_name: str) -> list[str]:
    """The module's public functions', classes' and methods' docstrings, in name order."""
    module = importlib.import_module(module_name)
    found = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            found.append(obj.__doc__)
            found += [
                m.__doc__
                for n, m in sorted(vars(obj).items())
                if not n.startswith("_") and callable(m)
            ]
        elif callable(obj):
            found.append(obj.__doc__)
    return [d for d in found if isinstance(d, str)]


def sample_text(doc: str) -> str | None:
    words = re.sub(r"\s+", " ", doc).strip().split(" ")
    return " ".join(words[:WORDS]) if len(words) >= MIN_WORDS else None


def build(seed: int = 0) -> list[dict[str, str]]:
    rows, seen = [], set()
    for label, modules in TOPICS.items():
        for module_name in modules:
            for doc in docstrings(module_name):
                text = sample_text(doc)
                if text and text not in seen:
                    seen.add(text)
                    rows.append({"input": text, "label": label})
    random.Random(seed).shuffle(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = build(args.seed)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    counts = {label: sum(r["label"] == label for r in rows) for label in TOPICS}
    print(f"{len(rows)} samples from Python {sys.version.split()[0]}'s standard library: {counts}")


if __name__ == "__main__":
    main()
