"""The monitor's alerts (entrenar_tui/model/alerts.py) on scripted runs that grow step by step: each
event (stall, NaN, spike, rising validation loss, crash, end) fires once, at the step it happens,
and a smooth noisy run raises nothing. --notify-cmd gets the alert as arguments, never a shell."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entrenar_tui.model.alerts import (
    Alert,
    AlertLog,
    AlertSettings,
    Detector,
    StepColumns,
    detect,
    notify_command,
    run_notify,
    split_notify_command,
)
from tests.helpers import wait_until
from trainer.monitor.reader import (
    STALE_MIN_S,
    STALE_STEPS,
    StepHistory,
    StepTail,
    effective_status,
)
from trainer.monitor.schema import Files
from trainer.monitor.text import printable
from trainer.monitor.writer import MonitorWriter

T0 = 1_700_000_000.0


def run_steps(losses, interval=1.0, first=1):
    """steps.jsonl records of a run with these losses, one step every `interval` seconds."""
    return [
        {
            "epoch": 1,
            "step": i + first,
            "global_step": i + first,
            "loss": loss,
            "t": T0 + i * interval,
        }
        for i, loss in enumerate(losses)
    ]


def grow(steps, epochs=(), status="running", settings=None):
    """Detect after each new step (now = that step's time, a refresh later) as a watching monitor
    does: {key: the global_step (or epoch count) at which it was first told}, and every alert told."""
    log, first_told, told = AlertLog(), {}, []
    for n in range(1, len(steps) + 1):
        now = steps[n - 1]["t"] + 0.5
        for alert in log.new(detect(steps[:n], list(epochs), status, now, settings)):
            first_told[alert.key] = steps[n - 1]["global_step"]
            told.append(alert)
    return first_told, told


def smooth_losses(n, seed=0, noise=0.05):
    """A loss falling from 2.3 to about 0.3 with seeded per-batch noise (a smooth noisy run)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    return (0.3 + 2.0 * np.exp(-steps / 400) + rng.normal(0, noise, n)).tolist()


# -- stall ---------------------------------------------------------------------------------------


def test_a_stall_fires_once_after_k_median_intervals_and_a_new_stall_again():
    settings = AlertSettings(stall_factor=10, stall_min_s=5)
    steps = run_steps([1.0] * 30, interval=1.0)  # a step a second: a stall is 10 s without one
    log = AlertLog()
    last_t = steps[-1]["t"]
    told = []
    for waited in range(0, 60):  # the clock goes on, no new step
        fresh = log.new(detect(steps, [], "running", last_t + waited, settings))
        told += [(waited, a) for a in fresh]
    assert [(w, a.key, a.kind) for w, a in told] == [(10, "stall@step:30", "stalled")]
    assert told[0][1].message == "no step for 0:10 since step 30 (a step takes 1 s, median)"
    # the trainer goes on, then stalls again: a new event
    steps += run_steps([1.0] * 5, first=31)
    for s in steps[30:]:
        s["t"] += 40
    assert log.new(detect(steps, [], "running", steps[-1]["t"] + 1, settings)) == []
    again = log.new(detect(steps, [], "running", steps[-1]["t"] + 10, settings))
    assert [a.key for a in again] == ["stall@step:35"]


def test_no_stall_below_the_minimum_seconds_nor_while_not_running():
    steps = run_steps([1.0] * 30, interval=0.1)  # 10 × the median is 1 s; the minimum is 30 s
    last_t = steps[-1]["t"]
    assert detect(steps, [], "running", last_t + 29, AlertSettings()) == []
    assert [a.key for a in detect(steps, [], "running", last_t + 30)] == ["stall@step:30"]
    for status in ("validating", "initializing", "stopping", "completed", "crashed"):
        assert [a for a in detect(steps, [], status, last_t + 1000) if a.kind == "stalled"] == []
    assert detect(steps[:2], [], "running", last_t + 1000) == []  # too few steps for a median


def test_a_long_validation_or_a_resume_is_not_a_stall():
    settings = AlertSettings(stall_min_s=5)
    steps = run_steps([1.0] * 30)
    back = steps[-1]["t"] + 600  # validated for ten minutes, then running again
    assert detect(steps, [], "running", back + 1, settings, running_since=back) == []
    stalled = detect(steps, [], "running", back + 10, settings, running_since=back)
    assert [a.key for a in stalled] == ["stall@step:30"]
    assert "no step for 0:10" in stalled[0].message


def test_a_hung_trainer_is_told_stalled_before_the_monitor_calls_it_crashed():
    """The heartbeat stops with the steps: the monitor shows `crashed` after max(60 s, 20 steps);
    the stall alert must come first, while the status still reads running."""
    assert AlertSettings().stall_factor < STALE_STEPS and AlertSettings().stall_min_s < STALE_MIN_S
    for interval in (0.05, 1.0, 2.0, 30.0):
        steps = run_steps([1.0] * 40, interval=interval)
        last_t = steps[-1]["t"]
        state = {"status": "running", "heartbeat": last_t, "pid": 1}
        now = last_t
        while not detect(steps, [], "running", now):
            now += interval / 4
        shown, _ = effective_status(state, now, trainer="alive", typical_step_s=interval)
        assert shown == "running", (interval, now - last_t)


# -- NaN / Inf -----------------------------------------------------------------------------------


def test_a_nan_loss_fires_once_per_stretch_at_its_first_step():
    losses = [1.0] * 20 + [math.nan] * 4 + [1.0] * 10 + [math.inf] + [1.0] * 5
    first_told, told = grow(run_steps(losses))
    nans = [a for a in told if a.kind == "nan"]
    assert [a.key for a in nans] == ["nan@step:21", "nan@step:35"]
    assert first_told["nan@step:21"] == 21 and first_told["nan@step:35"] == 35
    assert [a.message for a in nans] == [
        "non-finite loss (NaN/Inf) at step 21",
        "non-finite loss (NaN/Inf) at step 35",
    ]
    assert [a.kind for a in told] == ["nan", "nan"]  # the NaNs are no spike


def test_nan_written_as_null_is_found_in_the_monitors_own_columns(tmp_path):
    """The writer writes NaN/Inf as null; read back by the monitor's reader into its StepHistory,
    the alert finds them there without a dict per step."""
    writer = MonitorWriter(tmp_path)
    losses = [1.0] * 10 + [math.nan, math.inf] + [1.0] * 5
    for record in run_steps(losses):
        writer.append_step(record)
    writer.close()
    assert b'"loss":null' in (tmp_path / Files.STEPS).read_bytes()
    history = StepHistory()
    history.add(StepTail(tmp_path / Files.STEPS).read())
    columns = StepColumns.from_history(history)
    assert [a.key for a in detect(columns, [], "running", T0 + 17)] == ["nan@step:11"]
    # the same from the records as dicts with null (None) losses
    records = [json.loads(line) for line in (tmp_path / Files.STEPS).read_text().splitlines()]
    assert detect(records, [], "running", T0 + 17) == detect(columns, [], "running", T0 + 17)


def test_a_run_of_nans_is_capped():
    losses = []
    for _ in range(12):
        losses += [1.0, math.nan]  # 12 separate NaN steps
    _, told = grow(run_steps(losses), settings=AlertSettings(nan_max_alerts=5))
    assert [a.key for a in told] == [f"nan@step:{2 * i}" for i in range(1, 6)]


# -- spike ---------------------------------------------------------------------------------------


def test_a_spike_after_a_smooth_stretch_fires_once_at_its_step():
    losses = smooth_losses(300)
    losses[200] = losses[199] * 6
    first_told, told = grow(run_steps(losses))
    assert [a.key for a in told] == ["spike@step:201"]
    assert first_told == {"spike@step:201": 201}
    assert told[0].message.startswith(f"loss spiked to {losses[200]:.4f} at step 201 (recent ")


def test_a_loss_that_jumps_and_stays_up_is_one_spike():
    losses = [1.0 + 0.01 * (i % 5) for i in range(100)] + [8.0 + 0.01 * (i % 5) for i in range(200)]
    _, told = grow(run_steps(losses))
    assert [a.key for a in told] == ["spike@step:101"]


def test_spikes_close_together_are_one_event():
    losses = [1.0 + 0.01 * (i % 5) for i in range(300)]
    for at in (100, 140, 250):  # 140 is within the 50 quiet steps after 100; 250 is not
        losses[at] = 10.0
    _, told = grow(run_steps(losses))
    assert [a.key for a in told] == ["spike@step:101", "spike@step:251"]


def test_no_spike_during_the_warm_up_or_below_the_rise():
    early = [1.0] * 10 + [9.0] + [1.0] * 20  # the 11th loss: within the 20-step warm-up
    assert grow(run_steps(early))[1] == []
    # far beyond σ (a flat loss has none) but only 20% above the EMA: no spike at rise 0.5
    flat = [1.0] * 50 + [1.2] + [1.0] * 10
    assert grow(run_steps(flat))[1] == []
    _, told = grow(run_steps(flat), settings=AlertSettings(spike_min_rise=0.1))
    # measured against the losses before it, not an average that already holds the spike
    assert told == [
        Alert(
            "spike@step:51",
            "spike",
            "loss spiked to 1.2000 at step 51 (recent average 1.0000 ± 0.0000)",
        )
    ]


def test_a_smooth_noisy_run_raises_nothing():
    for seed in range(3):
        steps = run_steps(smooth_losses(2000, seed=seed, noise=0.08))
        epochs = [
            {"epoch": e, "val_loss": v}
            for e, v in enumerate([1.0, 0.8, 0.7, 0.72, 0.69, 0.7, 0.68], 1)
        ]
        assert detect(steps, epochs, "running", steps[-1]["t"] + 1) == []


# -- validation loss -----------------------------------------------------------------------------


def test_val_loss_rising_three_epochs_fires_once_and_again_after_a_fall():
    val = [1.0, 0.8, 0.85, 0.9, 0.95, 1.0, 0.7, 0.75, 0.8, 0.85]
    log, told = AlertLog(), []
    for n in range(1, len(val) + 1):
        epochs = [{"epoch": e, "val_loss": v} for e, v in enumerate(val[:n], 1)]
        told += [(n, a) for a in log.new(detect([], epochs, "running", T0))]
    assert [(n, a.key) for n, a in told] == [(5, "val_rising@epoch:5"), (10, "val_rising@epoch:10")]
    assert (
        told[0][1].message == "validation loss rose 3 epochs in a row, 0.8000 → 0.9500 at epoch 5"
    )


def test_val_loss_rising_fewer_epochs_or_with_gaps_is_no_alert():
    epochs = [{"epoch": e, "val_loss": v} for e, v in enumerate([1.0, 1.1, 1.2, 1.1, 1.2, 1.3], 1)]
    assert detect([], epochs, "running", T0) == []
    epochs.append({"epoch": 7, "val_loss": None})  # not validated: left out, not a fall
    epochs.append({"epoch": 8, "val_loss": 1.4})
    assert [a.key for a in detect([], epochs, "running", T0)] == ["val_rising@epoch:8"]
    assert detect([], epochs, "running", T0, AlertSettings(rising_epochs=4)) == []


# -- crashed, finished, settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "key", "kind", "message"),
    [
        ("crashed", "crashed@step:12", "crashed", "the trainer crashed at step 12"),
        ("completed", "finished:completed@step:12", "finished", "the run completed at step 12"),
        ("stopped", "finished:stopped@step:12", "finished", "the run stopped at step 12"),
        ("failed", "finished:failed@step:12", "finished", "the run failed at step 12"),
    ],
)
def test_the_end_of_a_run_fires_once(status, key, kind, message):
    steps = run_steps([1.0] * 12)
    log, told = AlertLog(), []
    for i, now_status in enumerate(["initializing", "running", "running", status, status, status]):
        told += log.new(detect(steps, [], now_status, steps[-1]["t"] + i))
    assert told == [Alert(key, kind, message)]


