"""Every mistake gets one line: bad config values, data, model folders, output directories and
checkpoints, as a new (or a hostile) user makes them. Each case runs the real `entrenar-train` in a
subprocess and checks exit code 2, one line naming the key or the file (and line), no traceback,
and that nothing was written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO, patience, run_cli, write_config

ROWS = [{"input": f"ls -la dir{i}", "label": "safe"} for i in range(6)] + [
    {"input": f"rm -rf $D{i}/", "label": "unsafe"} for i in range(6)
]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def assert_one_line(r: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit code 2, no traceback, and the last stderr line is the only error line, saying all of
    `expected`."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("entrenar-train: error: "), r.stderr
    assert sum(line.startswith("entrenar-train:") for line in lines) == 1, r.stderr
    for text in expected:
        assert text in lines[-1], (text, lines[-1])
    return lines[-1]


def tiny_config(
    tmp_path: Path, model_dir: Path, data_file: Path | None = None, **sections: dict
) -> Path:
    data_file = data_file or jsonl(tmp_path / "d.jsonl", ROWS)
    return write_config(tmp_path / "c.toml", model_dir, data_file, tmp_path / "run", **sections)


# ------------------------------------------------------------------------------ config values

CONFIG_CASES = {  # name: (overrides, what the line says)
    "seed below 0": (["train.seed=-1"], "train.seed = -1 must be >= 0"),
    "seed past 2**32-1": (["train.seed=4294967296"], "train.seed = 4294967296 must be <= 4294967295"),
    "class weights all zero": (["data.class_weights=[0, 0]"], "data.class_weights = [0.0, 0.0] must be a non-empty list of non-negative weights, not all zero"),
    "a class weight inf": (["data.class_weights=[1, inf]"], "data.class_weights = [1.0, inf] must be a finite number"),
    "learning rate 1e999 (inf)": (["train.learning_rate=1e999"], "train.learning_rate = inf must be a finite number"),
    "learning rate nan": (["train.learning_rate=nan"], "train.learning_rate = nan must be a finite number"),
    "learning rate past float32": (["train.learning_rate=1e300"], "train.learning_rate = 1e+300 does not fit a 32-bit float"),
    "learning rate overflowing AdamW's step": (["train.learning_rate=1e38"], "train.learning_rate = 1e+38 must be <= 3.4e+37"),
    "lr times weight decay overflowing": (["train.learning_rate=1e30", "train.weight_decay=1e20"], "train.learning_rate × train.weight_decay = 1e+50 does not fit a 32-bit float"),
    "log_interval 0": (["train.log_interval=0"], "train.log_interval = 0 must be >= 1"),
    "log_interval a word": (["train.log_interval=often"], "train.log_interval = 'often' must be one of auto"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_values(case, tmp_path, tiny_bert_dir):
    overrides, expected = CONFIG_CASES[case]
    cfg = tiny_config(tmp_path, tiny_bert_dir)
    r = run_cli(str(cfg), *overrides)
    assert_one_line(r, str(cfg), expected)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ data

LINES = [json.dumps(r) for r in ROWS]
INT_ROWS = [json.dumps({"input": f"cmd {i}", "label": i % 5}) for i in range(20)]
DATA_CASES = {  # name: (file name, content, extra config, what the line says)
    "integer labels with a gap (a typo)": (
        "d.jsonl",
        "\n".join([*INT_ROWS[:7], json.dumps({"input": "typo", "label": 50000}), *INT_ROWS[7:]])
        + "\n",
        {},
        ["d.jsonl:8: label 50000 out of range", "5 is missing", "from 0 to 50000", "data.labels"],
    ),
    "integer labels starting at 1": (
        "d.jsonl",
        "".join(json.dumps({"input": f"c{i}", "label": 1 + i % 3}) + "\n" for i in range(9)),
        {},
        ["d.jsonl:1: label 1 out of range", "0 is missing", "data.labels"],
    ),
    "a zero class weight for a class in the data": (
        "d.jsonl",
        "\n".join(LINES) + "\n",
        {"data": {"class_weights": [1.0, 0.0]}},
        ["data.class_weights: weight 0 for class 'unsafe' (index 1), which has 6 sample(s)"],
    ),
    "a CSV header naming a column twice": (
        "d.csv",
        "input,label,input\nls,safe,ls -la\nrm,unsafe,rm -rf\n",
        {},
        ["d.csv:1: column 'input' appears twice in the header"],
    ),
    "a CSV row missing its label column": (
        "d.csv",
        "input,label\nls,safe\nrm -rf $X\nls -la,safe\n",
        {},
        ["d.csv:3: 1 field(s) where the header has 2; missing column(s) 'label'"],
    ),
    "a CSV quote never closed": (
        "d.csv",
        'input,label\nls,safe\n"rm -rf,unsafe\nls -la,safe\nrm x,unsafe\n',
        {},
        ["d.csv:3: a quote opened on this line is never closed"],
    ),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data(case, tmp_path, tiny_bert_dir):
    name, content, sections, expected = DATA_CASES[case]
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    r = run_cli(str(tiny_config(tmp_path, tiny_bert_dir, data, **sections)))
    assert_one_line(r, *expected)
    assert not (tmp_path / "run").exists()  # not even a `failed` run folder for the browser to list


def test_every_mistake_of_one_command_is_named_in_one_run(tmp_path, tiny_bert_dir):
    """A config from the docs with a wrong key, over a CSV whose columns have other names: three
    lines in one run (not three runs), each naming the file and key or column; nothing written."""
    data = tmp_path / "tickets.csv"
    data.write_text("text,category\n" + "".join(f"ticket {i},billing\n" for i in range(10)))
    cfg = tiny_config(tmp_path, tiny_bert_dir, data, train={"epoch": 2})
    r = run_cli(str(cfg))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines() == [
        f"entrenar-train: error: {cfg}: unknown key train.epoch (did you mean train.epochs?)",
        f"entrenar-train: error: {data}:1: no column 'input' (columns: text, category)",
        f"entrenar-train: error: {data}:1: no column 'label' (columns: text, category)",
    ]
    assert not (tmp_path / "run").exists()


def test_bad_rows_are_all_named_by_file_and_line_and_nothing_is_written(tmp_path, tiny_bert_dir):
    lines = [*LINES[:2], "{not json", *LINES[2:7], json.dumps({"input": "  ", "label": "safe"}), *LINES[7:]]  # fmt: skip
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "run").mkdir()  # an output.dir made by hand: left as it was
    r = run_cli(str(tiny_config(tmp_path, tiny_bert_dir, data)))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = r.stderr.splitlines()
    assert [e.split(": ")[2] for e in errors] == [f"{data}:3", f"{data}:9"], errors
    assert "malformed JSON" in errors[0] and errors[1].endswith("field 'input' is empty")
    assert list((tmp_path / "run").iterdir()) == []


def test_a_dry_run_checks_what_a_start_checks_and_writes_nothing(tmp_path, tiny_bert_dir):
    rows = [{"input": f"ticket {i}", "label": ["billing", "refund"][i % 2]} for i in range(40)]
    data = jsonl(tmp_path / "d.jsonl", [*rows, {"input": "charged twice", "label": "biling"}])
    cfg = tiny_config(tmp_path, tiny_bert_dir, data)
    r = run_cli(str(cfg), "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0].split() == ["class", "train", "share", "val"]
    assert [line.split()[0] for line in out[1:4]] == ["biling", "billing", "refund"]
    assert out[4] == (
        f"warning: {data}:41: 'biling' (1 row) looks like 'billing' (20 rows); set data.labels to "
        "make this an error"
    )
    assert out[-1].startswith(
        "dry run: 30 train / 11 validation samples, 3 labels; 2 epochs × 2 steps"
    )
    assert not (tmp_path / "run").exists()
    # What a start refuses, the dry run refuses with the same line; still nothing written.
    r = run_cli(str(cfg), "--dry-run", 'data.labels=["billing", "refund"]', "lora.r=99")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"entrenar-train: error: {data}:41: label 'biling' is not in data.labels (did you mean billing?)",
    ]  # (the model check comes after the config and data passed, as in a start)
    r = run_cli(str(cfg), "--dry-run", "lora.r=99")
    assert_one_line(r, "lora.r = 99 is larger than the smallest adapted layer")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    r = run_cli(str(cfg), "--dry-run")
    assert_one_line(
        r, f"output.dir {tmp_path / 'run'} already holds a run; resume it with --resume"
    )
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["run.json"]


# ------------------------------------------------------------------------------ model folders


def test_max_length_beyond_the_models_positions(tmp_path, tiny_bert_dir):
    cfg = tiny_config(tmp_path, tiny_bert_dir, model={"max_length": 129})  # the tiny BERT has 128
    r = run_cli(str(cfg))
    assert_one_line(
        r,
        "model.max_length = 129 is more than the 128 positions",
        f"{tiny_bert_dir}/config.json",
        "at most 128",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("r_value", [33, 10**9])
def test_lora_rank_larger_than_the_adapted_layers(r_value, tmp_path, tiny_bert_dir):
    cfg = tiny_config(tmp_path, tiny_bert_dir, lora={"r": r_value})  # query/value are 32 × 32
    r = run_cli(str(cfg))
    assert_one_line(
        r,
        f"lora.r = {r_value} is larger than the smallest adapted layer",
        "32 x 32",
        "lora.r <= 32",
    )
    assert not (tmp_path / "run").exists()


def test_a_model_folder_with_only_pickle_weights_is_refused_unread(tmp_path, tiny_bert_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    (model / "model.safetensors").unlink()
    # Not even a pickle: were it ever handed to torch.load, the error would be an UnpicklingError.
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04 not a pickle, never to be read")
    r = run_cli(str(tiny_config(tmp_path, model)))
    assert_one_line(
        r, f"model.path {model}: only pickle weights (pytorch_model.bin)", "safetensors only"
    )
    assert "Unpickl" not in r.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ output.dir


def test_output_dir_that_is_a_file(tmp_path, tiny_bert_dir):
    out = tmp_path / "out"
    out.write_text("a file\n")
    r = run_cli(str(tiny_config(tmp_path, tiny_bert_dir)), f"output.dir={out}")
    assert_one_line(r, f"output.dir {out}: is a file, not a directory")
    assert out.read_text() == "a file\n"


def test_output_dir_under_a_file(tmp_path, tiny_bert_dir):
    blocker = tmp_path / "out"
    blocker.write_text("a file\n")
    r = run_cli(str(tiny_config(tmp_path, tiny_bert_dir)), f"output.dir={blocker}/a/b")
    assert_one_line(r, f"output.dir {blocker}/a/b: {blocker} is a file, not a directory")


def _read_only_mounts_work(where: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro none {where} && ! touch {where}/x"],
        capture_output=True,
    )
    return probe.returncode == 0


def test_output_dir_on_a_read_only_file_system(tmp_path, tiny_bert_dir):
    """A real read-only mount (a tmpfs in a private mount namespace): permissions alone would not
    show it, and root ignores them."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if shutil.which("unshare") is None or not _read_only_mounts_work(ro):
        pytest.skip("no private mount namespace here (unshare -m) to mount a read-only tmpfs")
    cfg = tiny_config(tmp_path, tiny_bert_dir)
    command = f"mount -t tmpfs -o ro none {ro} && exec {sys.executable} -m trainer {cfg} output.dir={ro}/run"
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=patience(600),
    )
    assert_one_line(r, f"output.dir {ro}/run: cannot write there (read-only file system)")


# ------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_a_checkpoint_whose_trainer_state_lacks_the_config(command, tmp_path, trained_run):
    ckpt = tmp_path / "best"
    shutil.copytree(trained_run / "checkpoints" / "best", ckpt)
    state = orjson.loads((ckpt / "trainer_state.json").read_bytes())
    del state["config"]
    (ckpt / "trainer_state.json").write_bytes(orjson.dumps(state))
    args = {
        "predict": ["ls -la"],
        "eval": ["--data", str(tmp_path / "none.jsonl")],
        "export": [str(tmp_path / "out")],
    }
    r = run_cli(command, str(ckpt), *args[command])
    assert_one_line(r, f"{ckpt}/trainer_state.json: no saved config")
    assert not (tmp_path / "out").exists()


def test_resuming_with_fewer_epochs_than_done_is_refused(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = run_cli("--resume", str(run), "train.epochs=1")
    assert_one_line(
        r,
        "train.epochs = 1 is fewer than the 2 epoch(s)",
        "checkpoints/last",
        "train.epochs=2 or more",
    )
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
