"""entrenar-train sweep --search tpe|random with --param ranges: the specs checked (one line each,
nothing written), the study's draws reproducible from --seed, a trial index claimed twice is the
same trial, and a TPE sweep rerun continues its study without redoing a trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_config, write_corpus
from trainer.cli import main
from trainer.errors import UserError
from trainer.sweep.space import Param, parse_param_option

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train.learning_rate=loguniform(1e-5,1e-3)", Param("train.learning_rate", "loguniform", 1e-5, 1e-3)),
        ("train.weight_decay=uniform(0, 0.1)", Param("train.weight_decay", "uniform", 0, 0.1)),
        ("lora.r=int(2,8)", Param("lora.r", "int", 2, 8)),
        ('lora.target_modules=choice(["query","value"],["query","key","value"])',
         Param("lora.target_modules", "choice", choices=(["query", "value"], ["query", "key", "value"]))),
    ],
)  # fmt: skip
def test_param_specs_parse_to_their_ranges(text, expected):
    assert parse_param_option(text) == expected


HOSTILE = [
    ("train.learning_rate=loguniform(1e-3,1e-5)", "--param train.learning_rate: loguniform(0.001,1e-05): LO is greater than HI"),
    ("train.learning_rate=loguniform(0,1e-3)", "LO must be greater than 0"),
    ("train.learning_rate=loguniform(-1,1e-3)", "LO must be greater than 0"),
    ("train.learning_rate=normal(0,1)", "unknown function 'normal'"),
    ("train.learning_rate=loguniform(1e-5,1e-3", "unbalanced parentheses"),
    ("train.learning_rate=loguniform(1e-5,1e-3))", "unbalanced parentheses"),
    ("lora.r=int(2.5,8)", "int() takes whole numbers, got '2.5'"),
    ("lora.r=choice()", "choice() needs at least one value"),
    ("lora.r=choice(4,,8)", "choice() needs at least one value, none empty"),
    ("lora.rr=int(2,8)", "--param lora.rr: unknown key (did you mean lora.r?)"),
    ("train.learning_rate=uniform(1e-5)", "uniform() takes two numbers, LO and HI, got 1"),
    ("train.learning_rate=uniform(a,b)", "'a' is not a finite number"),
    ("train.learning_rate=uniform(0,inf)", "'inf' is not a finite number"),
    ("output.dir=choice(a,b)", "output.dir cannot be swept"),
    ("train.learning_rate", "expected KEY=SPEC"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), HOSTILE)
def test_a_hostile_spec_is_one_line(text, message):
    with pytest.raises(UserError) as e:
        parse_param_option(text)
    assert len(e.value.lines()) == 1 and message in e.value.lines()[0]


@pytest.fixture
def search_config(tmp_path, tiny_bert_dir) -> Path:
    data = write_corpus(tmp_path / "train.jsonl", n=96)
    return write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "exp", train={"epochs": 1, "save_every": 100})  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--param", HOSTILE[0][0]], HOSTILE[0][1]),
        (["--param", "lora.r=int(2,64)"], "search space (lora.r=64): lora.r = 64 is larger than the smallest adapted layer"),
        (["--param", "lora.r=int(0,4)"], "search space (lora.r=0): "),
        (["--grid", "lora.r=2,4", "--param", "lora.r=int(2,4)"], "lora.r: swept twice"),
        (["--search", "grid", "--param", "lora.r=int(2,4)"], "--param needs --search tpe"),
        (["--param", "lora.r=int(2,4)", "--trials", "0"], "--trials 0: must be at least 1"),
        (["--param", "lora.r=int(2,4)", "--prune", "median", "--search", "grid"], "--param needs --search tpe"),
    ],
)  # fmt: skip
def test_a_bad_search_is_refused_before_anything_is_written(search_config, tmp_path, extra, message, capsys):  # fmt: skip
    argv = ["sweep", str(search_config), "--search", "tpe", "--trials", "2", *extra]
    if extra[:2] == ["--search", "grid"]:
        argv = ["sweep", str(search_config), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "exp").exists()


def test_a_sweep_table_string_is_a_range_and_its_mistakes_name_the_file(tmp_path, tiny_bert_dir, capsys):  # fmt: skip
    data = write_corpus(tmp_path / "train.jsonl", n=96)
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "exp",
                       sweep={"train.learning_rate": "loguniform(1e-3,1e-5)"})  # fmt: skip
    assert main(["sweep", str(cfg), "--search", "tpe", "--trials", "2", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "[sweep] train.learning_rate: loguniform(0.001,1e-05): LO is greater than HI"
    )
    assert "c.toml" in err and not (tmp_path / "exp").exists()


SPACE = [
    Param("train.learning_rate", "loguniform", 1e-5, 1e-3),
    Param("lora.r", "int", 2, 16),
    Param("lora.target_modules", "choice", choices=(["query", "value"], ["query", "key"])),
]


def draws(directory: Path, seed: int, n: int, search: str = "tpe") -> list[dict]:
    from trainer.sweep.study import claim_trial, open_study, trial_values

    directory.mkdir()
    doc = {"name": "exp", "search": search, "seed": seed, "objective": {"direction": "minimize"}}
    got = []
    for index in range(n):
        study = open_study(directory, doc, index)
        trial, _ = claim_trial(study, index, SPACE)
        got.append(trial_values(trial, SPACE))
        study.tell(trial, float(index))
    return got


@pytest.mark.parametrize("search", ["tpe", "random"])
def test_the_samplers_are_reproducible_from_the_seed(tmp_path, search):
    first = draws(tmp_path / "a", 3, 4, search)
    assert draws(tmp_path / "b", 3, 4, search) == first
    assert draws(tmp_path / "c", 4, 4, search) != first
    assert len({repr(v) for v in first}) == 4  # each trial process its own draw, not the same one
    assert all(v["lora.target_modules"] in (["query", "value"], ["query", "key"]) for v in first)
    assert all(1e-5 <= v["train.learning_rate"] <= 1e-3 and 2 <= v["lora.r"] <= 16 for v in first)


def test_an_index_claimed_twice_is_the_same_trial_until_it_finishes(tmp_path):
    from optuna.trial import TrialState

    from trainer.sweep.study import claim_trial, open_study

    doc = {"name": "exp", "search": "tpe", "seed": 0, "objective": {"direction": "minimize"}}
    study = open_study(tmp_path, doc, 5)
    first, _ = claim_trial(study, 5, SPACE)
    again, finished = claim_trial(open_study(tmp_path, doc, 5), 5, SPACE)  # a requeued task
    assert finished is None and again._trial_id == first._trial_id and again.params == first.params
    study.tell(first, state=TrialState.FAIL)  # failed: asked again with the same values
    retried, _ = claim_trial(open_study(tmp_path, doc, 5), 5, SPACE)
    assert retried._trial_id != first._trial_id and retried.params == first.params
    study.tell(retried, 0.5)
    done_trial, finished = claim_trial(open_study(tmp_path, doc, 5), 5, SPACE)
    assert done_trial is None and finished.value == 0.5
    assert len(study.get_trials()) == 2


@pytest.mark.slow
def test_a_tpe_sweep_rerun_continues_its_study_without_redoing_a_trial(search_config, tmp_path, capsys):  # fmt: skip
    import orjson

    argv = ["sweep", str(search_config), "--search", "tpe", "--trials", "2", "--seed", "5",
            "--param", "train.learning_rate=loguniform(1e-4,1e-2)", "--objective", "val_accuracy"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    root = tmp_path / "exp"
    doc = orjson.loads((root / "sweep.json").read_bytes())
    assert doc["search"] == "tpe" and doc["trials"] == 2 and doc["prune"] == "none"
    assert doc["objective"] == {"metric": "val_accuracy", "direction": "maximize"}
    assert [r["status"] for r in doc["runs"]] == ["completed", "completed"]
    assert all(1e-4 <= r["values"]["train.learning_rate"] <= 1e-2 for r in doc["runs"])
    best = max(doc["runs"], key=lambda r: (r["value"], -r["index"]))
    assert doc["best_run"] == best["index"]
    logs = [(root / r["dir"] / "train.log").read_bytes() for r in doc["runs"]]
    capsys.readouterr()
    assert main(argv) == 0  # the rerun: nothing to do
    again = orjson.loads((root / "sweep.json").read_bytes())
    assert [r["values"] for r in again["runs"]] == [r["values"] for r in doc["runs"]]
    assert [(root / r["dir"] / "train.log").read_bytes() for r in doc["runs"]] == logs
    from trainer.sweep.study import open_study

    trials = open_study(root, again, 0).get_trials()
    assert len(trials) == 2 and sorted(t.user_attrs["index"] for t in trials) == [0, 1]
    assert [t.params["train.learning_rate"] for t in sorted(trials, key=lambda t: t.user_attrs["index"])] == [
        r["values"]["train.learning_rate"] for r in doc["runs"]
    ]  # fmt: skip


@pytest.mark.slow
def test_sweep_trial_runs_a_grid_sweeps_run_by_its_index(search_config, tmp_path, capsys):
    """What a job array's task does on a grid sweep: run I+1 of the plan, sweep.json updated."""
    import orjson

    from trainer.monitor.schema import Files

    # --target 100 (any val loss reaches it): the grid's first run trains, the second waits
    argv = ["sweep", str(search_config), "--grid", "lora.r=2,4", "--target", "100"]
    assert main(argv) == 0, capsys.readouterr().err
    root = tmp_path / "exp"
    doc = orjson.loads((root / Files.SWEEP).read_bytes())
    assert doc["search"] == "grid" and [r["status"] for r in doc["runs"]] == [
        "completed",
        "pending",
    ]
    assert isinstance(doc["runs"][0]["value"], float) and doc["best_run"] == 1
    doc["target"] = None  # (the task of the second run)
    (root / Files.SWEEP).write_bytes(orjson.dumps(doc))
    assert main(["sweep-trial", str(root), "--index", "1"]) == 0, capsys.readouterr().err
    after = orjson.loads((root / Files.SWEEP).read_bytes())
    second = after["runs"][1]
    assert (
        second["status"] == "completed" and second["exit_code"] == 0 and second["value"] is not None
    )
    run = orjson.loads((root / second["dir"] / Files.RUN).read_bytes())
    assert run["config"]["lora"]["r"] == 4 and run["sweep"] == {
        "name": "exp",
        "index": 2,
        "values": {"lora.r": 4},
    }
    assert after["runs"][0] == doc["runs"][0]  # the other run's entry untouched
    assert main(["sweep-trial", str(root), "--index", "2"]) == 2
    assert "--index 2: the sweep in" in capsys.readouterr().err


