"""The cnn engine's training task and held-out evaluation (model/cnn.py holds the networks).

Loss: binary cross-entropy per cell of window t+1 (piano from MelodyCNN given piano window t; the
harmony CNNs see their own window t and the true piano window t+1: teacher forcing).  Data, thresholds
and the evaluation loop are shared with vae-nn (training/tasks/rollwindows.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.cnn import PRESETS, CNNEngine, CNNModel
from tokenizer.pianoroll import N_TRACKS, TRACKS

from .rollwindows import evaluate_pairs, frame_hits, window_task


def cnn_loss(model: CNNModel, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """batch (B, 2, 5, 32, 128) 0/1 -> mean BCE per cell of windows t+1, and summed metrics."""
    x = batch.float()
    x_t, x_n = x[:, 0], x[:, 1]
    logits = model(x_t, x_n[:, 0])  # (B, 5, 32, 128)
    bce = F.binary_cross_entropy_with_logits(logits.float(), x_n, reduction="none")  # (B, 5, 32, 128)
    loss = bce.mean()
    with torch.no_grad():
        hits, notes = frame_hits(logits, x_n)
        sums = {"bce": bce.detach().sum(), "cells": torch.tensor(float(bce.numel())), "hits": hits.sum(),
                "notes": notes.sum()}
        per = bce.detach().sum((0, 2, 3))
        for k, name in enumerate(TRACKS):
            sums[f"bce_{name}"] = per[k]
            sums[f"hits_{name}"], sums[f"notes_{name}"] = hits[k], notes[k]
    return loss, sums


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """loss: BCE per cell of the next window; accuracy: its frame-hit rate (of the n pitches sounding in
    a track's step, the share among the n most likely)."""
    cells = max(sums["cells"], 1.0)
    out = {"loss": sums["bce"] / cells, "accuracy": sums["hits"] / max(sums["notes"], 1.0)}
    for name in TRACKS:
        if f"bce_{name}" in sums:
            out[f"bce_{name}"] = sums[f"bce_{name}"] / (cells / N_TRACKS)
            out[f"hits_{name}"] = sums[f"hits_{name}"] / max(sums[f"notes_{name}"], 1.0)
    return out


@torch.no_grad()
def teacher_forced_probs(model: CNNModel, batch: torch.Tensor) -> torch.Tensor:
    """Next-window probabilities (B, 5, 32, 128) of pairs (B, 2, 5, 32, 128), the harmony CNNs given the
    true next piano window."""
    x = batch.float()
    return torch.sigmoid(model(x[:, 0], x[:, 1, 0]).float())


def task(args):
    return window_task(CNNEngine, args, PRESETS, cnn_loss, summarize, teacher_forced_probs)


TASKS = {"cnn": task}


def evaluate_checkpoint(engine: str, source, data, split: str = "test", max_items: int | None = None,
                        batch: int = 64) -> dict:
    """Teacher-forced next-window BCE per cell (loss, bce_*) and frame-hit rate, then next-window BCE and
    cell F1 at the stored thresholds, with the repeat and constant-density baselines."""
    return evaluate_pairs(engine, source, data, split, max_items, batch, cnn_loss, summarize, teacher_forced_probs,
                          hit_name="frame_hit_rate")
