"""The reader side of the contract (trainer/monitor/reader.py) against files the real writer wrote."""

from __future__ import annotations

import math
import os
import random
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_history_is_steps_jsonl
from trainer.monitor.atomic import atomic_write_json, dumps
from trainer.monitor.reader import (
    STALE_MIN_S,
    ContractError,
    RunReader,
    Series,
    StepHistory,
    StepTail,
    effective_status,
    load_run,
    read_contract_json,
)
from trainer.monitor.schema import Files, tagged
from trainer.monitor.writer import MonitorWriter


def step(g: int, loss: float | None = 1.0, **extra) -> dict:
    return {
        "epoch": 1,
        "step": g,
        "global_step": g,
        "loss": loss,
        "lr": 1e-4,
        "accuracy": 0.5,
        "t": 100.0 + g,
        **extra,
    }


# ------------------------------------------------------------------------------------ steps.jsonl


def test_tail_reads_only_complete_lines_and_resumes_from_its_offset(tmp_path):
    w = MonitorWriter(tmp_path)
    tail = StepTail(tmp_path / Files.STEPS)
    assert len(tail.read()) == 0  # no file yet: nothing, no error
    for g in (1, 2, 3):
        w.append_step(step(g, loss=g / 10))
    batch = tail.read()
    assert batch.global_step == [1, 2, 3]
    assert batch.columns["loss"] == pytest.approx([0.1, 0.2, 0.3])
    with open(tmp_path / Files.STEPS, "ab") as f:  # a line being written: not consumed yet
        f.write(b'{"epoch": 1, "step": 4, "global_st')
    batch = tail.read()
    assert batch.global_step == [] and batch.partial_bytes == len(
        b'{"epoch": 1, "step": 4, "global_st'
    )
    with open(tmp_path / Files.STEPS, "ab") as f:
        f.write(b'ep": 4, "loss": 0.4}\n')
    batch = tail.read()
    assert batch.global_step == [4] and batch.partial_bytes == 0
    assert tail.lines == 4


def test_tail_starts_again_when_the_file_shrinks_or_is_replaced(tmp_path):
    w = MonitorWriter(tmp_path)
    for g in range(1, 6):
        w.append_step(step(g))
    tail = StepTail(tmp_path / Files.STEPS)
    assert len(tail.read()) == 5
    (tmp_path / Files.STEPS).write_bytes(orjson.dumps(step(1, loss=9.0)) + b"\n")
    batch = tail.read()
    assert batch.reset and batch.global_step == [1] and batch.columns["loss"] == [9.0]
    (tmp_path / Files.STEPS).unlink()
    assert tail.read().reset


def test_unreadable_lines_are_counted_by_line_number_and_skipped(tmp_path):
    path = tmp_path / Files.STEPS
    path.write_bytes(
        orjson.dumps(step(1))
        + b"\nnot json\n"
        + orjson.dumps({"loss": 1})
        + b"\n"
        + orjson.dumps(step(2))
        + b"\n"
    )
    batch = StepTail(path).read()
    assert batch.global_step == [1, 2]
    assert batch.bad_lines == [2, 3]


def test_null_and_non_numbers_become_nan(tmp_path):
    path = tmp_path / Files.STEPS
    path.write_bytes(
        orjson.dumps(step(1, loss=None)) + b"\n" + orjson.dumps(step(2, loss="x")) + b"\n"
    )
    loss = StepTail(path).read().columns["loss"]
    assert all(math.isnan(v) for v in loss)


def test_a_repeated_global_step_takes_the_later_line(tmp_path):
    """A resumed run redoes the steps after its last checkpoint: the history keeps the redone ones."""
    w = MonitorWriter(tmp_path)
    for g in range(1, 11):
        w.append_step(step(g, loss=1.0))
    for g in range(7, 13):  # resumed from a checkpoint at step 6
        w.append_step(step(g, loss=2.0))
    history = StepHistory()
    tail = StepTail(tmp_path / Files.STEPS)
    tail.CHUNK = 200  # several reads, so repeats arrive in separate batches too
    while True:
        batch = tail.read()
        history.add(batch)
        if not batch.more:
            break
    assert list(history.global_steps) == list(range(1, 13))
    assert list(history.series["loss"].values) == [1.0] * 6 + [2.0] * 6


def test_history_typical_step_time_is_the_median_gap():
    history = StepHistory()
    from trainer.monitor.reader import StepBatch

    b = StepBatch(global_step=[1, 2, 3, 4], recent_t=[10.0, 10.5, 11.0, 20.0])
    b.columns = {"loss": [1.0] * 4, "lr": [1.0] * 4, "accuracy": [1.0] * 4}
    history.add(b)
    assert history.typical_step_s() == 0.5


# ------------------------------------------------------------------------------------ Series


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf)),
        min_size=1,
        max_size=700,
    ),
    st.data(),
)
def test_series_stats_match_a_direct_scan(values, data):
    s = Series()
    s.extend(values)
    a = data.draw(st.integers(0, len(values)))
    b = data.draw(st.integers(a, len(values)))
    lo, hi, bad = s.stats(a, b)
    good = [v for v in values[a:b] if math.isfinite(v)]
    assert bad == len(values[a:b]) - len(good)
    if good:
        assert (lo, hi) == (min(good), max(good))
    else:
        assert math.isnan(lo) and math.isnan(hi)


class SmallBlocks(Series):
    BLOCK = 4  # so that short series take the block-summary path too


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=2000), st.integers(1, 300), st.booleans()
)
def test_downsampling_keeps_every_spike(values, bins, small_blocks):
    s = SmallBlocks() if small_blocks else Series()
    s.extend(values)
    points = s.downsample(bins)
    assert len(points) == min(bins, len(values))
    assert min(p[0] for p in points) == min(values)
    assert max(p[1] for p in points) == max(values)
    # each bin's range lies within the values it covers: nothing invented
    assert all(min(values) <= p[0] <= p[1] <= max(values) for p in points)


