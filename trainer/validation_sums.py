"""One validation batch's sums on this rank, apart from the recipe (trainer/train.py) that adds them
up across batches and ranks: a pure function of the model and the batch's features."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def validation_sums(
    model: torch.nn.Module,
    loaded: Any,
    collate: Any,
    features: list[dict[str, Any]],
    class_weights: torch.Tensor,
) -> torch.Tensor:
    """This rank's sums over its shard of a validation batch (`features`, maybe none): weighted
    loss, weight, correct, samples, and a free slot for the stop flag (float64, on the CPU).
    `loaded` gives the autocast; the device is the class weights'."""
    if not features:
        return torch.zeros(5, dtype=torch.float64)
    device = class_weights.device
    batch = collate(features)
    labels = batch.pop("labels").to(device)
    inputs = {k: v.to(device) for k, v in batch.items()}
    with loaded.autocast():
        logits = model(**inputs).logits.float()
    losses = F.cross_entropy(logits, labels, reduction="none")
    w = class_weights[labels]
    correct = (logits.argmax(-1) == labels).sum().float()
    sums = [
        (losses * w).sum(),
        w.sum(),
        correct,
        torch.tensor(float(len(features))),
        torch.tensor(0.0),
    ]
    return torch.stack(sums).double().cpu()
