"""steps.cols, the binary cache of the step history (trainer/monitor/steps_cols.py): the reader
gives the same history with it as from steps.jsonl alone, the writer keeps it in step with
steps.jsonl through resumes, cut lines and kills, and a cache that is planted, corrupt, stale, a
link or a FIFO is ignored (steps.jsonl is read), never followed, never written through."""

from __future__ import annotations

import errno
import math
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import assert_same_history, assert_steps_cols_agree, load_without_cols
from trainer.monitor import reader as reader_module
from trainer.monitor import steps_cols
from trainer.monitor.atomic import dumps
from trainer.monitor.reader import StepHistory, StepTail, load_run
from trainer.monitor.schema import Files
from trainer.monitor.steps_cols import HEADER, HEADER_BYTES, RECORD, STEP_FIELDS, read_steps_cols
from trainer.monitor.writer import MonitorWriter


def step(g: int, **values) -> dict:
    record = {"epoch": 1 + g // 50, "step": g % 50, "global_step": g, "loss": 1.0 / g,
              "lr": 1e-4 * (1 - g / 1000), "grad_norm": 1.0, "accuracy": (g % 7) / 8,
              "samples_per_sec": 64.0, "t": 1_700_000_000.0 + 0.25 * g}  # fmt: skip
    record.update(values)
    return record


def odd_value(g: int) -> dict:
    """Every kind of value a line may hold where a number belongs."""
    return [
        {"loss": None},
        {"loss": math.nan},  # written as null
        {"lr": math.inf},  # null too
        {"accuracy": 1},  # an int
        {"t": None},
        {"loss": 1e-308},
        {"accuracy": True},  # a bool is not a number: NaN
        {"loss": "0.5"},  # nor is a string
    ][g % 8]


def write(run: Path, steps, **values) -> None:
    w = MonitorWriter(run)
    for g in steps:
        w.append_step(step(g, **(odd_value(g) if values.get("odd") else {})))
    w.close()


def parsed_bytes(monkeypatch) -> list[int]:
    """The bytes of steps.jsonl the reader parses from here on (its one parsing entry point)."""
    seen: list[int] = []
    parse = reader_module._parse_chunk

    def counting(chunk, *args):
        seen.append(len(chunk))
        return parse(chunk, *args)

    monkeypatch.setattr(reader_module, "_parse_chunk", counting)
    return seen


def cols(run: Path) -> Path:
    return run / Files.STEPS_COLS


# ------------------------------------------------------------------------------ same history


def test_the_cache_gives_the_history_steps_jsonl_gives_without_parsing_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    write(run, range(1, 801), odd=True)
    assert_steps_cols_agree(run)
    parsed = parsed_bytes(monkeypatch)
    with_cols = load_run(run)
    assert parsed == []  # every line came from steps.cols
    assert len(with_cols.history) == 800
    loss = with_cols.history.series["loss"].values.array
    assert math.isnan(loss[7]) and math.isnan(loss[0]) and loss[2] == 1 / 3  # null, NaN, a value
    assert math.isnan(with_cols.history.series["lr"].values.array[1])  # Inf was written as null
    assert with_cols.history.series["accuracy"].values.array[2] == 1.0  # an int
    assert math.isnan(with_cols.history.series["accuracy"].values.array[5])  # true: no number
    assert_same_history(with_cols, load_without_cols(run))
    assert parsed  # (the copy without steps.cols was parsed)


def test_only_the_lines_after_the_cache_are_parsed_and_a_line_in_flight_is_the_same(
    tmp_path, monkeypatch
):
    run = tmp_path / "run"
    write(run, range(1, 301))
    tail_lines = b"".join(dumps(step(g)) + b"\n" for g in range(301, 311))
    with open(run / Files.STEPS, "ab") as f:  # lines the cache does not cover, then half a line
        f.write(tail_lines + dumps(step(311))[:40])
    parsed = parsed_bytes(monkeypatch)
    snap = load_run(run)
    assert parsed == [len(tail_lines)]
    assert len(snap.history) == 310 and snap.partial_bytes == 40
    assert_same_history(snap, load_without_cols(run))


def test_a_resumed_run_that_redid_steps_reads_the_same(tmp_path):
    """Resumed from an earlier checkpoint: the redone steps come again, the later line wins."""
    run = tmp_path / "run"
    write(run, range(1, 121))
    write(run, range(81, 201), odd=True)  # the resume, with other values for steps 81..120
    assert_steps_cols_agree(run)
    snap = load_run(run)
    assert snap.history.global_steps.array.tolist() == list(range(1, 201))
    assert np.isnan(snap.history.series["loss"].values.array[80])  # step 81's later line: null


def test_a_line_a_full_disk_cut_is_dropped_by_the_next_writer_and_the_cache_follows(tmp_path):
    run = tmp_path / "run"
    write(run, range(1, 51))
    with open(run / Files.STEPS, "ab") as f:
        f.write(dumps(step(51))[:30])  # the disk filled mid-line
    assert_same_history(load_run(run), load_without_cols(run))  # half a line: in flight for both
    write(run, range(51, 81))  # freed and resumed: the half line is cut first
    assert_steps_cols_agree(run)
    assert len(load_run(run).history) == 80


