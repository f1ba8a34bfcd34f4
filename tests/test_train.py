"""The headless trainer end to end on tiny real models: contract files, schedule, checkpoints that load
in the HF ecosystem, early stopping, NaN → failed, Qwen2."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
import torch

from tests.conftest import patience, run_cli, write_config
from trainer.config import load_config
from trainer.data import epoch_batches, load_corpus
from trainer.flops import WINDOW_STEPS
from trainer.monitor.schema import CONTRACT_VERSION
from trainer.monitor.units import flops_rate
from trainer.train import crash_message, import_path, log_every, train

RUN_FIELDS = {
    "run_id",
    "config",
    "model",
    "data",
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "world_size",
    "pid",
    "host",
    "argv",
    "tool_version",
    "started_at",
    "resumed_from",
    "peak_flops",
}
STATE_FIELDS = {
    "seq",
    "status",
    "epoch",
    "total_epochs",
    "step",
    "steps_per_epoch",
    "global_step",
    "total_steps",
    "loss",
    "train_loss",
    "train_accuracy",
    "lr",
    "grad_norm",
    "samples_per_sec",
    "tokens_per_sec",
    "flops_per_sec",
    "mfu",
    "validation",
    "best",
    "elapsed_s",
    "eta_s",
    "heartbeat",
    "pid",
    "host",
    "error",
    "checkpoints",
}
EPOCH_FIELDS = {
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "macro_f1",
    "per_class",
    "confusion",
    "lr",
    "epoch_time_s",
    "train_samples_per_sec",
    "is_best",
    "checkpoint",
}
STEP_FIELDS = {
    "epoch",
    "step",
    "global_step",
    "loss",
    "lr",
    "grad_norm",
    "accuracy",
    "samples_per_sec",
    "flops",
    "t",
}


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def steps(run: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run / "steps.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert_dir):
    """One real 3-epoch run on the tiny BERT, shared by the assertions below."""
    from tests.conftest import write_corpus

    tmp = tmp_path_factory.mktemp("finished")
    data = write_corpus(tmp / "train.jsonl", n=160)
    cfg_path = write_config(
        tmp / "c.toml",
        tiny_bert_dir,
        data,
        tmp / "run",
        train={
            "epochs": 3,
            "save_every": 2,
            "warmup_fraction": 0.2,
            "lr_min": 1e-4,
            "learning_rate": 5e-3,
        },
    )
    config = load_config(cfg_path)
    assert train(config) == 0
    return config, Path(config.output.dir)


def test_contract_files_have_the_design_fields(finished_run):
    _config, run = finished_run
    run_json, state, epochs, result = (
        load(run / f) for f in ("run.json", "state.json", "epochs.json", "result.json")
    )
    for name, doc in [("run", run_json), ("state", state), ("epochs", epochs), ("result", result)]:
        assert doc["schema"] == f"entrenar-tui/{name}" and doc["version"] == CONTRACT_VERSION
    assert set(run_json) >= RUN_FIELDS
    assert {
        "path",
        "architecture",
        "params_total",
        "params_trainable",
        "quantize",
        "precision",
    } <= set(run_json["model"])
    assert {
        "train",
        "validation",
        "n_train",
        "n_val",
        "data_hash",
        "labels",
        "class_counts",
        "class_weights",
    } <= set(run_json["data"])
    assert run_json["data"]["data_hash"].startswith("sha256:")
    assert run_json["config"]["train"]["epochs"] == 3 and run_json["resumed_from"] is None
    assert set(state) >= STATE_FIELDS
    assert (
        state["status"] == "completed"
        and state["global_step"] == state["total_steps"] == 3 * run_json["steps_per_epoch"]
    )
    assert state["best"]["epoch"] == epochs["best_epoch"]
    assert [e["epoch"] for e in epochs["epochs"]] == [1, 2, 3]
    assert all(set(e) >= EPOCH_FIELDS for e in epochs["epochs"])
    assert sum(e["is_best"] for e in epochs["epochs"]) == 1
    lines = steps(run)
    assert all(set(s) >= STEP_FIELDS for s in lines)
    assert [s["global_step"] for s in lines] == list(range(1, state["total_steps"] + 1))
    assert result["status"] == "completed" and result["best_epoch"] == epochs["best_epoch"]
    # save_every 2 over 3 epochs: epoch-2 only (epoch-N when N is a multiple of save_every)
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best", "epoch-2", "last"}
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def tiny_bert_step_flops() -> dict[str, int]:
    """A sample's training FLOPs on conftest's tiny BERT (2 layers, 32 wide, 2 heads, 64
    intermediate) with LoRA r=4 on query and value and 5 labels, counted by hand: per token, per
    token × its length, per sequence (trainer/flops.py has the formula)."""
    layers, d, ff, r, labels = 2, 32, 64, 4, 5
    lora = 2 * (d * r + r * d)
    n, t = layers * (4 * d * d + 2 * d * ff + lora), layers * lora  # per token; LoRA's part
    h, h_trained = d * d + d * labels, d * labels  # pooler and classifier, once per sequence
    a = layers * d  # attention width: heads × head size, over the layers
    return {
        "per_token": 4 * n + 2 * t,
        "per_token_squared": 12 * a,
        "per_sequence": 4 * h + 2 * h_trained,
    }


def tiny_bert_sample_flops(length: int) -> int:
    f = tiny_bert_step_flops()
    return f["per_token"] * length + f["per_token_squared"] * length**2 + f["per_sequence"]


def test_each_step_records_its_batchs_model_flops_and_state_the_rate_and_mfu(finished_run):
    """steps.jsonl's `flops` is the formula over that batch's own non-pad lengths (tokenized again
    here); state.json's rate is the last 10 steps', result.json's every step's; MFU is against the
    peak this CPU measured at start, in the run's precision."""
    from transformers import AutoTokenizer

    config, run = finished_run
    corpus = load_corpus(config.data, config.train.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model.path)
    masks = tokenizer(corpus.train_texts, truncation=True, max_length=config.model.max_length)
    lengths = [sum(mask) for mask in masks["attention_mask"]]
    t = config.train
    batches = {
        e: epoch_batches(lengths, t.batch_size, t.seed, e, t.group_by_length)
        for e in range(1, t.epochs + 1)
    }
    lines = steps(run)
    sizes = [len(batches[s["epoch"]][s["step"] - 1]) for s in lines]
    for s in lines:
        batch = batches[s["epoch"]][s["step"] - 1]
        assert s["flops"] == sum(tiny_bert_sample_flops(lengths[i]) for i in batch), s
    seconds = [n / s["samples_per_sec"] for n, s in zip(sizes, lines)]

    run_json, state, result = (load(run / f) for f in ("run.json", "state.json", "result.json"))
    peak = run_json["peak_flops"]
    # measured at its start, or this machine's best from the cache (session fixtures share one)
    assert (
        peak["source"].startswith(f"{peak['origin']}: fp32 matmul ") and peak["precision"] == "fp32"
    )
    assert peak["origin"] in ("measured", "cache") and peak["measured_at"]
    assert peak["flops_per_sec"] > 0 and peak["device"]
    recent = slice(-WINDOW_STEPS, None)
    rate = sum(s["flops"] for s in lines[recent]) / sum(seconds[recent])
    assert state["flops_per_sec"] == pytest.approx(rate, rel=1e-6)
    assert state["mfu"] == pytest.approx(rate / peak["flops_per_sec"], rel=1e-6)
    assert state["mfu"] > 0
    overall = sum(s["flops"] for s in lines) / sum(seconds)
    assert result["flops_per_sec"] == pytest.approx(overall, rel=1e-6)
    assert result["mfu"] == pytest.approx(overall / peak["flops_per_sec"], rel=1e-6)
    assert run_json["model"]["step_flops"] == tiny_bert_step_flops()


