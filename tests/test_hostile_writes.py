"""Nothing the trainer or the monitor writes in a run directory goes through a link someone planted
there, into a FIFO, or into a second name of a file elsewhere.

* `s` starts a new run in a directory it makes itself (a NAME-k that exists in any form is
  skipped) and creates its config.toml exclusively;
* `r` (and `entrenar-tui run`) append to train.log only when it is a plain file of the run;
* `--resume` appends to steps.jsonl only when it is a plain file of the run, and resumes only
  from a checkpoint folder of the run; a fresh run refuses a `checkpoints` that is a link;
* whole-file writes (state.json, control.json, ...) replace a link instead of following it.
Each refusal is one line naming the file, before anything is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from entrenar_tui.app import MonitorApp
from entrenar_tui.controller import Controller
from entrenar_tui.screens.confirm import ConfirmScreen
from tests.conftest import REPO, run_cli, write_config
from tests.fake_run import FakeRun
from tests.helpers import copy_run, run_app, run_model, until
from trainer.monitor.control import request_stop
from trainer.monitor.schema import Files
from trainer.monitor.writer import MonitorWriter

VICTIM_TEXT = b"someone else's file\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside every run directory that nothing may write."""
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(VICTIM_TEXT)
    return path


# ------------------------------------------------------------------------------ s: a fresh directory


def stopped_run(tmp_path: Path) -> FakeRun:
    run = FakeRun(tmp_path / "exp").start()
    run.train_step()
    run.finish("stopped")
    return run


@pytest.mark.parametrize(
    "prepared", ["a folder with a config.toml link", "a link to a folder", "a dangling link"]
)
def test_s_never_reuses_a_sibling_directory_nor_writes_through_a_link(tmp_path, victim, prepared):
    run = stopped_run(tmp_path)
    sibling = tmp_path / "exp-2"
    if prepared == "a folder with a config.toml link":
        sibling.mkdir()
        (sibling / "config.toml").symlink_to(victim)
    elif prepared == "a link to a folder":
        sibling.symlink_to(victim.parent, target_is_directory=True)
    else:
        sibling.symlink_to(tmp_path / "nowhere")
    launched: list[tuple[list[str], Path]] = []

    def launch(argv, run_dir, cwd=None):
        launched.append((argv, Path(run_dir)))
        return subprocess.Popen([sys.executable, "-c", "pass"])

    app = MonitorApp(run.dir, controller=Controller(launch=launch), probe=lambda _s: "gone")
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        await until(
            pilot, lambda: run_model(app).status == "stopped" and run_model(app).run, "it shows"
        )
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: launched, "the start")

    run_app(app, body, size=(120, 36))
    assert victim.read_bytes() == VICTIM_TEXT
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]
    assert launched[0][1] == tmp_path / "exp-3"  # exp-2 exists in some form: skipped
    config = tmp_path / "exp-3" / "config.toml"
    assert config.is_file() and not config.is_symlink()
    assert f'dir = "{tmp_path / "exp-3"}"' in config.read_text()


def test_a_new_runs_config_is_never_written_over_a_file_that_appeared(tmp_path, victim):
    """Between the plan (the dialog) and the start, someone makes the chosen directory: the start
    is refused, nothing written there."""
    from entrenar_tui.controller import Refused
    from entrenar_tui.model.run import RunModel
    from entrenar_tui.model.validation import clean_run

    run = stopped_run(tmp_path)
    model = RunModel(run.dir)
    model.run, _ = clean_run(orjson.loads((run.dir / Files.RUN).read_bytes()))
    model.state = orjson.loads((run.dir / Files.STATE).read_bytes())
    controller = Controller(launch=lambda *a, **k: pytest.fail("nothing may start"))
    plan = controller.plan_start(model)
    plan.run_dir.mkdir()
    (plan.run_dir / "config.toml").symlink_to(victim)
    with pytest.raises(Refused, match="appeared meanwhile"):
        controller.start(plan, model)
    assert victim.read_bytes() == VICTIM_TEXT


# ------------------------------------------------------------------------------ r: train.log


def plant(path: Path, how: str, victim: Path) -> None:
    if how == "symlink":
        path.symlink_to(victim)
    elif how == "hardlink":
        os.link(victim, path)
    elif how == "fifo":
        os.mkfifo(path)
    else:
        raise ValueError(how)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["symlink", "hardlink", "fifo"])
