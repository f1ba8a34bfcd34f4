"""Run files that are not regular files, or are huge, are refused with a problem line: nothing
blocks on open or read, nothing reads without bound, and a date that does not convert is text.

A FIFO in place of state.json used to hang `--once` (a whole ROOT's `--once` on one such run), the
browser and the watcher; state.json linked to /dev/zero grew to gigabytes; `export` ran out of
memory; a FIFO control.json hung the trainer, which then ignored SIGTERM; a started_at of
0001-01-01T00:00:00+14:00 raised OverflowError in the browser and `--once`.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from tests.conftest import REPO, write_config, write_corpus
from tests.fake_run import FakeRun
from tests.helpers import run_app, run_model, run_watcher, until
from trainer.monitor.schema import Files
from trainer.monitor.text import printable

MEMORY_CAP = 3 << 30  # a monitor that reads without bound dies here rather than filling the box


def cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """entrenar-tui in a subprocess, its memory capped: a hang is a TimeoutExpired (test fails)."""
    return subprocess.run(
        [sys.executable, "-m", "entrenar_tui", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, preexec_fn=cap_memory,
    )  # fmt: skip


def release_readers(path: Path) -> None:
    """Whoever is blocked opening this FIFO for reading (the code under test, if it hangs) gets
    EOF: a hung thread of a failing test does not outlive it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def run_with(tmp_path: Path, name: str = "exp") -> FakeRun:
    run = FakeRun(tmp_path / name).start()
    run.train_step()
    run.train_step()
    return run


def replace(path: Path, how: str) -> str:
    """Put something that is not a plain file where `path` was; the problem text it must get."""
    path.unlink(missing_ok=True)
    if how == "fifo":
        os.mkfifo(path)
        return f"{path.name} is a FIFO, not a regular file; not read"
    if how == "dev-zero-link":
        path.symlink_to("/dev/zero")
        return f"{path.name} is a symbolic link; not read"
    if how == "char-device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
        except PermissionError:
            pytest.skip("making a device node needs root")
        return f"{path.name} is a character device, not a regular file; not read"
    if how == "huge":
        with open(path, "wb") as f:
            f.truncate(100 << 20)  # sparse: 100 MB of zeros on no disk
        return f"{path.name} is 104,857,600 bytes, more than the 16,777,216 read; not read"
    if how == "directory":
        path.mkdir()
        return f"{path.name} is a directory, not a regular file; not read"
    raise ValueError(how)


KINDS = ["fifo", "dev-zero-link", "char-device", "huge", "directory"]


# ------------------------------------------------------------------------------ --once


@pytest.mark.parametrize("how", KINDS)
def test_once_on_a_run_whose_state_is_not_a_file_says_so_and_returns(tmp_path, how):
    run = run_with(tmp_path)
    problem = replace(run.dir / Files.STATE, how)
    try:
        r = cli("monitor", str(run.dir), "--once")
    finally:
        release_readers(run.dir / Files.STATE)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"error     {problem}" in r.stdout, r.stdout
    assert "last      loss" in r.stdout  # the rest of the run is still read


@pytest.mark.parametrize("files", [(Files.STATE,), (Files.STATE, Files.RUN)])
@pytest.mark.parametrize("how", ["fifo", "dev-zero-link"])
def test_once_on_a_root_with_one_such_run_lists_every_run(tmp_path, how, files):
    root = tmp_path / "root"
    bad, good = run_with(root, "a-bad"), run_with(root, "b-good")
    for name in files:
        replace(bad.dir / name, how)
    try:
        r = cli("monitor", str(root), "--once")
    finally:
        for name in files:
            release_readers(bad.dir / name)
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert names == ["a-bad", "b-good"], r.stdout
    assert good.dir.name in r.stdout


@pytest.mark.parametrize("how", ["fifo", "dev-zero-link", "char-device"])
def test_a_steps_file_that_is_not_a_file_is_a_problem(tmp_path, how):
    run = run_with(tmp_path)
    problem = replace(run.dir / Files.STEPS, how)
    try:
        r = cli("monitor", str(run.dir), "--once")
    finally:
        release_readers(run.dir / Files.STEPS)
    assert r.returncode == 0, r.stderr
    assert problem in r.stdout


# ------------------------------------------------------------------------------ the app


def test_the_browser_lists_every_run_past_a_fifo(tmp_path):
    root = tmp_path / "root"
    bad, _good = run_with(root, "a-bad"), run_with(root, "b-good")
    replace(bad.dir / Files.STATE, "fifo")
    app = MonitorApp(root=root, probe=lambda _s: "alive")
    try:

        async def body(pilot):
            table = app.screen.query_one("RunsTable")
            await until(pilot, lambda: len(table.row_keys()) == 2, "both runs are listed")

        run_app(app, body, size=(160, 40))
    finally:
        release_readers(bad.dir / Files.STATE)


