"""entrenar-train sweep: the grid (values split as overrides are, a [sweep] table for list values),
random draws reproducible from their seed, every mistake one line before any run starts, a 2×2
grid run to the end with sweep.json right, and a sweep stopped, killed and rerun that finishes
without redoing what was done."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path

import orjson
import psutil
import pytest
from safetensors.torch import load_file

from tests.conftest import REPO, patience, write_config, write_corpus
from trainer.cli import main
from trainer.config import load_config, read_config_file, split_sweep_table
from trainer.errors import UserError
from trainer.sweep.command import run_config
from trainer.sweep.plan import build_grid, split_values


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


# ---------------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("4,8,16", ["4", "8", "16"]),
        (" 1e-4 , 5e-4", ["1e-4", "5e-4"]),
        ('["query","value"],["query","key","value"]', ['["query","value"]', '["query","key","value"]']),
        ('"a,b",c', ['"a,b"', "c"]),
        ("'x,y',[1, [2, 3]]", ["'x,y'", "[1, [2, 3]]"]),
        (r'"say \",\"",b', [r'"say \",\""', "b"]),
    ],
)  # fmt: skip
def test_values_split_at_commas_outside_brackets_and_quotes(text, pieces):
    assert split_values(text) == pieces


def test_grid_values_are_read_as_overrides_are_and_the_last_key_varies_fastest():
    grid = build_grid(
        {}, ['lora.target_modules=["query","value"],auto', "train.learning_rate=1e-3,5e-3"], None, None
    )  # fmt: skip
    runs = grid.runs("exp")
    assert [r.name for r in runs] == ["exp-1", "exp-2", "exp-3", "exp-4"]
    assert [r.values for r in runs] == [
        {"lora.target_modules": ["query", "value"], "train.learning_rate": 1e-3},
        {"lora.target_modules": ["query", "value"], "train.learning_rate": 5e-3},
        {"lora.target_modules": "auto", "train.learning_rate": 1e-3},
        {"lora.target_modules": "auto", "train.learning_rate": 5e-3},
    ]


def test_run_names_are_zero_padded_so_they_sort():
    runs = build_grid({}, ["lora.r=1,2,3,4", "train.seed=1,2,3"], None, None).runs("exp")
    assert [r.name for r in runs][:2] == ["exp-01", "exp-02"] and runs[-1].name == "exp-12"
    assert sorted(r.name for r in runs) == [r.name for r in runs]


def test_random_draws_are_reproducible_from_their_seed():
    options = ["lora.r=2,4,8,16", "train.learning_rate=1e-4,3e-4,1e-3,3e-3,1e-2"]
    draw = lambda seed: [r.values for r in build_grid({}, options, 6, seed).runs("x")]  # noqa: E731
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    full = [r.values for r in build_grid({}, options, None, None).runs("x")]
    # random.Random(seed) picks the positions in the cross product, kept in grid order
    assert draw(7) == [full[i] for i in sorted(random.Random(7).sample(range(20), 6))]
    assert len({orjson.dumps(v) for v in draw(7)}) == 6  # without replacement
    assert build_grid({}, options, 6, None).seed == 0  # --random alone: seed 0, recorded


@pytest.mark.parametrize(
    ("table", "options", "samples", "seed", "message"),
    [
        ({}, [], None, None, "nothing to sweep"),
        ({}, ["lora.rr=4,8"], None, None, "--grid lora.rr: unknown key (did you mean lora.r?)"),
        ({}, ["lora.r"], None, None, "expected KEY=V1,V2"),
        ({}, ["lora.r=4,,8"], None, None, "an empty value"),
        ({}, ["lora.target_modules=[query"], None, None, "a bracket is never closed"),
        ({}, ["lora.r=4,8,4"], None, None, "the value 4 is listed twice"),
        ({"lora.r": [4, 8]}, ["lora.r=16"], None, None, "lora.r: swept twice"),
        ({}, ["output.dir=a,b"], None, None, "output.dir cannot be swept"),
        ({}, ["lora.r=4,8"], 3, None, "--random 3: must be from 1 to the grid's 2 combinations"),
        ({}, ["lora.r=4,8"], 0, None, "--random 0"),
        ({}, ["lora.r=4,8"], None, 5, "--seed goes with --random"),
    ],
)  # fmt: skip
def test_grid_mistakes_are_one_line(table, options, samples, seed, message):
    with pytest.raises(UserError) as e:
        build_grid(table, options, samples, seed)
    assert message in str(e.value) and "\n" not in str(e.value)


SWEEP_TOML = """
[model]
path = "model"
[data]
train = "data/train.jsonl"
[output]
dir = "runs/exp"
[sweep]
"lora.target_modules" = [["query", "value"], ["query", "key", "value"]]
train.learning_rate = [1e-3, 5e-3]
"data.train" = ["data/a.jsonl", "data/b.jsonl"]
"""


def test_the_sweep_table_is_read_only_by_the_sweep_and_never_part_of_a_run(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "c.toml"
    path.write_text(SWEEP_TOML, encoding="utf-8")
    raw, table = split_sweep_table(read_config_file(path), str(path))
    assert table == {
        "lora.target_modules": [["query", "value"], ["query", "key", "value"]],
        "train.learning_rate": [1e-3, 5e-3],  # the sub-table form reads the same
        "data.train": ["data/a.jsonl", "data/b.jsonl"],
    }
    assert "sweep" not in raw
    config = load_config(path)  # the same file trains on its own: the table is left out
    assert "sweep" not in config.to_dict() and config.lora.target_modules == "auto"
    # a [sweep] path is relative to the config file, a --grid one to the working directory
    monkeypatch.chdir(tmp_path)
    grid = build_grid(table, ["model.path=m1,m2"], None, None)
    run = grid.runs("exp")[-1]
    config = run_config(raw, path, [], grid, run, tmp_path / "runs" / "exp")
    assert config.data.train == str(tmp_path / "conf" / "data" / "b.jsonl")
    assert config.model.path == str(tmp_path / "m2")
    assert config.lora.target_modules == ["query", "key", "value"]
    assert config.output.dir == str(tmp_path / "runs" / "exp" / run.name)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('"lora.rr" = [4, 8]', "[sweep] lora.rr: unknown key (did you mean lora.r?)"),
        ('"lora.r" = 4', "[sweep] lora.r must be a non-empty list of the values to try, got 4"),
        ('"lora.r" = []', "[sweep] lora.r must be a non-empty list"),
    ],
)
def test_a_bad_sweep_table_is_one_line_even_for_a_plain_run(tmp_path, table, message):
    path = tmp_path / "c.toml"
    path.write_text(SWEEP_TOML.split("[sweep]")[0] + f"[sweep]\n{table}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"c\.toml: ") as e:
        load_config(path)
    assert message in str(e.value)


# ---------------------------------------------------------------------------------------- the command


@pytest.fixture
def sweep_config(tmp_path, tiny_bert_dir) -> Path:
    data = write_corpus(tmp_path / "train.jsonl", n=96)
    return write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "exp", train={"epochs": 2, "save_every": 100})  # fmt: skip


def test_dry_run_checks_everything_prints_the_runs_and_writes_nothing(
    sweep_config, tmp_path, capsys
):
    argv = ["sweep", str(sweep_config), "--grid", "lora.r=2,4,8", "--grid", "train.learning_rate=1e-3,5e-3", "--dry-run"]  # fmt: skip
    assert main([*argv, "--random", "3", "--seed", "11"]) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--random", "3", "--seed", "11"]) == 0
    assert capsys.readouterr().out == first  # the same draw from the same seed
    assert main([*argv, "--random", "3", "--seed", "12"]) == 0
    assert capsys.readouterr().out != first
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert (
        table[0]
        == f"sweep of 6 runs: a grid of 3 × 2 (lora.r, train.learning_rate), in {tmp_path / 'exp'}"
    )
    assert table[2].split() == ["exp-1", "2", "0.001"] and table[-1].split() == [
        "exp-6",
        "8",
        "0.005",
    ]
    assert (
        "sweep of 3 runs: drawn with seed 11 from a grid of 3 × 2 (lora.r, train.learning_rate) = 6"
        in first
    )
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "lora.r=4,0"], "sweep run 2 (lora.r=0): "),  # the config check, per run
        (["--grid", "lora.r=4,64"], "sweep run 2 (lora.r=64): lora.r = 64 is larger than the smallest adapted layer"),  # the model check
        (["--grid", "lora.r=4,8", "lora.r=16"], "lora.r: both swept and overridden"),
        (["--grid", "lora.r=4", "--parallel", "0"], "--parallel 0: must be at least 1"),
        (["--grid", "lora.r=4", "--nproc", "2"], "unrecognized arguments: --nproc"),
    ],
)  # fmt: skip
def test_every_mistake_is_one_line_before_any_run_starts(
    sweep_config, tmp_path, extra, message, capsys
):
    assert main(["sweep", str(sweep_config), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and err.startswith("entrenar-train: error: ") and message in err
    ), err
    assert not (tmp_path / "exp").exists()


def another_sweeps_record(sweep_config: Path, directory: Path) -> None:
    """sweep.json of a sweep over lora.r=2,4 in `directory`, as its first call wrote it."""
    from trainer.cli import sweep_parser
    from trainer.sweep.command import plan_sweep
    from trainer.sweep.record import SweepRecord, identity

    plan = plan_sweep(
        sweep_parser().parse_intermixed_args([str(sweep_config), "--grid", "lora.r=2,4"])
    )
    directory.mkdir()
    ident = identity(plan.grid, plan.base.to_dict())
    SweepRecord.begin(directory / "sweep.json", ident, plan.runs, {}, None).write()


REFUSED_DIRECTORIES = {  # what output.dir holds: (make it, the one line both commands say)
    "a run": (
        lambda cfg, d: (d.mkdir(), (d / "run.json").write_text("{}")),
        "output.dir {d} holds a run (run.json), not a sweep; choose another output.dir",
    ),
    "another sweep": (
        another_sweeps_record,
        "{d}/sweep.json: this directory holds another sweep: --grid lora.r (2,4 → 2,8); rerun "
        "that sweep's command to continue it, or choose another output.dir",
    ),
    "a file": (lambda cfg, d: d.write_text("notes"), "output.dir {d}: is a file, not a directory"),
}


@pytest.mark.parametrize("holds", list(REFUSED_DIRECTORIES))
def test_a_dry_run_refuses_what_the_sweep_refuses_and_makes_nothing(sweep_config, tmp_path, holds, capsys):  # fmt: skip
    """The first sweep a new user tries: --dry-run said 0 where the sweep then refused."""
    make, said = REFUSED_DIRECTORIES[holds]
    directory = tmp_path / "exp"
    make(sweep_config, directory)
    before = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else None
    argv = ["sweep", str(sweep_config), "--grid", "lora.r=2,8"]
    errors = []
    for dry in (["--dry-run"], []):
        assert main([*argv, *dry]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "Traceback" not in err
        errors.append(err.splitlines())
        after = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else None
        assert after == before  # nothing made, no lock left
    assert errors[0] == errors[1] == [f"entrenar-train: error: {said.format(d=directory)}"]


def test_a_sweep_names_every_mistake_of_its_config_and_data_at_once(tmp_path, tiny_bert_dir, capsys):  # fmt: skip
    data = tmp_path / "tickets.csv"
    data.write_text("text,category\n" + "".join(f"ticket {i},billing\n" for i in range(10)))
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "exp", train={"epoch": 2}
    )
    for dry in (["--dry-run"], []):
        assert main(["sweep", str(cfg), "--grid", "lora.r=2,4", *dry]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"entrenar-train: error: {cfg}: unknown key train.epoch (did you mean train.epochs?)",
            f"entrenar-train: error: {data}:1: no column 'input' (columns: text, category)",
            f"entrenar-train: error: {data}:1: no column 'label' (columns: text, category)",
        ]
    assert not (tmp_path / "exp").exists()


def test_every_runs_mistakes_are_named_together(sweep_config, tmp_path, capsys):
    """Each run's config, and the data the grid points a run at, checked before any run starts."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "ls", "label": "safe"}\n{oops\n', encoding="utf-8")
    argv = ["sweep", str(sweep_config), "--grid", "lora.r=0,4", "--grid", f'data.train="{sweep_config.parent / "train.jsonl"}","{bad}"', "--dry-run"]  # fmt: skip
    assert main(argv) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[:2] == [
        f"entrenar-train: error: sweep run 1 (lora.r=0 data.train=\"{tmp_path}/train.jsonl\"): {sweep_config}: lora.r = 0 must be >= 1",
        f"entrenar-train: error: sweep run 2 (lora.r=0 data.train=\"{bad}\"): {sweep_config}: lora.r = 0 must be >= 1",
    ]  # fmt: skip
    assert len(errors) == 3 and errors[2].startswith(
        f'entrenar-train: error: sweep run 4 (lora.r=4 data.train="{bad}"): {bad}:2: malformed JSON'
    )
    assert not (tmp_path / "exp").exists()