def test_r_never_appends_through_a_planted_train_log(tmp_path, victim, how):
    run = stopped_run(tmp_path)
    plant(run.dir / Files.LOG, how, victim)
    started: list[str] = []
    controller = Controller(
        command=lambda *a: started.append("x") or [sys.executable, "-c", "pass"]
    )
    app = MonitorApp(run.dir, controller=controller, probe=lambda _s: "gone")
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]

    async def body(pilot):
        await until(pilot, lambda: run_model(app).status == "stopped", "it shows")
        await pilot.press("r")
        await until(pilot, lambda: notes, "a notification")

    run_app(app, body, size=(120, 36))
    what = {"symlink": "is a symbolic link", "hardlink": "has 2 hard links", "fifo": "is a FIFO"}[
        how
    ]
    assert notes[-1].startswith(f"failed: train.log {what}"), notes
    assert run_model(app).request is None  # nothing started
    assert victim.read_bytes() == VICTIM_TEXT


@pytest.mark.timeout(120)
def test_entrenar_tui_run_never_appends_through_a_planted_train_log(tmp_path, victim):
    out = tmp_path / "run"
    out.mkdir()
    (out / Files.LOG).symlink_to(victim)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[model]\npath = "{tmp_path}"\n[data]\ntrain = "{tmp_path}/t.jsonl"\n'
                   f'[output]\ndir = "{out}"\n')  # fmt: skip
    (tmp_path / "t.jsonl").write_text(
        '{"input": "ls", "label": "safe"}\n{"input": "rm -rf /", "label": "unsafe"}\n'
    )  # (data the trainer would take: the run gets as far as its train.log)
    r = subprocess.run(
        [sys.executable, "-m", "entrenar_tui", "run", str(cfg)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 2, r
    assert (
        r.stderr.strip() == f"entrenar-tui: error: {out}: train.log is a symbolic link; not written"
    )
    assert victim.read_bytes() == VICTIM_TEXT


# ------------------------------------------------------------------------------ the trainer


def one_line_error(r: subprocess.CompletedProcess, expected: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("entrenar-train: error: ") and expected in line, r.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["symlink", "hardlink", "fifo"])
def test_resume_never_appends_steps_through_a_planted_file(one_epoch_run, tmp_path, victim, how):
    run = copy_run(one_epoch_run, tmp_path / "run", checkpoints=True)
    steps = run / Files.STEPS
    victim.write_bytes(steps.read_bytes())  # someone's file, with the run's lines in it
    before = victim.read_bytes()
    steps.unlink()
    plant(steps, how, victim)
    state = (run / Files.STATE).read_bytes()
    r = run_cli("--resume", str(run), "train.epochs=2", timeout=120)
    what = {"symlink": "is a symbolic link", "hardlink": "has 2 hard links", "fifo": "is a FIFO"}[
        how
    ]
    one_line_error(r, f"{steps} {what}")
    assert victim.read_bytes() == before
    assert (run / Files.STATE).read_bytes() == state  # nothing written


@pytest.mark.timeout(300)
def test_a_fresh_run_refuses_a_checkpoints_link(tmp_path, tiny_bert_dir, small_corpus):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".tmp-precious").mkdir(parents=True)  # what the trainer tidies in checkpoints/
    (elsewhere / ".tmp-precious" / "data").write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    (run / Files.CHECKPOINTS).symlink_to(elsewhere, target_is_directory=True)
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, small_corpus, run, train={"epochs": 1})
    r = run_cli(str(cfg), timeout=120)
    one_line_error(r, f"{run / Files.CHECKPOINTS} is a symbolic link, not a directory of the run")
    assert (elsewhere / ".tmp-precious" / "data").read_text() == "keep"
    assert sorted(p.name for p in elsewhere.iterdir()) == [".tmp-precious"]
    assert sorted(p.name for p in run.iterdir()) == [Files.CHECKPOINTS]  # nothing written


@pytest.mark.timeout(300)
def test_resume_refuses_a_checkpoint_that_is_a_link(one_epoch_run, tmp_path):
    run = copy_run(one_epoch_run, tmp_path / "run", checkpoints=True)
    last = run / Files.CHECKPOINTS / "last"
    elsewhere = tmp_path / "elsewhere-last"
    shutil.move(last, elsewhere)
    last.symlink_to(elsewhere, target_is_directory=True)
    state = (run / Files.STATE).read_bytes()
    r = run_cli("--resume", str(run), "train.epochs=2", timeout=120)
    one_line_error(r, f"{last} is a symbolic link")
    assert (run / Files.STATE).read_bytes() == state


def test_whole_file_writes_replace_a_link_instead_of_following_it(tmp_path, victim):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in (Files.STATE, Files.RUN, Files.CONTROL):
        (run_dir / name).symlink_to(victim)
    writer = MonitorWriter(run_dir)
    writer.update_state(status="running")
    writer.write_run({"name": "x"})
    request_stop(run_dir)
    assert victim.read_bytes() == VICTIM_TEXT
    for name in (Files.STATE, Files.RUN, Files.CONTROL):
        path = run_dir / name
        assert path.is_file() and not path.is_symlink()
        assert orjson.loads(path.read_bytes())["schema"] == f"entrenar-tui/{name.split('.')[0]}"
