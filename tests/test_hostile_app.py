"""Issue 24, the app's side: what a hostile tester found, each case a test that failed before.

`e` wrote steps.csv through a planted `RUN-export` link; a FIFO settings.json hung the app and
`--once`, a huge alerts.spike_span crashed it (ZeroDivisionError); a path over 4096 characters was
a traceback; an absurd elapsed time printed a 300-digit day count; one long steps.jsonl line was
"6 unreadable lines"; `export ROOT` gave up on the first bad run; "trainer pid N is gone" was said
of a live process that was merely not proven to be the trainer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import psutil
import pytest

from entrenar_tui import settings as user_settings
from entrenar_tui.app import MonitorApp
from entrenar_tui.model import discovery
from entrenar_tui.model.run import RunModel
from entrenar_tui.model.sweeps import MAX_GRID_KEYS
from entrenar_tui.output.export import main as export_main
from entrenar_tui.widgets.runs_table import RunsTable
from tests.conftest import REPO, patience
from tests.fake_run import FakeRun
from tests.helpers import run_app, run_model, run_screen, until
from trainer.monitor.control import trainer_liveness
from trainer.monitor.reader import StepTail, effective_status, format_age
from trainer.monitor.schema import Files
from trainer.monitor.text import duration


def cli(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    """entrenar-tui in a subprocess: a hang is a TimeoutExpired (the test fails)."""
    return subprocess.run(
        [sys.executable, "-m", "entrenar_tui", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def fake_run(path: Path, steps: int = 3) -> FakeRun:
    run = FakeRun(path).start()
    for _ in range(steps):
        run.train_step()
    return run


def release_readers(path: Path) -> None:
    """Whoever is blocked opening this FIFO for reading gets EOF: a hung thread of a failing test
    does not outlive it."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


# ------------------------------------------------------------------- export through a link


def test_e_does_not_write_through_a_planted_export_link(tmp_path):
    run = fake_run(tmp_path / "exp")
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "exp-export").symlink_to(victim)
    app = MonitorApp(run.dir, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: run_model(app).state is not None, "the state loads")
        await pilot.press("e")
        await until(pilot, lambda: any("export" in n for n in notices(app)), "the export ends")
        note = next(n for n in notices(app) if "export" in n)
        assert note == f"export failed: {tmp_path / 'exp-export'} is a symbolic link; not written"

    run_app(app, body)
    assert list(victim.iterdir()) == []


def test_export_cli_does_not_write_through_a_link_as_out(tmp_path, capsys):
    run = fake_run(tmp_path / "exp")
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "out").symlink_to(victim)
    assert export_main(run.dir, "csv", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err == f"entrenar-tui: error: {tmp_path / 'out'} is a symbolic link; not written\n"
    assert list(victim.iterdir()) == []


# ------------------------------------------------------------------------------- settings


def test_a_fifo_settings_file_neither_hangs_once_nor_the_app(tmp_path):
    run = fake_run(tmp_path / "exp")
    path = user_settings.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    try:
        r = cli("monitor", str(run.dir), "--once", timeout=60)
        settings, notice = user_settings.load()
    finally:
        release_readers(path)
    assert r.returncode == 0, r.stderr
    assert f"settings not read ({path} is a FIFO, not a regular file; not read)" in r.stderr
    assert settings == user_settings.Settings()
    assert (
        notice
        == f"settings not read ({path} is a FIFO, not a regular file; not read); using defaults"
    )


def test_a_huge_settings_file_is_not_read(tmp_path):
    path = user_settings.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(100 << 20)
    settings, notice = user_settings.load()
    assert settings == user_settings.Settings()
    assert "more than the 1,048,576 read" in notice


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("spike_span", 10**18),
        ("stall_window", 10**18),
        ("stall_min_s", 1e300),
        ("spike_z", 1e300),
        ("rising_epochs", 10**12),
    ],
)
def test_every_alert_threshold_has_an_upper_bound(key, value, tmp_path):
    path = tmp_path / "settings.json"
    path.write_bytes(orjson.dumps({"alerts": {key: value}}))
    settings, notice = user_settings.load(path)
    default = getattr(user_settings.AlertSettings(), key)
    assert getattr(settings.alerts, key) == default
    assert notice == f"settings: bad values in {path}: alerts.{key} (using {default})"


