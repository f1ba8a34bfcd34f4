"""A run directory's *name* (and a label, and anything else read from outside) never reaches the
terminal as an escape sequence: not through the run header or the terminal title, the browser's
header and rows, the start dialog, the error lines of `entrenar-tui run`, `monitor` and `export`,
nor through `entrenar-train eval`'s table or the trainer's own progress lines. Everything goes
through one helper, trainer.monitor.text.printable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from rich.segment import Segment

from entrenar_tui.app import MonitorApp
from entrenar_tui.controller import Controller
from entrenar_tui.screens.confirm import ConfirmScreen
from entrenar_tui.screens.monitor import MonitorScreen
from entrenar_tui.widgets.runs_table import RunsTable
from tests.conftest import REPO, write_config
from tests.fake_run import FakeRun
from tests.helpers import run_app, run_model, until
from trainer.cli import main
from trainer.monitor.schema import Files
from trainer.monitor.text import printable
from trainer.monitor.writer import MonitorWriter

# OSC 0 (sets the terminal's title), CSI (clears the screen), C1 CSI, a bidi override, a newline
EVIL_NAME = "exp\x1b]0;pwned\x07\x1b[2J\x9b31m\u202egnp.\nx"
SHOWN_NAME = printable(EVIL_NAME)
CONTROL = {chr(c) for c in range(32)} | {chr(c) for c in range(0x7F, 0xA0)} | {"\u202e"}


def no_control(text: str, allowed: str = "") -> None:
    bad = sorted((CONTROL - set(allowed)) & set(text))
    assert not bad, f"control characters reached the terminal: {bad!r} in {text!r}"


def segments(app: MonitorApp) -> Iterator[Segment]:
    for widget in app.screen.query("*"):
        if widget.display and widget.size.area:
            for y in range(widget.size.height):
                yield from widget.render_line(y)


def drawn(app: MonitorApp) -> str:
    return "".join(s.text for s in segments(app))


def cli(*args: str, module: str = "entrenar_tui") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


# ------------------------------------------------------------------------------ the app


def test_the_run_header_and_title_show_a_directory_name_printable(tmp_path):
    """No run.json yet: the header names the run by its directory."""
    run_dir = tmp_path / EVIL_NAME
    MonitorWriter(run_dir).update_state(status="initializing")
    app = MonitorApp(run_dir, probe=lambda _s: "alive")

    async def body(pilot):
        await until(pilot, lambda: run_model(app).state is not None, "the state shows")
        await pilot.pause()
        assert app.title == SHOWN_NAME and run_model(app).name == SHOWN_NAME
        no_control(app.title + app.sub_title)
        no_control(drawn(app))

    run_app(app, body, size=(160, 40))


def test_the_browser_shows_a_root_and_runs_with_escape_names_printable(tmp_path):
    root = tmp_path / f"root-{EVIL_NAME}"
    FakeRun(root / EVIL_NAME).start().train_step()
    app = MonitorApp(root=root, probe=lambda _s: "alive")

    async def body(pilot):
        table = app.screen.query_one(RunsTable)
        await until(
            pilot, lambda: table.row_keys() and SHOWN_NAME in drawn(app), "the run is listed"
        )
        no_control(app.screen.title + app.screen.sub_title)
        no_control(drawn(app))
        table.move_cursor(row=0)
        await pilot.press("enter")  # open it: the run header
        await until(
            pilot,
            lambda: isinstance(app.screen, MonitorScreen) and run_model(app).run is not None,
            "the run opens",
            timeout=60,
        )
        await pilot.pause()
        no_control(app.title + app.sub_title)
        no_control(drawn(app))

    run_app(app, body, size=(160, 40))


def test_the_start_dialog_names_the_new_directory_printable(tmp_path):
    run = FakeRun(tmp_path / EVIL_NAME).start()
    run.train_step()
    run.finish("stopped")
    app = MonitorApp(
        run.dir, controller=Controller(launch=lambda *a, **k: None), probe=lambda _s: "gone"
    )

    async def body(pilot):
        await until(
            pilot, lambda: run_model(app).status == "stopped" and run_model(app).run, "it shows"
        )
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.pause()
        text = drawn(app)
        assert f"{SHOWN_NAME}-2" in "".join(text.split())
        no_control(text)

    run_app(app, body, size=(160, 40))


# ------------------------------------------------------------------------------ the command lines


def test_monitor_error_lines_name_a_directory_printable(tmp_path):
    missing = tmp_path / EVIL_NAME
    r = cli("monitor", str(missing), "--once")
    assert r.returncode == 2
    assert r.stderr == f"entrenar-tui: error: {printable(missing)}: no such run directory\n"
    no_control(r.stderr, allowed="\n")
    r = cli("monitor", str(tmp_path), "--once")  # a root with no runs
    no_control(r.stdout + r.stderr, allowed="\n")


def test_run_notices_name_a_directory_printable(tmp_path):
    out = tmp_path / EVIL_NAME
    FakeRun(out).start()  # it already holds a run
    cfg = tmp_path / "c.toml"
    (tmp_path / "t.jsonl").write_text('{"input": "ls", "label": "safe"}\n')
    cfg.write_text(
        f"[model]\npath = {json.dumps(str(tmp_path))}\n[data]\ntrain = "
        f"{json.dumps(str(tmp_path / 't.jsonl'))}\n[output]\ndir = {json.dumps(str(out))}\n"
    )
    r = cli("run", str(cfg))
    assert r.returncode == 2
    assert f"{printable(out)} already holds a run" in r.stderr
    no_control(r.stdout + r.stderr, allowed="\n")


def test_export_error_lines_name_a_directory_printable(tmp_path):
    run = FakeRun(tmp_path / EVIL_NAME).start()
    (run.dir / Files.EPOCHS).write_text("{not json")
    r = cli("export", str(run.dir), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "epochs.json: not valid JSON" in r.stderr
    assert printable(run.dir) in r.stderr
    no_control(r.stdout + r.stderr, allowed="\n")


# ------------------------------------------------------------------------------ the trainer


@pytest.mark.timeout(600)
def test_eval_and_the_trainer_print_labels_and_names_printable(tmp_path, tiny_bert_dir, capsys):
    labels = ["\x1b]0;pwned\x07safe", "\u202eefasnu", "\x1b[31mred"]
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"input": f"cmd {i} {'rm -rf' if i % 3 == 0 else 'ls'}", "label": labels[i % 3]}
            )
            + "\n"
            for i in range(48)
        )
    )
    out = tmp_path / EVIL_NAME
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, out, train={"epochs": 1})
    assert main([str(cfg)]) == 0
    trained = capsys.readouterr()
    no_control(trained.out + trained.err, allowed="\n")
    assert f"run directory  {printable(out)}" in trained.err
    assert main(["eval", str(out / "checkpoints" / "last"), "--data", str(data),
                 "--out", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    shown = capsys.readouterr()
    no_control(shown.out + shown.err, allowed="\n")
    for label in labels:
        assert printable(label) in shown.out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert sorted(report["confusion_matrix"]["labels"]) == sorted(labels)  # the data kept as is
