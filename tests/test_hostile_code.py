"""No code runs that the user did not install (issue 24, code execution).

* A model folder or checkpoint that asks for its own Python code (config.json's or
  tokenizer_config.json's `auto_map`, a model_type transformers does not have) is one line, exit 2,
  before anything loads; every loader passes trust_remote_code=False, so transformers never asks
  "run the custom code? [y/N]" on stdin, where `predict`'s piped texts would answer it.
* The children we start (torchrun's ranks, serve's tabs, the trainer that `entrenar-tui run`, the
  monitor's r/s and a sweep start) run our installed code, whatever the working directory holds.
* `model.path = "pkg:a.b/dir"` finds the folder without importing the package.

Each case plants code that appends its name to a marker file when it runs: the marker must stay
absent (and what was asked must still work).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, patience, write_config, write_corpus
from tests.fake_run import scenario
from tests.helpers import wait_until

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def marker_code(marker: Path, name: str) -> str:
    return f"import pathlib\nwith pathlib.Path({str(marker)!r}).open('a') as f:\n    f.write({name!r} + '\\n')\n"


def ran(marker: Path) -> list[str]:
    """What planted code ran (nothing, when the marker file is absent)."""
    return marker.read_text().split() if marker.exists() else []


def trainer(
    *args: str, cwd: Path = REPO, stdin: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` from the repository (our code), stdin given or /dev/null."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=patience(300),
    )


def assert_one_line(done: subprocess.CompletedProcess, *expected: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert sum(line.startswith("entrenar-train: error: ") for line in lines) == 1, done.stderr
    assert all(e in lines[-1] for e in expected), (expected, lines[-1])


# ------------------------------------------------------------------------------ remote code


def test_every_loader_call_refuses_remote_code():
    """Source scan: each transformers/peft loader call in trainer/ and bench/ passes
    trust_remote_code=False, and in trainer/ on the line of `.from_pretrained(` itself (what a
    line grep of CI can check)."""
    missing = []
    for path in [*(REPO / "trainer").rglob("*.py"), *(REPO / "bench").rglob("*.py")]:
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("from_pretrained", "from_config")
            ):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            trust = [k for k in node.keywords if k.arg == "trust_remote_code"]
            if not trust or not (
                isinstance(trust[0].value, ast.Constant) and trust[0].value.value is False
            ):
                missing.append(where)
            elif (
                path.is_relative_to(REPO / "trainer")
                and node.func.attr == "from_pretrained"
                and "trust_remote_code" not in lines[node.func.end_lineno - 1]
            ):
                missing.append(f"{where} (not on the call's line)")
    assert missing == []


def custom_code_folder(src: Path, dst: Path, marker: Path, case: str) -> Path:
    """A copy of the model folder `src` that asks for custom code in the way `case` names, with
    the .py files it names: each appends its name to `marker` when it runs."""
    shutil.copytree(src, dst, symlinks=True)
    for name in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (dst / f"{name}.py").write_text(
            marker_code(marker, name)
            + "from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast\n"
            + "class EvilConfig(BertConfig):\n    model_type = 'evil'\n"
            + "class EvilForSequenceClassification(BertForSequenceClassification):\n"
            + "    config_class = EvilConfig\n"
            + "class EvilTokenizer(BertTokenizerFast):\n    pass\n"
        )
    config_file = dst / "config.json"
    config = json.loads(config_file.read_text())
    if case in ("auto_map", "auto_map-known-type"):
        config["auto_map"] = {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForSequenceClassification": "modeling_evil.EvilForSequenceClassification",
        }
    if case in ("auto_map", "unknown-type"):
        config["model_type"] = "evil"
    config_file.write_text(json.dumps(config))
    if case == "tokenizer-auto_map":
        tok_file = dst / "tokenizer_config.json"
        tok = json.loads(tok_file.read_text())
        tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
        tok["tokenizer_class"] = "EvilTokenizer"
        tok_file.write_text(json.dumps(tok))
    return dst


CUSTOM_CODE_CASES = {  # case -> what the one line says
    "auto_map": "config.json asks for custom code (auto_map AutoConfig: configuration_evil.EvilConfig",
    "auto_map-known-type": "config.json asks for custom code",
    "unknown-type": "model_type 'evil' is not one transformers",
    "tokenizer-auto_map": "tokenizer_config.json asks for custom code",
}


@pytest.mark.parametrize("case", list(CUSTOM_CODE_CASES))
def test_training_refuses_a_model_folder_that_asks_for_custom_code(tmp_path, tiny_bert_dir, case):
    marker = tmp_path / "ran"
    model = custom_code_folder(tiny_bert_dir, tmp_path / "model", marker, case)
    corpus = write_corpus(tmp_path / "train.jsonl", n=32)
    config = write_config(tmp_path / "c.toml", model, corpus, tmp_path / "run", train={"epochs": 1})
    # "y" on stdin answers transformers' "run the custom code? [y/N]" if it ever asks.
    done = trainer(str(config), stdin="y\n" * 8, env={"HF_HOME": str(tmp_path / "hf")})
    assert ran(marker) == []
    assert_one_line(done, f"model.path {model}", CUSTOM_CODE_CASES[case])
    assert "trust_remote_code=False" in done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.fixture
def custom_code_checkpoint(tmp_path, one_epoch_run) -> tuple[Path, Path]:
    """A copy of a real run whose best checkpoint's config.json asks for custom code (an unknown
    model_type with auto_map, the .py beside it), and the marker its code would write."""
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run, symlinks=True)
    best = (run / "checkpoints" / "best").resolve()
    marker = tmp_path / "ran"
    (best / "configuration_evil.py").write_text(marker_code(marker, "configuration_evil"))
    config = json.loads((best / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (best / "config.json").write_text(json.dumps(config))
    return best, marker


@pytest.mark.parametrize(
    ("command", "stdin"),
    [("predict", "yes\nyes\nyes\n"), ("eval", None), ("export", None)],
    ids=["predict-yes-piped", "eval-stdin-devnull", "export-stdin-devnull"],
)
def test_a_checkpoint_that_asks_for_custom_code_is_one_line(
    tmp_path, custom_code_checkpoint, command, stdin
):
    """predict with "yes" piped (its first text would answer the prompt), eval and export with
    stdin at /dev/null (the prompt's EOF was two tracebacks): one line, no code run."""
    best, marker = custom_code_checkpoint
    extra = {
        "predict": [],
        "eval": ["--data", str(write_corpus(tmp_path / "eval.jsonl", n=16))],
        "export": [str(tmp_path / "out")],
    }[command]
    done = trainer(command, str(best), *extra, stdin=stdin, env={"HF_HOME": str(tmp_path / "hf")})
    assert ran(marker) == []
    assert_one_line(done, f"checkpoint {best}", "asks for custom code")
    assert done.stdout == "" and not (tmp_path / "out").exists()


def test_predict_still_reads_its_texts_from_stdin(one_epoch_run):
    """trust_remote_code=False never prompts: the "y" piped is a text to classify, not an answer."""
    done = trainer("predict", str(one_epoch_run / "checkpoints" / "best"), stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == ["y"]


# ------------------------------------------------------------------------ planted modules


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path]:
    """A working directory holding modules named like ours and our dependencies' (`trainer/`,
    `entrenar_tui/`, `torch/`, `orjson.py`), each appending its name to the marker when imported."""
    cwd, marker = tmp_path / "hostile-cwd", tmp_path / "ran"
    cwd.mkdir()
    for package in ("trainer", "entrenar_tui", "torch"):
        (cwd / package).mkdir()
        (cwd / package / "__init__.py").write_text(marker_code(marker, package))
        (cwd / package / "__main__.py").write_text(marker_code(marker, f"{package}.__main__"))
    (cwd / "orjson.py").write_text(marker_code(marker, "orjson"))
    return cwd, marker


def python_without_console_scripts(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """This interpreter under a path with no `entrenar-train` beside it, and an environment with
    none on PATH (our code through PYTHONPATH): launchers fall back to `python -m trainer`."""
    link = tmp_path / "bare" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(Path(sys.executable).resolve())
    paths = [str(REPO), *(p for p in sys.path if p.endswith("site-packages"))]
    path = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "entrenar-train").exists()
    ]
    env = {**ENV, "PYTHONPATH": os.pathsep.join(paths), "PATH": os.pathsep.join(path)}
    return str(link), env


