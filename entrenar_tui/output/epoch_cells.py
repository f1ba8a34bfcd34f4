"""The epoch table's columns and cells, shared by the DataTable and the plain `--once` output.
The macro-F1 column shows only for a run whose epochs carry it (a classifier's validation since
issue 28): an older run's table stays as it was."""

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
    ("F1", "macro_f1", 5),  # 0.853, as sklearn's report prints F1
    ("lr", "lr", 7),
    ("time", "epoch_time_s", 7),
    ("samples/s", "train_samples_per_sec", 9),
)


def columns_for(epochs: list[dict[str, Any]]) -> tuple[tuple[str, str, int], ...]:
    """COLUMNS, less macro-F1 where no epoch has one."""
    if any(e.get("macro_f1") is not None for e in epochs):
        return COLUMNS
    return tuple(c for c in COLUMNS if c[1] != "macro_f1")


def epoch_cells(
    record: dict[str, Any], mark: str = "", columns: tuple[tuple[str, str, int], ...] = COLUMNS
) -> list[str]:
    """One epoch record as the table's cells, in the order of `columns`."""
    values = {
        "mark": mark,
        "epoch": "" if record.get("epoch") is None else str(record.get("epoch")),
        "train_loss": fmt.metric(record.get("train_loss")),
        "train_accuracy": fmt.percent(record.get("train_accuracy")),
        "val_loss": fmt.metric(record.get("val_loss")),
        "val_accuracy": fmt.percent(record.get("val_accuracy")),
        "macro_f1": fmt.metric3(record.get("macro_f1")),
        "lr": fmt.lr(record.get("lr")),
        "epoch_time_s": duration(record.get("epoch_time_s")),
        "train_samples_per_sec": fmt.rate(record.get("train_samples_per_sec")),
    }
    return [values[key] for _, key, _ in columns]


def epoch_rows(epochs: list[dict[str, Any]], best: dict[str, Any] | None) -> list[str]:
    """The table as aligned plain-text lines, the best epoch starred."""
    columns = columns_for(epochs)
    rows = [[label for label, _, _ in columns]]
    rows += [epoch_cells(e, "*" if e is best else "", columns) for e in epochs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
