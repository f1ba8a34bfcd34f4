"""The epoch table's columns and cells, shared by the DataTable and the plain `--once` output."""

from __future__ import annotations

from typing import Any

from entrenar_tui import formatting as fmt
from trainer.monitor.text import duration

COLUMNS = (  # header, epochs.json key, width (fits 80 columns with the table's padding)
    ("", "mark", 1),
    ("ep", "epoch", 3),
    ("loss", "train_loss", 6),
    ("acc", "train_accuracy", 6),
    ("val loss", "val_loss", 8),
    ("val acc", "val_accuracy", 7),
    ("lr", "lr", 7),
    ("time", "epoch_time_s", 7),
    ("samples/s", "train_samples_per_sec", 9),
)


def epoch_cells(record: dict[str, Any], mark: str = "") -> list[str]:
    """One epoch record as the table's cells, in COLUMNS order."""
    values = {
        "mark": mark,
        "epoch": "" if record.get("epoch") is None else str(record.get("epoch")),
        "train_loss": fmt.metric(record.get("train_loss")),
        "train_accuracy": fmt.percent(record.get("train_accuracy")),
        "val_loss": fmt.metric(record.get("val_loss")),
        "val_accuracy": fmt.percent(record.get("val_accuracy")),
        "lr": fmt.lr(record.get("lr")),
        "epoch_time_s": duration(record.get("epoch_time_s")),
        "train_samples_per_sec": fmt.rate(record.get("train_samples_per_sec")),
    }
    return [values[key] for _, key, _ in COLUMNS]


def epoch_rows(epochs: list[dict[str, Any]], best: dict[str, Any] | None) -> list[str]:
    """The table as aligned plain-text lines, the best epoch starred."""
    rows = [[label for label, _, _ in COLUMNS]]
    rows += [epoch_cells(e, "*" if e is best else "") for e in epochs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