def test_a_sweep_refuses_a_directory_that_holds_a_run(sweep_config, tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "run.json").write_text("{}")
    r = subprocess.run(
        [sys.executable, "-m", "trainer", "sweep", str(sweep_config), "--grid", "lora.r=2,4"],
        cwd=REPO, capture_output=True, text=True, timeout=patience(120),
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"entrenar-train: error: output.dir {tmp_path / 'exp'} holds a run (run.json), not a sweep; "
        "choose another output.dir"
    )
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["run.json"]


HOLD_LOCK = """
import sys
from trainer.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_sweep_whose_run_a_trainer_still_holds_starts_none(sweep_config, tmp_path, capsys):
    """An earlier sweep's run still stopping (its trainer holds the run's lock): refused naming it
    (the kernel's answer), before any run starts; the sweep's own lock is let go."""
    busy = tmp_path / "exp" / "exp-2"
    busy.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(busy)], cwd=REPO, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["sweep", str(sweep_config), "--grid", "lora.r=2,4"]) == 2
    finally:
        holder.communicate("", timeout=patience(60))
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"entrenar-train: error: sweep run 2: {busy}: a trainer is already running on it "
        f"(pid {holder.pid} on {os.uname().nodename}); stop it first, then rerun the sweep"
    )
    assert not (tmp_path / "exp" / "exp-1").exists()
    assert not (tmp_path / "exp" / "trainer.lock").exists()
    assert not (tmp_path / "exp" / "sweep.json").exists()  # nothing said of a sweep that never ran


@pytest.mark.parametrize("what", ["a symbolic link", "a file"])
def test_a_run_name_taken_by_a_link_or_a_file_is_refused_before_anything_is_written(sweep_config, tmp_path, what, capsys):  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    taken = tmp_path / "exp" / "exp-2"
    taken.parent.mkdir()
    if what == "a symbolic link":
        taken.symlink_to(elsewhere)  # the run would be written there
    else:
        taken.write_text("notes")
    assert main(["sweep", str(sweep_config), "--grid", "lora.r=2,4"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"entrenar-train: error: sweep run 2: {taken} is {what}, not a run directory of the sweep; "
        "nothing written: remove it, then rerun the sweep"
    )
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in taken.parent.iterdir()) == ["exp-2"]  # no sweep.json, no exp-1


# ---------------------------------------------------------------------------------------- real sweeps


def sweep(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "sweep", *args], cwd=REPO, text=True, **popen
    )


@pytest.mark.slow
def test_a_2x2_grid_runs_every_combination_and_records_it(tmp_path, tiny_bert_dir):
    data = write_corpus(tmp_path / "train.jsonl", n=96)
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "grid",
        train={"epochs": 2, "save_every": 100},
        sweep={"lora.target_modules": [["query", "value"], ["query", "key", "value"]]},
    )  # fmt: skip
    command = [
        str(cfg),
        "--grid",
        "train.learning_rate=1e-3,5e-3",
        "--parallel",
        "2",
        "train.seed=7",
    ]
    proc = sweep(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 0, err[-3000:]
    root = tmp_path / "grid"
    assert sorted(p.name for p in root.iterdir()) == [
        "grid-1",
        "grid-2",
        "grid-3",
        "grid-4",
        "sweep.json",
    ]
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // 2)
    assert (
        f"4 to run, 2 at a time; {threads} CPU thread{'s' * (threads > 1)} each "
        f"({cores} core{'s' * (cores > 1)} / 2)" in err
    )

    doc = load(root / "sweep.json")
    assert (doc["schema"], doc["version"], doc["name"], doc["status"]) == (
        "entrenar-tui/sweep",
        1,
        "grid",
        "completed",
    )
    assert doc["keys"] == ["lora.target_modules", "train.learning_rate"]
    assert doc["grid"] == [
        {"key": "lora.target_modules", "values": [["query", "value"], ["query", "key", "value"]]},
        {"key": "train.learning_rate", "values": [1e-3, 5e-3]},
    ]
    assert (doc["mode"], doc["seed"], doc["samples"], doc["size"]) == ("grid", None, None, 4)
    assert doc["base_config"]["train"]["seed"] == 7 and doc["overrides"] == ["train.seed=7"]
    assert doc["slots"] == [{"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}] * 2
    for i, entry in enumerate(doc["runs"], start=1):
        run = root / f"grid-{i}"
        target, lr = (
            [["query", "value"], ["query", "key", "value"]][(i - 1) // 2],
            [1e-3, 5e-3][(i - 1) % 2],
        )
        assert entry["values"] == {"lora.target_modules": target, "train.learning_rate": lr}
        assert (entry["index"], entry["dir"], entry["status"], entry["exit_code"]) == (
            i,
            f"grid-{i}",
            "completed",
            0,
        )
        result, info = load(run / "result.json"), load(run / "run.json")
        assert result["status"] == "completed"
        assert (entry["best_epoch"], entry["best_val_loss"], entry["best_val_accuracy"]) == (
            result["best_epoch"],
            result["best_val_loss"],
            result["best_val_accuracy"],
        )
        assert info["sweep"] == {"name": "grid", "index": i, "values": entry["values"]}
        assert info["config"]["lora"]["target_modules"] == target
        assert (
            info["config"]["train"]["learning_rate"] == lr and info["config"]["train"]["seed"] == 7
        )
        assert "sweep" not in info["config"]
        adapter = load(run / "checkpoints" / "last" / "adapter_config.json")
        assert sorted(adapter["target_modules"]) == sorted(target)
        # the runs really differ: another target set, other weights
        assert (
            "key.lora_A"
            in " ".join(load_file(run / "checkpoints" / "last" / "adapter_model.safetensors"))
        ) == ("key" in target)
    best = min(doc["runs"], key=lambda r: (r["best_val_loss"], r["index"]))
    assert doc["best_run"] == best["index"]
    if find_spec("optuna"):  # issue 29: the keys weighed as runs ended (the `sweep` extra)
        assert set(doc["importance"]) == set(doc["keys"])
        assert abs(sum(doc["importance"].values()) - 1) < 1e-9
    assert out.splitlines()[0].split()[:2] == ["run", "lora.target_modules"]
    assert [line[0] for line in out.splitlines()[1:]] == [
        "*" if r is best else " " for r in doc["runs"]
    ]

    # the same command again: everything kept, nothing started
    before = {
        p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "sweep.json"
    }
    r = subprocess.run(
        [sys.executable, "-m", "trainer", "sweep", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=patience(120),
    )
    assert r.returncode == 0, r.stderr
    assert "4 completed earlier, 0 to run" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert [e["status"] for e in load(root / "sweep.json")["runs"]] == ["completed"] * 4

    # another grid on the same directory: refused, naming what differs
    kept = (root / "sweep.json").read_bytes()
    other = [str(cfg), "--grid", "train.learning_rate=1e-3,2e-3", "train.seed=8"]
    r = subprocess.run(
        [sys.executable, "-m", "trainer", "sweep", *other],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=patience(120),
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"entrenar-train: error: {root / 'sweep.json'}: this directory holds another sweep: "
        "--grid train.learning_rate (0.001,0.005 → 0.001,0.002); train.seed (7 → 8); "
        "rerun that sweep's command to continue it, or choose another output.dir"
    )
    assert (root / "sweep.json").read_bytes() == kept


def wait_until(proc: subprocess.Popen, condition, what: str, timeout: float = 120) -> None:
    """Poll condition() while proc runs (its own exit is the pause between looks)."""
    deadline = time.monotonic() + patience(timeout)
    while not condition():
        assert proc.poll() is None, f"the sweep ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)


def training(root: Path, name: str):
    def check() -> bool:
        try:
            state = load(root / name / "state.json")
        except (OSError, orjson.JSONDecodeError):
            return False
        return state.get("status") == "running" and state.get("global_step", 0) >= 2

    return check


def pending_signals(pid: int) -> set[int]:
    """The signals sent to a process that it has not handled yet (it may be frozen)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask >> (n - 1) & 1}
    return set()


