"""A run directory is untrusted input: it may be copied from elsewhere, edited by hand, or made
to attack whoever opens it. What it says must never

* reach the terminal as control sequences (clear the screen, ring the bell, reorder the text) or
  apply as Textual/Rich markup (styles, links) — in the app or in `--once`;
* crash the app (markup such as "[/]" used to: MarkupError);
* lead the monitor to read, write, delete or launch anything outside the run directory (paths
  inside the files are only ever displayed);
* get a pickle loaded, anywhere in the product (a source scan: no pickle, no torch.load).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from rich.segment import Segment

from entrenar_tui.app import MonitorApp
from entrenar_tui.controller import Controller, to_toml
from entrenar_tui.model.validation import clean_epochs, clean_run, clean_state
from entrenar_tui.output.plain import summary
from entrenar_tui.screens.confirm import ConfirmScreen
from entrenar_tui.screens.help import HelpScreen
from entrenar_tui.widgets.problems_line import ProblemsLine
from entrenar_tui.widgets.status_badge import StatusBadge
from tests.conftest import patience
from tests.fake_run import FakeRun
from tests.helpers import run_app, run_model, until
from trainer.monitor.schema import Files
from trainer.monitor.text import printable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
SIZE = (160, 40)

MARKUP = "[bold red]x[/]"
LINK = "[link=file:///etc/passwd]click[/link]"
CLEAR = "\x1b[2J"
BELL = "\x07"
EVIL = f"{MARKUP} {LINK} {CLEAR}{BELL} [/] \u202eevil"
SHOWN = printable(EVIL)  # what the screen must show: the same text, control characters escaped
CONTROL_CHARS = {chr(c) for c in range(32)} | {"\x7f", "\u202e"}


def segments(app: MonitorApp) -> Iterator[Segment]:
    """Every segment every visible widget of the current screen draws (toasts included)."""
    for widget in app.screen.query("*"):
        if not widget.display or not widget.size.area:
            continue
        for y in range(widget.size.height):
            yield from widget.render_line(y)


def squash(text: str) -> str:
    """Without whitespace: text wrapped over lines (padded to the widget) still compares."""
    return "".join(text.split())


def assert_nothing_applied(app: MonitorApp) -> str:
    """No control character reaches the terminal, no link, no style from the files' markup; the
    markup shows as the literal text it is. Returns the screen's text."""
    drawn = list(segments(app))
    text = "".join(s.text for s in drawn)
    assert not CONTROL_CHARS & set(text), [c for c in text if c in CONTROL_CHARS]
    assert not [s for s in drawn if s.style is not None and s.style.link], "a link was applied"
    for s in drawn:  # the "x" of [bold red]x[/] is never drawn bold red
        if s.text == "x" and s.style is not None:
            assert not (s.style.bold and s.style.color and s.style.color.name == "red")
    return text


def evil_run(tmp_path: Path, **kwargs) -> FakeRun:
    """A run whose every text field is EVIL: name, model path and architecture, labels, host,
    config values and keys; the caller adds an error text or a train.log line."""
    run = FakeRun(tmp_path / "exp", model_path=f"/models/{EVIL}/qwen", architecture=EVIL, **kwargs)
    run.start()
    info = orjson.loads((run.dir / Files.RUN).read_bytes())
    info["name"] = EVIL
    info["data"]["labels"] = [EVIL, "safe"]
    info["config"]["data"] = {"train": f"/data/{EVIL}.jsonl", "labels": [EVIL, "safe"]}
    info["config"]["model"][EVIL] = EVIL
    (run.dir / Files.RUN).write_bytes(orjson.dumps(info))
    run.play_epoch()
    run.train_step()
    return run


# ------------------------------------------------------------------------------------ the app