def test_pruning_needs_a_study(search_config, tmp_path, capsys):
    assert main(["sweep", str(search_config), "--grid", "lora.r=2,4", "--prune", "median"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prune median: pruning compares a run with the study's" in err[0]
    assert not (tmp_path / "exp").exists()


def test_the_objective_is_read_by_name_and_its_best_follows_the_direction(tmp_path):
    from trainer.monitor.atomic import atomic_write_json
    from trainer.monitor.schema import Files, tagged
    from trainer.sweep.objective import best_value, epoch_values

    epochs = [
        {"epoch": 1, "val_loss": 0.9, "val_accuracy": 0.5, "macro_f1": 0.40},
        {"epoch": 2, "val_loss": 0.7, "val_accuracy": 0.6, "macro_f1": 0.55},
        {"epoch": 3, "val_loss": 0.8, "val_accuracy": 0.7},  # (an epoch without macro_f1)
    ]
    atomic_write_json(tmp_path / Files.EPOCHS, tagged(Files.EPOCHS, {"epochs": epochs}))
    assert epoch_values(tmp_path, "macro_f1") == {1: 0.40, 2: 0.55}
    assert best_value(epoch_values(tmp_path, "macro_f1"), "maximize") == 0.55
    assert best_value(epoch_values(tmp_path, "val_loss"), "minimize") == 0.7
    assert epoch_values(tmp_path / "missing", "val_loss") == {}


def _update_many(path: str, index: int, times: int) -> None:
    from trainer.sweep.record import SweepRecord

    for k in range(times):
        SweepRecord.load(Path(path)).update_run(index, status="running", value=float(k))


def test_trial_processes_updating_sweep_json_at_once_lose_no_update(tmp_path):
    import multiprocessing

    import orjson

    from trainer.sweep.plan import Grid, Run
    from trainer.sweep.record import SweepRecord, identity

    runs = [Run(i, f"exp-{i}", {}) for i in range(1, 5)]
    record = SweepRecord.begin(tmp_path / "sweep.json", identity(Grid([]), {}), runs, {}, None)
    record.write()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_update_many, args=(str(tmp_path / "sweep.json"), i, 15)) for i in range(1, 5)]  # fmt: skip
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    doc = orjson.loads((tmp_path / "sweep.json").read_bytes())
    assert [r["value"] for r in doc["runs"]] == [14.0] * 4


