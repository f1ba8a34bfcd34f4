"""`entrenar-train lr-find CONFIG`: the learning-rate range test (Smith 2015; fastai's `lr_find`).

A short run on the configured model and data with the LR rising exponentially from start_lr to
end_lr, one optimizer step each; the loss smoothed, the test stopped when the smoothed loss passes
4× its minimum (or is not finite); the suggested LR and the command that trains with it printed;
the curve written to lr_find.json in a directory of its own (never the configured run's).

The setup is the run's (FineTuneRecipe.setup_for_range_test) and so is a step's forward and
backward (the recipe's micro-batches, class weights, autocast: `_accumulate`). The loop here is
its own, a dozen lines: a run's step defers reading the loss to a flush every log_interval steps,
rolls back on faults and keeps a cosine schedule, and the range test needs each step's loss at
once (the stop rule reads it), a fault as its end, and its own LR every step.
"""

from __future__ import annotations

import copy
import itertools
import shlex
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from trainer.config import Config
from trainer.data import SHUFFLE_RULE, Corpus, epoch_batches
from trainer.errors import UserError
from trainer.lr_curve import (
    ALL_STEPS,
    DIVERGE_FACTOR,
    SmoothedLoss,
    Suggestion,
    lr_schedule,
    suggest,
)
from trainer.monitor.atomic import atomic_write_bytes, dumps
from trainer.monitor.schema import MAX_LR_FIND_POINTS, Files, LrFind, tagged
from trainer.monitor.text import printable, utc_now

LR_KEY = "train.learning_rate"  # the config key the suggestion is for
OUT_SUFFIX = "-lr-find"  # the default directory: beside output.dir, never inside it
PROGRESS_EVERY = 10  # a progress line every this many steps


@dataclass(frozen=True)
class RangeTest:
    """What to sweep (fastai's names: start_lr, end_lr; steps as the trainer counts them)."""

    start_lr: float = 1e-7
    end_lr: float = 1.0
    num_steps: int = 100

    def check(self) -> None:
        """One UserError naming each bad flag."""
        problems = []
        if not 0 < self.start_lr < float("inf"):
            problems.append(f"--start-lr {self.start_lr}: must be a positive number")
        if not 0 < self.end_lr < float("inf"):
            problems.append(f"--end-lr {self.end_lr}: must be a positive number")
        elif not problems and self.end_lr <= self.start_lr:
            problems.append(
                f"--end-lr {self.end_lr}: must be above --start-lr {self.start_lr} (the LR rises)"
            )
        if not 2 <= self.num_steps <= MAX_LR_FIND_POINTS:
            problems.append(f"--num-steps {self.num_steps}: must be 2 to {MAX_LR_FIND_POINTS}")
        if problems:
            raise UserError(*problems)


def default_out_dir(config: Config) -> Path:
    """`<output.dir>-lr-find`: beside the configured run's directory."""
    return Path(str(Path(config.output.dir)) + OUT_SUFFIX)


def check_out_dir(out: Path, config: Config) -> None:
    """The test's directory is its own: not the configured run's nor inside it, holding no run,
    lr_find.json (if there) a file it may replace."""
    from trainer.preflight import check_output_dir

    run_dir = Path(config.output.dir).resolve()
    resolved = out.resolve()
    if resolved == run_dir or run_dir in resolved.parents:
        raise UserError(
            f"--out {out}: inside output.dir {config.output.dir}; lr-find never writes into the "
            f"configured run's directory (the default is {default_out_dir(config)})"
        )
    if (out / Files.RUN).exists():
        raise UserError(f"--out {out}: holds a run ({Files.RUN}); choose another --out")
    check_output_dir(out, "--out", create=False)
    try:
        st = (out / Files.LR_FIND).lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{out / Files.LR_FIND}: not a regular file; remove it, then start again")


def train_command(config_file: str, overrides: list[str], lr: float) -> str:
    """`entrenar-train CONFIG [overrides] train.learning_rate=LR`, quoted for a POSIX shell (an
    LR override given to lr-find is replaced by the suggestion)."""
    kept = [o for o in overrides if o.split("=", 1)[0].strip() != LR_KEY]
    words = ["entrenar-train", config_file, *kept, f"{LR_KEY}={lr:.2e}"]
    return " ".join(shlex.quote(w) for w in words)


