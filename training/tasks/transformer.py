"""The transformer's training task (next-token cross-entropy on random windows of the corpus stream,
optionally augmented on the fly: `--augment`, training.data.Augment) and its held-out evaluation on any
split (test, or the real songs of realdev / realtest): loss, token accuracy, per-slot perplexity and
bits per note."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from model.transformer import PRESETS, TransformerConfig, TransformerEngine, build_model
from tokenizer import vocab as V

from ..data import Augment, FixedWindows, RandomWindows, load_tokens
from .base import TrainTask, sum_metrics

_SLOT_OF_TOKEN = torch.tensor([V.token_slot(t) for t in range(V.VOCAB_SIZE)], dtype=torch.long)


def lm_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token cross-entropy on windows (B, T+1); metrics summed (for exact averaging).

    Returns (mean loss, sums) where sums has loss/correct/count overall and per slot."""
    inp, tgt = batch[:, :-1], batch[:, 1:]
    logits = model(inp)  # (B, T, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), tgt, reduction="none")  # (B, T)
    loss = nll.mean()
    with torch.no_grad():
        correct = (logits.argmax(-1) == tgt).float()
        slot = _SLOT_OF_TOKEN.to(tgt.device)[tgt]
        sums = {"nll": nll.detach().sum(), "correct": correct.sum(), "count": torch.tensor(float(tgt.numel()))}
        for s, name in enumerate(V.SLOT_NAMES):
            m = (slot == s).float()
            sums[f"nll_{name}"] = (nll.detach() * m).sum()
            sums[f"count_{name}"] = m.sum()
    return loss, sums


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Loss, token accuracy, per-slot perplexity and bits per note from summed metrics."""
    n = max(sums["count"], 1.0)
    out = {"loss": sums["nll"] / n, "accuracy": sums["correct"] / n}
    note_nll = 0.0
    for name in V.SLOT_NAMES:
        c = max(sums.get(f"count_{name}", 0.0), 1.0)
        out[f"ppl_{name}"] = math.exp(min(sums.get(f"nll_{name}", 0.0) / c, 50.0))
        note_nll += sums.get(f"nll_{name}", 0.0) / c
    out["bits_per_note"] = note_nll / math.log(2)
    return out


def preset(name: str) -> TransformerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} for the transformer; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def task(args) -> TrainTask:
    cfg = preset(args.preset)
    if args.context:
        cfg = replace(cfg, max_seq_len=args.context)
    return TrainTask(
        engine="transformer", config=cfg, build=build_model, loss=lm_loss, summarize=summarize,
        train_set=RandomWindows(load_tokens(args.data, "train"), cfg.max_seq_len + 1, seed=args.seed,
                                augment=Augment.parse(getattr(args, "augment", None))),
        val_set=FixedWindows(load_tokens(args.data, "validation"), cfg.max_seq_len + 1, max_windows=args.val_windows),
    )


TASKS = {"transformer": task}


def evaluate_checkpoint(engine: str, source, data, split: str = "test", max_items: int | None = None,
                        batch: int = 8, context: int | None = None) -> dict:
    """Loss, accuracy, per-slot perplexity and bits/note on non-overlapping windows of the split's token
    stream, at the checkpoint's own context length or `context`."""
    eng = TransformerEngine(source, quantize=False)
    model = eng.model
    length = (context or eng.cfg.max_seq_len) + 1
    ds = FixedWindows(load_tokens(data, split), length, max_windows=max_items)
    t = time.perf_counter()
    sums = sum_metrics(lm_loss, model, DataLoader(ds, batch_size=batch))
    out = summarize(sums)
    out.update({"engine": engine, "checkpoint": str(source), "dtype": eng.config.get("dtype"), "split": split,
                "context": length - 1,
                "windows": len(ds), "tokens": int(sums["count"]), "seconds": round(time.perf_counter() - t, 1)})
    return out