def test_loss_goes_down(finished_run):
    _, run = finished_run
    epochs = load(run / "epochs.json")["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]


def test_lr_warms_up_then_decays_to_lr_min(finished_run):
    config, run = finished_run
    t = config.train
    lines = steps(run)
    total = len(lines)
    warmup = math.ceil(t.warmup_fraction * total)
    lr = {s["global_step"]: s["lr"] for s in lines}
    # the LR used at step k is the schedule after k-1 scheduler steps
    assert lr[1] == pytest.approx(0.0)
    assert lr[warmup + 1] == pytest.approx(t.learning_rate)
    assert max(lr.values()) == pytest.approx(t.learning_rate)
    progress = (total - 1 - warmup) / (total - warmup)
    expected_last = t.lr_min + (t.learning_rate - t.lr_min) * 0.5 * (
        1 + math.cos(math.pi * progress)
    )
    assert lr[total] == pytest.approx(expected_last, rel=1e-6)
    assert load(run / "state.json")["lr"] == pytest.approx(expected_last, rel=1e-6)
    assert all(lr[k] >= lr[k + 1] for k in range(warmup + 1, total))


def test_best_checkpoint_loads_with_peft_and_reproduces_validation(finished_run):
    from peft import PeftModel
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )

    config, run = finished_run
    best = run / "checkpoints" / "best"
    hf_config = orjson.loads((best / "config.json").read_bytes())
    assert hf_config["num_labels"] == 5 and hf_config["id2label"]["4"] == "unsafe"
    adapter_config = orjson.loads((best / "adapter_config.json").read_bytes())
    assert adapter_config["task_type"] == "SEQ_CLS"

    base = AutoModelForSequenceClassification.from_pretrained(
        config.model.path, config=AutoConfig.from_pretrained(best)
    )
    model = PeftModel.from_pretrained(base, best).eval()
    tokenizer = AutoTokenizer.from_pretrained(best)
    corpus = load_corpus(config.data, config.train.seed)
    enc = tokenizer(corpus.val_texts, truncation=True, max_length=config.model.max_length)
    batch = DataCollatorWithPadding(tokenizer)(
        [{k: enc[k][i] for k in enc} for i in range(len(corpus.val_texts))]
    )
    with torch.inference_mode():
        logits = model(**batch).logits
    labels = torch.tensor(corpus.val_labels)
    weights = torch.tensor(corpus.class_weights) if corpus.class_weights else None
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = weights[labels] if weights is not None else torch.ones_like(losses)
    val_loss = float((losses * w).sum() / w.sum())
    val_acc = float((logits.argmax(-1) == labels).float().mean())
    recorded = load(run / "epochs.json")
    best_epoch = next(e for e in recorded["epochs"] if e["is_best"])
    assert val_loss == pytest.approx(best_epoch["val_loss"], rel=1e-5)
    assert val_acc == pytest.approx(best_epoch["val_accuracy"])


