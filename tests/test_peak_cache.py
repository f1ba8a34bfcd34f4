"""A CPU's peak FLOP/s is this machine's best, kept across runs (trainer/peak_cache.py), not one
loaded start's measurement; the cache file is untrusted input."""

from __future__ import annotations

import json
import math
import os

import orjson
import pytest

from tests.conftest import run_cli, write_config
from trainer import flops, peak_cache
from trainer.flops import Peak, cpu_peak, machine_key
from trainer.monitor.units import flops_rate


def load(path):
    return orjson.loads(path.read_bytes())


@pytest.fixture
def measurements(monkeypatch):
    """measure_cpu_peak replaced by a script of rates (no matmuls: these tests check the cache)."""
    rates: list[float] = []

    def fake(precision: str, budget_s: float = 0.5) -> Peak:
        rate = rates.pop(0)
        source = f"measured: {precision} matmul 1024³ best of 9 on 2 threads"
        return Peak(rate, precision, source, "Test CPU", "measured", "2026-12-06T05:00:00+00:00")

    monkeypatch.setattr(flops, "measure_cpu_peak", fake)
    return rates


def test_the_first_run_measures_and_the_next_starts_from_the_cache(measurements):
    measurements.extend([100e9, 300e9, 200e9])
    first = cpu_peak("bf16")
    assert first.peak.origin == "measured" and first.peak.flops_per_sec == 100e9
    assert first.refresh is None and first.warning is None  # it measured once already

    second = cpu_peak("bf16")
    assert second.peak.origin == "cache" and second.peak.flops_per_sec == 100e9
    assert second.peak.source == "cache: bf16 matmul 1024³ best of 9 on 2 threads"
    assert second.peak.measured_at == "2026-12-06T05:00:00+00:00"
    assert "(cache: bf16 matmul 1024³ best of 9 on 2 threads, the best" in second.peak.describe()
    # the background re-measurement finds 300: kept for the next run, not this one's
    second.refresh.start().join()
    assert second.refresh.measured.flops_per_sec == 300e9 and second.refresh.warning is None
    assert second.peak.flops_per_sec == 100e9
    third = cpu_peak("bf16")
    assert third.peak.flops_per_sec == 300e9
    # a lower measurement (a loaded machine) never lowers the best
    third.refresh.start().join()
    assert cpu_peak("bf16").peak.flops_per_sec == 300e9


def test_a_peak_belongs_to_one_machine_key(measurements):
    measurements.extend([100e9, 7e9])
    assert cpu_peak("bf16").peak.flops_per_sec == 100e9
    assert cpu_peak("fp32").peak.flops_per_sec == 7e9  # another dtype: measured, its own entry
    key = machine_key("fp32")
    parts = key.split("|")
    assert parts[0] == flops.cpu_name() and parts[3] == "fp32" and parts[4].startswith("torch ")
    assert parts[2] == f"{flops.torch.get_num_threads()} threads"
    entries, warning = peak_cache.load()
    assert warning is None and set(entries) == {machine_key("bf16"), key}


