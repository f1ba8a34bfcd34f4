"""The flat_loss alert (entrenar_tui/model/flat_loss.py): epoch 1's smoothed training loss fell by
less than 1% of its start. On scripted losses (it waits for epoch 1's last step, is told once,
is moved by neither a spike nor NaNs), and on the losses of real runs: the tiny BERT and the
quickstart, each at a learning rate that learns and at 1e-6, read back through `--once`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from entrenar_tui.model.alerts import AlertLog, AlertSettings, Detector, StepColumns, detect
from entrenar_tui.model.flat_loss import epoch_one_fall
from entrenar_tui.model.loading import load_run_model
from entrenar_tui.output.plain import summary
from tests.conftest import REPO, write_config, write_corpus
from tests.helpers import hook_steps
from trainer.monitor.control import request_stop

SPE = 40  # steps per epoch of the scripted runs


def steps(losses) -> list[dict]:
    return [{"global_step": i + 1, "loss": loss, "t": 1000.0 + i} for i, loss in enumerate(losses)]


def noisy(start: float, end: float, n: int, noise: float = 0.03, seed: int = 0) -> list[float]:
    """A loss going linearly from `start` to `end` over n steps, with seeded per-batch noise."""
    rng = np.random.default_rng(seed)
    return (np.linspace(start, end, n) + rng.normal(0, noise, n)).tolist()


def flat_alerts(losses, spe: int = SPE, settings: AlertSettings | None = None) -> list:
    found = detect(steps(losses), [], "running", 0.0, settings, steps_per_epoch=spe)
    return [a for a in found if a.kind == "flat_loss"]


def test_a_flat_first_epoch_is_told_once_when_its_last_step_is_in():
    losses = noisy(1.609, 1.605, 2 * SPE)
    log, detector, told_at = AlertLog(), Detector(), {}
    for n in range(1, len(losses) + 1):
        for alert in log.new(
            detector.detect(steps(losses[:n]), [], "running", 0.0, steps_per_epoch=SPE)
        ):
            told_at[alert.key] = n  # fmt: skip
    assert told_at == {"flat_loss@epoch:1": SPE}
    (alert,) = flat_alerts(losses)
    assert alert.message.startswith("training loss flat over the first epoch (1.6")
    assert alert.message.endswith(
        "%): the learning rate is probably too low; try `entrenar-train lr-find CONFIG` or a "
        "higher train.learning_rate"
    )


def test_a_falling_first_epoch_is_no_alert_and_a_flat_second_one_is_not_looked_at():
    falling = noisy(1.609, 1.50, SPE)  # about 7% down, as noisy as a real batch's loss
    assert flat_alerts(falling + [1.5] * SPE) == []


def test_the_fall_is_between_the_medians_of_the_first_and_last_quarters():
    losses = [2.0] * 10 + [1.0] * 20 + [1.97] * 10
    assert epoch_one_fall(np.arange(1.0, 41), np.array(losses), SPE) == (2.0, 1.97)
    assert epoch_one_fall(np.arange(1.0, 41), np.array(losses), 50) is None  # epoch 1 not over
    assert len(flat_alerts(losses)) == 0  # 1.5% down: not flat
    assert len(flat_alerts([2.0] * 10 + [1.0] * 20 + [1.985] * 10)) == 1  # 0.75% down: flat


def test_a_spike_or_nans_in_the_first_epoch_do_not_decide_it():
    losses = noisy(1.609, 1.605, SPE)
    spiked = [*losses[:5], 40.0, *losses[6:-3], 50.0, *losses[-2:]]
    assert len(flat_alerts(spiked)) == 1
    with_nans = [math.nan if i % 3 == 0 else v for i, v in enumerate(noisy(1.6, 1.3, SPE))]
    assert flat_alerts(with_nans) == []
    assert len(flat_alerts([math.nan if i % 3 == 0 else v for i, v in enumerate(losses)])) == 1


def test_no_verdict_without_steps_per_epoch_or_with_fewer_than_8_losses():
    flat = noisy(1.609, 1.605, SPE)
    assert flat_alerts(flat, spe=0) == []
    assert flat_alerts(flat[:7], spe=7) == []
    assert len(flat_alerts(flat[:8], spe=8)) == 1
    assert flat_alerts([0.0] * SPE) == []  # a start not above 0 cannot be fallen from


def test_the_threshold_and_the_switch_are_settings():
    down_3_percent = noisy(1.6, 1.552, SPE, noise=0.0)
    assert flat_alerts(down_3_percent) == []
    assert len(flat_alerts(down_3_percent, settings=AlertSettings(flat_loss_drop=0.05))) == 1
    assert flat_alerts(noisy(1.6, 1.6, SPE), settings=AlertSettings(flat_loss=False)) == []


def test_a_detector_keeps_the_verdict_until_the_loss_column_is_edited():
    """A watched run's first epoch is judged once: later ticks (the same `edits`) reuse it; a
    resume that redoes steps of epoch 1 (the column edited) is judged again."""
    flat = np.array(noisy(1.609, 1.605, 2 * SPE))
    gs, t = np.arange(1.0, 2 * SPE + 1), np.zeros(2 * SPE)
    detector = Detector()

    def kinds(edits: int) -> list[str]:
        columns = StepColumns(gs, flat, t, edits)
        return [a.kind for a in detector.detect(columns, [], "running", 0.0, steps_per_epoch=SPE)]

    assert kinds(edits=3) == ["flat_loss"]
    flat[:SPE] = np.linspace(1.6, 1.3, SPE)  # (behind the Detector's back: edits unchanged)
    assert kinds(edits=3) == ["flat_loss"]
    assert kinds(edits=4) == []


# -- real runs -------------------------------------------------------------------------------------


def flat_lines(run_dir) -> list[str]:
    """The run's flat_loss line as `--once` prints it (none when not flat)."""
    return [
        line for line in summary(run_dir).splitlines() if line.startswith("alert     flat_loss")
    ]