def test_a_huge_spike_span_does_not_crash_the_app(tmp_path):
    run = fake_run(tmp_path / "exp", steps=30)  # past spike_warmup: the spike scan runs
    path = user_settings.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"alerts": {"spike_span": 10**18}}))
    app = MonitorApp(run.dir, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        await until(pilot, lambda: len(run_model(app).history) == 30, "the steps load")
        await until(pilot, lambda: any("spike_span" in n for n in notices(app)), "the notice")
        assert run_screen(app).alerts.detector.settings.spike_span == 50

    run_app(app, body)


# ------------------------------------------------------------------------ long paths, durations


@pytest.mark.parametrize("command", [["monitor", "{}", "--once"], ["export", "{}"], ["{}"]])
def test_a_path_longer_than_the_system_takes_is_one_line(command, tmp_path):
    long = str(tmp_path / ("a" * 5000))
    args = [a.replace("{}", long) for a in command]
    if args == [long]:  # the browser's ROOT is the cwd's runs/: give it as monitor's
        args = ["monitor", long, "--once"]
    r = cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-500:]
    assert r.stderr.count("\n") == 1 and "File name too long" in r.stderr
    assert len(r.stderr) < 300  # the path is shortened, not 5000 characters of it


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (59, "0:59"),
        (364 * 86400 + 3 * 3600, "364d03h"),
        (365 * 86400 + 45 * 86400, "1y045d"),
        (10**300, ">999y"),
        (1e300, ">999y"),
    ],
)
def test_durations_past_a_year_are_years_and_bounded(seconds, shown):
    assert duration(seconds) == shown
    if seconds >= 86400:
        assert format_age(seconds) == shown  # the reader's ages say the same


def test_an_absurd_elapsed_time_is_short_in_once(tmp_path):
    run = fake_run(tmp_path / "exp")
    run.writer.update_state(elapsed_s=1e300)
    r = cli("monitor", str(run.dir), "--once")
    assert r.returncode == 0, r.stderr
    assert ">999y" in r.stdout and "0" * 30 not in r.stdout, r.stdout


# ---------------------------------------------------------------------- one long line, once


def test_one_long_steps_line_is_one_unreadable_line(tmp_path):
    run = fake_run(tmp_path / "exp", steps=2)
    steps = run.dir / Files.STEPS
    with open(steps, "ab") as f:
        f.write(b'{"global_step": 3, "junk": "' + b"x" * 5000 + b'"}\n')
    run.train_step()  # a good line after it
    model, tail = RunModel(run.dir), StepTail(steps)
    tail.CHUNK = 1000  # the long line spans six reads (six 8 MiB reads in real life)
    for _ in range(20):
        model.add_steps(tail.read())
    assert (model.bad_lines, model.first_bad_line, len(model.history)) == (1, 3, 3)
    assert f"{Files.STEPS}: 1 unreadable line, first at line 3" in [
        p.text for p in model.problems()
    ]


def test_the_tail_counts_a_long_line_once_and_reads_on(tmp_path):
    path = tmp_path / Files.STEPS
    good = lambda g: orjson.dumps({"global_step": g, "loss": 1.0, "t": float(g)}) + b"\n"  # noqa: E731
    path.write_bytes(good(1) + b'{"x": "' + b"a" * 5000 + b'"}\n' + good(2) + good(3))
    tail = StepTail(path)
    tail.CHUNK = 1000
    bad, steps = [], []
    for _ in range(20):
        batch = tail.read()
        bad += batch.bad_lines
        steps += [int(s) for s in batch.steps]
    assert (bad, steps, tail.lines) == ([2], [1, 2, 3], 4)


# -------------------------------------------------------------------------- export of a root