def test_the_cache_lives_in_the_users_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("ENTRENAR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    assert peak_cache.cache_path() == tmp_path / "entrenar-tui" / "cpu-peaks.json"


def _entry(**change):
    entry = {
        "flops_per_sec": 5e11,
        "source": "cache: bf16 matmul 1024³ best of 9 on 2 threads",
        "measured_at": "2026-12-06T05:00:00+00:00",
        "device": "Planted CPU",
    }
    return {**entry, **change}


def _doc(**entry_change):
    return {
        "schema": peak_cache.SCHEMA,
        "version": 1,
        "peaks": {machine_key("bf16"): _entry(**entry_change)},
    }


HOSTILE = {
    "not JSON": lambda p: p.write_bytes(b"{nope"),
    "another schema": lambda p: p.write_bytes(orjson.dumps({**_doc(), "schema": "x"})),
    "a NaN peak": lambda p: p.write_text(json.dumps(_doc(flops_per_sec=math.nan))),
    "a peak of 1e30": lambda p: p.write_bytes(orjson.dumps(_doc(flops_per_sec=1e30))),
    "a negative peak": lambda p: p.write_bytes(orjson.dumps(_doc(flops_per_sec=-1.0))),
    "a string peak": lambda p: p.write_bytes(orjson.dumps(_doc(flops_per_sec="5e11"))),
    "an escape in the source": lambda p: p.write_bytes(
        orjson.dumps(_doc(source="\x1b]0;pwned\x07"))
    ),
    "too many entries": lambda p: p.write_bytes(
        orjson.dumps({**_doc(), "peaks": {f"k{i}": _entry() for i in range(65)}})
    ),
    "over the size cap": lambda p: p.write_bytes(b" " * (peak_cache.SIZE_CAP + 1)),
    "a FIFO": lambda p: os.mkfifo(p),
    "a symbolic link": lambda p: p.symlink_to(p.parent / "elsewhere.json"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_bad_cache_file_is_ignored_with_one_warning(case, measurements, tmp_path):
    path = peak_cache.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "elsewhere.json").write_bytes(orjson.dumps(_doc()))  # a good file behind a link
    HOSTILE[case](path)
    measurements.append(100e9)
    found = cpu_peak("bf16")
    assert found.peak.origin == "measured" and found.peak.flops_per_sec == 100e9
    assert found.warning and "\n" not in found.warning and "\x1b" not in found.warning
    assert str(path.name) in found.warning
    # the measurement replaced the file (a link itself, never its target)
    assert path.is_file() and not path.is_symlink()
    assert cpu_peak("bf16").peak.flops_per_sec == 100e9
    assert orjson.loads((path.parent / "elsewhere.json").read_bytes()) == _doc()


def test_a_cache_that_cannot_be_written_costs_the_run_nothing(measurements, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ENTRENAR_CACHE_DIR", str(blocker / "cache"))  # under a file: ENOTDIR
    measurements.append(100e9)
    found = cpu_peak("bf16")
    assert found.peak.flops_per_sec == 100e9
    assert found.warning.startswith("peak cache ") and "cpu-peaks.json" in found.warning
    assert "Not a directory" in found.warning and "\n" not in found.warning


def test_a_second_run_on_this_machine_starts_from_the_first_ones_peak(
    tmp_path, tiny_bert_dir, small_corpus
):
    """Through the real trainer: run.json says where its peak came from, and MFU is against it."""
    runs = []
    for name in ("first", "second"):
        cfg = write_config(
            tmp_path / f"{name}.toml",
            tiny_bert_dir,
            small_corpus,
            tmp_path / name,
            train={"epochs": 1, "batch_size": 16, "save_every": 0},
        )
        r = run_cli(str(cfg))
        assert r.returncode == 0, r.stderr
        runs.append((r.stderr, *(load(tmp_path / name / f) for f in ("run.json", "state.json"))))
    (_, first, _), (said, second, state) = runs
    assert first["peak_flops"]["origin"] == "measured"
    assert first["peak_flops"]["source"].startswith("measured: fp32 matmul ")
    peak = second["peak_flops"]
    assert peak["origin"] == "cache" and peak["source"].startswith("cache: fp32 matmul ")
    assert peak["flops_per_sec"] == first["peak_flops"]["flops_per_sec"]
    assert peak["measured_at"] == first["peak_flops"]["measured_at"]
    assert f"peak: {flops_rate(peak['flops_per_sec'])} fp32 (cache: fp32 matmul " in said
    assert state["mfu"] == pytest.approx(state["flops_per_sec"] / peak["flops_per_sec"], rel=1e-9)
    # the second run's background measurement kept the best of the two for the next run
    best = cpu_peak_entries()[machine_key_of(peak)]
    assert best.flops_per_sec >= peak["flops_per_sec"]


def cpu_peak_entries() -> dict:
    entries, warning = peak_cache.load()
    assert warning is None
    return entries


def machine_key_of(peak: dict) -> str:
    (key,) = (k for k, v in cpu_peak_entries().items() if v.device == peak["device"])
    return key
