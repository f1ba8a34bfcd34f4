"""The monitor's alerts (entrenar_tui/alerts.py) on scripted runs that grow step by step: each
event (stall, NaN, spike, rising validation loss, crash, end) fires once, at the step it happens,
and a smooth noisy run raises nothing. --notify-cmd gets the alert as arguments, never a shell."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time

import numpy as np
import pytest

from entrenar_tui.alerts import (
    Alert,
    AlertLog,
    AlertSettings,
    detect,
    notify_command,
    run_notify,
    split_notify_command,
)
from trainer.monitor.text import printable

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
    steps = run_steps([1.0] * 30, interval=0.1)  # 10 × the median is 1 s; the minimum is 120 s
    last_t = steps[-1]["t"]
    assert detect(steps, [], "running", last_t + 119, AlertSettings()) == []
    assert [a.key for a in detect(steps, [], "running", last_t + 120)] == ["stall@step:30"]
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


# -- NaN / Inf -----------------------------------------------------------------------------------


def test_a_nan_loss_fires_once_per_stretch_at_its_first_step():
    losses = [1.0] * 20 + [math.nan] * 4 + [1.0] * 10 + [math.inf] + [1.0] * 5
    first_told, told = grow(run_steps(losses))
    nans = [a for a in told if a.kind == "nan"]
    assert [a.key for a in nans] == ["nan@step:21", "nan@step:35"]
    assert first_told["nan@step:21"] == 21 and first_told["nan@step:35"] == 35
    assert [a.message for a in nans] == ["loss is NaN at step 21", "loss is Inf at step 35"]
    assert [a.kind for a in told] == ["nan", "nan"]  # the NaNs are no spike


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


def until(condition, deadline_s=30.0):
    """Poll condition() until true or the deadline (a generous bound for a busy box)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


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
    assert until(lambda: out.exists() and out.read_text().endswith("]"))
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
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    )
    assert run_notify([sys.executable, "-c", script], timeout=0.5) is None
    assert until(lambda: pid_file.exists() and pid_file.read_text().strip())
    pid = int(pid_file.read_text())

    def gone():
        try:
            os.kill(pid, 0)  # a zombie still answers: gone means killed and reaped
        except ProcessLookupError:
            return True
        return False

    assert until(gone)


def test_a_bad_notify_command_is_refused_by_name():
    with pytest.raises(ValueError, match="--notify-cmd: No closing quotation"):
        split_notify_command("notify-send 'oops")
    with pytest.raises(ValueError, match="--notify-cmd: empty command"):
        split_notify_command("   ")