def frozen_while_training(proc: subprocess.Popen, root: Path, name: str) -> psutil.Process:
    """The sweep's one child, frozen (SIGSTOP) at a moment its run is seen training.

    Freezing before looking is what makes it race-free: a tiny run can finish between a look
    and a kill, never while it is stopped.
    """
    is_training = training(root, name)

    def frozen() -> bool:
        try:
            children = psutil.Process(proc.pid).children()
            if len(children) != 1:
                return False
            children[0].suspend()
        except psutil.NoSuchProcess:  # a run that ended between the listing and the freeze
            return False
        if is_training():
            found.append(children[0])
            return True
        with contextlib.suppress(psutil.NoSuchProcess):
            children[0].resume()
        return False

    found: list[psutil.Process] = []
    wait_until(proc, frozen, f"{name} trains")
    return found[0]


@pytest.mark.slow
def test_a_stopped_then_killed_sweep_finishes_on_rerun_without_redoing_runs(
    tmp_path, tiny_bert_dir
):
    data = write_corpus(tmp_path / "train.jsonl", n=96)
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "sw",
        train={"epochs": 3, "batch_size": 8, "save_every": 100, "log_interval": 1},
    )  # fmt: skip
    command = [str(cfg), "--grid", "lora.r=2,4,8"]
    root = tmp_path / "sw"

    # 1. Ctrl-C while run 2 trains: run 2 stops cleanly, run 3 never starts, exit 130
    proc = sweep(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child = frozen_while_training(proc, root, "sw-2")
    proc.send_signal(signal.SIGINT)
    wait_until(proc, lambda: signal.SIGINT in pending_signals(child.pid), "the sweep passes it on")
    child.resume()
    _, err = proc.communicate(timeout=patience(120))
    assert proc.returncode == 130, err[-2000:]
    doc = load(root / "sweep.json")
    assert doc["status"] == "stopped"
    assert [(r["status"], r["exit_code"]) for r in doc["runs"]] == [
        ("completed", 0),
        ("stopped", 0),
        ("pending", None),
    ]
    assert load(root / "sw-2" / "state.json")["status"] == "stopped"
    assert not (root / "sw-3").exists()
    run1 = {p.name: p.read_bytes() for p in (root / "sw-1").glob("*.json")}

    # 2. rerun, then SIGKILL the sweep while run 3 trains: run 3 gets SIGTERM, its clean stop
    proc = sweep(*command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = frozen_while_training(proc, root, "sw-3")
    proc.kill()
    proc.wait()
    child.resume()  # the parent-death SIGTERM waited while it was frozen
    _, alive = psutil.wait_procs([child], timeout=patience(60))
    assert not alive
    assert load(root / "sw-3" / "state.json")["status"] == "stopped"
    assert load(root / "sw-2" / "result.json")["status"] == "completed"
    assert load(root / "sweep.json")["status"] == "running"  # what a killed sweep leaves

    # 3. rerun: everything completes; run 1 untouched, runs 2 and 3 resumed, never restarted
    proc = sweep(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=patience(300))
    assert proc.returncode == 0, err[-2000:]
    assert "2 completed earlier, 1 to run" in err  # run 2 finished under the killed sweep
    doc = load(root / "sweep.json")
    assert doc["status"] == "completed" and [r["status"] for r in doc["runs"]] == ["completed"] * 3
    assert {p.name: p.read_bytes() for p in (root / "sw-1").glob("*.json")} == run1
    for name in ("sw-2", "sw-3"):
        info = load(root / name / "run.json")
        assert len(info["resumed_from"]) == 1 and info["resumed_from"][0]["checkpoint"].endswith(
            "checkpoints/last"
        )
        assert info["sweep"]["index"] == int(name[-1])
        state = load(root / name / "state.json")
        assert state["status"] == "completed" and state["global_step"] == state["total_steps"]


# ---------------------------------------------------------------------------------------- the runner


def test_slots_split_the_cores_and_give_each_run_its_own_gpu_when_there_are_enough(monkeypatch):
    from trainer.sweep import runner

    monkeypatch.setattr(runner, "usable_cores", lambda: 8)
    envs, said = runner.slot_environments(1, [])
    assert envs == [{}] and said == ""  # one at a time: torch's default
    envs, said = runner.slot_environments(3, [])
    assert envs == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 3
    assert said == "2 CPU threads each (8 cores / 3)"
    envs, said = runner.slot_environments(2, ["3", "5", "7"])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5"]
    assert said.endswith("one GPU each (CUDA_VISIBLE_DEVICES 3,5)")
    envs, said = runner.slot_environments(4, ["0", "1"])
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in envs)
    assert said.endswith("sharing 2 GPUs (fewer GPUs than runs at a time)")


STAND_IN = """
import signal, sys
got = []
def note(signum, frame):
    got.append(signal.Signals(signum).name)
    with open(sys.argv[1], "a") as f:
        f.write(got[-1] + "\\n")
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
open(sys.argv[2], "w").close()
signal.alarm(int(sys.argv[4]))  # a runner that passes nothing on fails the test, never hangs it
while len(got) < int(sys.argv[3]):
    signal.pause()
"""


def stand_in_sweep(tmp_path: Path, signals_to_exit: int):
    """A SweepRunner of 3 runs, 2 at a time, whose 'trainers' note every signal they get and exit
    after the given number."""
    from trainer.sweep.record import SweepRecord, identity
    from trainer.sweep.runner import Launch, SweepRunner

    grid = build_grid({}, ["lora.r=1,2,3"], None, None)
    runs = grid.runs("sw")
    record = SweepRecord.begin(tmp_path / "sweep.json", identity(grid, {}), runs, {}, None)

    def argv(name: str) -> list[str]:
        got, ready = tmp_path / f"{name}.got", tmp_path / f"{name}.ready"
        return [sys.executable, "-c", STAND_IN, str(got), str(ready), str(signals_to_exit), str(int(patience(60)))]  # fmt: skip

    launches = [Launch(run, tmp_path / run.name, argv(run.name)) for run in runs]
    return SweepRunner(record, launches, [{}, {}], 3), record


def send_when(condition, signals: list[int]) -> threading.Thread:
    """From another thread: once condition() holds, each signal to this process in turn, each
    after the previous one has been noted by both stand-ins."""

    def act() -> None:
        pause = threading.Event()
        for n, signum in enumerate(signals):
            deadline = time.monotonic() + patience(60)
            while not condition(n):
                assert time.monotonic() < deadline
                pause.wait(0.02)
            os.kill(os.getpid(), signum)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def noted(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.got"
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        ([signal.SIGTERM], ["SIGTERM"]),  # a scheduler's SIGTERM reaches each run as SIGTERM, once
        ([signal.SIGINT, signal.SIGINT], ["SIGINT", "SIGINT"]),  # a second Ctrl-C: a second
    ],
)
def test_a_stop_signal_reaches_every_running_run_once_and_no_other_run_starts(tmp_path, signals, expected):  # fmt: skip
    runner, record = stand_in_sweep(tmp_path, len(signals))

    def both_noted(n: int) -> bool:
        if n == 0:
            return all((tmp_path / f"sw-{i}.ready").exists() for i in (1, 2))
        return all(len(noted(tmp_path, f"sw-{i}")) >= n for i in (1, 2))

    sender = send_when(both_noted, signals)
    assert runner.run() == signals[0]
    sender.join()
    assert noted(tmp_path, "sw-1") == noted(tmp_path, "sw-2") == expected
    statuses = [(r["status"], r["exit_code"]) for r in record.doc["runs"]]
    assert statuses == [("stopped", 0), ("stopped", 0), ("pending", None)]
    assert not (tmp_path / "sw-3").exists()
    assert load(tmp_path / "sweep.json")["runs"][0]["status"] == "stopped"