def run_main(
    python: str, module: str, *args: str, cwd: Path, env: dict
) -> subprocess.CompletedProcess:
    """`module`'s main(args) with the working directory kept off sys.path (the launcher under
    test is this process's child, not this process)."""
    code = f"import sys; del sys.path[0]; from {module} import main; sys.exit(main())"
    return subprocess.run(
        [python, "-c", code, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=patience(300),
    )


def tiny_config(tmp_path: Path, model: Path, run: Path) -> Path:
    corpus = write_corpus(tmp_path / "train.jsonl", n=32)
    return write_config(tmp_path / "c.toml", model, corpus, run, train={"epochs": 1})


@pytest.mark.slow
def test_nproc_ranks_run_our_trainer_not_the_working_directorys(tmp_path, tiny_bert_dir, planted):
    cwd, marker = planted
    config = tiny_config(tmp_path, tiny_bert_dir, tmp_path / "run")
    script = Path(sys.executable).with_name("entrenar-train")
    launcher = [str(script)] if script.exists() else [sys.executable, "-P", "-m", "trainer"]
    done = subprocess.run(
        [*launcher, str(config), "--nproc", "1"],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=patience(600),
    )
    assert ran(marker) == []
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "completed"


def test_each_serve_tab_runs_our_app_not_the_working_directorys(tmp_path, planted):
    from entrenar_tui.serve import app_command

    cwd, marker = planted
    scenario(tmp_path / "runs" / "exp-done", "completed")
    # The very command textual-serve runs for a tab (through the shell, in serve's directory),
    # asked for the plain summary instead of the interactive app.
    command = app_command(tmp_path / "runs", poll=False) + " --once"
    done = subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=patience(120),
    )
    assert ran(marker) == []
    assert done.returncode == 0, done.stderr
    assert "exp-done" in done.stdout