def test_early_stopping_after_patience(tmp_path, tiny_bert_dir, small_corpus):
    # A learning rate far below fp32 resolution leaves the weights (and so the val loss) unchanged:
    # epoch 1 is the best, and with patience 2 the run stops after epoch 3.
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={
            "epochs": 10,
            "learning_rate": 1e-30,
            "lr_min": 0.0,
            "early_stopping_patience": 2,
            "save_every": 0,
        },
    )
    assert train(load_config(cfg)) == 0
    result = load(tmp_path / "run" / "result.json")
    assert result["stopped_early"] is True
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3]
    assert result["best_epoch"] == 1
    assert load(tmp_path / "run" / "state.json")["status"] == "completed"


def test_nan_loss_fails_the_run_with_exit_1(tmp_path, tiny_bert_dir, small_corpus):
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={"epochs": 2, "learning_rate": 1e30, "warmup_fraction": 0.0, "grad_clip": 0.0},
    )
    r = run_cli(str(cfg))
    assert r.returncode == 1, r.stderr
    state = load(tmp_path / "run" / "state.json")
    assert state["status"] == "failed"
    assert "non-finite" in state["error"]
    assert load(tmp_path / "run" / "result.json")["status"] == "failed"
    assert "Traceback" not in r.stderr
    for folder in (tmp_path / "run" / "checkpoints").glob(
        "*"
    ):  # whatever was saved before holds no NaN
        from safetensors.torch import load_file

        assert all(
            torch.isfinite(t).all()
            for t in load_file(folder / "adapter_model.safetensors").values()
        )


def test_a_second_fresh_run_into_the_same_directory_is_refused(finished_run):
    config, run = finished_run
    before = (run / "state.json").read_bytes()
    with pytest.raises(Exception, match="already holds a run"):
        train(config)
    assert (run / "state.json").read_bytes() == before


