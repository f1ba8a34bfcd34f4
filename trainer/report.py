"""Readable progress on stderr for the headless trainer: a line per log_interval, a summary per epoch.

Colour only when stderr is a terminal; plain text in logs, tmux captures and cluster job output.
What comes from outside (a note naming a label or a file, the run directory, an error text) is made
printable first: only the reporter's own colours are escape sequences.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from trainer.monitor.text import duration, printable
from trainer.monitor.units import speed_text

if TYPE_CHECKING:
    from trainer.config import Config
    from trainer.run_recorder import RunSetup


def processes(n: int) -> str:
    return f"{n} process{'es' if n != 1 else ''}"


def fmt_speed(flops_per_sec: float | None, mfu: float | None) -> str:
    """Achieved model FLOP/s and MFU: `1.23 TFLOP/s MFU 38.2%` (MFU left out without a peak)."""
    return "" if flops_per_sec is None else speed_text(flops_per_sec, mfu, sep=" ")


class Reporter:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.color = self.stream.isatty()

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def say(self, text: str) -> None:
        """Lines of text that may quote names, files and errors: each made printable."""
        self._emit("\n".join(printable(line) for line in text.split("\n")))

    def _emit(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def start(self, s: RunSetup, config: Config, world_size: int) -> None:
        """The start lines: the model and data, the batch's shape, the peak MFU is against."""
        loaded, cfg = s.loaded, config.train
        quantization = "NF4 base (QLoRA)" if config.model.quantize == "nf4" else "no quantization"
        self.say(
            f"{loaded.architecture} ({loaded.params_trainable:,} of {loaded.params_total:,} parameters trainable) "
            f"on {s.device} in {loaded.precision}, {quantization}; {s.n_train} train / "
            f"{s.n_val} validation samples, {len(s.corpus.label_names)} labels; "
            f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} × {s.steps_per_epoch} steps"
        )
        checkpointing = ", gradient checkpointing" if cfg.gradient_checkpointing else ""
        self.say(
            f"batch {cfg.batch_size} = micro-batch {s.micro_batch_size} × "
            f"{s.accumulation} accumulation step{'s' if s.accumulation != 1 else ''} × "
            f"{processes(world_size)}{checkpointing}"
        )
        each = f" per process (MFU is against {world_size} ×)" if world_size > 1 else ""
        self.say(f"peak: {s.peak.describe()}{each}")

    def step(self, s: dict[str, Any]) -> None:
        self.say(
            f"epoch {s['epoch']}/{s['total_epochs']} step {s['step']}/{s['steps_per_epoch']} "
            f"loss {s['loss']:.4f} acc {s['train_accuracy']:.3f} lr {s['lr']:.2e} "
            f"|g| {s['grad_norm']:.3f} {s['samples_per_sec']:.0f} samples/s "
            f"{fmt_speed(s.get('flops_per_sec'), s.get('mfu'))} eta {duration(s['eta_s'], '?')}"
        )

    def epoch(self, e: dict[str, Any], total_epochs: int) -> None:
        best = self._style(" ★ best", "1;32") if e["is_best"] else ""
        macro_f1 = f" macro-F1 {e['macro_f1']:.3f}" if e.get("macro_f1") is not None else ""
        self._emit(
            f"epoch {e['epoch']}/{total_epochs} done in {e['epoch_time_s']:.1f}s: "
            f"train loss {e['train_loss']:.4f} acc {e['train_accuracy']:.3f} | "
            f"val loss {e['val_loss']:.4f} acc {e['val_accuracy']:.3f}{macro_f1} | lr {e['lr']:.2e} | "
            f"{e['train_samples_per_sec']:.0f} samples/s{best}"
        )

    def summary(self, result: dict[str, Any], run_dir: str) -> None:
        best = result.get("best")
        lines = [
            self._style(f"run {result['status']}", "1"),
            f"  epochs run     {len(result['epochs'])}"
            + (" (early stop)" if result.get("stopped_early") else ""),
            f"  total time     {duration(result['total_time_s'], '?')}",
        ]
        speed = fmt_speed(result.get("flops_per_sec"), result.get("mfu"))
        if speed:
            lines.append(f"  model FLOPs    {speed} (training steps)")
        if best:
            lines.append(
                f"  best epoch     {best['epoch']}: val loss {best['val_loss']:.4f}, val accuracy {best['val_accuracy']:.3f}"
            )
        if result.get("error"):
            lines.append(f"  error          {printable(result['error'])}")
        lines.append(f"  run directory  {printable(run_dir)}")
        self._emit("\n".join(lines))
