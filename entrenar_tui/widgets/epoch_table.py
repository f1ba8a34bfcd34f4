"""The epoch table: one row per finished epoch with the best one starred, plus the epoch in
progress (its running train metrics, blank until it has a logged step of its own) while the
trainer works on it, and after a stop, a failure or a crash inside an epoch, that epoch's row
marked with where it ended (`■ … stopped 7/12`). A macro-F1 column joins once an epoch has one
(output/epoch_cells.columns_for)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from entrenar_tui.model.open_epoch import has_own_values
from entrenar_tui.model.run import RunModel
from entrenar_tui.output.epoch_cells import columns_for, epoch_cells
from trainer.monitor.schema import LIVE_STATUSES

LIVE_ROW = "live"


def _cells(record: dict[str, Any], mark: str, columns: tuple, style: str = "") -> list[Text]:
    cells = epoch_cells(record, mark, columns)
    return [
        Text(c, style=style, justify="left" if i == 0 else "right") for i, c in enumerate(cells)
    ]


class EpochTable(DataTable):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, **kwargs)
        self._shown: tuple | None = None
        self.shown_columns: tuple = ()

    def on_mount(self) -> None:
        self._set_columns(columns_for([]))

    def _set_columns(self, columns: tuple) -> None:
        self.clear(columns=True)
        self.shown_columns = columns
        for label, key, width in columns:
            self.add_column(label, key=key, width=width)

    def show(self, model: RunModel) -> None:
        best = model.best_record()
        partial = partial_epoch(model)
        key = (id(model.epochs), len(model.epochs), best and best.get("epoch"), repr(partial))
        if key == self._shown:
            return
        self._shown = key
        columns = columns_for(model.epochs)
        if columns != self.shown_columns:
            self._set_columns(columns)
        at_end = self.scroll_y >= self.max_scroll_y  # follow new epochs unless scrolled back
        self.clear()
        for record in model.epochs:  # keyless rows: epochs.json may repeat an epoch number
            is_best = record is best
            mark, style = ("★", "bold") if is_best else ("", "")
            self.add_row(*_cells(record, mark, columns, style))
        if partial is not None:
            record, mark, note = partial
            cells = _cells(record, mark, columns, "italic")
            if note:  # where it ended, in the validation columns it never reached
                for column, text in zip(("val_loss", "val_accuracy"), note):
                    cells[[k for _, k, _ in columns].index(column)] = Text(
                        text, style="italic", justify="right"
                    )
            self.add_row(*cells, key=LIVE_ROW)
        if at_end:
            self.call_after_refresh(self.scroll_end, animate=False)


ENDED = ("stopped", "pruned", "failed", "crashed")  # a run that ended inside an epoch keeps its row


def partial_epoch(model: RunModel) -> tuple[dict[str, Any], str, tuple[str, str] | None] | None:
    """The epoch begun but not finished: its running train metrics (none until it has a logged
    step of its own: before that, state.json's are the last epoch's), its mark (▸ live, ■ ended)
    and, once the run has ended inside it, (status, "step/steps") to say where."""
    state = model.state or {}
    last_epoch = (model.epochs[-1].get("epoch") or 0) if model.epochs else 0
    epoch, step = state.get("epoch") or 0, state.get("step")
    status = model.status
    if not (epoch > last_epoch and step) or (status not in LIVE_STATUSES and status not in ENDED):
        return None
    own = has_own_values(model)
    record = {
        "epoch": epoch,
        "train_loss": state.get("train_loss") if own else None,
        "train_accuracy": state.get("train_accuracy") if own else None,
        "lr": state.get("lr"),  # (moves with every batch, not only with a logged one)
    }
    if status in LIVE_STATUSES:
        return record, "▸", None
    return record, "■", (status, f"{step}/{model.steps_per_epoch or '?'}")
