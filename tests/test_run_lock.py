"""The run lock (trainer/lock.py): exactly one trainer per run directory, whatever the timing.

Many processes start on one directory at the same instant (released together through a
multiprocessing barrier), on a fresh directory and on one whose trainer.lock a dead trainer left:
exactly one wins every trial. The same with a file system that has no record locks (the link(2)
fallback). A lock that names another host is never taken over by itself: the refusal says whose it
is, how to tell whether that trainer is dead and how to take it over (`--force-unlock`), and the
monitor's `r` says the same instead of launching a resume that cannot start.
"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.controller import Controller
from tests.fake_run import FakeRun
from tests.helpers import run_model
from trainer.cli import main
from trainer.errors import UserError
from trainer.lock import RunLock
from trainer.monitor.schema import Files

WORKERS = 8
TRIALS = 30
OTHER_HOST = "gpu-node-7"
CONTEND = multiprocessing.get_context("fork")
BARRIER_S = 60  # a worker that died leaves the others waiting this long, not forever


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def _contend(dirs, start, done, results, no_record_locks) -> None:
    """One worker: for each trial, wait for everyone, try the lock, wait until all have tried
    (a winner still holds it then), release, report."""
    if no_record_locks:  # a file system without record locks: lockf fails as NFS without lockd does
        import trainer.lock as lock_module

        def lockf(*_args):
            raise OSError(errno.ENOLCK, "No locks available")

        lock_module.fcntl.lockf = lockf
    for run_dir in dirs:
        lock = RunLock(run_dir)
        start.wait(BARRIER_S)
        try:
            lock.acquire()
            won = True
        except UserError:
            won = False
        done.wait(BARRIER_S)
        lock.release()
        results.put((run_dir, won, getattr(lock, "mode", "")))


def contend(dirs: list[str], *, no_record_locks: bool = False) -> dict[str, list[str]]:
    """{run directory: [mode of each winner]} after WORKERS processes tried each at once."""
    start, done = CONTEND.Barrier(WORKERS), CONTEND.Barrier(WORKERS)
    results = CONTEND.Queue()
    workers = [
        CONTEND.Process(
            target=_contend, args=(dirs, start, done, results, no_record_locks), daemon=True
        )
        for _ in range(WORKERS)
    ]
    for w in workers:
        w.start()
    winners: dict[str, list[str]] = {d: [] for d in dirs}
    for _ in range(WORKERS * len(dirs)):
        run_dir, won, mode = results.get(timeout=120)
        if won:
            winners[run_dir].append(mode)
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    return winners


def trial_dirs(tmp_path: Path, stale: bool) -> list[str]:
    dirs = []
    dead = _dead_pid()
    for i in range(TRIALS):
        d = tmp_path / f"trial-{i}"
        d.mkdir()
        if stale:  # what a SIGKILLed trainer leaves: a lock file naming a process that is gone
            (d / Files.LOCK).write_bytes(
                orjson.dumps({"pid": dead, "host": socket.gethostname(), "pid_create_time": 1.0})
            )
        dirs.append(str(d))
    return dirs


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-lock"])
def test_many_trainers_starting_at_once_get_exactly_one_lock(tmp_path, stale):
    winners = contend(trial_dirs(tmp_path, stale))
    counts = {d: len(w) for d, w in winners.items()}
    assert all(n == 1 for n in counts.values()), sorted(counts.values())
    assert {m for w in winners.values() for m in w} == {"record"}  # the kernel's lock
    assert not any((Path(d) / Files.LOCK).exists() for d in winners)  # released: removed


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-lock"])
def test_without_record_locks_the_link_fallback_gives_exactly_one_lock(tmp_path, stale):
    winners = contend(trial_dirs(tmp_path, stale), no_record_locks=True)
    counts = {d: len(w) for d, w in winners.items()}
    assert all(n == 1 for n in counts.values()), sorted(counts.values())
    assert {m for w in winners.values() for m in w} == {"link"}
    leftovers = [p.name for d in winners for p in Path(d).iterdir()]
    assert leftovers == [], leftovers  # no temp file, no moved-aside lock


HOLD = (
    "import signal, sys; from trainer.lock import RunLock; "
    "lock = RunLock(sys.argv[1]).acquire(); print('ready', flush=True); signal.pause()"
)


def hold_lock(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_the_kernel_names_the_holder_and_drops_the_lock_when_it_is_killed(tmp_path):
    from trainer.monitor import lockfile

    holder = hold_lock(tmp_path)
    try:
        seen = lockfile.query(tmp_path)
        assert seen.holder == holder.pid and seen.content["pid"] == holder.pid
        with pytest.raises(UserError, match=f"already running on it \\(pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
        with pytest.raises(UserError, match="already running"):  # --force-unlock neither
            RunLock(tmp_path).acquire(force=True)
    finally:
        holder.kill()
        holder.wait()
    assert lockfile.query(tmp_path).holder is None  # SIGKILL: the kernel let go
    lock = RunLock(tmp_path).acquire()  # and the stale file is taken over
    try:
        assert orjson.loads((tmp_path / Files.LOCK).read_bytes())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_second_lock_in_the_holding_process_is_refused_without_dropping_the_first(tmp_path):
    """POSIX locks go when the process closes any descriptor of the file: a second RunLock in the
    same process must not even open it."""
    first = RunLock(tmp_path).acquire()
    try:
        with pytest.raises(UserError, match="already running"):
            RunLock(tmp_path).acquire()
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from trainer.monitor import lockfile; "
             "print(lockfile.query(sys.argv[1]).holder)", str(tmp_path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert probe.stdout.strip() == str(os.getpid())  # still held, by this process
    finally:
        first.release()


@pytest.mark.parametrize("planted", ["symlink", "hardlink", "fifo", "directory"])
def test_a_lock_file_that_is_not_a_plain_file_is_refused(tmp_path, planted):
    elsewhere = tmp_path / "victim"
    elsewhere.write_bytes(b"do not touch\n")
    run = tmp_path / "run"
    run.mkdir()
    lock = run / Files.LOCK
    {
        "symlink": lambda: lock.symlink_to(elsewhere),
        "hardlink": lambda: os.link(elsewhere, lock),
        "fifo": lambda: os.mkfifo(lock),
        "directory": lambda: lock.mkdir(),
    }[planted]()
    with pytest.raises(UserError, match=Files.LOCK):
        RunLock(run).acquire()
    assert elsewhere.read_bytes() == b"do not touch\n"


# ------------------------------------------------------------------------------ another host


def plant_other_hosts_lock(run: Path, heartbeat_age_s: float = 185.0) -> None:
    (run / Files.LOCK).write_bytes(
        orjson.dumps({"pid": 4242, "host": OTHER_HOST, "pid_create_time": 1.7e9})
    )
    state = orjson.loads((run / Files.STATE).read_bytes())
    state.update(
        status="running", host=OTHER_HOST, pid=4242, heartbeat=time.time() - heartbeat_age_s
    )
    (run / Files.STATE).write_bytes(orjson.dumps(state))


def test_a_lock_of_another_host_says_whose_and_how_to_take_it_over(one_epoch_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    plant_other_hosts_lock(run)
    before = (run / Files.STATE).read_bytes()
    assert main(["--resume", str(run), "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    for expected in (
        f"pid 4242 on host {OTHER_HOST}",
        "last heartbeat 3m0",  # 185 s ago, give or take the test's own seconds
        f"ssh {OTHER_HOST} ps -p 4242",
        f"entrenar-train --resume {run} --force-unlock",
    ):
        assert expected in line, line
    assert (run / Files.STATE).read_bytes() == before  # nothing written
    assert orjson.loads((run / Files.LOCK).read_bytes())["host"] == OTHER_HOST  # not taken

    assert main(["--resume", str(run), "train.epochs=2", "--force-unlock"]) == 0
    err = capsys.readouterr().err
    assert f"--force-unlock: took the run lock of {run} from pid 4242 on {OTHER_HOST}" in err
    assert orjson.loads((run / Files.RESULT).read_bytes())["status"] == "completed"
    assert orjson.loads((run / Files.STATE).read_bytes())["global_step"] > 0
    assert not (run / Files.LOCK).exists()


def test_force_unlock_goes_with_resume_only(tmp_path, capsys):
    assert main([str(tmp_path / "c.toml"), "--force-unlock"]) == 2
    assert "--force-unlock goes with --resume" in capsys.readouterr().err


def test_r_on_a_run_locked_by_another_host_says_so_and_launches_nothing(tmp_path):
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    run.finish("stopped")
    (run.dir / Files.LOCK).write_bytes(
        orjson.dumps({"pid": 4242, "host": OTHER_HOST, "pid_create_time": 1.7e9})
    )
    launched: list[list[str]] = []
    controller = Controller(launch=lambda argv, *a, **k: launched.append(argv))
    app = MonitorApp(run.dir, controller=controller, probe=lambda _s: "gone")
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        deadline = time.monotonic() + 60
        while run_model(app).status != "stopped":
            assert time.monotonic() < deadline, "the run never showed"
            await pilot.pause(0.02)
        await pilot.press("r")
        assert launched == []
        assert notes and f"ssh {OTHER_HOST} ps -p 4242" in notes[-1], notes
        assert "--force-unlock" in notes[-1]

    async def run_it():
        async with app.run_test(size=(160, 40)) as pilot:
            await body(pilot)

    asyncio.run(run_it())


def test_a_live_lock_is_refused_across_processes_naming_the_kernels_holder(one_epoch_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    holder = hold_lock(run)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "trainer", "--resume", str(run), "train.epochs=2", "--force-unlock"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"already running on it (pid {holder.pid} on" in r.stderr
