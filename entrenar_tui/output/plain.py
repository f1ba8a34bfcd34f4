"""`entrenar-tui monitor DIR --once`: the run as plain text for scripts, cron and CI (no Textual)."""

from __future__ import annotations

import time
from pathlib import Path

from entrenar_tui import formatting as fmt
from entrenar_tui.model.alerts import AlertSettings, Detector
from entrenar_tui.model.confusion import confusion_of, run_labels, weakest
from entrenar_tui.model.loading import load_run_model
from entrenar_tui.model.recoveries import once_text
from entrenar_tui.model.run_alerts import alerts_of
from entrenar_tui.model.sweeps import SweepPlot
from entrenar_tui.output.epoch_cells import epoch_rows
from trainer.monitor.control import trainer_liveness
from trainer.monitor.text import duration, printable
from trainer.monitor.values import is_number


def speed_line(speed: fmt.Speed, peak: dict) -> str:
    """`38.1 GFLOP/s · MFU 36.2% (run) · peak 52.9 GFLOP/s bf16 (measured: ...)`: the rate the run
    screen shows (formatting.run_speed), and the peak it is against (docs/contract.md, Model
    FLOPs and MFU)."""
    text = fmt.throughput(speed)
    if speed.mfu is not None and is_number(peak.get("flops_per_sec")):
        text += f" · peak {fmt.flops(peak['flops_per_sec'])}"
        return text + f" {peak.get('precision') or ''} ({peak.get('source') or 'peak'})"
    return text + f" · MFU unknown (no peak for {peak.get('device') or 'this device'})"


def f1_text(record: dict) -> str:
    """` · macro-F1 0.853` for an epoch that has one, else nothing."""
    value = record.get("macro_f1")
    return "" if value is None else f" · macro-F1 {fmt.metric3(value)}"


def weakest_line(record: dict, run: dict | None, which: str) -> str | None:
    """`weakest   epoch 3 (best): neutral F1 0.712 (n 13) · negative 0.800 (n 10)`: the classes
    with the lowest F1, where to look first; None for an epoch without per-class scores."""
    confusion = confusion_of(record, run_labels(run))
    classes = weakest(confusion, min(3, max(1, len(confusion.scores) - 1)))  # never all of them
    if not classes:
        return None
    parts = [
        f"{c.label} {'F1 ' if i == 0 else ''}{fmt.metric3(c.f1)} (n {c.support if c.support is not None else '?'})"
        for i, c in enumerate(classes)
    ]
    return f"weakest   epoch {record.get('epoch')} ({which}): " + " · ".join(parts)


def summary(
    run_dir: Path, *, now: float | None = None, alert_settings: AlertSettings | None = None
) -> str:
    """The run as plain lines (`healed`: how often the trainer recovered, the last one); after
    them its active alerts (newest first), one a line."""
    # Read as the app reads it (RunModel.apply): wrong types dropped and named, text printable.
    model = load_run_model(run_dir, clock=lambda: now if now is not None else time.time())
    model.tick(model.clock(), trainer_liveness(model.state, run_dir))
    state = model.state or {}
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
            f"({100 * done / total:.1f}%) · elapsed {duration(model.elapsed_s())} · ETA {duration(state.get('eta_s'))}"
        )
    if len(model.history):
        h = model.history
        lines.append(
            f"last      loss {fmt.metric(h.last('loss'))} · acc {fmt.percent(h.last('accuracy'))} · "
            f"lr {fmt.lr(h.last('lr'))} (step {fmt.count(h.global_steps[-1])})"
        )
    speed = fmt.run_speed(model.status, model.state, model.result)
    if speed is not None:
        lines.append(f"speed     {speed_line(speed, (model.run or {}).get('peak_flops') or {})}")
    if model.epochs:
        last = model.epochs[-1]
        lines.append(
            f"last val  epoch {last.get('epoch')} · val loss {fmt.metric(last.get('val_loss'))} · "
            f"val acc {fmt.percent(last.get('val_accuracy'))}{f1_text(last)}"
        )
    best = model.best_record()
    if best:
        lines.append(
            f"best      epoch {best.get('epoch')} · val loss {fmt.metric(best.get('val_loss'))} · "
            f"val acc {fmt.percent(best.get('val_accuracy'))}{f1_text(best)}"
        )
    shown = best or (model.epochs[-1] if model.epochs else None)
    weak = shown and weakest_line(shown, model.run, "best" if shown is best else "last")
    if weak:
        lines.append(weak)
    healed = once_text(model.recoveries)
    if healed:
        lines.append(f"healed    {healed}")
    for problem in model.problems():
        if problem.kind != "recovered":  # the `healed` line says it
            lines.append(f"{problem.level:<9} {problem.text}")
    if model.epochs:
        lines.append("")
        lines.extend(epoch_rows(model.epochs, best))
    # each recovery's alert is left out: the `healed` line counts them (a file may hold 1,000)
    alerts = [a for a in alerts_of(model, Detector(alert_settings)) if a.kind != "recovered"]
    if alerts:
        lines.append("")
        lines.extend(f"alert     {a.kind}: {a.message}" for a in reversed(alerts))
    # Names, paths and error texts come from run files and train.log: no control characters out.
    return "\n".join(printable(line) for line in lines)


IMPORTANCE_BAR = 20  # characters of a 100% bar in --once
MAX_KEY_TEXT = 48  # a key's name in --once (a hand-written sweep.json's may be any length)


def importance_lines(plots: tuple[SweepPlot, ...] | list[SweepPlot], root: Path) -> list[str]:
    """Each sweep's hyperparameter importances (sweep.json `importance`, the trainer's), most
    important first: `--once` on a sweep's directory, after the runs' table."""
    lines = []
    for plot in plots:
        where = plot.folder.relative_to(root).as_posix() if plot.folder != root else plot.name
        arrow = "↓" if plot.direction == "minimize" else "↑"
        done = sum(r.status == "completed" for r in plot.runs)
        head = f"importance  {where} ({plot.metric} {arrow}, {done} of {len(plot.runs)} runs completed)"
        if not plot.importance:
            lines.append(f"{head}: none yet (it needs 2 completed runs and 2 keys that vary)")
            continue
        lines.append(head)
        names = [
            k if len(k) <= MAX_KEY_TEXT else k[: MAX_KEY_TEXT - 1] + "…" for k, _ in plot.importance
        ]
        width = max(len(name) for name in names)
        for key, (_key, share) in zip(names, plot.importance, strict=True):
            cells = round(share * IMPORTANCE_BAR)
            shown = ("#" * cells).ljust(IMPORTANCE_BAR, ".")
            lines.append(f"  {key.ljust(width)}  {shown}  {100 * share:5.1f}%")
    return [printable(line) for line in lines]