# ------------------------------------------------------------------------------ the writer


def test_a_kill_between_the_line_and_its_record_is_caught_up_by_the_next_writer(tmp_path):
    run = tmp_path / "run"
    write(run, range(1, 41))
    with open(
        run / Files.STEPS, "ab"
    ) as f:  # the line written, the process killed before the record
        f.write(dumps(step(41)) + b"\n")
    write(run, range(42, 61))
    assert_steps_cols_agree(run)


def test_steps_jsonl_cut_back_by_hand_drops_the_records_past_its_end(tmp_path):
    run = tmp_path / "run"
    write(run, range(1, 101))
    raw = (run / Files.STEPS).read_bytes()
    os.truncate(run / Files.STEPS, len(b"\n".join(raw.splitlines()[:60])) + 1)
    snap = load_run(run)  # the reader: records past the end are not used, the others are
    assert snap.history.global_steps.array.tolist() == list(range(1, 61))
    assert_same_history(snap, load_without_cols(run))
    write(run, range(61, 71))
    assert_steps_cols_agree(run)
    assert cols(run).stat().st_size == HEADER_BYTES + 70 * RECORD.itemsize


def test_a_run_without_the_cache_gets_one_built_when_resumed(tmp_path):
    run = tmp_path / "run"
    write(run, range(1, 2001))
    cols(run).unlink()  # a run of a version before steps.cols
    write(run, range(2001, 2011))
    assert_steps_cols_agree(run)


def test_a_line_that_is_not_a_step_stops_the_cache_and_the_reader_reads_steps_jsonl(tmp_path):
    run = tmp_path / "run"
    write(run, range(1, 31))
    with open(run / Files.STEPS, "ab") as f:
        f.write(b"not json\n")
    write(run, range(31, 41))
    assert cols(run).stat().st_size == 0  # emptied: no record can stand for that line
    snap = load_run(run)
    assert snap.bad_lines == [31] and len(snap.history) == 40
    assert_same_history(snap, load_without_cols(run))


def test_a_full_disk_under_the_cache_stops_it_never_the_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = steps_cols.write_all
    calls = {"n": 0}

    def full_after_ten(fd, data):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(steps_cols, "write_all", full_after_ten)
    write(run, range(1, 31))  # no WriteFailed: steps.jsonl is what counts
    assert len((run / Files.STEPS).read_bytes().splitlines()) == 30
    assert cols(run).stat().st_size == 0 and calls["n"] == 11  # emptied, then left alone
    assert len(load_run(run).history) == 30


# ------------------------------------------------------------------------------ hostile caches


