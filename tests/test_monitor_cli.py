"""`entrenar-tui` as a user runs it: plain mode for scripts, bad input, and no torch on the way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from textual.widgets import Static

from entrenar_tui.app import MonitorApp
from entrenar_tui.output.plain import summary
from tests.conftest import patience
from tests.fake_run import FakeRun, scenario
from tests.helpers import run_app, until
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.units import flops_rate

REPO = Path(__file__).resolve().parent.parent


def tui(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run `entrenar-tui ARGS` with stdout a pipe (not a terminal), as cron or CI would."""
    return subprocess.run(
        [sys.executable, "-m", "entrenar_tui", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=patience(60),
    )


def test_the_monitor_imports_no_torch():
    code = (
        "import sys, entrenar_tui.cli, entrenar_tui.app, entrenar_tui.output.plain, trainer.monitor.reader, "
        "trainer.monitor.control, trainer.config\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=patience(60)
    )
    assert result.returncode == 0, result.stderr


def test_once_prints_status_progress_metrics_and_the_epoch_table(tmp_path):
    run = scenario(tmp_path / "exp", "completed")
    result = tui("monitor", str(run.dir), "--once")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "status    completed" in out
    assert "global 80/80 (100.0%)" in out
    assert "best      epoch 4 · val loss 0.4400 · val acc 80.3%" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("*", "1", "2", "3", "4"))]
    assert len(rows) == 4 and rows[-1].startswith("*") and "0.4400" in rows[-1]


def test_once_prints_the_model_flops_rate_and_mfu_against_the_peak(trained_run, tmp_path):
    """A real run's whole-run rate and MFU once it is over (result.json), and the peak it measured;
    a run whose GPU the peak table lacks says MFU is unknown (its device name made printable)."""
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    result, info = (orjson.loads((run / f).read_bytes()) for f in ("result.json", "run.json"))
    peak = info["peak_flops"]
    assert (
        f"speed     {flops_rate(result['flops_per_sec'])} · MFU {result['mfu']:.1%} (run) · peak "
        f"{flops_rate(peak['flops_per_sec'])} fp32 ({peak['source']})\n"
    ) in summary(run)
    info["peak_flops"] = {
        "flops_per_sec": None,
        "precision": "bf16",
        "source": None,
        "device": "B\x1b[2J",
    }
    atomic_write_json(run / "run.json", info)
    atomic_write_json(run / "result.json", {**result, "mfu": None})
    assert " (run) · MFU unknown (no peak for B\\x1b[2J)\n" in summary(run)


def test_the_run_screen_and_once_show_the_same_mfu_for_a_finished_run(tmp_path):
    """One function (formatting.run_speed) says which rate a run shows: the whole run's once it is
    over, on the run screen's status row and in `--once` alike."""
    run = FakeRun(tmp_path / "exp", step_flops=int(19e9), peak_flops=50e9).start()
    for _ in range(run.epochs):
        run.play_epoch()
    run.finish()
    result = orjson.loads((run.dir / "result.json").read_bytes())
    state = orjson.loads((run.dir / "state.json").read_bytes())
    assert f"{result['mfu']:.1%}" != f"{state['mfu']:.1%}"  # the two rates tell apart here
    app = MonitorApp(run.dir, probe=lambda _s: "gone", tick_interval=3600)
    row: list[str] = []

    async def body(pilot):
        widget = app.screen.query_one("#throughput", Static)
        await until(pilot, lambda: widget.display and str(widget.render()), "the MFU shows")
        row.append(str(widget.render()))

    run_app(app, body, size=(120, 24))  # (at 80 the row has room for the MFU alone)
    once = tui("monitor", str(run.dir), "--once")
    assert once.returncode == 0, once.stderr
    mfu = f"MFU {result['mfu']:.1%} (run)"
    assert mfu in row[0] and f"speed     {row[0]}" in once.stdout
    assert (
        f"speed     {flops_rate(result['flops_per_sec'])} · {mfu} · peak 50 GFLOP/s" in once.stdout
    )


def test_without_a_terminal_the_monitor_prints_the_summary_and_exits(tmp_path):
    run = scenario(tmp_path / "exp", "failed")
    result = tui("monitor", str(run.dir))  # no --once: stdout is not a TTY
    assert result.returncode == 0
    assert "status    failed" in result.stdout
    assert "error     failed: non-finite loss (nan) at epoch 2 step 6" in result.stdout
    assert "error     loss NaN/Inf at 1 step" in result.stdout


def test_a_run_whose_trainer_is_gone_is_summarized_as_crashed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = FakeRun(tmp_path / "exp", pid=dead.pid).start()
    run.train_step()
    out = summary(run.dir)
    assert "status    crashed" in out and f"trainer pid {dead.pid} is gone" in out


def test_a_missing_run_directory_is_bad_input(tmp_path):
    result = tui("monitor", str(tmp_path / "nope"), "--once")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"entrenar-tui: error: {tmp_path / 'nope'}: no such run directory"
    )