def test_the_end_says_the_error_and_a_run_without_steps_is_keyed_at_zero():
    steps = run_steps([1.0] * 5)
    error = "non-finite loss (nan) at epoch 1 step 6; weights left at the last good step"
    assert detect(steps, [], "failed", T0 + 10, error=error) == [
        Alert("finished:failed@step:5", "finished", f"the run failed at step 5: {error}")
    ]
    assert detect([], [], "crashed", T0) == [
        Alert("crashed@step:0", "crashed", "the trainer crashed before its first step")
    ]


def spiky_columns(n, seed=0):
    """A noisy loss with spikes and NaNs scattered through it, as the monitor's columns."""
    rng = np.random.default_rng(seed)
    loss = np.array(smooth_losses(n, seed=seed))
    loss[rng.choice(n, 12, replace=False)] *= 8
    loss[rng.choice(n, 6, replace=False)] = math.nan
    return StepColumns(np.arange(1.0, n + 1), loss, T0 + np.arange(n), edits=0)


def test_a_detector_fed_step_by_step_finds_what_detect_finds_at_once():
    full = spiky_columns(3000)
    at_once = detect(full, [], "running", T0)
    spikes = [a for a in at_once if a.kind == "spike"]
    assert len(spikes) >= 5  # the check below compares something
    rng = np.random.default_rng(1)
    detector, log, told = Detector(), AlertLog(), []
    n = 0
    while n < 3000:
        n = min(3000, n + int(rng.integers(1, 200)))  # the file grows by uneven pieces
        grown = StepColumns(full.global_step[:n], full.loss[:n], full.t[:n], edits=0)
        told += log.new(detector.detect(grown, [], "running", T0))
    assert sorted(told, key=lambda a: a.key) == sorted(at_once, key=lambda a: a.key)


