"""One validation batch's sums on this rank, apart from the recipe (trainer/train.py) that adds them
up across batches and ranks: a pure function of the model and the batch's features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Validation:
    """One epoch's validation, summed over batches and ranks: the weighted loss, the accuracy,
    and the K × K confusion matrix (rows = true, columns = predicted; None beyond MAX_CLASSES)."""

    loss: float
    accuracy: float
    confusion: list[list[int]] | None


@dataclass
class Tally:
    """One validation pass's running sums, every rank's: the loss and accuracy so far."""

    total: int  # the validation samples
    loss_sum: float = 0.0
    weight_sum: float = 0.0
    correct: int = 0
    done: int = 0

    def add(self, sums: list[float]) -> bool:
        """A batch's all-reduced `validation_sums` added; whether some rank asked to stop."""
        loss, weight, correct, samples, stop = sums
        self.loss_sum, self.weight_sum = self.loss_sum + loss, self.weight_sum + weight
        self.correct, self.done = self.correct + int(correct), self.done + int(samples)
        return bool(stop)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.weight_sum

    @property
    def accuracy(self) -> float:
        return self.correct / self.done

    def result(self, confusion: torch.Tensor | None) -> Validation:
        """The pass's Validation, with the all-reduced flat confusion counts (or None)."""
        k = round(confusion.numel() ** 0.5) if confusion is not None else 0
        matrix = confusion.view(k, k).tolist() if confusion is not None else None
        return Validation(self.loss, self.correct / self.total, matrix)


def validation_sums(
    model: torch.nn.Module,
    loaded: Any,
    collate: Any,
    features: list[dict[str, Any]],
    class_weights: torch.Tensor,
    confusion: torch.Tensor | None = None,
) -> torch.Tensor:
    """This rank's sums over its shard of a validation batch (`features`, maybe none): weighted
    loss, weight, correct, samples, and a free slot for the stop flag (float64, on the CPU).
    `loaded` gives the autocast; the device is the class weights'.

    `confusion`, a flat K·K int64 tensor on that device (`confusion_counts`), gets the shard's
    (true, predicted) counts added in place: on the device, no value read back per batch."""
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
    predicted = logits.argmax(-1)
    correct = (predicted == labels).sum().float()
    if confusion is not None:
        k = logits.shape[-1]  # index_add_, not bincount: bincount reads its input's max back
        confusion.index_add_(0, labels * k + predicted, torch.ones_like(labels))
    sums = [
        (losses * w).sum(),
        w.sum(),
        correct,
        torch.tensor(float(len(features))),
        torch.tensor(0.0),
    ]
    return torch.stack(sums).double().cpu()


def confusion_counts(k: int, device: torch.device) -> torch.Tensor:
    """An empty K × K confusion matrix, flat, for `validation_sums` to add each batch to."""
    return torch.zeros(k * k, dtype=torch.int64, device=device)
