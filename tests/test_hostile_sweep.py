"""Issue 24, the sweep: a hostile neighbour in a shared sweep directory.

A link planted for a later run while an earlier one trains (the sweep's own check ran only before
the first run), a damaged sweep.json, a sweep tag of 20,000 keys. Each case failed on the code
before the fix: a run written into the link's target (and exit 0), a tomli_w traceback, a tag
copied whole into run.json.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, patience, write_config, write_corpus
from trainer.cli import main
from trainer.monitor.schema import Files, tagged
from trainer.sweep.plan import build_grid

# A stand-in trainer: it records its run completed; the first run's plants the hostile link for
# the run after it first, so the link exists after the sweep's start-of-sweep check and before it
# makes that run's folder, exactly as a neighbour's `ln -s` while run 1 trains (no waiting).
COMPLETES = """
import os, sys
from trainer.monitor.atomic import atomic_write_json
from trainer.monitor.schema import Files, tagged
if len(sys.argv) > 2:
    os.symlink(sys.argv[2], sys.argv[3])
atomic_write_json(os.path.join(sys.argv[1], Files.STATE), tagged(Files.STATE, {"status": "completed"}))
"""


def runner_of_three(tmp_path: Path, elsewhere: Path):
    """A SweepRunner of 3 runs, one at a time, whose "trainers" record themselves completed at
    once; run 1's first plants a link named like run 2's folder, pointing at `elsewhere`."""
    from trainer.sweep.record import SweepRecord, identity
    from trainer.sweep.runner import Launch, SweepRunner

    grid = build_grid({}, ["lora.r=1,2,3"], None, None)
    runs = grid.runs("sw")
    record = SweepRecord.begin(tmp_path / "sweep.json", identity(grid, {}), runs, {}, None)

    def argv(run) -> list[str]:
        plant = [str(elsewhere), str(tmp_path / "sw-2")] if run.index == 1 else []
        return [sys.executable, "-c", COMPLETES, str(tmp_path / run.name), *plant]

    launches = [Launch(run, tmp_path / run.name, argv(run)) for run in runs]
    return SweepRunner(record, launches, [{}], 3), record


def test_a_link_planted_for_the_next_run_mid_sweep_fails_that_run_alone_and_nothing_is_written_there(
    tmp_path,
):
    from trainer.sweep.session import final_status

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runner, record = runner_of_three(tmp_path, elsewhere)
    assert runner.run() is None
    runs = record.doc["runs"]
    assert [(r["status"], r["exit_code"]) for r in runs] == [
        ("completed", 0),
        ("failed", None),
        ("completed", 0),  # the sweep went on with the others
    ]
    assert runs[1]["error"] == (
        f"{tmp_path / 'sw-2'} is a symbolic link, not a directory; run not started, nothing "
        "written through it"
    )
    assert list(elsewhere.iterdir()) == []  # no train.log, no run
    status, code = final_status(record, None)
    assert (status, code) == ("failed", 1)
    saved = orjson.loads((tmp_path / "sweep.json").read_bytes())
    assert saved["runs"][1]["status"] == "failed" and "symbolic link" in saved["runs"][1]["error"]


def test_a_sweep_runs_trainer_refuses_a_link_planted_as_its_directory(tmp_path, tiny_bert_dir):
    """The window between the sweep's check and its run's start: the run's own trainer (started
    with the sweep's tag) refuses a run directory that is a link, in one line, exit 2, and writes
    nothing through it (a plain run may still be pointed at a link by its user)."""
    from trainer.sweep_tag import tag_environment

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "exp").mkdir()
    planted = tmp_path / "exp" / "exp-1"
    planted.symlink_to(elsewhere)
    data = write_corpus(tmp_path / "train.jsonl", n=64)
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, planted, train={"epochs": 1})
    env = {**os.environ, **tag_environment("exp", 1, {"lora.r": 4})}
    r = subprocess.run(
        [sys.executable, "-m", "trainer", str(cfg), "--auto-resume"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=patience(300),
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"entrenar-train: error: {planted} is a symbolic link: a sweep makes its runs' "
        "directories itself, so this one was planted; nothing written through it"
    ]
    assert list(elsewhere.iterdir()) == []


@pytest.fixture
def sweep_config(tmp_path, tiny_bert_dir) -> Path:
    data = write_corpus(tmp_path / "train.jsonl", n=64)
    return write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "exp", train={"epochs": 1})  # fmt: skip


def test_a_sweep_json_whose_keys_hold_null_is_one_line_naming_it(sweep_config, tmp_path, capsys):
    """A rerun compares the directory's sweep.json with its own grid: nulls there (TOML has no
    word for them) were a tomli_w traceback."""
    sweep_json = tmp_path / "exp" / Files.SWEEP
    sweep_json.parent.mkdir()
    damaged = {
        "keys": [None],
        "grid": [{"key": "lora.r", "values": [None, None]}],
        "mode": None,
        "seed": None,
        "samples": None,
        "base_config": {"lora": {"r": None}, "train": None},
        "base_config_hash": None,
        "runs": None,
    }
    sweep_json.write_bytes(orjson.dumps(tagged(Files.SWEEP, damaged)))
    before = sweep_json.read_bytes()
    assert main(["sweep", str(sweep_config), "--grid", "lora.r=2,4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"entrenar-train: error: {sweep_json}: this directory holds another sweep: ")  # fmt: skip
    assert 'grid keys (null → "lora.r")' in err[0]
    assert "--grid lora.r (null,null → 2,4)" in err[0]
    assert "mode (None → grid)" in err[0]
    assert sweep_json.read_bytes() == before  # nothing written
    assert sorted(p.name for p in sweep_json.parent.iterdir()) == [Files.SWEEP]


def test_a_sweep_json_of_20000_keys_is_one_readable_line(sweep_config, tmp_path, capsys):
    sweep_json = tmp_path / "exp" / Files.SWEEP
    sweep_json.parent.mkdir()
    keys = [f"k{i}" for i in range(20_000)]
    damaged = {
        "keys": keys,
        "grid": [{"key": k, "values": [1, 2]} for k in keys],
        "base_config": {f"s{i}": {"k": i} for i in range(20_000)},
    }
    sweep_json.write_bytes(orjson.dumps(tagged(Files.SWEEP, damaged)))
    assert main(["sweep", str(sweep_config), "--grid", "lora.r=2,4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and len(err[0]) < 3_000, len(err[0])
    assert err[0].startswith(f"entrenar-train: error: {sweep_json}: this directory holds another sweep: grid keys (\"k0\",\"k1\",")  # fmt: skip
    assert "; and 20,0" in err[0]  # how many differences are not named


def test_a_null_in_a_saved_config_is_named_not_a_traceback():
    from trainer.config import config_differences

    said = config_differences({"lora": {"r": None}}, {"lora": {"r": 4}})
    assert said == ["lora.r (null → 4)"]


def test_a_sweep_tag_of_20000_keys_is_refused_in_one_line_and_never_copied(monkeypatch):
    from trainer.errors import UserError
    from trainer.sweep_tag import ENV, MAX_VALUES, env_tag, kept_tag, tag_environment

    huge = {f"k{i}": i for i in range(20_000)}
    monkeypatch.setenv(ENV, tag_environment("exp", 1, huge)[ENV])
    with pytest.raises(UserError) as e:
        env_tag()
    assert str(e.value).startswith(f"{ENV}: not a sweep run tag ({{name, index, values}}, at most {MAX_VALUES} values")  # fmt: skip
    assert len(str(e.value)) < 400 and "\n" not in str(e.value)
    # run.json's tag, kept by a hand resume: only one a sweep could have written
    assert kept_tag({"name": "exp", "index": 1, "values": huge}) is None
    assert kept_tag({"name": "exp", "index": 1, "values": {"v": "x" * 20_000}}) is None
    assert kept_tag({"name": "exp", "index": True, "values": {}}) is None
    sound = {"name": "exp", "index": 2, "values": {"lora.r": 8}}
    assert kept_tag(sound) == sound
    monkeypatch.setenv(ENV, tag_environment("exp", 2, {"lora.r": 8})[ENV])
    assert env_tag() == sound
