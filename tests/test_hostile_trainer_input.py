"""Issue 24, the trainer's inputs: sizes without bound, paths too long, a stray CSV quote, and a
stop that lands after the last epoch trained. Each case failed on the code before the fix."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import orjson
import pytest
import torch

from tests.conftest import run_cli, write_config, write_corpus
from trainer.cli import main
from trainer.errors import UserError

# ---------------------------------------------------------------------------------------- tokenizer


def test_a_huge_tokenizer_file_is_refused_before_it_is_read(tmp_path, tiny_bert_dir):
    from trainer.model import load_tokenizer
    from trainer.tokenizer_files import MAX_TOKENIZER_FILE_BYTES

    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    huge = model / "tokenizer.json"
    os.truncate(huge, MAX_TOKENIZER_FILE_BYTES + 1)  # sparse: no disk, 256 MiB + 1 of zeros
    with pytest.raises(UserError) as e:
        load_tokenizer(str(model))
    assert str(e.value) == (
        f"model.path {model}: tokenizer.json is 256 MiB, more than the 256 MiB a tokenizer file "
        "can be (the largest real ones are tens of MB); not read"
    )
    shutil.copy(tiny_bert_dir / "tokenizer.json", huge)
    (model / "tokenizer_config.json").unlink()
    os.mkfifo(model / "tokenizer_config.json")  # would block the load forever
    with pytest.raises(UserError) as e:
        load_tokenizer(str(model))
    assert (
        str(e.value) == f"model.path {model}: tokenizer_config.json is not a regular file; not read"
    )


def test_a_checkpoints_huge_tokenizer_file_is_refused_by_predict_before_it_is_read(
    tmp_path, one_epoch_run
):
    from trainer.tokenizer_files import MAX_TOKENIZER_FILE_BYTES

    checkpoint = tmp_path / "best"
    shutil.copytree(one_epoch_run / "checkpoints" / "best", checkpoint)
    os.truncate(checkpoint / "tokenizer.json", MAX_TOKENIZER_FILE_BYTES + 1)
    r = run_cli("predict", str(checkpoint), "hello")
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    # (the last line: bitsandbytes' kernels package may say something of its own first)
    assert r.stderr.strip().splitlines()[-1] == (
        f"entrenar-train: error: {checkpoint}: tokenizer.json is 256 MiB, more than "
        "the 256 MiB a tokenizer file can be (the largest real ones are tens of MB); not read"
    )


# ---------------------------------------------------------------------------------------- eval


class StandInClassifier:
    """What load_classifier returns, for a checkpoint of K classes: logits that get about half of
    the samples right (no model: the case is the report's size, not the network)."""

    def __init__(self, k: int, config):
        self.labels = [f"class-{i}" for i in range(k)]
        self.config = config

    def logits(self, texts: list[str]) -> torch.Tensor:
        k = len(self.labels)
        out = torch.zeros(len(texts), k)
        for i, text in enumerate(texts):
            true = int(text.split()[-1])
            out[i, true if i % 2 == 0 else (true * 7 + 1) % k] = 5.0
        return out


def test_eval_with_thousands_of_classes_prints_a_bounded_report_and_keeps_every_class_in_the_json(
    tmp_path, monkeypatch, capsys
):
    from trainer import inference
    from trainer.config import DataSection

    k = 2_000
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"input": f"text {i}", "label": f"class-{i}"}) + "\n" for i in range(k))
    )
    config = type("Saved", (), {"data": DataSection(train=str(data))})()
    monkeypatch.setattr(inference, "load_classifier", lambda _: StandInClassifier(k, config))
    out = tmp_path / "eval.json"
    assert main(["eval", "ckpt", "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert len(lines) < 40 and len(printed) < 4_000  # (before: the K × K matrix, 40 MB)
    assert "... 1,980 more classes between these (the best and the worst by F1;" in printed
    assert lines[-1] == "confusion matrix: 2,000 × 2,000, not printed (all of it is in the --out JSON)"  # fmt: skip
    result = orjson.loads(out.read_bytes())
    assert len(result["per_class"]) == k and result["accuracy"] == 0.5
    assert result["confusion_matrix"]["matrix"] is None  # no K × K cells
    cells = result["confusion_matrix"]["nonzero"]
    assert len(cells) == k and sum(n for _, _, n in cells) == k
    assert [0, 0, 1] in cells and [1, 8, 1] in cells  # [true, predicted, count]


def test_the_printed_classes_are_the_best_and_the_worst_by_f1():
    from trainer.inference import classification_report, confusion_cells, format_report

    k = 30
    names = [f"c{i}" for i in range(k)]
    labels = [c for c in range(k) for _ in range(c + 1)]  # class c has c+1 samples
    predictions = [y if y >= 10 else 29 for y in labels]  # classes 0-9 always wrong
    report = classification_report(confusion_cells(labels, predictions), names)
    text = format_report({**report, "loss": 1.0, "n": len(labels)})
    shown = [line.split()[0] for line in text.splitlines()[3:24] if not line.startswith("...")]
    assert shown[:10] == [f"c{i}" for i in range(28, 18, -1)]  # F1 1; the most samples first
    assert shown[10:] == [f"c{i}" for i in range(10)]  # F1 0; among equals, the most samples last


# ---------------------------------------------------------------------------------------- predict


class SpyTokenizer:
    def __init__(self):
        self.lengths: list[int] = []

    def __call__(self, texts, **kwargs):
        assert kwargs["truncation"] is True
        self.lengths += [len(t) for t in texts]
        return {"input_ids": torch.ones(len(texts), kwargs["max_length"], dtype=torch.long)}


class TwoClassModel(torch.nn.Module):
    def forward(self, input_ids):
        return type("Out", (), {"logits": torch.zeros(len(input_ids), 2)})()


def test_predict_cuts_a_huge_text_before_tokenizing_it():
    from trainer.inference import CHARS_PER_TOKEN_BOUND, Classifier

    spy = SpyTokenizer()
    clf = Classifier(TwoClassModel(), spy, ["a", "b"], 16, contextlib.nullcontext, None)
    logits = clf.logits(["word " * 2_400_000, "short"])  # 12 MB
    assert logits.shape == (2, 2)
    assert spy.lengths == [16 * CHARS_PER_TOKEN_BOUND, 5]


# ---------------------------------------------------------------------------------------- long paths

LONG = "/".join(["d" * 200] * 22)  # 4,421 characters, each name allowed: the whole path is not


def test_resume_of_a_path_past_path_max_is_one_line(tmp_path):
    r = run_cli("--resume", str(tmp_path / LONG))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith(f"entrenar-train: error: --resume {str(tmp_path)[:40]}")
    assert "the path is too long (" in lines[0] and len(lines[0]) < 400


@pytest.mark.parametrize("name", [LONG, "n" * 300], ids=["path past PATH_MAX", "a name past NAME_MAX"])  # fmt: skip
def test_an_output_dir_too_long_is_one_line_and_nothing_is_made(tmp_path, tiny_bert_dir, name):
    data = write_corpus(tmp_path / "train.jsonl", n=16)
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "out")
    r = run_cli(str(cfg), f"output.dir={tmp_path / name}")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"entrenar-train: error: output.dir {str(tmp_path)[:40]}")
    assert "the path is too long (" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "train.jsonl"]