def test_qwen2_causal_lm_checkpoint_trains_as_a_classifier(tmp_path, tiny_qwen2_dir, small_corpus):
    cfg = write_config(
        tmp_path / "c.toml", tiny_qwen2_dir, small_corpus, tmp_path / "run", train={"epochs": 2}
    )
    config = load_config(cfg)
    assert train(config) == 0
    run = tmp_path / "run"
    run_json = load(run / "run.json")
    assert run_json["model"]["architecture"] == "Qwen2ForSequenceClassification"
    adapter = orjson.loads((run / "checkpoints" / "last" / "adapter_config.json").read_bytes())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    hf_config = load(run / "checkpoints" / "last" / "config.json")
    assert hf_config["pad_token_id"] is not None and hf_config["num_labels"] == 5
    epochs = load(run / "epochs.json")["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    from safetensors.torch import load_file

    keys = load_file(run / "checkpoints" / "last" / "adapter_model.safetensors").keys()
    assert any("score" in k for k in keys)  # the fresh head is trained and saved with the adapter


def test_epochs_json_names_best_only_on_the_best_epoch(finished_run):
    """An epoch that was best when it ended but is no more does not keep saying
    checkpoints/best: it names its epoch-N checkpoint if it has one (save_every 2: epoch-2),
    else none."""
    _config, run = finished_run
    data = load(run / "epochs.json")
    best = data["best_epoch"]
    assert best > 1, "the test needs a later epoch to beat epoch 1"
    for e in data["epochs"]:
        expected = f"checkpoints/epoch-{e['epoch']}" if e["epoch"] == 2 else None
        if e["epoch"] == best and expected is None:
            expected = "checkpoints/best"
        assert e["checkpoint"] == expected, e
        assert e["is_best"] == (e["epoch"] == best)


def raise_bare_assertion() -> None:
    raise AssertionError


def test_a_crash_message_says_what_failed_and_where():
    try:
        raise_bare_assertion()
    except AssertionError as e:
        bare = e
    line = raise_bare_assertion.__code__.co_firstlineno + 1
    # under its import root, as a library's file is: pytest puts tests/ on sys.path
    assert import_path(torch.__file__) == "torch/__init__.py"
    assert import_path(__file__) in ("test_train.py", "tests/test_train.py")
    where = f"at {import_path(__file__)}:{line} in raise_bare_assertion"
    assert crash_message(bare) == f"crashed: AssertionError (no message) {where}"
    assert crash_message(bare, rank=1) == f"crashed on rank 1: AssertionError (no message) {where}"
    try:
        torch.zeros(2) @ torch.zeros(3)
    except RuntimeError as e:
        message = crash_message(e)
    assert message.startswith("crashed: RuntimeError: ") and " at " in message
    assert "\n" not in message


def test_a_crash_in_a_run_is_written_with_its_type_and_where_not_a_rank(
    tmp_path, tiny_bert_dir, small_corpus, monkeypatch
):
    from trainer.monitor.writer import MonitorWriter

    original = MonitorWriter.append_step

    def crash_at_step_2(self, record):
        original(self, record)
        if record["global_step"] == 2:
            raise AssertionError

    monkeypatch.setattr(MonitorWriter, "append_step", crash_at_step_2)
    config = load_config(
        write_config(tmp_path / "c.toml", tiny_bert_dir, small_corpus, tmp_path / "run")
    )
    with pytest.raises(AssertionError):
        train(config)
    error = load(tmp_path / "run" / "state.json")["error"]
    assert error.startswith(f"crashed: AssertionError (no message) at {import_path(__file__)}:"), (
        error
    )
    assert error.endswith(" in crash_at_step_2") and "rank" not in error
    assert load(tmp_path / "run" / "result.json")["error"] == error


def test_log_interval_auto_prints_about_20_lines_an_epoch_and_keeps_every_step(
    tmp_path, tiny_bert_dir, small_corpus
):
    assert [log_every("auto", n) for n in (1, 19, 20, 60, 1000)] == [1, 1, 1, 3, 50]
    assert log_every(7, 1000) == 7
    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={"epochs": 1, "batch_size": 2, "log_interval": "auto", "save_every": 0},
    )  # fmt: skip  (160 samples, 120 to train: 60 steps, a line every 3)
    r = run_cli(str(cfg))
    assert r.returncode == 0, r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("epoch 1/1 step")]
    assert [line.split()[3] for line in progress] == [f"{s}/60" for s in range(3, 61, 3)]
    assert len(steps(tmp_path / "run")) == 60
    assert "1 epoch × 60 steps" in r.stderr and "no quantization" in r.stderr
    # the peak this CPU measured, and each line's achieved model FLOP/s and MFU (last 10 steps)
    peak = load(tmp_path / "run" / "run.json")["peak_flops"]["flops_per_sec"]
    assert f"peak: {flops_rate(peak)} fp32 (measured: fp32 matmul " in r.stderr
    last = steps(tmp_path / "run")[-WINDOW_STEPS:]
    rate = sum(s["flops"] for s in last) / sum(2 / s["samples_per_sec"] for s in last)
    assert f" samples/s {flops_rate(rate)} MFU {rate / peak:.1%} eta " in progress[-1]
    assert "  model FLOPs    " in r.stderr and " (training steps)" in r.stderr


def test_every_file_of_a_run_gets_the_mode_the_umask_gives(tmp_path, tiny_bert_dir, small_corpus):
    """Run files, steps.jsonl and checkpoints alike (safetensors alone would write 0600)."""
    import os
    import stat
    import subprocess
    import sys

    from tests.conftest import REPO

    cfg = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        small_corpus,
        tmp_path / "run",
        train={"epochs": 1, "save_every": 5},
    )
    r = subprocess.run(
        [sys.executable, "-m", "trainer", str(cfg)],
        cwd=REPO, capture_output=True, text=True, timeout=patience(600), preexec_fn=lambda: os.umask(0o027),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    modes = {str(p.relative_to(tmp_path / "run")): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert "checkpoints/best/adapter_model.safetensors" in modes
    assert {m for m in modes.values()} == {0o640}, modes
    # save_every 5 on a 1-epoch run: no epoch-N (N is never a multiple of 5), best and last only
    assert {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()} == {"best", "last"}