def test_a_detector_starts_again_when_steps_are_redone():
    losses = [1.0 + 0.01 * (i % 5) for i in range(100)]
    losses[80] = 9.0
    steps = StepColumns(np.arange(1.0, 101), np.array(losses), T0 + np.arange(100), edits=0)
    detector = Detector()
    assert [a.key for a in detector.detect(steps, [], "running", T0)] == ["spike@step:81"]
    redone = np.array(losses)
    redone[80] = 1.0  # a resume redid step 81 without the spike: the column was edited in place
    edited = StepColumns(steps.global_step, redone, steps.t, edits=1)
    assert detector.detect(edited, [], "running", T0) == []


def test_a_detector_on_a_million_steps_finds_what_detect_finds():
    """A monitor runs detect on every refresh over columns (its cost: bench/alerts_scale.py); a
    Detector kept for the run, fed the new steps only, agrees with detect from scratch."""
    n = 1_000_000
    t = T0 + 0.1 * np.arange(n)
    columns = StepColumns(np.arange(1.0, n + 1), np.array(smooth_losses(n, noise=0.02)), t)
    assert detect(columns, [], "running", t[-1] + 1) == []
    detector = Detector()
    head = StepColumns(columns.global_step[:-100], columns.loss[:-100], t[:-100], edits=0)
    detector.detect(head, [], "running", t[-1])
    whole = StepColumns(columns.global_step, columns.loss, t, edits=0)
    assert detector.detect(whole, [], "running", t[-1] + 1) == []
    spiked = np.array(columns.loss)
    spiked[-1] = 50.0
    later = StepColumns(columns.global_step, spiked, t, edits=1)
    expected = detect(later, [], "running", t[-1] + 1)
    assert [a.kind for a in expected] == ["spike"]
    assert Detector().detect(later, [], "running", t[-1] + 1) == expected