def test_entrenar_tui_run_starts_our_trainer_not_the_working_directorys(
    tmp_path, tiny_bert_dir, planted
):
    """`entrenar-tui run` (and the monitor's s and r: the same trainer_command and launch) where no
    console script is found: the fallback `python -m trainer` must not pick up the cwd's."""
    cwd, marker = planted
    python, env = python_without_console_scripts(tmp_path)
    run = tmp_path / "run"
    config = tiny_config(tmp_path, tiny_bert_dir, run)
    done = run_main(python, "entrenar_tui.cli", "run", str(config), cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: (run / "result.json").exists() or ran(marker), "the trainer ends", run)
    assert ran(marker) == []
    assert json.loads((run / "result.json").read_text())["status"] == "completed"


def test_a_sweep_starts_our_trainer_not_the_working_directorys(tmp_path, tiny_bert_dir, planted):
    cwd, marker = planted
    python, env = python_without_console_scripts(tmp_path)
    config = tiny_config(tmp_path, tiny_bert_dir, tmp_path / "sweep")
    done = run_main(
        python, "trainer.cli", "sweep", str(config), "--grid", "lora.r=2", cwd=cwd, env=env
    )
    assert ran(marker) == []
    assert done.returncode == 0, done.stderr[-3000:]
    results = list((tmp_path / "sweep").rglob("result.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["status"] == "completed"


# ----------------------------------------------------------------------------- pkg: paths


@pytest.fixture
def hostile_package(tmp_path, tiny_bert_dir) -> tuple[Path, Path, dict[str, str]]:
    """An installed (on PYTHONPATH) package `evilpkg` whose __init__ files append to the marker,
    with the tiny BERT at evilpkg/sub/model; and the environment that installs it."""
    site, marker = tmp_path / "site", tmp_path / "ran"
    sub = site / "evilpkg" / "sub"
    sub.mkdir(parents=True)
    (site / "evilpkg" / "__init__.py").write_text(marker_code(marker, "evilpkg"))
    (sub / "__init__.py").write_text(marker_code(marker, "evilpkg.sub"))
    shutil.copytree(tiny_bert_dir, sub / "model")
    return sub / "model", marker, {"PYTHONPATH": str(site)}


@pytest.mark.parametrize("spec", ["pkg:evilpkg.sub/model", "pkg:evilpkg/sub/model"])
def test_a_pkg_model_path_is_found_without_importing_the_package(tmp_path, hostile_package, spec):
    model, marker, env = hostile_package
    config = tiny_config(tmp_path, Path("placeholder"), tmp_path / "run")
    done = trainer(str(config), f"model.path={spec}", "--print-config", env=env)
    assert done.returncode == 0, done.stderr
    assert f'path = "{model}"' in done.stdout
    assert ran(marker) == []


def test_a_resume_through_a_run_json_naming_a_pkg_path_imports_nothing(
    tmp_path, one_epoch_run, hostile_package
):
    """`entrenar-train --resume RUN` (what the monitor's r runs) rebuilds the config from run.json,
    which anyone who hands over a run directory wrote."""
    model, marker, env = hostile_package
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run, symlinks=True, ignore=shutil.ignore_patterns("checkpoints"))
    saved = json.loads((run / "run.json").read_text())
    saved["config"]["model"]["path"] = "pkg:evilpkg.sub/model"
    (run / "run.json").write_text(json.dumps(saved))
    done = trainer("--resume", str(run), "--print-config", env=env)
    assert done.returncode == 0, done.stderr
    assert f'path = "{model}"' in done.stdout
    assert ran(marker) == []


def test_the_monitors_s_and_r_start_our_trainer_not_the_working_directorys(
    tmp_path, tiny_bert_dir, planted, monkeypatch
):
    """The real app: `s` starts a run in the start spec's directory, `r` resumes it in the app's
    own; both with no console script beside the interpreter (the `python -m trainer` fallback)."""
    from entrenar_tui.app import MonitorApp
    from entrenar_tui.controller import Controller, StartSpec
    from entrenar_tui.screens.confirm import ConfirmScreen
    from tests.helpers import run_app, run_model, until

    cwd, marker = planted
    python, env = python_without_console_scripts(tmp_path)
    monkeypatch.setattr(sys, "executable", python)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.chdir(cwd)  # where `r` starts its trainer: the app's working directory
    run = tmp_path / "run"
    corpus = write_corpus(tmp_path / "train.jsonl", n=160)
    config = write_config(tmp_path / "c.toml", tiny_bert_dir, corpus, run, train={"epochs": 20})
    controller = Controller(start_spec=StartSpec(config, [], cwd))
    app = MonitorApp(run, controller=controller, poll_interval=0.2)

    async def stop(pilot, *ends: str) -> None:
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: run_model(app).status in ends, "the run stops", 120)

    async def body(pilot):
        await pilot.press("s", "enter")
        await until(
            pilot,
            lambda: run_model(app).status == "running" and run_model(app).history,
            "the started trainer steps (or planted code ran)",
            120,
        )
        assert ran(marker) == []
        await stop(pilot, "stopped")
        stopped_at = run_model(app).state["global_step"]
        await pilot.press("r")
        await until(
            pilot,
            lambda: (
                run_model(app).status == "running"
                and run_model(app).state["global_step"] > stopped_at
            ),
            "the resumed trainer steps",
            120,
        )
        await stop(pilot, "stopped", "completed")  # (it may end before the stop lands)

    try:
        run_app(app, body)
    finally:
        state = (
            json.loads((run / "state.json").read_text()) if (run / "state.json").exists() else {}
        )
        if state.get("status") == "running" and isinstance(state.get("pid"), int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["pid"], signal.SIGKILL)  # the trainer this test started
    assert ran(marker) == []
    assert "--resume" in (run / "train.log").read_text()


def test_no_kernel_is_fetched_from_the_hub_into_the_trainer(tmp_path, tiny_bert_dir, small_corpus):
    """bitsandbytes (which peft imports) asks the `kernels` package for a compiled CPU kernel from
    the Hugging Face Hub on CPUs with AVX512-BF16, and transformers' from_pretrained kernelizes every
    model through it on any machine: a `kernels` found on the path must never even be imported by a
    run. (Before the guard the run below imported it: the marker named it.)"""
    plant = tmp_path / "site"
    (plant / "kernels").mkdir(parents=True)
    marker = tmp_path / "ran"
    (plant / "kernels" / "__init__.py").write_text(marker_code(marker, "kernels"))
    env = {"PYTHONPATH": str(plant)}
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, small_corpus, tmp_path / "run", train={"epochs": 1}
    )
    r = trainer(str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert ran(marker) == []
    assert "kernels" not in r.stderr
