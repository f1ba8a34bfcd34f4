"""Issue 24: a checkpoint's files are untrusted input. Each hostile trainer_state.json, adapter
config, label map or tokenizer is one line naming the file and the field, exit 2, for --resume,
predict, eval and export; --auto-resume (and --resume after a kill, without --from) passes over
the damaged checkpoints to the newest that passes, and an optimizer never gets a value out of
range (betas [2, 5])."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import write_config
from tests.helpers import hook_steps
from trainer.cli import main
from trainer.monitor.atomic import atomic_write_json

Mutation = Callable[[dict], None]


def setter(*path, value) -> Mutation:
    """A mutation that sets the field at `path` (keys and indexes) to value."""

    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


# (id, mutation of trainer_state.json, the field the error must name)
STATE_MUTATIONS = [
    ("epoch-a-string", setter("epoch", value="2"), "epoch"),
    ("epochs-an-object", setter("epochs", value={"1": {}}), "epochs"),
    ("rng-a-string", setter("rng", value="x"), "rng"),
    ("rng-python-short", setter("rng", 0, "python", value=[3, [1, 2, 3], None]), "rng[0].python"),
    ("param-groups-numbers", setter("param_groups", value=[1, 2]), "param_groups[0]"),
    ("betas-out-of-range", setter("param_groups", 0, "betas", value=[2, 5]), "param_groups[0].betas[0]"),
    ("eps-zero", setter("param_groups", 1, "eps", value=0), "param_groups[1].eps"),
    ("scheduler-a-list", setter("scheduler", value=[]), "scheduler"),
    ("scheduler-unknown-key", setter("scheduler", "optimizer", value=5), "scheduler.optimizer"),
    ("running-missing-fields", setter("running", value={"seen": 3}), "running.loss_sum"),
    ("global-step-a-string", setter("global_step", value="x"), "global_step"),
    ("recovery-lr-scale-above-1", setter("recovery", "lr_scale", value=2.0), "recovery.lr_scale"),
    ("recovery-a-negative-step", setter("recovery", "recoveries", value=[{"step": -1}]), "recovery.recoveries[0].step"),
    ("recovery-spike-streak-negative", setter("recovery", "spike", "streak", value=-1), "recovery.spike.streak"),
]  # fmt: skip


def damage(folder: Path, mutate: Mutation, name: str = "trainer_state.json") -> None:
    data = orjson.loads((folder / name).read_bytes())
    mutate(data)
    atomic_write_json(folder / name, data)


def one_line(err: str, *parts: str) -> str:
    """The one error line (no traceback), holding every part."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("entrenar-train: error: ")]
    assert len(lines) == 1, err
    assert all(part in lines[0] for part in parts), (parts, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, tiny_bert_dir, data) -> tuple[Path, Path]:
    """A real run stopped in epoch 3 of 3 (8 steps an epoch): checkpoints epoch-1, epoch-2,
    best and last (step 21). (config, run directory); copy before changing it."""
    tmp = tmp_path_factory.mktemp("stopped")
    cfg = write_config(
        tmp / "run.toml", tiny_bert_dir, data, tmp / "run",
        data={"val_split": 0.5}, train={"epochs": 3, "batch_size": 8, "save_every": 1},
    )  # fmt: skip
    mp = pytest.MonkeyPatch()
    stop = {"command": "stop", "id": "t"}  # requested when written: an older one is stale
    hook_steps(
        mp,
        20,
        lambda d: atomic_write_json(d / "control.json", {**stop, "requested_at": time.time()}),
    )
    try:
        assert main([str(cfg)]) == 0
    finally:
        mp.undo()
    run = tmp / "run"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best", "epoch-1", "epoch-2", "last"], names
    return cfg, run


def copy_of(stopped_run, tmp_path: Path) -> tuple[Path, Path]:
    cfg, run = stopped_run
    shutil.copytree(run, tmp_path / "run")
    text = cfg.read_text().replace(str(run), str(tmp_path / "run"))
    (tmp_path / "run.toml").write_text(text)
    return tmp_path / "run.toml", tmp_path / "run"


def global_step(folder: Path) -> int:
    return orjson.loads((folder / "trainer_state.json").read_bytes())["global_step"]


@pytest.mark.parametrize(("mutate", "field"), [m[1:] for m in STATE_MUTATIONS], ids=[m[0] for m in STATE_MUTATIONS])  # fmt: skip
def test_a_hostile_trainer_state_is_one_line_for_resume(
    stopped_run, tmp_path, capsys, mutate, field
):
    _, run = copy_of(stopped_run, tmp_path)
    damage(run / "checkpoints" / "last", mutate)
    before = (run / "state.json").read_bytes()
    capsys.readouterr()
    assert main(["--resume", str(run), "--from", "last"]) == 2
    one_line(capsys.readouterr().err, "last/trainer_state.json: ", f" {field}: ")
    assert (run / "state.json").read_bytes() == before  # nothing written