# ---------------------------------------------------------------------------------------- CSV


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # a quote opened on line 2 and closed at the end of line 4: rows 2-4 became one
            'input,label\n"great movie,1\nbad movie,0\nok then",1\nfine,0\n',
            "d.csv:2: a quoted field runs over line 2 into the next, which reads as a row of its "
            'own: a stray quote (write a quote inside a field as "", or remove it)',
        ),
        (  # the closing quote is itself stray, mid-field on a later line
            'input,label\ngreat,1\n"bad movie,0\nshe said "wow",1\n',
            "d.csv:3: a quote opened on this line closes on line 4 in the middle of a field: a "
            'stray quote (write a quote inside a field as "", or remove it)',
        ),
    ],
    ids=["merged rows", "closed mid-field"],
)
def test_a_stray_csv_quote_is_one_line_naming_the_line(tmp_path, text, message):
    from trainer.data import read_rows

    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        read_rows(path, "input", "label")
    assert str(e.value) == f"{tmp_path}/{message}"


def test_a_quoted_field_over_several_lines_is_still_one_text(tmp_path):
    from trainer.data import read_rows

    path = tmp_path / "d.csv"
    path.write_text('input,label\n"first paragraph, long\nsecond one, really\nthird",1\nfine,0\n')
    rows = read_rows(path, "input", "label")
    assert [(r.text, r.label) for r in rows] == [
        ("first paragraph, long\nsecond one, really\nthird", 1),
        ("fine", 0),
    ]


# ---------------------------------------------------------------------------------------- a late stop


def test_a_stop_during_the_last_epochs_saves_records_the_run_completed(
    tmp_path, tiny_bert_dir, monkeypatch
):
    """SIGINT while the last epoch's checkpoints are written (every epoch trained): completed,
    not stopped (which had `--once` say epoch 3/2 after a resume)."""
    from trainer.config import load_config
    from trainer.train import FineTuneRecipe, train

    data = write_corpus(tmp_path / "train.jsonl", n=64)
    train_keys = {"epochs": 2, "save_every": 1}
    cfg = write_config(tmp_path / "c.toml", tiny_bert_dir, data, tmp_path / "run", train=train_keys)
    config = load_config(cfg)
    original, sent = FineTuneRecipe.save, []

    def save(self, name, **kwargs):
        if self.progress.epoch > self.train_config.epochs and not sent:  # the last epoch's saves
            sent.append(name)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, name, **kwargs)

    monkeypatch.setattr(FineTuneRecipe, "save", save)
    assert train(config) == 0
    assert sent == ["epoch-2"] or sent == ["best"]
    run = Path(config.output.dir)
    state = orjson.loads((run / "state.json").read_bytes())
    result = orjson.loads((run / "result.json").read_bytes())
    assert (state["status"], result["status"]) == ("completed", "completed")
    assert state["epoch"] == 2 and [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert (run / "checkpoints" / "last").is_dir()