def test_a_run_whose_train_log_is_a_link_fails_alone_and_nothing_is_written_through_it(tmp_path):
    runner, record = stand_in_sweep(tmp_path, 0)  # stand-ins that exit at once
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("someone's file\n")
    (tmp_path / "sw-2").mkdir()
    (tmp_path / "sw-2" / "train.log").symlink_to(elsewhere)
    assert runner.run() is None
    runs = record.doc["runs"]
    assert [r["exit_code"] for r in runs] == [0, None, 0]  # the others still ran
    assert runs[1]["status"] == "failed"
    assert runs[1]["error"] == f"{tmp_path / 'sw-2' / 'train.log'} is a symbolic link; not written"
    assert elsewhere.read_text() == "someone's file\n"


def test_the_last_log_line_is_read_safely_and_printable(tmp_path):
    from trainer.sweep.runner import last_log_line

    (tmp_path / "a").mkdir()
    tail = b"\nfirst\nentrenar-train: error: \x1b[31mred\x07\n\n"
    (tmp_path / "a" / "train.log").write_bytes(b"x" * 9000 + tail)
    assert last_log_line(tmp_path / "a") == "entrenar-train: error: \\x1b[31mred\\x07"
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "train.log")  # never opened: a FIFO would block a plain open
    assert last_log_line(tmp_path / "b") is None
