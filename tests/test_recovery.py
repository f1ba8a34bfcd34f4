"""Runs that heal (trainer/recovery.py): a fault rolls back to the in-memory snapshot, skips the
batches since, scales the LR and goes on; recorded in run.json and state.json; exact through a
stop and resume; off, or used up, the run fails in one line as before. Faults come from the
documented switch ENTRENAR_FAULT_NAN_STEPS (those optimizer steps' loss is NaN)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, patience, write_config, write_corpus
from tests.helpers import hook_steps
from tests.test_resume import request_stop
from trainer.cli import main
from trainer.config import load_config
from trainer.data import epoch_batches, load_corpus, tokenize
from trainer.fault_switch import FAULT_ENV, fault_steps
from trainer.monitor.schema import MAX_SAMPLES_SKIPPED, RunInfo, State
from trainer.monitor.spike_rule import SPIKE_WARMUP
from trainer.monitor.typed_checks import checks_for, clean
from trainer.recovery import LOSS_SPIKE, SPIKE_STEPS, Healing
from trainer.train import train

STEPS_PER_EPOCH = 8  # 120 samples, val 0.5 → 60 to train in batches of 8


def config(tmp: Path, model: Path, data: Path, name: str = "run", **train_overrides) -> Path:
    return write_config(
        tmp / f"{name}.toml", model, data, tmp / name,
        lora={"dropout": 0.1},  # dropout on: a rollback must put the RNG back too
        data={"val_split": 0.5},
        train={"epochs": 2, "batch_size": 8, "save_every": 0, "log_interval": 1,
               "recovery_snapshot_every": 2, **train_overrides},
    )  # fmt: skip


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def steps(run: Path) -> list[dict]:
    return [orjson.loads(x) for x in (run / "steps.jsonl").read_bytes().splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "adapter_model.safetensors")


def without_time(recoveries: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "at"} for r in recoveries]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_bert_dir, data) -> Path:
    """The same run with no fault: its LRs are what the recovered run's are before scaling."""
    tmp = tmp_path_factory.mktemp("clean")
    assert train(load_config(config(tmp, tiny_bert_dir, data))) == 0
    return tmp / "run"