def test_a_tpe_dry_run_names_the_search_and_writes_nothing(search_config, tmp_path, capsys):
    argv = ["sweep", str(search_config), "--search", "tpe", "--trials", "3", "--seed", "2",
            "--param", "train.learning_rate=loguniform(1e-4,1e-2)", "--grid", "lora.r=2,4",
            "--prune", "asha", "--objective", "val_accuracy", "--dry-run"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "sweep of 3 runs: tpe search (seed 2) over lora.r=choice(2,4), "
        "train.learning_rate=loguniform(0.0001,0.01), max val_accuracy, pruner asha, "
        f"in {tmp_path / 'exp'}"
    )
    assert [line.split() for line in out[2:]] == [["exp-1", "-", "-"], ["exp-2", "-", "-"], ["exp-3", "-", "-"]]  # fmt: skip
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    ("prune", "pruner", "direction"),
    [("median", "MedianPruner", "minimize"), ("asha", "SuccessiveHalvingPruner", "maximize"), ("none", "NopPruner", "minimize")],
)  # fmt: skip
def test_the_study_takes_the_sweeps_pruner_and_direction(tmp_path, prune, pruner, direction):
    from trainer.sweep.study import open_study

    doc = {"name": "exp", "search": "tpe", "prune": prune, "objective": {"direction": direction}}
    study = open_study(tmp_path, doc, 0)
    assert type(study.pruner).__name__ == pruner and study.direction.name.lower() == direction
    assert (tmp_path / "study.journal").is_file() and study.study_name == "exp"


@pytest.mark.parametrize("name", ["../outside", "/tmp/elsewhere", "..", "a/b", 7])
def test_a_trials_run_folder_from_a_hostile_sweep_json_is_refused_never_made(tmp_path, capsys, name):  # fmt: skip
    """sweep.json names each run's folder; sweep-trial makes and trains in it: a name that is not
    one folder inside the sweep's directory is refused in one line, and nothing is made."""
    from trainer.monitor.atomic import atomic_write_json
    from trainer.monitor.schema import Files, tagged

    root = tmp_path / "sweeps" / "exp"
    root.mkdir(parents=True)
    run = {"index": 1, "dir": name, "values": {}, "status": "pending"}
    doc = {"name": "exp", "runs": [run], "config_file": str(tmp_path / "c.toml"), "overrides": []}
    atomic_write_json(root / Files.SWEEP, tagged(Files.SWEEP, doc))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["sweep-trial", str(root), "--index", "0"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"entrenar-train: error: {root / Files.SWEEP}: run 1's dir ")
    assert line.endswith("is not a folder name")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
