"""What an engine family gives the training loop and the evaluate command."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch.utils.data import Dataset

LossFn = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict]]


@dataclass
class TrainTask:
    """One engine's training: its config, network builder, loss (mean loss, summed metrics), how summed
    metrics become figures, and its datasets.  `state_for_checkpoint` may finish a model before it is
    saved (e.g. calibrate thresholds)."""

    engine: str
    config: object  # the model's config dataclass
    build: Callable[[object], nn.Module]
    loss: LossFn
    summarize: Callable[[dict], dict]
    train_set: Dataset  # must have set_epoch(epoch)
    val_set: Dataset
    state_for_checkpoint: Callable[[nn.Module], dict] = lambda m: m.state_dict()


def add_sums(total: dict[str, float], sums: dict) -> dict[str, float]:
    """Accumulate summed metrics (tensors or floats) into `total`, in place; returns it."""
    for k, v in sums.items():
        total[k] = total.get(k, 0.0) + float(v)
    return total


@torch.no_grad()
def sum_metrics(loss: LossFn, model: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """The loss function's summed metrics over all batches (for exact averages over a split)."""
    total: dict[str, float] = {}
    for b in batches:
        add_sums(total, loss(model, b)[1])
    return total
