"""Pruning: a run the pruner stops ends `pruned` (state.json, result.json, sweep.json), keeps its
checkpoints and is never resumed; `sweep-trial` under SIGTERM leaves its run `stopped` and its
trial open, and run again for the same index continues the same run and trial."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, patience, run_cli, write_config, write_corpus
from tests.helpers import wait_until
from trainer.cli import main

optuna = pytest.importorskip("optuna")

PARAM = "train.learning_rate=loguniform(1e-4,1e-2)"


def read(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def seed_a_perfect_trial(root: Path, epochs: int) -> None:
    """A finished trial with val loss 0 at every epoch in the sweep's study: the median pruner
    (from one finished trial on) then prunes any real run after its first epoch."""
    from optuna.distributions import FloatDistribution

    from trainer.sweep.study import open_study

    root.mkdir()
    doc = {"name": root.name, "search": "tpe", "prune": "median", "objective": {"direction": "minimize"}}  # fmt: skip
    study = open_study(root, doc, 99)
    study.add_trial(
        optuna.trial.create_trial(
            params={"train.learning_rate": 1e-3},
            distributions={"train.learning_rate": FloatDistribution(1e-4, 1e-2, log=True)},
            value=0.0,
            intermediate_values={e: 0.0 for e in range(1, epochs + 1)},
            user_attrs={"index": 99},
        )
    )


EPOCHS = 20


@pytest.mark.slow
def test_a_pruned_run_ends_pruned_keeps_its_checkpoints_and_is_never_resumed(tmp_path, tiny_bert_dir, capsys):  # fmt: skip
    data = write_corpus(tmp_path / "train.jsonl", n=96)
    root = tmp_path / "exp"
    # 20 epochs: the trial reads epochs.json every POLL_S, and on a quiet box the tiny model's
    # epochs are shorter than that; the pruner's stop must land before the run's last epoch
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, root, train={"epochs": EPOCHS, "save_every": 1})  # fmt: skip
    seed_a_perfect_trial(root, EPOCHS)
    argv = ["sweep", str(cfg), "--search", "tpe", "--trials", "1", "--prune", "median", "--param", PARAM]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    doc = read(root / "sweep.json")
    run = doc["runs"][0]
    assert doc["prune"] == "median" and doc["status"] == "completed"
    assert run["status"] == "pruned" and 1 <= run["pruned_at_epoch"] < EPOCHS
    assert run["exit_code"] == 0
    run_dir = root / run["dir"]
    state, result = read(run_dir / "state.json"), read(run_dir / "result.json")
    assert state["status"] == result["status"] == "pruned"
    assert len(result["epochs"]) < EPOCHS  # stopped before its last epoch
    assert run["value"] == pytest.approx(min(e["val_loss"] for e in result["epochs"]))
    assert (run_dir / "checkpoints" / "last").is_dir() and (run_dir / "checkpoints" / "epoch-1").is_dir()  # fmt: skip
    assert not (run_dir / "control.json").exists()  # honoured, removed
    from optuna.trial import TrialState

    from trainer.sweep.study import open_study

    states = {t.user_attrs["index"]: t.state for t in open_study(root, doc, 0).get_trials()}
    assert states == {99: TrialState.COMPLETE, 0: TrialState.PRUNED}
    # never resumed: not by a rerun of the sweep, not by --auto-resume on the run itself
    log = (run_dir / "train.log").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0
    assert (run_dir / "train.log").read_bytes() == log
    assert read(root / "sweep.json")["runs"][0]["status"] == "pruned"
    values = [f"{k}={v}" for k, v in run["values"].items()]
    proc = run_cli(str(cfg), *values, f"output.dir={run_dir}", "--auto-resume")
    assert proc.returncode == 0, proc.stderr
    assert "pruned by its sweep (final); not resumed" in proc.stderr
    assert read(run_dir / "state.json") == state and read(run_dir / "run.json")["resumed_from"] in (None, [])  # fmt: skip


def sweep_trial(root: Path, index: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "sweep-trial", str(root), "--index", str(index)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_sigterm_to_a_sweep_trial_leaves_its_run_stopped_and_a_rerun_continues_the_same_trial(tmp_path, tiny_bert_dir, capsys):  # fmt: skip
    data = write_corpus(tmp_path / "train.jsonl", n=160)
    root = tmp_path / "exp"
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, root,
                       train={"epochs": 2, "batch_size": 4, "save_every": 1, "log_interval": 1})  # fmt: skip
    # --target 100 (any val loss reaches it): the sweep plans 2 trials and runs only the first
    argv = ["sweep", str(cfg), "--search", "tpe", "--trials", "2", "--param", PARAM, "--target", "100"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    doc = read(root / "sweep.json")
    assert [r["status"] for r in doc["runs"]] == ["completed", "pending"] and doc["target"] == 100
    # a scheduler's task for the second trial, cancelled mid-run (target lifted for it)
    doc["target"] = None
    (root / "sweep.json").write_bytes(orjson.dumps(doc))
    run_dir = root / doc["runs"][1]["dir"]
    proc = sweep_trial(root, 1)

    def training() -> bool:
        try:
            state = read(run_dir / "state.json")
        except (OSError, orjson.JSONDecodeError):
            return False
        return state.get("status") == "running" and (state.get("global_step") or 0) >= 1

    wait_until(training, "the trial's run trains", run_dir, timeout=300)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 128 + signal.SIGTERM, err
    state = read(run_dir / "state.json")
    assert state["status"] == "stopped" and read(run_dir / "result.json")["status"] == "stopped"
    entry = read(root / "sweep.json")["runs"][1]
    assert entry["status"] == "stopped" and entry["values"]
    from optuna.trial import TrialState

    from trainer.sweep.study import open_study

    def trials() -> dict:
        return {t.user_attrs["index"]: t for t in open_study(root, doc, 0).get_trials()}

    before = trials()[1]
    assert before.state == TrialState.RUNNING
    # the task requeued: the same index continues the same trial and resumes the same run
    again = sweep_trial(root, 1)
    _out, err = again.communicate(timeout=patience(300))
    assert again.returncode == 0, err
    after = trials()
    assert len(after) == 2 and after[1].number == before.number and after[1].params == before.params
    assert after[1].state == TrialState.COMPLETE
    assert read(run_dir / "run.json")["resumed_from"]  # resumed, not started over
    entry = read(root / "sweep.json")["runs"][1]
    assert entry["status"] == "completed" and entry["values"] == {"train.learning_rate": before.params["train.learning_rate"]}  # fmt: skip


def test_the_monitor_shows_a_pruned_run_dimmed_and_final(tmp_path, capsys):
    from entrenar_tui.app import MonitorApp
    from entrenar_tui.cli import main as tui_main
    from entrenar_tui.widgets.status_badge import StatusBadge
    from tests.fake_run import FakeRun
    from tests.helpers import run_app, until

    run = FakeRun(tmp_path / "root" / "exp-1").start()
    run.play_epoch()
    run.finish("pruned")
    assert tui_main(["monitor", str(tmp_path / "root"), "--once"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows == {"exp-1": "pruned"}
    app = MonitorApp(run.dir, probe=lambda _state: "gone")

    async def body(pilot):
        badge = app.screen.query_one(StatusBadge)
        await until(pilot, lambda: badge.status == "pruned", "the badge says pruned")
        assert str(badge.render()) == "⊘ PRUNED" and badge.has_class("-pruned")
        assert not badge.has_class("-stopped")

    run_app(app, body)