def test_each_kind_can_be_turned_off():
    losses = [1.0] * 30 + [math.nan] + [1.0] * 30 + [9.0]
    steps = run_steps(losses)
    epochs = [{"epoch": e, "val_loss": v} for e, v in enumerate([1.0, 1.1, 1.2, 1.3], 1)]
    now = steps[-1]["t"] + 1000
    kinds = {a.kind for a in detect(steps, epochs, "running", now)}
    assert kinds == {"nan", "spike", "val_rising", "stalled"}
    for kind in kinds:
        off = AlertSettings(**{kind: False})
        assert {a.kind for a in detect(steps, epochs, "running", now, off)} == kinds - {kind}
    assert detect(steps, epochs, "crashed", now, AlertSettings(crashed=False)) == [
        a for a in detect(steps, epochs, "crashed", now) if a.kind != "crashed"
    ]


def test_the_log_lets_each_key_through_once():
    log = AlertLog()
    a, b = Alert("nan@step:3", "nan", "x"), Alert("spike@step:9", "spike", "y")
    assert log.new([a]) == [a]
    assert log.new([a, b]) == [b]
    assert log.new([a, b, Alert("nan@step:3", "nan", "reworded")]) == []


# -- --notify-cmd --------------------------------------------------------------------------------

HOSTILE = "done; rm -rf ~ $(touch PWNED) `touch PWNED2` | tee x \x1b]0;title\x07 'quoted\""

