"""`entrenar-train CONFIG --auto-resume`: one command for a requeue loop on a preemptible cluster.

What it does depends on what output.dir holds:
* no run (nothing, or a start killed before it wrote run.json): start the run;
* a completed run of this config, or one a sweep's pruner stopped (`pruned`, final): say so and
  exit 0 at once;
* an unfinished run of this config (stopped, failed, or killed at any instant): resume it in
  place from the newest checkpoint that loads, or start it over with its saved config if it died
  before its first checkpoint;
* a run of another config (the resolved config, output.dir aside, differs from run.json's):
  refuse, exit 2, naming the keys that differ.
Under torchrun rank 0 decides and every rank follows (it may have been saved by another number
of processes: an elastic resume). Imports torch only to train.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.config import Config, config_differences
from trainer.errors import UserError
from trainer.lock import RunLock, refuse_if_running
from trainer.monitor.reader import ContractError, read_contract_json
from trainer.monitor.schema import Files
from trainer.monitor.text import printable


def read_run_file(run_dir: Path, name: str) -> dict[str, Any]:
    """A contract file of the run ({} if missing); a damaged one is a one-line error."""
    try:
        return read_contract_json(run_dir / name) or {}
    except ContractError as e:
        raise UserError(f"{run_dir}/{e}") from None


def run_completed(run_dir: Path) -> bool:
    """Whether the run's last trainer completed it: state.json and result.json both say so (a run
    resumed with more epochs and killed has the old result.json, but not the state)."""
    try:
        state = read_contract_json(run_dir / Files.STATE) or {}
        result = read_contract_json(run_dir / Files.RESULT) or {}
    except ContractError:
        return False
    return state.get("status") == "completed" and result.get("status") == "completed"


def run_pruned(run_dir: Path) -> bool:
    """Whether a sweep's pruner ended the run (state.json and result.json say `pruned`): final, a
    rerun never resumes it."""
    try:
        state = read_contract_json(run_dir / Files.STATE) or {}
        result = read_contract_json(run_dir / Files.RESULT) or {}
    except ContractError:
        return False
    return state.get("status") == "pruned" and result.get("status") == "pruned"


def decide(config: Config, say: Callable[[str], None]) -> dict[str, Any]:
    """{"action": start | resume | done}, from what output.dir holds (reads only); raises
    UserError to refuse."""
    run_dir = Path(config.output.dir)
    if not (run_dir / Files.RUN).is_file():
        say(f"{run_dir}: no run there yet; starting it")
        return {"action": "start"}
    saved = read_run_file(run_dir, Files.RUN).get("config")
    if not isinstance(saved, dict):
        raise UserError(f"{run_dir / Files.RUN}: no saved config to compare with")
    changed = config_differences(saved, config.to_dict(), ignore=("output.dir",))
    if changed:
        raise UserError(
            f"{run_dir} holds a run of another config: {'; '.join(changed)}; resume it as it is "
            f"with entrenar-train --resume {run_dir}, or choose another output.dir"
        )
    final = run_completed(run_dir) or run_pruned(run_dir)
    return {"action": "done" if final else "resume"}


def choose_checkpoint(run_dir: Path, say: Callable[[str], None]) -> tuple[RunLock, Path | None]:
    """For a resume: take the run's lock (refused if a trainer runs on it), tidy what a killed one
    left (as --resume does: never under a live trainer), find the newest checkpoint that loads.
    Returns the lock, held, for train to keep, and the checkpoint (None: start over in place)."""
    from trainer.checkpoint import clean_leftovers, newest_intact_checkpoint
    from trainer.run_dir import check_run_dir

    check_run_dir(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        clean_leftovers(run_dir / Files.CHECKPOINTS)
        checkpoint = newest_intact_checkpoint(run_dir, say)
    except BaseException:
        lock.release()
        raise
    if checkpoint is None:
        say(f"{run_dir}: no checkpoint yet; starting the run over with its saved config")
    return lock, checkpoint


def say_done(run_dir: Path) -> None:
    if run_pruned(run_dir):
        say(f"{run_dir}: pruned by its sweep (final); not resumed")
        return
    best = read_run_file(run_dir, Files.STATE).get("best")
    about = ""
    if isinstance(best, dict) and isinstance(best.get("val_loss"), (int, float)):
        about = f" (best epoch {best.get('epoch')}: val loss {best['val_loss']:.4f})"
    say(f"{run_dir}: already completed{about}; nothing to do")


def precheck(config: Config) -> bool:
    """Before torchrun starts the ranks: refuse at once (one line, not one a rank); True if the run
    already completed (nothing to launch)."""
    action = decide(config, say=lambda text: None)["action"]
    if action == "resume":
        refuse_if_running(config.output.dir)  # (rank 0 takes the lock, or refuses, again)
    if action == "done":
        say_done(Path(config.output.dir))
    return action == "done"


def auto_resume(config: Config, argv: list[str], allow_data_mismatch: bool = False) -> int:
    """Start, resume or leave the run in config.output.dir (see the module); the exit code."""
    from trainer.distributed import init_distributed
    from trainer.train import Resume, train

    dist = init_distributed()
    try:
        decision, lock = agreed_decision(dist, config)
    except BaseException:
        dist.close()
        raise
    if decision["action"] == "done":
        if dist.is_main:
            say_done(Path(config.output.dir))
        dist.close()
        return 0
    if decision["action"] == "start":
        return train(config, argv=argv)  # (train closes the process group)
    checkpoint = Path(decision["checkpoint"]) if decision["checkpoint"] else None
    resume = Resume(checkpoint=checkpoint, allow_data_mismatch=allow_data_mismatch)
    try:
        return train(config, resume=resume, argv=argv, lock=lock)
    finally:
        if lock is not None:
            lock.release()  # (train releases it first; a refusal before train's own try does here)


def agreed_decision(dist: Any, config: Config) -> tuple[dict[str, Any], RunLock | None]:
    """Rank 0's decision, on every rank, with the run lock rank 0 took for a resume; its refusal
    raised on every rank."""
    decision: dict[str, Any] = {}
    lock = None
    if dist.is_main:
        try:
            decision = decide(config, say=say)
            if decision["action"] == "resume":
                lock, checkpoint = choose_checkpoint(Path(config.output.dir), say)
                decision["checkpoint"] = str(checkpoint) if checkpoint else None
        except UserError as e:
            decision = {"action": "refuse", "error": str(e)}
    try:
        decision = dist.broadcast_object(decision)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if decision["action"] == "refuse":
        raise UserError(decision["error"])
    return decision, lock


def say(text: str) -> None:
    print(printable(text), file=sys.stderr, flush=True)