def test_a_failed_runs_texts_show_literally(tmp_path):
    run = evil_run(tmp_path)
    run.finish("failed", error=f"CUDA error: {EVIL}")
    app = MonitorApp(run.dir, probe=lambda _s: "gone")

    async def body(pilot):
        await until(
            pilot, lambda: run_model(app).status == "failed" and run_model(app).run, "it shows"
        )
        await pilot.pause()
        text = assert_nothing_applied(app)
        line = str(app.screen.query_one(ProblemsLine).render())
        assert line.startswith(f"✗ failed: CUDA error: {SHOWN}")
        assert MARKUP in text and LINK in text and "\\x1b[2J\\x07" in text and "\\u202eevil" in text
        assert app.title.startswith(MARKUP)  # the header: the run's name, literally
        assert run_model(app).model_names == ["qwen", SHOWN]  # (the header shows what fits)
        await pilot.press("question_mark")  # the help lists the problems: text, not Markdown
        assert isinstance(app.screen, HelpScreen)
        await pilot.pause()
        assert squash(f"failed: CUDA error: {SHOWN}") in squash(assert_nothing_applied(app))

    run_app(app, body, size=SIZE, notifications=True)


def test_a_crashed_runs_log_line_shows_literally(tmp_path):
    run = evil_run(tmp_path)
    (run.dir / Files.LOG).write_text(f"Traceback ...\nRuntimeError: {EVIL}\n")
    app = MonitorApp(run.dir, probe=lambda _s: "gone")

    async def body(pilot):
        await until(pilot, lambda: run_model(app).status == "crashed", "it shows crashed")
        await pilot.pause()
        assert_nothing_applied(app)
        line = str(app.screen.query_one(ProblemsLine).render())
        assert f"· train.log: RuntimeError: {SHOWN}" in line

    run_app(app, body, size=SIZE, notifications=True)


def test_a_status_of_any_text_is_shown_not_styled(tmp_path):
    run = evil_run(tmp_path)
    state = orjson.loads((run.dir / Files.STATE).read_bytes())
    (run.dir / Files.STATE).write_bytes(orjson.dumps({**state, "status": EVIL}))
    app = MonitorApp(run.dir, probe=lambda _s: "remote")

    async def body(pilot):
        badge = app.screen.query_one(StatusBadge)
        await until(pilot, lambda: badge.status == SHOWN, "the status shows")
        await pilot.pause()
        assert_nothing_applied(app)
        assert f"? {SHOWN.upper()}" in str(badge.render())
        assert not [c for c in badge.classes if c.startswith("-")]  # no class made from it

    run_app(app, body, size=SIZE, notifications=True)


def test_the_stop_dialog_and_notifications_quote_the_run_literally(tmp_path):
    """x on a live run: the question names the run; the notification names its host (both read
    from the files); neither applies markup or control characters."""
    run = evil_run(tmp_path)
    state = orjson.loads((run.dir / Files.STATE).read_bytes())
    (run.dir / Files.STATE).write_bytes(orjson.dumps({**state, "host": EVIL}))
    sent: list[int] = []
    controller = Controller(send_signal=lambda _d, _i, sig: bool(sent.append(sig)))  # not ours
    app = MonitorApp(run.dir, controller=controller, probe=lambda _s: "remote")

    async def body(pilot):
        await until(
            pilot, lambda: run_model(app).status == "running" and run_model(app).run, "it runs"
        )
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.pause()
        assert squash(f"Stop {SHOWN}?") in squash(assert_nothing_applied(app))
        await pilot.press("y")
        note = squash(f"on {SHOWN} is not one this machine can signal")
        await until(pilot, lambda: note in squash(assert_nothing_applied(app)), "the toast shows")
        assert sent == [2]  # SIGINT, through the checked path (which said: not ours)

    run_app(app, body, size=SIZE, notifications=True)


# ------------------------------------------------------------------------------------ plain mode