RECORD_ARGV = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"


def test_notify_argv_appends_kind_and_message_as_single_arguments():
    alert = Alert("finished:completed@step:3", "finished", HOSTILE)
    argv = notify_command("ntfy publish 'my topic'", alert)
    assert argv == ["ntfy", "publish", "my topic", "finished", printable(HOSTILE)]
    assert "\x1b" not in argv[-1] and "\\x1b" in argv[-1]


def test_a_hostile_message_reaches_a_real_child_as_one_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where $(touch PWNED) would land if a shell ever saw it
    out = tmp_path / "argv.json"
    cmd = shlex.join([sys.executable, "-c", RECORD_ARGV, str(out)])
    alert = Alert("crashed@step:7", "crashed", HOSTILE)
    assert run_notify(notify_command(cmd, alert), timeout=60) is None
    wait_until(lambda: out.exists() and out.read_text().endswith("]"), "the child writes", tmp_path)
    assert json.loads(out.read_text()) == ["crashed", printable(HOSTILE)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["argv.json"]  # no PWNED, no x


def test_a_notify_command_that_cannot_start_is_a_line_not_an_exception(tmp_path):
    missing = str(tmp_path / "no-such-notifier")
    error = run_notify([missing, "finished", "done"])
    assert error == f"--notify-cmd: cannot run {missing}: No such file or directory"
    assert run_notify([]) == "--notify-cmd: empty command"
    assert run_notify(["notifier\x00"]).startswith("--notify-cmd: cannot run notifier\\x00: ")


def test_a_notify_command_past_its_timeout_is_killed_and_reaped(tmp_path):
    pid_file = tmp_path / "pid"
    script = (
        f"import os, signal; open({str(pid_file)!r}, 'w').write(str(os.getpid())); signal.pause()"
    )
    assert run_notify([sys.executable, "-c", script], timeout=0.5) is None
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "it starts", tmp_path)
    pid = int(pid_file.read_text())

    def gone():
        try:
            os.kill(pid, 0)  # a zombie still answers: gone means killed and reaped
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, "the notifier is killed and reaped", tmp_path, timeout=30)


def test_a_bad_notify_command_is_refused_by_name():
    with pytest.raises(ValueError, match="--notify-cmd: No closing quotation"):
        split_notify_command("notify-send 'oops")
    with pytest.raises(ValueError, match="--notify-cmd: empty command"):
        split_notify_command("   ")


def test_ticks_and_alerts_are_pure():
    """Neither module pulls in Textual, Rich or torch: the charts and --once can use them alike."""
    code = (
        "import sys, entrenar_tui.charts.ticks, entrenar_tui.model.alerts; "
        "print(sorted(m for m in ('textual', 'rich', 'torch', 'transformers') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