def corrupt(run: Path, how: str) -> None:
    """Spoil steps.cols of a 200-step run in one way."""
    path = cols(run)
    data = bytearray(path.read_bytes())
    records = np.frombuffer(data, RECORD, offset=HEADER_BYTES)
    if how == "wrong version":
        data[: len(b"entrenar-tui/steps.cols version 1")] = b"entrenar-tui/steps.cols version 2"
    elif how == "big-endian header":
        data[:HEADER_BYTES] = HEADER.replace(b"little", b"big   ")
    elif how == "garbage":
        data[HEADER_BYTES:] = os.urandom(len(data) - HEADER_BYTES)
    elif how == "a sampled value changed":
        records["loss"][-1] = 123.0  # the last record is always checked
    elif how == "a sampled step changed":
        records["global_step"][0] = 7
    elif how == "ends that fall back":
        records["end"][100] = records["end"][99]
    elif how == "ends a line too far":
        records["end"][:] += 1
    elif how == "the cache of another run":
        other = run.parent / "other"
        write(other, range(1, 201), odd=True)
        data = bytearray(cols(other).read_bytes())
    elif how == "truncated to half a header":
        data = data[: HEADER_BYTES // 2]
    elif how == "empty":
        data = bytearray()
    else:
        raise ValueError(how)
    path.write_bytes(bytes(data))


CORRUPTIONS = ["wrong version", "big-endian header", "garbage", "a sampled value changed",
               "a sampled step changed", "ends that fall back", "ends a line too far",
               "the cache of another run", "truncated to half a header", "empty"]  # fmt: skip


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_cache_that_disagrees_is_ignored_and_steps_jsonl_is_read(tmp_path, monkeypatch, how):
    run = tmp_path / "run"
    write(run, range(1, 201))
    corrupt(run, how)
    parsed = parsed_bytes(monkeypatch)
    snap = load_run(run)
    assert sum(parsed) == (run / Files.STEPS).stat().st_size  # all of it parsed: the cache unused
    assert snap.history.series["loss"].values.array.tolist() == [1.0 / g for g in range(1, 201)]
    assert_same_history(snap, load_without_cols(run))
    write(run, range(201, 211))  # the next writer puts it right
    assert_steps_cols_agree(run)


def test_a_cache_cut_mid_record_uses_its_whole_records(tmp_path, monkeypatch):
    """A kill mid-record: the records before it are good, the tail is parsed; the next writer
    cuts the half record off."""
    run = tmp_path / "run"
    write(run, range(1, 101))
    os.truncate(cols(run), cols(run).stat().st_size - RECORD.itemsize // 2)
    parsed = parsed_bytes(monkeypatch)
    snap = load_run(run)
    assert parsed == [len(dumps(step(100))) + 1]  # only the last line
    assert_same_history(snap, load_without_cols(run))
    write(run, range(101, 111))
    assert_steps_cols_agree(run)


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_a_cache_planted_as_a_link_is_never_read_through_nor_written_through(tmp_path, how):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    write(run, range(1, 101))
    write(elsewhere, range(1, 101), odd=True)  # a valid cache, of other values
    cols(run).unlink()
    target = cols(elsewhere)
    before = target.read_bytes()
    if how == "symlink":
        cols(run).symlink_to(target)
    else:
        os.link(target, cols(run))
    snap = load_run(run)
    assert snap.history.series["loss"].values.array.tolist() == [1.0 / g for g in range(1, 101)]
    write(run, range(101, 111))  # the trainer resumes: never writes through it
    assert target.read_bytes() == before
    assert cols(run).is_symlink() if how == "symlink" else cols(run).stat().st_nlink == 2
    assert_same_history(load_run(run), load_without_cols(run))


@pytest.mark.timeout(60)
def test_a_fifo_cache_hangs_neither_the_reader_nor_the_writer(tmp_path):
    run = tmp_path / "run"
    write(run, range(1, 51))
    cols(run).unlink()
    os.mkfifo(cols(run))
    snap = load_run(run)  # a blocking open would hang here (no writer on the FIFO)
    assert len(snap.history) == 50
    write(run, range(51, 61))  # nor here (no reader)
    assert len(load_run(run).history) == 60
    assert_same_history(load_run(run), load_without_cols(run))


def test_a_huge_planted_cache_is_read_no_further_than_steps_jsonl_could_reach(tmp_path):
    """64 GiB (sparse) after a good header over a 10-line steps.jsonl: at most as many records as
    steps.jsonl could hold lines are read (a few hundred bytes), then it is refused."""
    run = tmp_path / "run"
    write(run, range(1, 11))
    with open(cols(run), "r+b") as f:
        f.truncate(64 << 30)
    fd = os.open(run / Files.STEPS, os.O_RDONLY)
    try:
        tracemalloc.start()
        assert read_steps_cols(cols(run), fd, os.fstat(fd).st_size) is None
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        os.close(fd)
    assert peak < 1 << 20
    assert_same_history(load_run(run), load_without_cols(run))


def test_the_tail_takes_the_cache_again_after_steps_jsonl_is_replaced(tmp_path):
    """A reset (steps.jsonl replaced) reads from the start: through the cache when it agrees with
    the new file, else through steps.jsonl."""
    run = tmp_path / "run"
    write(run, range(1, 101))
    tail = StepTail(run / Files.STEPS)
    assert len(tail.read()) == 100 and tail.lines == 100
    os.replace(run / Files.STEPS, run / "old")
    cols(run).unlink()
    write(run, range(1, 21), odd=True)
    batch = tail.read()
    assert batch.reset and batch.global_step == list(range(1, 21))
    assert tail.offset == (run / Files.STEPS).stat().st_size and tail.lines == 20


def test_a_history_read_from_the_cache_takes_its_arrays_rather_than_copying_them(tmp_path):
    """A million steps read whole are held once (tui_scale's peak RSS), and the history goes on
    growing and taking replaced steps as before."""
    run = tmp_path / "run"
    write(run, range(1, 301))
    tail, history = StepTail(run / Files.STEPS), StepHistory()
    batch = tail.read()
    history.add(batch)
    assert np.shares_memory(history.global_steps.array, batch.steps)
    assert all(
        np.shares_memory(history.series[name].values.array, batch.values[name])
        for name in STEP_FIELDS
    )
    write(run, range(251, 311), odd=True)  # a resume: 251..300 replaced, 301..310 appended
    history.add(tail.read())
    assert history.global_steps.array.tolist() == list(range(1, 311))
    assert_same_history_of(history, load_without_cols(run).history)


def assert_same_history_of(got: StepHistory, want: StepHistory) -> None:
    assert got.global_steps.array.tolist() == want.global_steps.array.tolist()
    for name in STEP_FIELDS:
        a, b = got.series[name], want.series[name]
        assert np.array_equal(a.values.array, b.values.array, equal_nan=True), name
        assert a.stats() == b.stats() or all(  # block summaries follow the values
            (x == y) or (x != x and y != y) for x, y in zip(a.stats(), b.stats(), strict=True)
        )
