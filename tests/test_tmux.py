"""`entrenar-tui run` in a real terminal (tmux): it starts the trainer detached, shows it running,
and `x` then `y` stop it cleanly. Waits are bounded and driven by the run directory's file events
(watchfiles), with the screen read by capture-pane."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from tests.conftest import patience
from tests.fake_run import scenario
from tests.helpers import needs_tool, wait_until
from trainer.monitor.control import trainer_liveness
from trainer.monitor.schema import Files

pytestmark = [pytest.mark.slow, needs_tool("tmux", shutil.which("tmux") is not None)]


class Terminal:
    """A tmux server of our own (its own socket) with one 80×24 window (the size the monitor must be good at) running a command."""

    def __init__(self, socket: Path, command: str, cwd: Path):
        # A Unix socket's path must fit 108 bytes: a long test name's tmp_path does not.
        self.home = Path(tempfile.mkdtemp(prefix="tmux-"))
        self.base = ["tmux", "-S", str(self.home / socket.name)]
        self.tmux("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", "-c", str(cwd), command)

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=patience(30)
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t").stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "t").returncode == 0

    def close(self) -> None:
        self.tmux("kill-server")
        shutil.rmtree(self.home, ignore_errors=True)


def state(run_dir: Path) -> dict:
    try:
        return orjson.loads((run_dir / Files.STATE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}


def test_entrenar_tui_run_in_tmux_starts_shows_and_stops_the_trainer(tiny_run_config, tmp_path):
    run_dir = tmp_path / "run"  # the config's output.dir
    command = shlex.join(
        [
            sys.executable,
            "-m",
            "entrenar_tui",
            "run",
            str(tiny_run_config),
            "train.epochs=3",
            "train.batch_size=4",
        ]
    )
    term = Terminal(tmp_path / "tmux.sock", command, tmp_path)
    frozen = None
    try:
        # The tiny model's 90 steps take a second or two: freeze the trainer once it has begun, so
        # that however slowly the app comes up, x finds the run under way (SIGCONT after the stop).
        wait_until(lambda: state(run_dir).get("global_step", 0) >= 1, "training starts", run_dir)
        frozen = state(run_dir)["pid"]
        os.kill(frozen, signal.SIGSTOP)
        wait_until(lambda: "RUNNING" in term.screen(), "it shows the run training", run_dir)
        screen = term.screen()
        assert "run — tiny-bert" in screen and "BertForSequenceClassification · world 1" in screen
        assert "epoch 1/3" in screen and "x Stop" in screen
        term.keys("x")
        wait_until(lambda: "Stop run?" in term.screen(), "it asks to confirm", run_dir, timeout=10)
        term.keys("y")
        wait_until(lambda: (run_dir / Files.CONTROL).exists(), "the stop is asked", run_dir)
        os.kill(frozen, signal.SIGCONT)
        wait_until(
            lambda: state(run_dir).get("status") == "stopped" and "STOPPED" in term.screen(),
            "the run stops",
            run_dir,
        )
        final = state(run_dir)
        assert final["error"] is None and final["global_step"] < 90
        assert orjson.loads((run_dir / Files.RESULT).read_bytes())["status"] == "stopped"
        assert (run_dir / "checkpoints" / "last" / "adapter_model.safetensors").is_file()
        wait_until(
            lambda: trainer_liveness(final) == "gone", "the trainer exits", run_dir, timeout=30
        )
        assert "stopping: SIGINT received" in (run_dir / Files.LOG).read_text()
        term.keys("q")
        wait_until(lambda: not term.alive(), "the monitor quits", run_dir, timeout=15)
    finally:
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        term.close()


def test_the_cursor_line_in_tmux_at_80x24_shows_the_full_values(tmp_path):
    """A person's view of `c`: the readout is a line of its own under the charts, every value in
    it whole (the exact loss, the learning rate, the accuracy in %), nothing cut at 80 columns."""
    run = scenario(tmp_path / "exp-001", "long_running")
    last = orjson.loads((run.dir / Files.STEPS).read_bytes().splitlines()[-1])
    command = shlex.join([sys.executable, "-m", "entrenar_tui", "monitor", str(run.dir)])
    term = Terminal(tmp_path / "tmux.sock", command, tmp_path)
    try:
        wait_until(lambda: "└1" in term.screen(), "the charts are drawn", run.dir, timeout=60)
        assert "↻" in term.screen()  # the resume after epoch 4 is marked on the step charts
        term.keys("c")
        wait_until(lambda: "▏step 147" in term.screen(), "the cursor line shows", run.dir, 15)
        line = next(s for s in term.screen().splitlines() if "▏step 147" in s)
        expected = (
            f"▏step 147 · loss {last['loss']:.6g} · lr {last['lr']:.6g} · "
            f"acc {last['accuracy'] * 100:.6g}%"  # the short names: at 80 columns it fits
        )
        assert line.strip() == expected and "…" not in line
        term.keys("q")
        wait_until(lambda: not term.alive(), "the monitor quits", run.dir, timeout=15)
    finally:
        term.close()


def test_the_browser_at_80x24_in_tmux_shows_every_priority_column_and_duration(tmp_path):
    """The floor in a real terminal: the header line holds name, status, epoch, best acc and
    duration whole, and each row's numbers end where the header does (no horizontal scroll)."""
    root = tmp_path / "runs"
    for name in ("completed", "failed", "running"):
        scenario(root / f"exp-{name}", name)
    command = shlex.join([sys.executable, "-m", "entrenar_tui", "monitor", str(root)])
    term = Terminal(tmp_path / "tmux.sock", command, tmp_path)
    try:
        wait_until(lambda: "exp-running" in term.screen(), "the runs are listed", root, timeout=60)
        lines = term.screen().splitlines()
        header = next(line for line in lines if "name" in line and "status" in line)
        for label in ("name", "status", "epoch", "best acc", "best loss", "duration"):
            assert label in header, header
        row = next(line for line in lines if "exp-completed" in line)
        assert row.split()[-4:] == ["4/4", "80.3%", "0.4400", "0:40"], row
        assert len(header.rstrip()) <= 80 and header.rstrip().endswith("duration"), header
        assert len(row.rstrip()) == len(header.rstrip()), (header, row)
        term.keys("q")
        wait_until(lambda: not term.alive(), "the browser quits", root, timeout=15)
    finally:
        term.close()
