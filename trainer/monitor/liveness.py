"""The crash rule, once: when a run whose state.json says it is live is shown as crashed (its
trainer is gone, or its heartbeat is far older than a typical step). The run screen, `--once` and
the browser all decide through effective_status, with the typical step time of
StepHistory.typical_step_s (the median gap between the last step lines), so they never disagree."""

from __future__ import annotations

from typing import Any

from trainer.monitor.schema import LIVE_STATUSES
from trainer.monitor.text import format_age

# A live status whose heartbeat is older than this is shown as crashed. "Far older than a typical
# step": STALE_STEPS typical steps, but never less than STALE_MIN_S (checkpoint saves, slow disks).
STALE_MIN_S = 60.0
STALE_STEPS = 20
STALE_UNKNOWN_STEP_S = 300.0  # no step seen yet to know what "typical" is
STALE_INITIALIZING_S = 900.0  # loading a model and tokenizing may write nothing for minutes


def stale_after_s(status: str, typical_step_s: float | None) -> float:
    """How old a heartbeat may get before a live status is not believed any more."""
    if status == "initializing":
        return STALE_INITIALIZING_S
    if typical_step_s is None or typical_step_s <= 0:
        return STALE_UNKNOWN_STEP_S
    return max(STALE_MIN_S, STALE_STEPS * typical_step_s)


def effective_status(
    state: dict[str, Any] | None,
    now: float,
    *,
    trainer: str = "unknown",
    typical_step_s: float | None = None,
) -> tuple[str, str | None]:
    """(status, why) where status is the written one, or "crashed" when the state says the run is
    live but its trainer is gone on this host (`trainer` == "gone") or the heartbeat is far older
    than a typical step. `trainer` is what control.trainer_liveness says: alive, gone, remote,
    unknown."""
    if not state:
        return "waiting", None
    status = str(state.get("status") or "unknown")
    if status not in LIVE_STATUSES:
        return status, None
    pid = state.get("pid")
    if trainer == "gone":  # proven by the kernel (control.trainer_liveness); its proof, if given
        proof = getattr(trainer, "why", "")
        if not proof or proof.startswith(("no process", f"pid {pid} has exited")):
            return "crashed", f"trainer pid {pid} is gone (status still said {status})"
        if "another process now" in proof:  # the trainer is gone, its pid reused
            return "crashed", f"trainer pid {pid} is gone: {proof} (status still said {status})"
        # the named process lives, but the run's lock proves it is not the trainer
        return (
            "crashed",
            f"pid {pid} is not this run's trainer: {proof} (status still said {status})",
        )
    heartbeat = state.get("heartbeat")
    if isinstance(heartbeat, (int, float)):
        age = now - heartbeat
        limit = stale_after_s(status, typical_step_s)
        if age > limit:
            return "crashed", f"no heartbeat for {format_age(age)} (status still says {status})"
    return status, None