def test_a_million_steps_downsample_in_milliseconds():
    s = Series()
    s.extend(random.random() for _ in range(1_000_000))
    s.set(777_777, 5.0)  # one spike
    start = time.perf_counter()
    points = s.downsample(400)
    assert time.perf_counter() - start < 0.05
    assert max(p[1] for p in points) == 5.0


def test_series_edits_keep_block_summaries_right():
    s = Series()
    s.extend(range(1000))
    s.set(500, -5.0)
    s.insert(10, 5000.0)
    assert s.stats() == (-5.0, 5000.0, 0)
    s.set(10, math.nan)
    assert s.stats() == (-5.0, 999.0, 1)
    assert s.downsample(4)[0] is None  # the bin holding a NaN is a gap


# ------------------------------------------------------------------------------------ JSON files


def test_contract_json_checks_schema_and_version(tmp_path):
    path = tmp_path / Files.STATE
    assert read_contract_json(path) is None
    atomic_write_json(path, tagged(Files.STATE, {"status": "running"}))
    assert read_contract_json(path)["status"] == "running"
    atomic_write_json(path, {**tagged(Files.STATE, {}), "version": 2})
    with pytest.raises(ContractError, match="version 2"):
        read_contract_json(path)
    atomic_write_json(path, tagged(Files.EPOCHS, {}))
    with pytest.raises(ContractError, match="schema"):
        read_contract_json(path)
    path.write_bytes(b'{"schema": "entrenar-tui/state", "vers')
    with pytest.raises(ContractError, match="not valid JSON"):
        read_contract_json(path)


def test_run_reader_reports_only_changes_and_problems_once(tmp_path):
    reader = RunReader(tmp_path / "run")
    assert reader.poll().exists is False
    w = MonitorWriter(tmp_path / "run")
    w.update_state(status="running", global_step=3)
    w.append_step(step(1))
    first = reader.poll()
    assert first.exists and first.state["global_step"] == 3 and first.steps.global_step == [1]
    second = reader.poll()
    assert second.state is None and second.run is None and len(second.steps) == 0
    (tmp_path / "run" / Files.STATE).write_bytes(b"garbage")
    bad = reader.poll()
    assert bad.state is None and "state.json: not valid JSON" in bad.problems[Files.STATE]
    os.utime(tmp_path / "run" / Files.STATE, ns=(1, 1))
    assert reader.poll().problems == {}  # still broken: said once already
    w.update_state(status="running", global_step=4)
    fixed = reader.poll()
    assert fixed.problems == {Files.STATE: None} and fixed.state["global_step"] == 4


def test_load_run_reads_everything_once(tmp_path):
    w = MonitorWriter(tmp_path)
    w.write_run({"run_id": "r1", "epochs": 2})
    for g in range(1, 301):
        w.append_step(step(g, loss=random.random()))
    w.write_epochs([{"epoch": 1, "val_loss": 0.5, "is_best": True}], 1)
    w.update_state(status="completed", global_step=300)
    snap = load_run(tmp_path)
    assert snap.run["run_id"] == "r1" and snap.state["status"] == "completed"
    assert len(snap.history) == 300 and snap.best_epoch == 1 and snap.problems == {}


# ------------------------------------------------------------------------------------ liveness


def test_effective_status_believes_a_fresh_heartbeat_and_a_live_pid():
    state = {"status": "running", "heartbeat": 1000.0, "pid": 42}
    assert effective_status(state, 1010.0, trainer="alive", typical_step_s=0.5) == ("running", None)
    assert effective_status(state, 1010.0, trainer="remote", typical_step_s=0.5) == (
        "running",
        None,
    )
    status, why = effective_status(state, 1010.0, trainer="gone")
    assert status == "crashed" and "pid 42 is gone" in why
    status, why = effective_status(
        state, 1000.0 + STALE_MIN_S + 1, trainer="remote", typical_step_s=0.5
    )
    assert status == "crashed" and "no heartbeat for 1m01s" in why
    # a slow run's heartbeat may be older: 20 typical steps
    assert (
        effective_status(state, 1000.0 + 500, trainer="remote", typical_step_s=30.0)[0] == "running"
    )
    # a final status is what it says, whatever the pid
    assert effective_status({**state, "status": "stopped"}, 9e9, trainer="gone") == (
        "stopped",
        None,
    )
    assert effective_status(None, 0.0) == ("waiting", None)


def test_a_line_a_full_disk_cut_is_in_flight_until_the_next_writer_cuts_it(tmp_path, monkeypatch):
    """The half line is in flight (partial_bytes) even when the last piece read holds nothing
    else; the next writer cuts it before appending, and the history is steps.jsonl's again."""
    run = tmp_path / "run"
    w = MonitorWriter(run)
    for g in range(1, 51):
        w.append_step(step(g))
    w.close()
    whole = (run / Files.STEPS).stat().st_size
    with open(run / Files.STEPS, "ab") as f:
        f.write(dumps(step(51))[:30])  # the disk filled mid-line
    monkeypatch.setattr(StepTail, "CHUNK", whole)  # the last piece read: the half line alone
    snap = load_run(run)
    assert (len(snap.history), snap.partial_bytes, snap.bad_lines) == (50, 30, [])
    w = MonitorWriter(run)  # freed and resumed
    for g in range(51, 81):
        w.append_step(step(g))
    w.close()
    snap = load_run(run)
    assert (len(snap.history), snap.partial_bytes, snap.bad_lines) == (80, 0, [])
    assert_history_is_steps_jsonl(run)