def test_export_of_a_root_skips_a_bad_run_with_a_warning(tmp_path, capsys):
    root = tmp_path / "root"
    fake_run(root / "a-good")
    bad = fake_run(root / "b-bad")
    fake_run(root / "c-good")
    (bad.dir / Files.STEPS).unlink()
    os.mkfifo(bad.dir / Files.STEPS)
    out = tmp_path / "out"
    try:
        code = export_main(root, "csv", out)
    finally:
        release_readers(bad.dir / Files.STEPS)
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == (
        f"entrenar-tui: warning: skipped {bad.dir / Files.STEPS} is a FIFO, not a regular file; "
        "not read\n"
    )
    runs = {line.split(",")[0] for line in (out / "steps.csv").read_text().splitlines()[1:]}
    assert runs == {"a-good", "c-good"}


# ------------------------------------------------------------------------ "trainer pid N is gone"


LOCK_HOLDER = (
    "import signal, sys; from trainer.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
    "print('ready', flush=True); signal.pause()"
)


def test_the_trainer_holding_the_lock_is_not_gone_without_a_start_time(tmp_path):
    """state.json names the live process that holds the run's lock, without pid_create_time (an
    older trainer's state): the kernel says it is the trainer, so it is not called gone."""
    run = fake_run(tmp_path / "exp")
    child = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run.dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        state = orjson.loads((run.dir / Files.STATE).read_bytes())
        state.update(pid=child.pid, pid_create_time=None)
        verdict = trainer_liveness(state, run.dir)
        assert (verdict, verdict.why) == ("alive", "the run names no process start time")
        assert effective_status(state, state["heartbeat"], trainer=verdict) == ("running", None)
    finally:
        child.kill()
        child.wait()


def test_init_is_not_said_gone(tmp_path):
    """pid 1 (init, or a container's trainer): nothing proves it gone; the heartbeat decides."""
    run = fake_run(tmp_path / "exp")
    state = orjson.loads((run.dir / Files.STATE).read_bytes())
    state.update(pid=1, pid_create_time=psutil.Process(1).create_time())
    verdict = trainer_liveness(state, run.dir)
    assert verdict == "unknown"
    assert effective_status(state, state["heartbeat"], trainer=verdict) == ("running", None)


def test_a_live_process_that_is_not_the_trainer_is_not_called_gone(tmp_path):
    """The named process lives (its start time matches) but the run has no trainer.lock: it is
    not this run's trainer, and the line says exactly that, not that it is gone."""
    run = fake_run(tmp_path / "exp")
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        state = orjson.loads((run.dir / Files.STATE).read_bytes())
        state.update(pid=child.pid, pid_create_time=psutil.Process(child.pid).create_time())
        verdict = trainer_liveness(state, run.dir)
        status, why = effective_status(state, state["heartbeat"], trainer=verdict)
        assert (verdict, status) == ("gone", "crashed")
        assert why == (
            f"pid {child.pid} is not this run's trainer: {Files.LOCK} does not exist "
            "(status still said running)"
        )
    finally:
        child.kill()
        child.wait()


def test_another_process_under_the_pid_is_gone_and_says_how(tmp_path):
    run = fake_run(tmp_path / "exp")
    me = psutil.Process()
    state = orjson.loads((run.dir / Files.STATE).read_bytes())
    parent = me.parent()
    state.update(pid=parent.pid, pid_create_time=parent.create_time() - 1000)
    verdict = trainer_liveness(state, run.dir)
    assert verdict == "gone"
    status, why = effective_status(state, state["heartbeat"], trainer=verdict)
    assert status == "crashed"
    assert why == (
        f"trainer pid {parent.pid} is gone: pid {parent.pid} is another process now "
        "(its start time differs) (status still said running)"
    )


def test_a_pid_that_does_not_exist_is_gone(tmp_path):
    run = fake_run(tmp_path / "exp")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    state = orjson.loads((run.dir / Files.STATE).read_bytes())
    state.update(pid=child.pid, pid_create_time=1.0)
    verdict = trainer_liveness(state, run.dir)
    status, why = effective_status(state, state["heartbeat"], trainer=verdict)
    assert (verdict, status) == ("gone", "crashed")
    assert why == f"trainer pid {child.pid} is gone (status still said running)"


# ------------------------------------------------------------------------- a root of many runs

MANY = 300