@pytest.mark.parametrize(("mutate", "field"), [m[1:] for m in STATE_MUTATIONS], ids=[m[0] for m in STATE_MUTATIONS])  # fmt: skip
def test_auto_resume_passes_over_hostile_last_and_best_to_the_intact_epoch(stopped_run, tmp_path, capsys, mutate, field):  # fmt: skip
    cfg, run = copy_of(stopped_run, tmp_path)
    for name in ("last", "best"):
        damage(run / "checkpoints" / name, mutate)
    capsys.readouterr()
    assert main([str(cfg), "--auto-resume"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if field != "global_step":  # (one with no step sorts oldest: epoch-2 is taken before it)
        assert f"{run / 'checkpoints' / 'last'}: skipped, it does not load (" in err, err
        assert f"trainer_state.json: {field}: " in err, err  # the field named
    assert "resumed from checkpoints/epoch-2 at step 16" in err, err  # (best: no newer than it)
    state = orjson.loads((run / "state.json").read_bytes())
    assert state["status"] == "completed" and state["global_step"] == 24


def test_resume_after_a_kill_passes_over_a_hostile_checkpoint(stopped_run, tmp_path, capsys):
    """No `last` (a kill before the first stop) and the newest epoch-N hostile: --resume without
    --from takes the newest that passes, naming the one it passed over."""
    _, run = copy_of(stopped_run, tmp_path)
    for name in ("last", "best"):
        shutil.rmtree(run / "checkpoints" / name)
    damage(run / "checkpoints" / "epoch-2", setter("param_groups", 0, "betas", value=[2, 5]))
    capsys.readouterr()
    assert main(["--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'epoch-2'}: skipped, it does not load (" in err, err
    assert "resumed from checkpoints/epoch-1 at step 8" in err, err


# ---------------------------------------------------------------------------------------- predict


def write_text(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


# (id, damage to the checkpoint folder, what the error line names)
INFERENCE_DAMAGE = [
    ("id2label-keys-5-to-9", lambda f: damage(f, setter("id2label", value={str(i + 5): f"c{i}" for i in range(5)}), "config.json"), "config.json: id2label: keys"),
    ("id2label-an-empty-name", lambda f: damage(f, setter("id2label", "1", value=""), "config.json"), "config.json: id2label.1: "),
    ("label2id-disagrees", lambda f: damage(f, setter("label2id", value={"a": 0}), "config.json"), "config.json: label2id does not match"),
    ("another-peft-type", lambda f: damage(f, setter("peft_type", value="IA3"), "adapter_config.json"), "adapter_config.json: peft_type: 'IA3'"),
    ("r-a-string", lambda f: damage(f, setter("r", value="x"), "adapter_config.json"), "adapter_config.json: r: 'x'"),
    ("r-not-the-tensors", lambda f: damage(f, setter("r", value=8), "adapter_config.json"), "adapter_config.json: r is 8 but"),
    ("alpha-negative", lambda f: damage(f, setter("lora_alpha", value=-1), "adapter_config.json"), "adapter_config.json: lora_alpha: -1"),
    ("target-modules-numbers", lambda f: damage(f, setter("target_modules", value=[1]), "adapter_config.json"), "adapter_config.json: target_modules: "),
    ("tokenizer-malformed", write_text("tokenizer.json", '{"model": {"type": "WordPiece", "vocab": 5}'), "tokenizer.json: not a tokenizer"),
    ("tokenizer-not-a-tokenizer", write_text("tokenizer.json", '{"model": []}'), "tokenizer.json: not a tokenizer"),
    ("trainer-state-betas", lambda f: damage(f, setter("param_groups", 0, "betas", value=[2, 5])), "trainer_state.json: param_groups[0].betas[0]: "),
    ("trainer-state-rng", lambda f: damage(f, setter("rng", value="x")), "trainer_state.json: rng: "),
    ("metadata-base-model-a-number", lambda f: damage(f, setter("base_model", value=5), "metadata.json"), "metadata.json: base_model: 5"),
]  # fmt: skip


@pytest.mark.parametrize(("hurt", "expected"), [d[1:] for d in INFERENCE_DAMAGE], ids=[d[0] for d in INFERENCE_DAMAGE])  # fmt: skip
def test_predict_on_a_hostile_checkpoint_is_one_line(stopped_run, tmp_path, capsys, hurt, expected):
    folder = tmp_path / "epoch-1"
    shutil.copytree(stopped_run[1] / "checkpoints" / "epoch-1", folder)
    hurt(folder)
    capsys.readouterr()
    assert main(["predict", str(folder), "some text"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    one_line(out.err, expected)


@pytest.mark.parametrize("command", ["eval", "export"])
def test_eval_and_export_check_the_checkpoint_too(stopped_run, tmp_path, capsys, data, command):
    folder = tmp_path / "epoch-1"
    shutil.copytree(stopped_run[1] / "checkpoints" / "epoch-1", folder)
    damage(folder, setter("peft_type", value="PROMPT_TUNING"), "adapter_config.json")
    capsys.readouterr()
    args = (
        ["--data", str(data), "--out", str(tmp_path / "eval.json")]
        if command == "eval"
        else [str(tmp_path / "out")]
    )
    assert main([command, str(folder), *args]) == 2
    one_line(capsys.readouterr().err, "adapter_config.json: peft_type: 'PROMPT_TUNING'")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_intact_checkpoint_still_predicts(stopped_run, tmp_path, capsys):
    """The checks refuse nothing the trainer writes."""
    capsys.readouterr()
    assert main(["predict", str(stopped_run[1] / "checkpoints" / "epoch-1"), "some text"]) == 0
    record = orjson.loads(capsys.readouterr().out.splitlines()[0])
    assert record["text"] == "some text" and abs(sum(record["probabilities"].values()) - 1) < 1e-5
