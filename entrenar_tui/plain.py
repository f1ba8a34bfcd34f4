"""`entrenar-tui monitor DIR --once`: the run as plain text for scripts, cron and CI (no Textual)."""

from __future__ import annotations

import time
from pathlib import Path

from entrenar_tui import formatting as fmt
from entrenar_tui.epochs import epoch_rows
from entrenar_tui.run_model import RunModel
from trainer.monitor.control import trainer_liveness
from trainer.monitor.reader import load_run


def summary(run_dir: Path, *, now: float | None = None) -> str:
    snap = load_run(run_dir)
    model = RunModel(run_dir, clock=lambda: now if now is not None else time.time())
    model.exists, model.run, model.result = snap.exists, snap.run, snap.result
    model.history, model.epochs, model.best_epoch = snap.history, snap.epochs, snap.best_epoch
    model.file_problems = dict(snap.problems)
    model.bad_lines = len(snap.bad_lines)
    model.first_bad_line = snap.bad_lines[0] if snap.bad_lines else None
    if snap.state is not None:
        model.set_state(snap.state)
    model.tick(model.clock(), trainer_liveness(snap.state))
    state = snap.state or {}
    lines = [
        f"run       {model.name}  ({model.model_name}, world {model.world_size})",
        f"status    {model.status}",
    ]
    total, gstep = state.get("total_steps"), state.get("global_step")
    if total:
        done = total if model.status == "completed" else (gstep or 0)
        step = state.get("steps_per_epoch") if model.status == "completed" else state.get("step")
        lines.append(
            f"progress  epoch {state.get('epoch')}/{state.get('total_epochs')} · step {step}/"
            f"{state.get('steps_per_epoch')} · global {fmt.count(gstep or 0)}/{fmt.count(total)} "
            f"({100 * done / total:.1f}%) · elapsed {fmt.duration(model.elapsed_s())} · ETA {fmt.duration(state.get('eta_s'))}"
        )
    if len(model.history):
        h = model.history
        lines.append(
            f"last      loss {fmt.metric(h.last('loss'))} · acc {fmt.percent(h.last('accuracy'))} · "
            f"lr {fmt.lr(h.last('lr'))} (step {fmt.count(h.global_steps[-1])})"
        )
    if model.epochs:
        last = model.epochs[-1]
        lines.append(
            f"last val  epoch {last.get('epoch')} · val loss {fmt.metric(last.get('val_loss'))} · "
            f"val acc {fmt.percent(last.get('val_accuracy'))}"
        )
    best = model.best_record()
    if best:
        lines.append(
            f"best      epoch {best.get('epoch')} · val loss {fmt.metric(best.get('val_loss'))} · "
            f"val acc {fmt.percent(best.get('val_accuracy'))}"
        )
    for problem in model.problems():
        lines.append(f"{problem.level:<9} {problem.text}")
    if model.epochs:
        lines.append("")
        lines.extend(epoch_rows(model.epochs, best))
    return "\n".join(lines)