def many_runs(root: Path, n: int = MANY) -> Path:
    """n small finished runs under root: one FakeRun's files copied (cheap; no steps)."""
    model = fake_run(root.parent / "model-run", steps=0)
    model.finish("completed")
    files = {name: (model.dir / name).read_bytes() for name in (Files.RUN, Files.STATE)}
    for i in range(n):
        run_dir = root / f"run-{i:04d}"
        run_dir.mkdir(parents=True)
        for name, data in files.items():
            (run_dir / name).write_bytes(data)
    return root


def test_a_large_root_lists_rows_as_they_are_found(tmp_path, monkeypatch):
    """The first rows (and "scanning… N runs so far") are on screen while the scan is still
    reading: here it is held at its 120th run until the test has seen them."""
    root = many_runs(tmp_path / "root")
    monkeypatch.setattr(discovery.RunIndex, "PROGRESS_RUNS", 50)  # shown at 50, 100, 200 runs
    monkeypatch.setattr(discovery.RunIndex, "PROGRESS_S", 3600.0)
    held, release = threading.Event(), threading.Event()
    real_read, reads = discovery._read, []

    def slow_read(run_dir, signature):
        reads.append(run_dir)
        if len(reads) == 120:
            held.set()
            release.wait(patience(60))
        return real_read(run_dir, signature)

    monkeypatch.setattr(discovery, "_read", slow_read)
    app = MonitorApp(root=root, probe=lambda _s: "gone", tick_interval=3600)

    async def body(pilot):
        screen = app.screen
        await until(pilot, lambda: held.is_set() and len(screen.runs) == 100, "100 rows")
        assert screen.query_one(RunsTable).row_count == 100
        assert "scanning… 100 runs so far" in str(screen.query_one("#runs-info").render())
        release.set()
        await until(pilot, lambda: len(screen.runs) == MANY, "every run")
        await until(pilot, lambda: screen.query_one(RunsTable).row_count == MANY, "every row")
        assert "scanning" not in str(screen.query_one("#runs-info").render())
        assert screen.watcher.index.scans == 1

    try:
        run_app(app, body)
    finally:
        release.set()


def test_a_large_root_idles_when_nothing_changes(tmp_path):
    """No walk of the root without a file event: poll intervals pass and the scans stay one; a
    file of a known run changing re-reads that run alone; a new run is a file event too."""
    root = many_runs(tmp_path / "root")
    app = MonitorApp(root=root, probe=lambda _s: "gone", tick_interval=3600, poll_interval=0.05)

    async def body(pilot):
        screen = app.screen
        await until(pilot, lambda: len(screen.runs) == MANY, "every run")
        watcher = screen.watcher
        reads, seen = watcher.index.reads, watcher.wakeups
        await until(pilot, lambda: watcher.wakeups >= seen + 5, "five quiet poll intervals")
        assert (watcher.index.scans, watcher.index.reads) == (1, reads)

        state = root / "run-0007" / Files.STATE
        state.write_bytes(state.read_bytes().replace(b'"completed"', b'"failed"'))
        status = lambda: next(r.status for r in screen.runs if r.name == "run-0007")  # noqa: E731
        await until(pilot, lambda: status() == "failed", "the changed run re-read")
        assert (watcher.index.scans, watcher.index.reads) == (1, reads + 1)

        shutil.copytree(root / "run-0001", root / "run-new")
        await until(pilot, lambda: len(screen.runs) == MANY + 1, "the new run listed")
        assert watcher.index.scans >= 2

    run_app(app, body)


def test_a_sweep_tag_of_20000_keys_shows_a_bounded_grid(tmp_path):
    run = fake_run(tmp_path / "root" / "exp", steps=0)
    run_json = orjson.loads((run.dir / Files.RUN).read_bytes())
    run_json["sweep"] = {"name": "s", "index": 0, "values": {f"k{i}": i for i in range(20000)}}
    (run.dir / Files.RUN).write_bytes(orjson.dumps(run_json))
    index = discovery.RunIndex(tmp_path / "root", probe=lambda _s: "gone")
    (summary,) = index.scan()
    assert len(summary.grid) == MAX_GRID_KEYS and len(index.grid) == MAX_GRID_KEYS
    assert summary.grid[0] == ("k0", "0")