def test_plain_mode_prints_no_control_characters(tmp_path):
    run = evil_run(tmp_path)
    run.finish("failed", error=f"CUDA error: {EVIL}")
    result = subprocess.run(
        [sys.executable, "-m", "entrenar_tui", "monitor", str(run.dir), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=patience(60),
    )
    assert result.returncode == 0 and result.stderr == ""
    assert not CONTROL_CHARS - {"\n"} & set(result.stdout)
    assert f"run       {SHOWN}" in result.stdout
    assert f"error     failed: CUDA error: {SHOWN}" in result.stdout


# ------------------------------------------------------------------------------------ the checks


def test_values_of_the_wrong_type_are_dropped_and_named():
    state, problem = clean_state(
        {"status": "running", "epoch": "3", "pid": True, "error": EVIL, "best": {"epoch": 1.5}}
    )
    assert state["epoch"] is None and state["pid"] is None and state["best"] == {"epoch": None}
    assert state["error"] == SHOWN and state["status"] == "running"
    assert problem == (
        "state.json: ignored values of the wrong type: epoch ('3', expected an integer), "
        "best.epoch (1.5, expected an integer), pid (True, expected an integer)"
    )
    run, problem = clean_run({"name": EVIL, "model": ["x"], "extra": {"kept": 1}})
    assert run["name"] == SHOWN and run["model"] is None and run["extra"] == {"kept": 1}
    assert (
        problem == "run.json: ignored values of the wrong type: model (['x'], expected an object)"
    )
    epochs, best, problem = clean_epochs([{"epoch": 1, "val_loss": 0.5}, 7], 1)
    assert epochs == [{"epoch": 1, "val_loss": 0.5}] and best == 1
    assert (
        problem
        == "epochs.json: ignored values of the wrong type: epochs[1] (7, expected an object)"
    )


def test_a_saved_config_is_written_back_exactly_whatever_it_holds():
    """`s` writes run.json's config as TOML: quotes, newlines, brackets, control characters,
    characters beyond the BMP and odd keys come back exactly; nothing is smuggled in."""
    config = {
        "model": {"path": f'/m/{EVIL}"\n[train]\nepochs = 1\n', EVIL: "😀 ok", "max_length": 128},
        "data": {"labels": [EVIL, "😀", "a\\b"], "val_split": 0.2, "extra": {"k k": [1, 2.5]}},
        f"sec]\n[{EVIL}": {"x": True},
    }
    assert tomllib.loads(to_toml(config)) == config


@pytest.mark.parametrize("config", [{"model": {"path": None, "labels": [None]}}, {"m": {"x": {1}}}])
def test_a_saved_config_toml_cannot_hold_is_refused_not_a_crash(tmp_path, config):
    from entrenar_tui.controller import Refused
    from entrenar_tui.model.run import RunModel

    model = RunModel(tmp_path / "exp")
    model.run = {"config": config}
    with pytest.raises(Refused, match="cannot start from this run's saved config"):
        Controller().plan_start(model)


# ------------------------------------------------------------------------------------ paths

ESCAPES = ("../../escape-state", "/tmp/escape-abs", "../escape-epoch", "../../../escape-result")


def path_run(tmp_path: Path) -> FakeRun:
    """A stopped run whose files name paths outside it everywhere a path can be named."""
    run = FakeRun(tmp_path / "runs" / "exp").start()
    run.play_epoch()
    for record in run.history:
        record["checkpoint"] = ESCAPES[2]
    run.writer.write_epochs(run.history, 1)
    run.writer.update_state(checkpoints=list(ESCAPES))
    run.finish("stopped")
    info = orjson.loads((run.dir / Files.RUN).read_bytes())
    info["name"] = "../../escape-name"
    info["config"]["output"]["dir"] = "../../escape-output"
    info["config"]["model"]["path"] = "../../escape-model"
    (run.dir / Files.RUN).write_bytes(orjson.dumps(info))
    result = orjson.loads((run.dir / Files.RESULT).read_bytes())
    (run.dir / Files.RESULT).write_bytes(orjson.dumps({**result, "checkpoints": list(ESCAPES)}))
    return run


def tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_paths_in_run_files_never_lead_outside_the_run_directory(tmp_path):
    """Resume, start and stop act on the directory the user named (and a new sibling of it for
    `s`), never on a path a file names; --once only reads. Nothing appears anywhere else."""
    run = path_run(tmp_path)
    launched: list[tuple[list[str], Path]] = []

    class Process:
        pid = 4242

        def poll(self):
            return None

    def launch(argv, run_dir, *, cwd=None):
        launched.append((list(argv), Path(run_dir)))
        return Process()

    controller = Controller(launch=launch, command=lambda *a: ["entrenar-train", *a])
    app = MonitorApp(run.dir, controller=controller, probe=lambda _s: "gone")
    before = tree(tmp_path)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
    assert "../../escape-name" in summary(run.dir)  # --once shows the name, and only shows it

    async def body(pilot):
        await until(
            pilot, lambda: run_model(app).status == "stopped" and run_model(app).run, "it shows"
        )
        await pilot.press("r")
        assert launched[-1] == (["entrenar-train", "--resume", str(run.dir)], run.dir)
        run_model(app).request = None  # (the pretend resume never writes a state)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        sibling = run.dir.with_name("exp-2")
        assert launched[-1] == (["entrenar-train", str(sibling / "config.toml")], sibling)
        saved = tomllib.loads((sibling / "config.toml").read_text())
        assert saved["output"]["dir"] == str(sibling)  # not the file's ../../escape-output
        assert saved["model"]["path"] == "../../escape-model"  # config: passed on, as written

    run_app(app, body, size=SIZE, notifications=True)
    assert tree(tmp_path) - before == {
        run.dir.with_name("exp-2"),
        run.dir.with_name("exp-2") / "config.toml",
    }
    for root in (tmp_path, tmp_path.parent, Path("/tmp")):
        assert not [p for p in root.glob("escape*")], root


def test_stop_writes_only_the_run_directorys_control_file(tmp_path):
    run = path_run(tmp_path)
    run.writer.update_state(status="running")  # live again, as far as the files say
    sent: list[int] = []
    controller = Controller(send_signal=lambda _d, _i, sig: bool(sent.append(sig)))
    app = MonitorApp(run.dir, controller=controller, probe=lambda _s: "remote")
    before = tree(tmp_path)

    async def body(pilot):
        await until(pilot, lambda: run_model(app).status == "running", "it runs")
        await pilot.press("x", "y")

    run_app(app, body, size=SIZE, notifications=True)
    assert tree(tmp_path) - before == {run.dir / Files.CONTROL}


def test_the_monitor_takes_no_path_from_a_run_file():
    """Source audit: outside the writer, no code of the monitor side reads the `checkpoint(s)`
    fields (the only path fields of the contract), so no such path is opened, deleted or run."""
    offenders = []
    files = [*(REPO / "entrenar_tui").rglob("*.py"), *(REPO / "trainer" / "monitor").glob("*.py")]
    for path in files:
        if path.name in ("writer.py", "validation.py"):  # write them; check their type
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get":
                key = node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript):
                key = node.slice
            else:
                continue
            if isinstance(key, ast.Constant) and key.value in ("checkpoint", "checkpoints"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


# ------------------------------------------------------------------------------------ pickle

PICKLING_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
}


def test_nothing_imports_pickle_or_calls_torch_load():
    """The product never deserialises pickles: no pickling module is imported, torch.load is never
    called, and no loader is told to allow pickles or remote code."""
    offenders = []
    for path in [*(REPO / "trainer").rglob("*.py"), *(REPO / "entrenar_tui").rglob("*.py")]:
        where = path.relative_to(REPO)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
                if names == ["torch"] and any(a.name == "load" for a in node.names):
                    offenders.append(f"{where}:{node.lineno}: from torch import load")
            else:
                names = []
            offenders += [
                f"{where}:{node.lineno}: import {n}" for n in names if n in PICKLING_MODULES
            ]
            if isinstance(node, ast.Attribute) and node.attr in ("load", "read_pickle"):
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("torch", "pd", "pandas"):
                    offenders.append(f"{where}:{node.lineno}: {base.id}.{node.attr}")
            if isinstance(node, ast.keyword) and (node.arg, getattr(node.value, "value", None)) in (
                ("allow_pickle", True),
                ("weights_only", False),
                ("trust_remote_code", True),
            ):
                offenders.append(f"{where}:{node.lineno}: {node.arg}={node.value.value}")
    assert offenders == []