@pytest.fixture(scope="module")
def healed(tmp_path_factory, tiny_bert_dir, data) -> Path:
    """A run whose optimizer steps 5 and 6 have a NaN loss, recovered without stopping."""
    tmp = tmp_path_factory.mktemp("healed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAULT_ENV, "5,6")
        assert train(load_config(config(tmp, tiny_bert_dir, data))) == 0
    return tmp / "run"


def test_two_nan_steps_are_recovered_and_the_run_completes(healed, clean_run, data):
    assert load(healed / "result.json")["status"] == "completed"
    assert all(torch.isfinite(t).all() for t in weights(healed).values())
    recoveries = load(healed / "run.json")["recoveries"]
    assert load(healed / "state.json")["recoveries"] == 2
    # Step 5's fault rolls back to the snapshot after step 4 (every 2 good steps) and skips
    # batch 5; the state after the skip is the next snapshot, so step 6's skips batch 6 only.
    assert without_time(recoveries)[0] | {"samples_skipped": None} == {
        "step": 5, "reason": "non-finite loss", "rolled_back_to": 4,
        "batches_skipped": [[1, 5]], "samples_skipped": None, "lr_scale": 0.5,
    }  # fmt: skip
    assert (recoveries[1]["step"], recoveries[1]["rolled_back_to"]) == (6, 5)
    assert (recoveries[1]["batches_skipped"], recoveries[1]["lr_scale"]) == ([[1, 6]], 0.25)
    run_json = load(healed / "run.json")
    assert all(len(r["samples_skipped"]) == 8 for r in recoveries)
    assert set(recoveries[0]["samples_skipped"]).isdisjoint(recoveries[1]["samples_skipped"])
    assert all(
        0 <= i < run_json["data"]["n_train"] for r in recoveries for i in r["samples_skipped"]
    )
    # Skipped batches are steps the schedule moves past: no rows for 5 and 6, the rest of the
    # epoch's steps are there, each at a quarter of the clean run's LR from then on.
    rows = {s["global_step"]: s for s in steps(healed)}
    clean_rows = {s["global_step"]: s for s in steps(clean_run)}
    assert 5 not in rows and 6 not in rows and sorted(rows)[-1] == 2 * STEPS_PER_EPOCH
    for g in range(7, 2 * STEPS_PER_EPOCH + 1):
        assert rows[g]["lr"] == pytest.approx(clean_rows[g]["lr"] * 0.25, rel=1e-12)
    for g in (1, 2, 3, 4):
        assert rows[g]["loss"] == clean_rows[g]["loss"]  # before the fault: the same run


def test_the_skipped_samples_are_the_skipped_batches(healed):
    """Dataset indices of the epoch's 5th and 6th batches, in the run's seeded order."""

    cfg = load_config(healed.parent / "run.toml")
    corpus = load_corpus(cfg.data, cfg.train.seed)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    features = tokenize(tokenizer, corpus.train_texts, corpus.train_labels, cfg.model.max_length)
    lengths = [len(f["input_ids"]) for f in features]
    t = cfg.train
    batches = epoch_batches(lengths, t.batch_size, t.seed, 1, t.group_by_length,
                            load(healed / "run.json")["shuffle"])  # fmt: skip
    recoveries = load(healed / "run.json")["recoveries"]
    assert recoveries[0]["samples_skipped"] == batches[4]
    assert recoveries[1]["samples_skipped"] == batches[5]


def test_a_stop_and_resume_after_a_recovery_ends_where_the_healed_run_does(
    tmp_path, tiny_bert_dir, data, healed, monkeypatch
):
    monkeypatch.setenv(FAULT_ENV, "5,6")  # a resume past them: never fires again
    hook_steps(monkeypatch, 10, request_stop)
    assert train(load_config(config(tmp_path, tiny_bert_dir, data))) == 0
    run = tmp_path / "run"
    assert load(run / "state.json")["status"] == "stopped"
    trainer_state = load(run / "checkpoints" / "last" / "trainer_state.json")
    assert trainer_state["recovery"]["lr_scale"] == 0.25
    assert len(trainer_state["recovery"]["recoveries"]) == 2
    monkeypatch.undo()
    monkeypatch.setenv(FAULT_ENV, "5,6")
    assert main(["--resume", str(run)]) == 0
    got, want = weights(run), weights(healed)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert without_time(load(run / "run.json")["recoveries"]) == without_time(
        load(healed / "run.json")["recoveries"]
    )
    assert load(run / "state.json")["recoveries"] == 2


def test_a_fault_inside_a_logging_window_skips_from_the_last_flushs_snapshot(
    tmp_path, tiny_bert_dir, data, monkeypatch, capsys
):
    """Steps are read every log_interval (5): the snapshot is the flush after step 5; step 7's
    fault, found at the flush of steps 6-10, skips batches 6 and 7; step 6's line (flushed
    before the fault) stays, the faulty step and those after it in the window have none."""
    monkeypatch.setenv(FAULT_ENV, "7")
    assert train(load_config(config(tmp_path, tiny_bert_dir, data, log_interval=5))) == 0
    run = tmp_path / "run"
    (r,) = load(run / "run.json")["recoveries"]
    assert (r["step"], r["rolled_back_to"], r["batches_skipped"]) == (7, 5, [[1, 6], [1, 7]])
    assert len(r["samples_skipped"]) == 16
    written = sorted({s["global_step"] for s in steps(run)})
    assert written == [g for g in range(1, 2 * STEPS_PER_EPOCH + 1) if g != 7]
    said = capsys.readouterr()
    assert (
        "recovered from non-finite loss at step 7: rolled back to step 5, skipped 2 batches, "
        "LR scale now 0.5"
    ) in said.out + said.err


def test_a_loss_spike_that_persists_is_rolled_back(tmp_path, tiny_bert_dir, data, monkeypatch):
    """Steps 26-28 (epoch 4, steps 2-4) train on their loss × 30 (gradients too): the third in a
    row is the fault; the rollback is to the epoch's start, the spiking steps are skipped."""
    import trainer.train as recipe_module

    spiky, now = {26, 27, 28}, {"step": 0}
    train_step = recipe_module.FineTuneRecipe._train_step

    def numbered(self, batch):
        now["step"] = self.progress.global_step + len(self.pending) + 1
        return train_step(self, batch)

    class SpikyFunctional:  # torch.nn.functional, its cross-entropy × 30 on the spiky steps
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def cross_entropy(*args, **kwargs):
            loss = torch.nn.functional.cross_entropy(*args, **kwargs)
            return loss * 30 if now["step"] in spiky else loss

    monkeypatch.setattr(recipe_module.FineTuneRecipe, "_train_step", numbered)
    monkeypatch.setattr(recipe_module, "F", SpikyFunctional())
    assert train(load_config(config(tmp_path, tiny_bert_dir, data, epochs=4))) == 0
    run = tmp_path / "run"
    (r,) = load(run / "run.json")["recoveries"]
    assert (r["step"], r["reason"], r["rolled_back_to"], r["lr_scale"]) == (
        28, "loss spike", 24, 0.5,
    )  # fmt: skip
    assert r["batches_skipped"] == [[4, 1], [4, 2], [4, 3], [4, 4]]
    assert load(run / "result.json")["status"] == "completed"
    rows = {s["global_step"]: s for s in steps(run)}
    assert 28 not in rows and {25, 26, 27, 29, 32} <= rows.keys()  # 26, 27 were flushed


def test_recovery_off_fails_in_one_line_as_before(tmp_path, tiny_bert_dir, data, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "3")
    assert train(load_config(config(tmp_path, tiny_bert_dir, data, recovery=False))) == 1
    state = load(tmp_path / "run" / "state.json")
    assert state["status"] == "failed"
    assert state["error"] == (
        "non-finite loss (nan) at epoch 1 step 3; no checkpoint holds weights from it or after"
    )
    assert load(tmp_path / "run" / "run.json")["recoveries"] == []


def test_attempts_used_up_fail_with_the_count(tmp_path, tiny_bert_dir, data, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "3,4")
    cfg = config(tmp_path, tiny_bert_dir, data, recovery_attempts=1)
    assert train(load_config(cfg)) == 1
    state = load(tmp_path / "run" / "state.json")
    assert state["error"] == (
        "non-finite loss (nan) at epoch 1 step 4 after 1 recoveries; "
        "no checkpoint holds weights from it or after"
    )
    assert state["recoveries"] == 1
    assert [r["step"] for r in load(tmp_path / "run" / "run.json")["recoveries"]] == [3]


def test_a_bad_fault_switch_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_bert_dir, data):
    cfg = config(tmp_path, tiny_bert_dir, data)
    env_run = subprocess.run(
        [sys.executable, "-m", "trainer", str(cfg)],
        cwd=REPO, capture_output=True, text=True, timeout=patience(300),
        env={**os.environ, FAULT_ENV: "5,x"},
    )  # fmt: skip
    assert env_run.returncode == 2, env_run.stderr
    assert "Traceback" not in env_run.stderr
    last = env_run.stderr.strip().splitlines()[-1]
    assert FAULT_ENV in last and "'5,x'" in last
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "steps"), [("", frozenset()), (" 5, 6 ", frozenset({5, 6})), ("7", frozenset({7}))]
)
def test_the_fault_switch_reads_step_numbers(text, steps):
    assert fault_steps({FAULT_ENV: text}) == steps
    assert fault_steps({}) == frozenset()