def run_lr_find(
    config: Config,
    corpus: Corpus,
    test: RangeTest,
    out: Path,
    config_file: str,
    overrides: list[str],
) -> int:
    """The range test, then lr_find.json and the suggestion on stdout; the exit code (0)."""
    from trainer.distributed import Dist
    from trainer.monitor.writer import NullWriter
    from trainer.preflight import preflight
    from trainer.train import FineTuneRecipe

    own = copy.deepcopy(config)
    own.output.dir = str(out)  # preflight checks (and makes) the test's directory, not the run's
    plan = preflight(own)
    recipe = FineTuneRecipe(own, None, None, NullWriter(out), Dist(), plan, corpus)
    recipe.setup_for_range_test()
    lrs = lr_schedule(test.start_lr, test.end_lr, test.num_steps)
    print(
        f"lr-find: {test.num_steps} steps of batch {own.train.batch_size}, LR {test.start_lr:.1e} "
        f"to {test.end_lr:.1e}; {len(corpus.train_texts)} train samples"
    )

    def write(record: LrFind) -> None:
        atomic_write_bytes(out / Files.LR_FIND, dumps(tagged(Files.LR_FIND, record), indent=True))

    def so_far(curve: Curve) -> None:  # the monitor follows a test still running
        record = lr_find_record(test, curve, None, config_file, overrides)
        del record["stopped_because"]  # (not stopped yet)
        write(record)

    curve = sweep(recipe, lrs, so_far)
    found = suggest(curve.lrs, curve.smoothed)
    record = lr_find_record(test, curve, found, config_file, overrides)
    write(record)
    for line in report(record, out):
        print(line)
    return 0


@dataclass
class Curve:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stopped_because: str


def sweep(recipe, lrs: list[float], so_far: Callable[[Curve], None]) -> Curve:
    """One optimizer step per LR, on the run's batches in the run's order (epoch after epoch);
    each step's loss read at once for the stop rule; `so_far` told every PROGRESS_EVERY steps."""
    import torch

    smoother = SmoothedLoss()
    curve = Curve([], [], [], ALL_STEPS)
    batches = run_batches(recipe)
    labels, weights = recipe.corpus.train_labels, recipe.sample_weight
    recipe.model.train()
    for step, lr in enumerate(lrs, start=1):
        batch = next(batches)
        for group in recipe.optimizer.param_groups:
            group["lr"] = lr
        weight = sum(weights[labels[i]] for i in batch)
        loss_sum, _ = recipe._accumulate(batch, weight)
        torch.nn.utils.clip_grad_norm_(recipe.trainable, recipe.max_grad_norm)
        recipe.optimizer.step()
        recipe.optimizer.zero_grad(set_to_none=True)
        loss = float(loss_sum) / weight
        smoothed = smoother.add(loss)
        curve.lrs.append(lr)
        curve.losses.append(loss)
        curve.smoothed.append(smoothed)
        if step % PROGRESS_EVERY == 0:
            print(f"  step {step:>4}  lr {lr:.2e}  loss {loss:.4f}  smoothed {smoothed:.4f}")
            so_far(curve)
        if (reason := smoother.stop_reason(loss, smoothed)) is not None:
            curve.stopped_because = reason
            break
    return curve


def run_batches(recipe) -> Iterator[list[int]]:
    """The run's batches, epoch 1, 2, ... in the order a run would take them."""
    cfg = recipe.train_config
    for epoch in itertools.count(1):
        yield from epoch_batches(
            recipe.train_lengths, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length,
            SHUFFLE_RULE,
        )  # fmt: skip


def lr_find_record(
    test: RangeTest,
    curve: Curve,
    found: Suggestion | None,
    config_file: str,
    overrides: list[str],
) -> LrFind:
    """lr_find.json's fields (docs/contract.md)."""
    record: LrFind = {
        "config_file": config_file,
        "lr_key": LR_KEY,
        "start_lr": test.start_lr,
        "end_lr": test.end_lr,
        "num_steps": test.num_steps,
        "steps": len(curve.lrs),
        "lrs": curve.lrs,
        "losses": curve.losses,
        "smoothed": curve.smoothed,
        "stopped_because": curve.stopped_because,
        "created_at": utc_now(),
    }
    if found is not None:
        record.update(
            suggested_lr=found.lr,
            rule=found.rule,
            why=found.why,
            minimum_lr=found.minimum_lr,
            command=train_command(config_file, overrides, found.lr),
        )
    return record


def stop_text(reason: str) -> str:
    if reason == ALL_STEPS:
        return "ran every step"
    if reason == "diverged":
        return f"stopped: diverged (the smoothed loss passed {DIVERGE_FACTOR:g}× its minimum)"
    return f"stopped: {reason}"


def report(record: LrFind, out: Path) -> list[str]:
    """What lr-find prints at its end: the curve's extent, the suggestion and its rule, the
    command, where the curve is."""
    lrs = record["lrs"]
    lines = [
        f"lr-find: {record['steps']} steps, LR {lrs[0]:.1e} to {lrs[-1]:.1e}; "
        f"{stop_text(record['stopped_because'])}"
    ]
    if "suggested_lr" in record:
        lines += [
            f"suggested learning rate: {record['suggested_lr']:.2e} ({record['rule']}: "
            f"{record['why']})",
            "train with it:",
            f"  {printable(record['command'])}",
        ]
    else:
        lines.append("no suggestion: no step had a finite loss")
    lines.append(
        f"curve: {printable(out / Files.LR_FIND)} (entrenar-tui monitor {shlex.quote(str(out))})"
    )
    return lines
