"""The alerts of a classifier that is not learning, as the user meets them: the real MonitorApp
(Pilot) watching a scripted run (tests.fake_run through the real MonitorWriter) whose epochs carry
per_class and confusion, and `--once` on the same run. Each is told once, in order, as a warning
toast, a ring and a --notify-cmd call, and stays on the problems line; a healthy run tells none."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from entrenar_tui.output.plain import summary
from tests.fake_run import FakeRun
from tests.helpers import run_app, until
from tests.test_app_alerts import end_epoch, loaded, notified, notifier, problems, settle, watching

LABELS = ("safe", "needs-quoting", "unsafe")
# 64 validation samples: 32 safe, 20 needs-quoting, 12 unsafe (the majority baseline is 50%)
ALL_SAFE = [[32, 0, 0], [20, 0, 0], [12, 0, 0]]
NO_UNSAFE = [[30, 2, 0], [5, 15, 0], [6, 6, 0]]  # 70.3%; unsafe never predicted
AT_BASELINE = [[20, 8, 4], [8, 8, 4], [5, 4, 3]]  # 48.4%, every class predicted
LEARNED = [[30, 1, 1], [2, 17, 1], [1, 1, 10]]  # 88.9%


def classes(confusion: Sequence[Sequence[int]]) -> dict:
    """An epoch record's validation fields for this matrix, as the trainer writes them."""
    total = sum(map(sum, confusion))
    per_class = []
    for i, label in enumerate(LABELS):
        support, predicted = sum(confusion[i]), sum(row[i] for row in confusion)
        precision = confusion[i][i] / predicted if predicted else 0.0
        recall = confusion[i][i] / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(
            {"label": label, "precision": precision, "recall": recall, "f1": f1, "support": support}
        )
    return {
        "val_accuracy": sum(confusion[i][i] for i in range(len(confusion))) / total,
        "macro_f1": sum(c["f1"] for c in per_class) / len(per_class),
        "per_class": per_class,
        "confusion": [list(row) for row in confusion],
    }


class ClassifyingRun(FakeRun):
    """A FakeRun whose epoch records carry the validation's per-class metrics and confusion
    (epoch N: confusions[N-1]), and whose training loss stays flat over epoch 1 when asked."""

    def __init__(self, run_dir: Path, confusions, *, flat_first_epoch: bool = False, **kw):
        super().__init__(run_dir, epochs=len(confusions), **kw)
        self.confusions, self.flat = list(confusions), flat_first_epoch
        write = self.writer.write_epochs

        def write_epochs(epochs, best_epoch):
            for e in epochs:
                e.update(classes(self.confusions[e["epoch"] - 1]))
            write(epochs, best_epoch)

        self.writer.write_epochs = write_epochs  # type: ignore[method-assign]

    def loss_at(self, g: int) -> float:
        if self.flat and g <= self.spe:
            return 1.6 + 0.004 * math.sin(g * 1.7)  # ln 3 ± batch noise: nothing learned
        return super().loss_at(g)


def test_a_classifier_that_does_not_learn_is_told_each_problem_once(tmp_path):
    """Epoch 1: a flat loss and one class predicted; epoch 2: a class never predicted; epoch 3:
    no better than the majority class; epoch 4 learns; the end."""
    confusions = [ALL_SAFE, NO_UNSAFE, AT_BASELINE, LEARNED]
    run = ClassifyingRun(tmp_path / "exp", confusions, flat_first_epoch=True).start()
    for _ in range(5):
        run.train_step()
    out = tmp_path / "notified.jsonl"
    app, told, _clock = watching(run, notify_cmd=notifier(out))

    async def told_now(pilot, n: int, what: str) -> None:
        await until(pilot, lambda: len(told.toasts) >= n, what)
        await until(pilot, lambda: len(notified(out)) >= n, f"{what}: notified")

    async def body(pilot):
        await until(pilot, loaded(app, 5), "the run loads")
        for _ in range(run.spe - run.step):
            run.train_step()
        await told_now(pilot, 1, "the flat loss")
        end_epoch(run)
        await told_now(pilot, 2, "one class only")
        assert problems(app).startswith("! epoch 1: the model predicted one class only, 'safe'")
        run.play_epoch()
        await told_now(pilot, 3, "a class never predicted")
        run.play_epoch()
        await told_now(pilot, 4, "no better than the majority")
        run.play_epoch()
        await settle(pilot, app, run, "epoch 4 is in")
        run.finish("completed")
        await told_now(pilot, 5, "the end")
        await settle(pilot, app, run, "all is in")
        texts = [text for text, _ in told.toasts]
        assert texts[0].startswith("exp: training loss flat over the first epoch (1.60")
        assert texts[0].endswith(
            "try `entrenar-train lr-find CONFIG` or a higher train.learning_rate"
        )
        assert texts[1:4] == [
            "exp: epoch 1: the model predicted one class only, 'safe', for all 64 validation samples",
            "exp: epoch 2: the model never predicted 'unsafe' (1 of 3 classes) on validation",
            "exp: epoch 3: validation accuracy 48.4% is no better than always predicting the "
            "majority class 'safe' (50.0%)",
        ]
        assert texts[4] == "exp: the run completed at step 80"
        assert [s for _, s in told.toasts] == ["warning"] * 4 + ["information"]
        assert told.bells == 5
        kinds = ["flat_loss", "single_class", "never_predicted", "below_baseline", "finished"]
        assert notified(out) == [[kind, text] for kind, text in zip(kinds, texts, strict=True)]

    run_app(app, body)
    once = [line for line in summary(run.dir).splitlines() if line.startswith("alert")]
    assert [line.split(":")[0] for line in once] == [  # newest first
        "alert     finished",
        "alert     below_baseline",
        "alert     never_predicted",
        "alert     single_class",
        "alert     flat_loss",
    ]
    assert once[2] == (
        "alert     never_predicted: epoch 2: the model never predicted 'unsafe' (1 of 3 classes) "
        "on validation"
    )


def test_a_classifier_that_learns_tells_only_its_end(tmp_path):
    run = ClassifyingRun(tmp_path / "exp", [LEARNED] * 3).start()
    for _ in range(5):
        run.train_step()
    out = tmp_path / "notified.jsonl"
    app, told, _clock = watching(run, notify_cmd=notifier(out))

    async def body(pilot):
        await until(pilot, loaded(app, 5), "the run loads")
        for _ in range(run.spe - run.step):
            run.train_step()
        end_epoch(run)
        run.play_epoch()
        run.play_epoch()
        await settle(pilot, app, run, "epoch 3 is in")
        run.finish("completed")
        await until(pilot, lambda: told.toasts, "the end is told")
        await settle(pilot, app, run, "all is in")
        assert told.toasts == [("exp: the run completed at step 60", "information")]
        await until(pilot, lambda: len(notified(out)) == 1, "notified")

    run_app(app, body)
    once = [line for line in summary(run.dir).splitlines() if line.startswith("alert")]
    assert once == ["alert     finished: the run completed at step 60"]
