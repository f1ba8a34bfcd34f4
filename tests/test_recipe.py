"""The trainer's shape: the counters survive a checkpoint's JSON unchanged, importing the trainer
does nothing, and no function in trainer/ grows past a screenful (where the order of what it does
would hide again)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import REPO
from trainer.checkpoint import TrainerState
from trainer.progress import Progress

MAX_FUNCTION_LINES = 80
# Functions outside the trainer's core allowed to be longer, each with the reason (none today).
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}


def function_lengths(source: str, where: str) -> dict[str, int]:
    """Lines of every function and method (signature, docstring and body), as `where:name`."""
    return {
        f"{where}:{node.name}": node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_function_lengths_count_every_line_of_a_function():
    body = "        x = 1\n" * 90
    source = f"def short():\n    pass\n\nclass C:\n    def long(self):\n{body}"
    assert function_lengths(source, "m.py") == {"m.py:short": 2, "m.py:long": 91}


def test_no_function_in_trainer_is_longer_than_80_lines():
    lengths: dict[str, int] = {}
    for path in sorted((REPO / "trainer").rglob("*.py")):
        lengths |= function_lengths(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert len(lengths) > 100  # the walk saw the package
    too_long = {
        name: n
        for name, n in lengths.items()
        if n > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS_ALLOWED
    }
    assert too_long == {}


def test_progress_round_trips_through_a_checkpoints_json():
    progress = Progress(
        epoch=3,
        step=5,
        global_step=21,
        needs_validation=True,
        best={"epoch": 2, "val_loss": 0.4, "val_accuracy": 0.875},
        epochs_without_improvement=1,
        history=[{"epoch": 1, "is_best": False}, {"epoch": 2, "is_best": True}],
        elapsed_before=7.0,
        loss_sum=3.25,
        correct=30,
        seen=40,
    )
    state = TrainerState(
        **progress.to_saved(elapsed_s=12.5),
        scheduler={"last_epoch": 21},
        data_hash="sha256:0",
        config={},
        param_names=[],
        param_groups=[],
        rng=[],
        provenance={},
    )
    restored = Progress.from_saved(TrainerState(**orjson.loads(orjson.dumps(state.__dict__))))
    assert restored == Progress(**{**progress.__dict__, "elapsed_before": 12.5})


def test_an_epochs_end_advances_the_counters_and_keeps_one_best():
    progress = Progress(epoch=1)
    for val_loss in (0.5, 0.6, 0.4):
        is_best = progress.judge_epoch(val_loss, 0.9)
        progress.record_epoch({"epoch": progress.epoch, "is_best": is_best})
        progress.next_epoch()
    assert [e["is_best"] for e in progress.history] == [False, False, True]
    assert progress.best == {"epoch": 3, "val_loss": 0.4, "val_accuracy": 0.9}
    assert (progress.epoch, progress.step, progress.epochs_without_improvement) == (4, 0, 0)


def test_importing_the_trainer_seeds_nothing_and_installs_no_signal_handler():
    check = (
        "import signal, torch\n"
        "rng, handler = torch.get_rng_state(), signal.getsignal(signal.SIGINT)\n"
        "import trainer.train\n"
        "assert torch.equal(rng, torch.get_rng_state()), 'the RNG moved'\n"
        "assert signal.getsignal(signal.SIGINT) is handler, 'a handler was installed'\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", check], cwd=Path(REPO), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