class _Cfg:
    recovery, recovery_attempts, recovery_lr_scale = True, 3, 0.5
    spike_factor, recovery_snapshot_every = 1.5, 10


def test_a_spike_is_a_fault_after_it_persists_and_is_let_be_once_attempts_are_used():
    h = Healing(_Cfg(), [], None, None)
    calm = [1.0 + 0.01 * (i % 3) for i in range(SPIKE_WARMUP + 5)]
    assert [h.check(x, 1.0) for x in calm] == [None] * len(calm)
    assert [h.check(5.0, 1.0) for _ in range(SPIKE_STEPS)] == [None] * (SPIKE_STEPS - 1) + [
        LOSS_SPIKE
    ]
    h.streak = 0
    assert h.check(1.2, 1.0) is None and h.check(5.0, 1.0) is None  # one spike: not yet a fault
    assert h.check(1.0, 1.0) is None and h.streak == 0  # back down: the streak ends
    h.recoveries = [{}] * 3  # used up: spikes are no fault (the run goes on, as before)
    assert [h.check(5.0, 1.0) for _ in range(SPIKE_STEPS + 1)] == [None] * (SPIKE_STEPS + 1)
    assert h.check(math.nan, 1.0) == "non-finite loss"
    assert h.check(1.0, math.inf) == "non-finite gradient norm"


def test_the_monitor_drops_recoveries_a_hostile_run_json_gets_wrong():
    run, wrong = clean(
        {
            "recoveries": [
                {"step": -3, "reason": "a\x1b]52;c;x\x07b", "rolled_back_to": 2,
                 "batches_skipped": [[1, -1]], "samples_skipped": list(range(MAX_SAMPLES_SKIPPED + 1)),
                 "lr_scale": 0.5},
            ]
        },
        checks_for(RunInfo),
    )  # fmt: skip
    r = run["recoveries"][0]
    assert r["step"] is None and r["rolled_back_to"] == 2 and r["samples_skipped"] is None
    assert r["batches_skipped"] == [[1]] and "\x1b" not in r["reason"]
    assert {w for w, _ in wrong} == {
        ".recoveries[0].step", ".recoveries[0].batches_skipped[0][1]",
        ".recoveries[0].samples_skipped",
    }  # fmt: skip
    state, wrong = clean({"recoveries": -1}, checks_for(State))
    assert state["recoveries"] is None and wrong
    too_many, wrong = clean({"recoveries": [{}] * 1001}, checks_for(RunInfo))
    assert too_many["recoveries"] is None and wrong


@pytest.mark.slow
def test_two_gloo_ranks_recover_together(tmp_path, no_dropout_bert):
    data = write_corpus(tmp_path / "train.jsonl", n=126)
    cfg = write_config(
        tmp_path / "ddp.toml", no_dropout_bert, data, tmp_path / "ddp",
        train={"epochs": 1, "batch_size": 16, "save_every": 0, "log_interval": 1,
               "recovery_snapshot_every": 1},
    )  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "trainer", str(cfg), "--nproc", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=patience(300),
        env={**os.environ, FAULT_ENV: "2,3"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "ddp"
    result = load(run / "result.json")
    assert result["status"] == "completed"
    a, b = result["rank_weight_checksums"]
    assert a == b and math.isfinite(a)  # both ranks rolled back alike
    recoveries = load(run / "run.json")["recoveries"]
    assert [(x["step"], x["rolled_back_to"], x["lr_scale"]) for x in recoveries] == [
        (2, 1, 0.5),
        (3, 2, 0.25),
    ]