def test_run_with_a_bad_config_says_where_one_line_a_mistake(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[model]\npath = "m"\n[data]\ntrain = "t.jsonl"\n[output]\ndir = "out"\n[train]\nepoch = 3\n'
    )
    result = tui("run", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [  # one line a mistake, the data's with the config's
        f"entrenar-tui: error: {config}: unknown key train.epoch (did you mean train.epochs?)",
        f"entrenar-tui: error: {tmp_path / 't.jsonl'}: data file not found",
    ]
    assert not (tmp_path / "out").exists()


def test_run_names_every_mistake_of_config_and_data_and_starts_nothing(tmp_path):
    """`entrenar-tui run` checks what the trainer checks before it makes the run folder: a wrong
    key and a CSV whose columns have other names are three lines in one run, and no `out`."""
    data = tmp_path / "tickets.csv"
    data.write_text("text,category\n" + "".join(f"ticket {i},billing\n" for i in range(10)))
    config = tmp_path / "c.toml"
    config.write_text(
        f'[model]\npath = "m"\n[data]\ntrain = "{data}"\n[output]\ndir = "out"\n[train]\nepoch = 2\n'
    )
    result = tui("run", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"entrenar-tui: error: {config}: unknown key train.epoch (did you mean train.epochs?)",
        f"entrenar-tui: error: {data}:1: no column 'input' (columns: text, category)",
        f"entrenar-tui: error: {data}:1: no column 'label' (columns: text, category)",
    ]
    assert not (tmp_path / "out").exists()


def test_run_takes_overrides_after_a_flag(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[model]\npath = "m"\n[data]\ntrain = "t.jsonl"\n[output]\ndir = "out"\n')
    result = tui("run", str(config), "--poll", "train.epochs=oops")  # checked as an override
    assert result.returncode == 2, result.stderr
    assert "train.epochs must be an integer, got 'oops'" in result.stderr
    assert not (tmp_path / "out").exists()
    result = tui("run", str(config), "--poll", "--frobnicate")
    assert result.returncode == 2 and "unrecognized arguments: --frobnicate" in result.stderr


def test_run_never_starts_over_a_run_directory_that_holds_a_run(tmp_path):
    scenario(tmp_path / "out", "completed")
    config = tmp_path / "c.toml"
    config.write_text('[model]\npath = "m"\n[data]\ntrain = "t.jsonl"\n[output]\ndir = "out"\n')
    result = tui("run", str(config))
    assert result.returncode == 2
    assert "already holds a run" in result.stderr
    assert not (tmp_path / "out" / "train.log").exists()


def test_run_without_a_terminal_starts_the_trainer_detached_and_returns(tmp_path):
    """The trainer starts in its own session with its output in train.log; here it stops at once
    on a missing model folder, before writing anything (train.log says why)."""
    import psutil

    config = tmp_path / "c.toml"
    config.write_text('[model]\npath = "m"\n[data]\ntrain = "t.jsonl"\n[output]\ndir = "out"\n')
    rows = [orjson.dumps({"input": f"text {i}", "label": "ab"[i % 2]}) for i in range(8)]
    (tmp_path / "t.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    result = tui("run", str(config), "train.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("entrenar-tui: started ")
    pid = int(result.stdout.split("(pid ")[1].split(")")[0])
    if psutil.pid_exists(pid):
        psutil.wait_procs([psutil.Process(pid)], timeout=patience(120))
    log = (tmp_path / "out" / "train.log").read_text()
    assert f"{config} train.epochs=1" in log.splitlines()[1]  # the command, as typed
    last = log.splitlines()[-1]
    assert last.startswith("entrenar-train: error: model.path ") and "no such directory" in last
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.log"]


# -- alerts ----------------------------------------------------------------------------------------


def spiked_and_completed(run_dir: Path) -> FakeRun:
    """A finished run with a loss spike at step 21 in its history."""
    run = FakeRun(run_dir, epochs=2).start()
    run.play_epoch()
    run.train_step(loss=9.0)
    for _ in range(run.spe - run.step):
        run.train_step()
    run.end_epoch()
    run.finish("completed")
    return run


def test_once_prints_the_active_alerts_after_the_summary_newest_first(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTRENAR_TUI_CONFIG_DIR", str(tmp_path / "config"))
    run = spiked_and_completed(tmp_path / "exp")
    result = tui("monitor", str(run.dir), "--once")
    assert result.returncode == 0 and result.stderr == ""
    *summary_lines, blank, finished, spike = result.stdout.splitlines()
    assert summary_lines[-1].startswith("*   2") and blank == ""  # after the epoch table
    assert finished == "alert     finished: the run completed at step 40"
    assert spike.startswith("alert     spike: loss spiked to 9.0000 at step 21 (recent average 0.")


def test_once_follows_the_thresholds_in_the_settings_and_prints_nothing_when_none(
    tmp_path, monkeypatch
):
    config = tmp_path / "config"
    config.mkdir()
    monkeypatch.setenv("ENTRENAR_TUI_CONFIG_DIR", str(config))
    run = spiked_and_completed(tmp_path / "exp")
    (config / "settings.json").write_bytes(
        orjson.dumps({"alerts": {"spike_z": 1000, "finished": False}})
    )
    quiet = tui("monitor", str(run.dir), "--once")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "alert" not in quiet.stdout and quiet.stdout.splitlines()[-1].startswith("*   2")
    (config / "settings.json").write_bytes(orjson.dumps({"alerts": {"spike_z": -1}}))
    warned = tui("monitor", str(run.dir), "--once")
    assert warned.returncode == 0
    assert warned.stderr == (
        f"entrenar-tui: warning: settings: bad values in {config / 'settings.json'}: "
        "alerts.spike_z (using 6.0)\n"
    )
    assert "alert     spike: loss spiked to 9.0000 at step 21" in warned.stdout


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["monitor", "RUN", "--notify-cmd", "notify-send 'oops"], "No closing quotation"),
        (["run", "config.toml", "--notify-cmd", ""], "empty command"),
        (["--notify-cmd", '  "  '], "No closing quotation"),
        (["serve", "RUN", "--notify-cmd", "   "], "empty command"),
    ],
)
def test_a_bad_notify_command_is_one_line_naming_the_option(tmp_path, args, why):
    run = scenario(tmp_path / "exp", "completed")
    result = tui(*(str(run.dir) if a == "RUN" else a for a in args), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert line.startswith(f"entrenar-tui: error: --notify-cmd: {why}") and "\n" not in line
