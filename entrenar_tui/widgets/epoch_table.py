"""The epoch table: one row per finished epoch with the best one starred, plus the epoch in
progress (its running train metrics) while the trainer works on it."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from entrenar_tui.epochs import COLUMNS, epoch_cells
from entrenar_tui.run_model import RunModel
from trainer.monitor.schema import LIVE_STATUSES

LIVE_ROW = "live"


def _cells(record: dict[str, Any], mark: str, style: str = "") -> list[Text]:
    cells = epoch_cells(record, mark)
    return [
        Text(c, style=style, justify="left" if i == 0 else "right") for i, c in enumerate(cells)
    ]


class EpochTable(DataTable):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, **kwargs)
        self._shown: tuple | None = None

    def on_mount(self) -> None:
        for label, key, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def show(self, model: RunModel) -> None:
        best = model.best_record()
        state = model.state or {}
        live = None
        last_epoch = (model.epochs[-1].get("epoch") or 0) if model.epochs else 0
        if (
            model.status in LIVE_STATUSES
            and (state.get("epoch") or 0) > last_epoch
            and state.get("step")
        ):
            live = {
                "epoch": state.get("epoch"),
                "train_loss": state.get("train_loss"),
                "train_accuracy": state.get("train_accuracy"),
                "lr": state.get("lr"),
            }
        key = (id(model.epochs), len(model.epochs), best and best.get("epoch"), repr(live))
        if key == self._shown:
            return
        self._shown = key
        at_end = self.scroll_y >= self.max_scroll_y  # follow new epochs unless scrolled back
        self.clear()
        for record in model.epochs:  # keyless rows: epochs.json may repeat an epoch number
            is_best = record is best
            self.add_row(*_cells(record, "★" if is_best else "", "bold" if is_best else ""))
        if live:
            self.add_row(*_cells(live, "▸", "italic"), key=LIVE_ROW)
        if at_end:
            self.call_after_refresh(self.scroll_end, animate=False)