def fall_of(run_dir) -> float:
    model = load_run_model(run_dir)
    history = model.history
    start, end = epoch_one_fall(
        history.global_steps.array.astype(float),
        history.series["loss"].values.array,
        model.steps_per_epoch,
        model.warmup_steps,
    )
    return (start - end) / start


@pytest.mark.parametrize(("lr", "flat"), [(3e-2, False), (1e-6, True)])
def test_a_real_tiny_bert_run_is_flat_at_lr_1e_6_and_not_where_its_loss_falls(
    lr, flat, tmp_path, tiny_bert_dir
):
    """One epoch of the real trainer on the tiny BERT (38 steps of 8 samples): at lr 3e-2 its
    loss falls (5.6%, noisily: a random 2-layer model, no classifier yet), at 1e-6 it stays (-0.3%)."""
    from trainer.cli import main as train

    corpus = write_corpus(tmp_path / "train.jsonl", n=400)
    config = write_config(
        tmp_path / "c.toml",
        tiny_bert_dir,
        corpus,
        tmp_path / "run",
        train={"epochs": 1, "batch_size": 8, "learning_rate": lr, "save_every": 0},
    )
    assert train([str(config)]) == 0
    fall = fall_of(tmp_path / "run")
    print(f"tiny BERT at lr {lr}: epoch 1's smoothed loss fell {fall:.2%}")
    lines = flat_lines(tmp_path / "run")
    if flat:
        assert fall < 0.01
        (line,) = lines
        assert line.startswith("alert     flat_loss: training loss flat over the first epoch (1.6")
    else:
        assert fall > 0.01 and lines == []


@pytest.mark.slow
def test_real_quickstart_epoch_one_is_not_flat_and_at_lr_1e_6_it_is(tmp_path, monkeypatch):
    """The quickstart as it is (10 epochs planned: its warm-up is 45 of epoch 1's 75 steps, so the
    rule looks at epoch 1), stopped after step 85, and the same at lr 1e-6."""
    from trainer.cli import main as train

    falls = {}
    for name, extra in (("quickstart", []), ("lr-1e-6", ["train.learning_rate=1e-6"])):
        run = tmp_path / name
        hook_steps(monkeypatch, 85, request_stop)  # a hook a run: each fires once
        train([str(REPO / "examples" / "quickstart.toml"), f"output.dir={run}", *extra])
        falls[name] = fall_of(run)
    print(f"quickstart, epoch 1's smoothed loss fell: {falls}")
    assert falls["quickstart"] > 0.01 > falls["lr-1e-6"], falls
    assert flat_lines(tmp_path / "quickstart") == []
    assert len(flat_lines(tmp_path / "lr-1e-6")) == 1


def test_a_warm_up_longer_than_an_epoch_is_not_judged_the_epoch_after_it_is():
    """A run of many epochs warms its LR up for more than one (the default warm-up is 10% of all
    steps): a loss that stays put while the LR is near 0 is no verdict until half an epoch after
    the warm-up's end, and then told once."""
    warm = 60  # the warm-up's steps: 1.5 epochs
    learning = [1.609] * warm + noisy(1.609, 1.30, 2 * SPE)
    stuck = [1.609] * warm + noisy(1.609, 1.607, 2 * SPE)

    def told(losses) -> dict[str, int]:
        log, detector, at = AlertLog(), Detector(), {}
        for n in range(1, len(losses) + 1):
            found = detector.detect(
                steps(losses[:n]), [], "running", 0.0, steps_per_epoch=SPE, warmup_steps=warm
            )
            for alert in log.new(found):
                at[alert.key] = n
        return at

    assert told(learning) == {}  # epoch 1, all warm-up, was flat: not judged
    assert told(stuck) == {"flat_loss@epoch:1": warm + SPE // 2}  # the warm-up + half an epoch
    n = warm + SPE // 2 - 1  # a step before
    assert epoch_one_fall(np.arange(1.0, n + 1), np.array(stuck[:n]), SPE, warm) is None
    assert flat_alerts(stuck) != []  # the same losses, the warm-up unknown: epoch 1 is judged


def test_the_warm_up_is_the_trainers_own_count_from_run_json_and_state_json(tmp_path):
    """ceil(train.warmup_fraction × total steps), as trainer/train.py gives the scheduler; 0 where
    either is missing or not a number."""
    from entrenar_tui.model.run import RunModel

    model = RunModel(tmp_path)
    assert model.warmup_steps == 0
    model.run = {"config": {"train": {"warmup_fraction": 0.06}}}
    model.state = {"total_steps": 750}
    assert model.warmup_steps == 45  # the quickstart: 10 epochs of 75 steps
    model.run = {"config": {"train": {"warmup_fraction": "0.1"}}}
    assert model.warmup_steps == 0