@pytest.mark.parametrize("file", [Files.STATE, Files.STEPS])
def test_the_run_screen_shows_a_fifo_as_a_problem(tmp_path, file):
    run = run_with(tmp_path)
    problem = replace(run.dir / file, "fifo")
    app = MonitorApp(run.dir, probe=lambda _s: "alive", poll_interval=0.1)
    try:

        async def body(pilot):
            texts = lambda: [p.text for p in run_model(app).problems()]  # noqa: E731
            await until(pilot, lambda: problem in texts(), f"{problem!r} shows")
            assert run_watcher(app) is not None and run_watcher(app).running

        run_app(app, body, size=(160, 40))
    finally:
        release_readers(run.dir / file)


def test_a_fifo_train_log_hangs_neither_the_problems_line_nor_the_log_pane(tmp_path):
    run = run_with(tmp_path)
    replace(run.dir / Files.LOG, "fifo")
    app = MonitorApp(run.dir, probe=lambda _s: "gone")  # crashed: the line quotes train.log
    try:

        async def body(pilot):
            await until(pilot, lambda: run_model(app).status == "crashed", "it shows crashed")
            await pilot.press("l")  # the log pane tails train.log
            pane = app.screen.query_one("LogPane")
            await until(pilot, lambda: "FIFO" in str(pane.border_subtitle), "the pane says why")

        run_app(app, body, size=(160, 40))
    finally:
        release_readers(run.dir / Files.LOG)


# ------------------------------------------------------------------------------ export


@pytest.mark.parametrize("how", ["fifo", "dev-zero-link", "char-device"])
def test_export_of_a_steps_file_that_is_not_a_file_is_a_one_line_error(tmp_path, how):
    run = run_with(tmp_path)
    replace(run.dir / Files.STEPS, how)
    try:
        r = cli("export", str(run.dir), "--out", str(tmp_path / "out"))
    finally:
        release_readers(run.dir / Files.STEPS)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"entrenar-tui: error: {run.dir / Files.STEPS} is ")
    assert len(r.stderr.splitlines()) == 1


def test_export_reads_a_huge_steps_file_in_bounded_memory(tmp_path):
    """3 GB of steps.jsonl without a newline (sparse: zeros) under a 3 GB address-space cap."""
    run = run_with(tmp_path)
    with open(run.dir / Files.STEPS, "ab") as f:
        f.truncate(3 << 30)
    r = cli("export", str(run.dir), "--format", "json", "--out", str(tmp_path / "out.json"))
    assert r.returncode == 0, r.stderr
    exported = orjson.loads((tmp_path / "out.json").read_bytes())["runs"][0]
    assert [s["global_step"] for s in exported["steps"]] == [1, 2]  # then zeros, no newline


# ------------------------------------------------------------------------------ the trainer


@pytest.mark.timeout(600)
def test_a_fifo_control_json_neither_hangs_the_trainer_nor_deafens_it_to_sigterm(
    tmp_path, tiny_bert_dir
):
    corpus = write_corpus(tmp_path / "train.jsonl", n=96)
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / Files.CONTROL)
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, corpus, run,
        train={"epochs": 200, "log_interval": 1, "save_every": 0},
    )  # fmt: skip
    trainer = subprocess.Popen(
        [sys.executable, "-m", "trainer", str(cfg)],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[str] = []
    try:
        for line in trainer.stderr:  # a line per step (log_interval 1); a hung trainer: timeout
            seen.append(line)
            if sum(line.startswith("epoch 1/200 step ") for line in seen) >= 3:
                break  # it trains past the control.json polls of its first steps
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(120) == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        release_readers(run / Files.CONTROL)
    err = "".join(seen) + trainer.stderr.read()
    assert "warning: control.json is a FIFO, not a regular file; not read" in err
    assert err.count("control.json is a FIFO") == 1  # said once, not every batch
    assert orjson.loads((run / Files.STATE).read_bytes())["status"] == "stopped"


# ------------------------------------------------------------------------------ dates


@pytest.mark.parametrize(
    "started_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-01:00", "x\x1b[2J"]
)
def test_a_start_date_that_does_not_convert_is_shown_as_text(tmp_path, started_at):
    root = tmp_path / "root"
    run = run_with(root, "odd-date")
    run_with(root, "plain")
    info = orjson.loads((run.dir / Files.RUN).read_bytes())
    (run.dir / Files.RUN).write_bytes(orjson.dumps({**info, "started_at": started_at}))
    r = cli("monitor", str(root), "--once")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("odd-date"))
    assert printable(started_at)[:4] in row
    app = MonitorApp(root=root, probe=lambda _s: "alive")

    async def body(pilot):
        table = app.screen.query_one("RunsTable")
        await until(pilot, lambda: len(table.row_keys()) == 2, "both runs are listed")

    run_app(app, body, size=(160, 40))
