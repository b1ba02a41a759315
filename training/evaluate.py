"""Held-out figures for transformer checkpoints: loss, token accuracy, per-slot perplexity, bits/note.

    python -m training.evaluate --data data/corpus --split test checkpoints/transformer [runs/x/best ...]

Each checkpoint is evaluated on the same non-overlapping windows of its own context length
(windows of the split's flat token stream).  One JSON line per checkpoint, then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.utils.data import DataLoader

from model import checkpoint as ckpt
from model.transformer import TransformerConfig, build_model, lm_loss, summarize

from .data import FixedWindows, load_tokens


@torch.no_grad()
def evaluate_checkpoint(source: str, data: str, split: str = "test", batch: int = 8, max_windows: int | None = None,
                        context: int | None = None) -> dict:
    state, config = ckpt.load_checkpoint(source)
    cfg = TransformerConfig.from_dict(config["model"])
    model = build_model(cfg)
    model.load_state_dict(state)
    model.eval()
    length = (context or cfg.max_seq_len) + 1
    ds = FixedWindows(load_tokens(data, split), length, max_windows=max_windows)
    sums: dict[str, float] = {}
    t = time.perf_counter()
    for b in DataLoader(ds, batch_size=batch):
        _, s = lm_loss(model, b)
        for k, v in s.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    out = summarize(sums)
    out.update({"checkpoint": str(source), "dtype": config.get("dtype"), "split": split, "windows": len(ds),
                "tokens": int(sums["count"]), "seconds": round(time.perf_counter() - t, 1)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default="data/corpus")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-windows", type=int, default=None)
    p.add_argument("--context", type=int, default=None)
    args = p.parse_args(argv)
    rows = []
    try:
        for c in args.checkpoints:
            r = evaluate_checkpoint(c, args.data, args.split, args.batch, args.max_windows, args.context)
            print(json.dumps(r), flush=True)
            rows.append(r)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{'checkpoint':<34}{'dtype':>6}{'loss':>8}{'acc':>8}{'ppl shift':>11}{'ppl durvel':>11}"
          f"{'ppl pitch':>11}{'bits/note':>10}")
    for r in rows:
        print(f"{r['checkpoint'][-34:]:<34}{str(r['dtype']):>6}{r['loss']:>8.4f}{r['accuracy']:>8.4f}"
              f"{r['ppl_shift']:>11.2f}{r['ppl_durvel']:>11.2f}{r['ppl_grouppitch']:>11.2f}{r['bits_per_note']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
