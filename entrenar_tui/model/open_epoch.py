"""Whose numbers state.json's running values are.

`train_loss`, `train_accuracy` and `samples_per_sec` are as of the last step written to
steps.jsonl, while `epoch` and `step` move every batch (docs/contract.md): for the first steps of
an epoch, until the trainer's first flush (`train.log_interval` steps), they are still the
previous epoch's. Shown beside the new epoch's number they would say what that epoch has not done.
"""

from __future__ import annotations

from entrenar_tui.model.run import RunModel


def has_own_values(model: RunModel) -> bool:
    """The epoch state.json is in has a steps.jsonl line of its own (a global step past the end of
    the epochs before it), so the state's running values are that epoch's. False while that is
    not known (no steps per epoch, the history not read yet): blank rather than another epoch's."""
    epoch = (model.state or {}).get("epoch")
    steps_per_epoch, history = model.steps_per_epoch, model.history
    if not isinstance(epoch, int) or epoch < 1 or not steps_per_epoch or not len(history):
        return False
    return int(history.global_steps[-1]) > (epoch - 1) * steps_per_epoch
