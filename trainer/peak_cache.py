"""The best CPU matmul peak seen per machine, kept across runs in the user's cache directory.

One measurement at a run's start follows the machine's load: on a shared box the same speed read
as MFU 33% in one run and 82% in another. The peak is what the machine can do, so the cache keeps
the BEST rate measured for one machine key (CPU model, the instruction-set flags its matmul kernels
use, threads, dtype, torch's version) and a run starts from it (trainer/flops.py `cpu_peak`).

The file is untrusted input (any process of the user, or a planted file, may have written it): it
is read only when a regular file under SIZE_CAP (trainer.monitor.safe_files), its values are
checked one by one, and anything else makes it ignored with one warning line; it is replaced
atomically (trainer.monitor.atomic). Two runs writing at once lose at most one of their
measurements (the later write wins); the next run measures again. No torch here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.safe_files import UnsafeFile, read_bytes
from trainer.monitor.text import printable
from trainer.monitor.values import is_number

SCHEMA = "entrenar-tui/cpu-peaks"
VERSION = 1
FILE_NAME = "cpu-peaks.json"
SIZE_CAP = 256 << 10  # a file of MAX_ENTRIES entries is under 64 KiB
MAX_ENTRIES = 64  # machine keys kept (the most recently measured); one user has a few
MAX_TEXT = 512  # characters of a key, a source or a device name
PLAUSIBLE = (1e6, 1e17)  # FLOP/s: from a tiny core to far beyond any CPU; outside is not a peak
CACHE_DIR_ENV = "ENTRENAR_CACHE_DIR"


def cache_dir() -> Path:
    """$ENTRENAR_CACHE_DIR, else platformdirs' user cache directory (`~/.cache/entrenar-tui` on
    Linux, which honours XDG_CACHE_HOME)."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("entrenar-tui", appauthor=False))


def cache_path() -> Path:
    return cache_dir() / FILE_NAME


@dataclass(frozen=True)
class CachedPeak:
    """One machine key's best measurement."""

    flops_per_sec: float
    source: str  # the measurement, as Peak.source says it: `measured: bf16 matmul 1024³ ...`
    measured_at: str  # ISO 8601 UTC
    device: str


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT and value.isprintable()


def _entry(value: Any) -> CachedPeak | None:
    if not isinstance(value, dict):
        return None
    flops, source, at, device = (
        value.get(k) for k in ("flops_per_sec", "source", "measured_at", "device")
    )
    if not (is_number(flops) and PLAUSIBLE[0] <= flops <= PLAUSIBLE[1]):
        return None
    if not all(_text(v) for v in (source, at, device)):
        return None
    return CachedPeak(float(flops), source, at, device)


def load(path: Path | None = None) -> tuple[dict[str, CachedPeak], str | None]:
    """The cache's entries and a warning line (None when the file is fine or absent). Any fault of
    the file (not regular, too big, not this schema, a bad entry) ignores the whole file: a file
    someone altered is not trusted in part."""
    path = path or cache_path()
    try:
        doc = orjson.loads(read_bytes(path, SIZE_CAP))
    except FileNotFoundError:
        return {}, None
    except UnsafeFile as e:
        return {}, f"peak cache {printable(e.naming())}; measuring instead"
    except OSError as e:
        return {}, f"peak cache {printable(path)}: {printable(e.strerror or e)}; measuring instead"
    except orjson.JSONDecodeError:
        return {}, f"peak cache {printable(path)} is not JSON; ignored, measuring instead"
    peaks = doc.get("peaks") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("schema") != SCHEMA
        or doc.get("version") != VERSION
        or not isinstance(peaks, dict)
        or len(peaks) > MAX_ENTRIES
    ):
        return {}, f"peak cache {printable(path)} is not a {SCHEMA} version {VERSION} file; ignored"
    entries = {}
    for key, value in peaks.items():
        entry = _entry(value)
        if entry is None or not _text(key):
            return {}, f"peak cache {printable(path)} has a bad entry; ignored"
        entries[key] = entry
    return entries, None


def lookup(key: str, path: Path | None = None) -> tuple[CachedPeak | None, str | None]:
    """The key's best peak, and load's warning."""
    entries, warning = load(path)
    return entries.get(key), warning


def record(key: str, peak: CachedPeak, path: Path | None = None) -> bool:
    """Keep `peak` for `key` if it beats the cached one (or there is none); True when written. A
    bad file is replaced by one holding this entry only. Raises OSError when it cannot write (the
    caller says so: a run never fails for its cache)."""
    path = path or cache_path()
    entries, _ = load(path)
    old = entries.get(key)
    if old is not None and old.flops_per_sec >= peak.flops_per_sec:
        return False
    entries[key] = peak
    kept = sorted(entries.items(), key=lambda kv: kv[1].measured_at)[-MAX_ENTRIES:]
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "version": VERSION, "peaks": {k: asdict(v) for k, v in kept}}
    atomic_write_json(path, doc)
    return True
