"""Bad input: every case is one error line naming the file, line or key, exit code 2, no traceback,
and nothing a run had already written is lost. Driven through the real CLI entry point in-process."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w
from safetensors.torch import load_file, save_file

from tests.conftest import write_config, write_corpus
from trainer.cli import main

ROWS = [{"input": f"ls -la dir{i}", "label": "safe"} for i in range(6)] + [
    {"input": f"rm -rf $D{i}/", "label": "unsafe"} for i in range(6)
]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_main(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line(stderr: str, expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("entrenar-train: error: "), stderr
    assert expected in lines[-1], (expected, lines[-1])
    assert sum(line.startswith("entrenar-train:") for line in lines) == 1


# ---------------------------------------------------------------------------------------- configs

CONFIG_CASES: dict[str, tuple[Callable[[dict], None], list[str], str]] = {
    "unknown key": (
        lambda c: c["train"].update(epoch=3),
        [],
        "unknown key train.epoch (did you mean train.epochs?)",
    ),
    "unknown section": (lambda c: c.update(optim={"lr": 1}), [], "unknown section [optim]"),
    "wrong type": (
        lambda c: c["train"].update(batch_size="32"),
        [],
        "train.batch_size must be an integer",
    ),
    "val_split 0": (
        lambda c: c["data"].update(val_split=0.0),
        [],
        "data.val_split = 0.0 must be > 0",
    ),
    "val_split 0.6": (
        lambda c: c["data"].update(val_split=0.6),
        [],
        "data.val_split = 0.6 must be <= 0.5",
    ),
    "epochs 0": (lambda c: c["train"].update(epochs=0), [], "train.epochs = 0 must be >= 1"),
    "negative lr": (
        lambda c: c["train"].update(learning_rate=-0.001),
        [],
        "train.learning_rate = -0.001 must be > 0",
    ),
    "batch size 0": (
        lambda c: c["train"].update(batch_size=0),
        [],
        "train.batch_size = 0 must be >= 1",
    ),
    "bad override value": (
        lambda c: None,
        ["train.epochs=many"],
        "train.epochs must be an integer, got 'many'",
    ),
    "bad override key": (lambda c: None, ["train.epoch=3"], "unknown key train.epoch"),
    "override without =": (lambda c: None, ["train.epochs"], "expected section.key=value"),
    "bad quantize": (
        lambda c: c["model"].update(quantize="int8"),
        [],
        "model.quantize = 'int8' must be one of none, nf4",
    ),
    "bad precision": (
        lambda c: c["model"].update(precision="fp8"),
        [],
        "model.precision = 'fp8' must be one of",
    ),
    "fp16 on cpu": (lambda c: c["model"].update(precision="fp16"), [], "needs a CUDA device"),
    "lora r 0": (lambda c: c["lora"].update(r=0), [], "lora.r = 0 must be >= 1"),
    "bad class_weights length": (
        lambda c: c["data"].update(class_weights=[1.0, 2.0, 3.0]),
        [],
        "data.class_weights: 3 weights for 2 classes",
    ),
    "negative class weight": (
        lambda c: c["data"].update(class_weights=[1.0, -2.0]),
        [],
        "non-negative weights",
    ),
    "missing model path": (
        lambda c: c["model"].update(path="/nonexistent/model"),
        [],
        "model.path /nonexistent/model: no such directory",
    ),
    "missing required key": (
        lambda c: c["output"].pop("dir"),
        [],
        "missing required key output.dir",
    ),
    "unknown target module": (
        lambda c: c["lora"].update(target_modules=["nope_proj"]),
        [],
        "lora.target_modules",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_errors(case, tmp_path, tiny_bert_dir, capsys):
    edit, overrides, expected = CONFIG_CASES[case]
    data = jsonl(tmp_path / "d.jsonl", ROWS)
    raw = {
        "model": {"path": str(tiny_bert_dir), "precision": "fp32"},
        "data": {"train": str(data)},
        "train": {"epochs": 1},
        "output": {"dir": str(tmp_path / "run")},
        "lora": {},
    }
    edit(raw)
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps(raw), encoding="utf-8")
    code, err = run_main(capsys, [str(cfg), *overrides])
    assert code == 2
    assert_one_line(err, expected)
    assert not (tmp_path / "run" / "run.json").exists()


def test_toml_syntax_error(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\npath = \n", encoding="utf-8")
    code, err = run_main(capsys, [str(cfg)])
    assert code == 2
    assert_one_line(err, f"{cfg}: TOML syntax error")
    assert "line 2" in err


def test_missing_config_file(tmp_path, capsys):
    code, err = run_main(capsys, [str(tmp_path / "none.toml")])
    assert code == 2
    assert_one_line(err, "config file not found")


def test_unknown_cli_flag(capsys):
    code, err = run_main(capsys, ["--frobnicate"])
    assert code == 2
    assert_one_line(err, "unrecognized arguments: --frobnicate")


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        (
            "not a model dir",
            lambda d: d.mkdir(),
            "not a Hugging Face model folder (no config.json)",
        ),
        (
            "config without model_type",
            lambda d: (d.mkdir(), (d / "config.json").write_text("{}")),
            "no model_type",
        ),
        (
            "config not json",
            lambda d: (d.mkdir(), (d / "config.json").write_text("{nope")),
            "unreadable",
        ),
    ],
)
def test_non_model_folders(name, make, expected, tmp_path, capsys):
    model = tmp_path / "model"
    make(model)
    cfg = write_config(
        tmp_path / "c.toml", model, jsonl(tmp_path / "d.jsonl", ROWS), tmp_path / "run"
    )
    code, err = run_main(capsys, [str(cfg)])
    assert code == 2
    assert_one_line(err, expected)


def test_missing_tokenizer(tmp_path, tiny_bert_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    for f in model.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            f.unlink()
    cfg = write_config(
        tmp_path / "c.toml", model, jsonl(tmp_path / "d.jsonl", ROWS), tmp_path / "run"
    )
    code, err = run_main(capsys, [str(cfg)])
    assert code == 2
    assert_one_line(err, "no tokenizer files")


# ---------------------------------------------------------------------------------------- data

DATA_CASES: dict[str, tuple[bytes | None, str, str]] = {
    # name: (file content, or None for a missing file; suffix; expected message)
    "missing file": (None, ".jsonl", "data file not found"),
    "empty file": (b"", ".jsonl", "no samples (the file is empty)"),
    "one class only": (
        b"".join(json.dumps({"input": f"x{i}", "label": "a"}).encode() + b"\n" for i in range(5)),
        ".jsonl",
        "only one class ('a')",
    ),
    "malformed json line": (
        b'{"input": "a", "label": "x"}\n{"input": "b", "label"\n',
        ".jsonl",
        ":2: malformed JSON",
    ),
    "non-utf8 bytes": (
        b'{"input": "a", "label": "x"}\n{"input": "\xc3\x28", "label": "y"}\n',
        ".jsonl",
        ":2: not UTF-8",
    ),
    "missing field": (
        b'{"input": "a", "label": "x"}\n{"text": "b", "label": "y"}\n',
        ".jsonl",
        ":2: missing field 'input'",
    ),
    "empty text": (
        b'{"input": "a", "label": "x"}\n{"input": "  ", "label": "y"}\n',
        ".jsonl",
        ":2: field 'input' is empty",
    ),
    "not an object": (b'["a", "x"]\n', ".jsonl", ":1: expected a JSON object"),
    "label not int or name": (
        b'{"input": "a", "label": 1.5}\n',
        ".jsonl",
        ":1: field 'label' must be an integer or a name",
    ),
    "mixed int and name labels": (
        b'{"input": "a", "label": 1}\n{"input": "b", "label": "y"}\n',
        ".jsonl",
        "labels mix integers and names",
    ),
    "csv wrong columns": (b"text,label\nls,safe\n", ".csv", ":1: no column 'input'"),
    "csv extra field": (
        b"input,label\nls,safe,extra\n",
        ".csv",
        ":2: more fields than the header has columns",
    ),
    "unknown format": (b"x", ".parquet", "unknown data format '.parquet'"),
    "negative int label": (
        b'{"input": "a", "label": -1}\n{"input": "b", "label": 1}\n',
        ".jsonl",
        ":1: label -1 out of range",
    ),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_errors(case, tmp_path, tiny_bert_dir, capsys):
    content, suffix, expected = DATA_CASES[case]
    data = tmp_path / f"d{suffix}"
    if content is not None:
        data.write_bytes(content)
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "run")
    code, err = run_main(capsys, [str(cfg)])
    assert code == 2
    assert_one_line(err, expected)
    assert str(data.name) in err or case in ("mixed int and name labels", "one class only")


@pytest.mark.parametrize(
    ("labels", "rows", "expected"),
    [
        (
            ["safe", "unsafe"],
            [{"input": "a", "label": 2}, {"input": "b", "label": 0}],
            ":1: label 2 out of range (0..1",
        ),
        (
            ["safe", "unsafe"],
            [{"input": "a", "label": "usafe"}, {"input": "b", "label": "safe"}],
            ":1: label 'usafe' is not in data.labels (did you mean unsafe?)",
        ),
        (["safe", "safe"], [{"input": "a", "label": "safe"}], "data.labels: names must be unique"),
    ],
)
def test_label_errors(labels, rows, expected, tmp_path, tiny_bert_dir, capsys):
    data = jsonl(tmp_path / "d.jsonl", rows)
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "run", data={"labels": labels}
    )
    code, err = run_main(capsys, [str(cfg)])
    assert code == 2
    assert_one_line(err, expected)


def test_terminal_escapes_in_data_are_not_echoed_raw(tmp_path, tiny_bert_dir, capsys):
    data = jsonl(
        tmp_path / "d.jsonl",
        [{"input": "a", "label": "\x1b[2J\x1b]0;pwned\x07"}, {"input": "b", "label": "x"}],
    )
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "run", data={"labels": ["x", "y"]}
    )
    code, err = run_main(capsys, [str(cfg)])
    assert code == 2
    assert "\x1b" not in err and "\x07" not in err and "\\x1b[2J" in err


def test_bom_and_a_huge_line_are_fine(tmp_path, tiny_bert_dir, capsys):
    rows = [{"input": "x " * 5_000_000, "label": "safe"}, *ROWS]  # a 10 MB line
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    cfg = write_config(
        tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "run", train={"epochs": 1}
    )
    code, err = run_main(capsys, [str(cfg)])
    assert code == 0, err
    counts = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert counts["n_train"] + counts["n_val"] == 13


# ---------------------------------------------------------------------------------------- resume


def damage_truncate(last: Path) -> None:
    p = last / "adapter_model.safetensors"
    p.write_bytes(p.read_bytes()[:100])


def damage_nan(last: Path) -> None:
    t = load_file(last / "adapter_model.safetensors")
    k = next(iter(t))
    t[k] = t[k].clone().fill_(float("nan"))
    save_file(t, last / "adapter_model.safetensors")


def damage_shape(last: Path) -> None:
    import torch

    t = load_file(last / "adapter_model.safetensors")
    k = next(k for k in t if "classifier" in k and k.endswith("weight"))
    t[k] = torch.zeros(t[k].shape[0] + 2, t[k].shape[1])  # another num_labels
    save_file(t, last / "adapter_model.safetensors")


def damage_trainer_json(last: Path) -> None:
    (last / "trainer_state.json").write_text("{not json", encoding="utf-8")


def damage_wrong_schema(last: Path) -> None:
    data = json.loads((last / "trainer_state.json").read_text())
    data["version"] = 99
    (last / "trainer_state.json").write_text(json.dumps(data), encoding="utf-8")


RESUME_CASES = {
    "truncated safetensors": (damage_truncate, [], "unreadable safetensors"),
    "nan weights": (damage_nan, [], "holds NaN/Inf"),
    "another model shape": (damage_shape, [], "(another model, num_labels or LoRA rank?)"),
    "missing trainer_state": (
        lambda last: (last / "trainer_state.safetensors").unlink(),
        [],
        "trainer_state.safetensors: missing",
    ),
    "garbage trainer_state.json": (damage_trainer_json, [], "trainer_state.json: unreadable"),
    "unknown checkpoint version": (
        damage_wrong_schema,
        [],
        "not a version-1 entrenar-tui checkpoint",
    ),
    "no such checkpoint": (lambda last: None, ["--from", "epoch-7"], "no checkpoint 'epoch-7'"),
    "bad override on resume": (
        lambda last: None,
        ["train.epochs=0"],
        "train.epochs = 0 must be >= 1",
    ),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_errors_lose_nothing(case, one_epoch_run, tmp_path, capsys):
    damage, extra, expected = RESUME_CASES[case]
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    damage(run / "checkpoints" / "last")
    before = snapshot(run)
    code, err = run_main(capsys, ["--resume", str(run), "train.epochs=2", *extra])
    assert code == 2
    assert_one_line(err, expected)
    assert snapshot(run) == before  # nothing written, nothing lost


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, err = run_main(capsys, ["--resume", str(tmp_path)])
    assert code == 2
    assert_one_line(err, "not a run directory (no run.json)")


def test_resume_with_changed_data_names_both_hashes(one_epoch_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    other = write_corpus(tmp_path / "other.jsonl", n=80, seed=5)
    before = snapshot(run)
    code, err = run_main(capsys, ["--resume", str(run), f"data.train={other}", "train.epochs=2"])
    assert code == 2
    saved_hash = json.loads((run / "run.json").read_text())["data"]["data_hash"]
    assert_one_line(err, saved_hash)
    assert err.count("sha256:") == 2
    assert snapshot(run) == before
