"""Held-out figures for checkpoints of any engine, one command:

    python -m training.evaluate --data data/corpus --split test checkpoints/transformer runs/x/best
    python -m training.evaluate --data data/corpus --split realtest transformer  # real songs, never trained on
    python -m training.evaluate --engine cnn --data data/corpus cnn       # an engine name: its shipped checkpoint

The engine comes from each checkpoint's config (or --engine); its family module in training/tasks/
computes the figures (the transformer: loss, token accuracy, per-slot perplexity, bits/note; the others
their own, with baselines).  One JSON line per checkpoint, then a table of the figures they share.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from model import checkpoint as ckpt

from .data import REAL_SPLITS, SPLITS
from .tasks import FAMILIES, evaluate_checkpoint

COLUMNS = ("loss", "accuracy", "ppl_shift", "ppl_durvel", "ppl_grouppitch", "bits_per_note")


def engine_of(source: str) -> str:
    return json.loads((ckpt.resolve(source) / ckpt.CONFIG_NAME).read_text()).get("engine", "transformer")


def table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = [f"{'checkpoint':<36}{'engine':>12}{'dtype':>6}" + "".join(f"{c:>15}" for c in cols)]
    for r in rows:
        cells = "".join(f"{r[c]:>15.4f}" if isinstance(r.get(c), float) else f"{'-':>15}" for c in cols)
        lines.append(f"{r['checkpoint'][-36:]:<36}{r['engine']:>12}{str(r.get('dtype')):>6}{cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders, Hub repo ids, or engine names (shipped)")
    p.add_argument("--engine", default=None, choices=sorted(FAMILIES),
                   help="evaluate as this engine (default: the engine each checkpoint names)")
    p.add_argument("--data", default="data/corpus")
    p.add_argument("--split", default="test", choices=SPLITS + REAL_SPLITS,
                   help="a corpus split; realdev / realtest are the held-out real songs (POP909, freedoom, "
                        "openmsx) that no training run sees")
    p.add_argument("--max-items", "--max-windows", dest="max_items", type=int, default=None,
                   help="measure at most N windows / pairs / segments, evenly spaced over the split")
    p.add_argument("--context", type=int, default=None, help="transformer: evaluate at this context length")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {k: v for k, v in (("context", args.context), ("batch", args.batch)) if v is not None}
    rows = []
    try:
        for c in args.checkpoints:
            source = ckpt.shipped(c) if c in FAMILIES and not Path(c).exists() else c
            engine = args.engine or engine_of(source)
            if "context" in options and engine != "transformer":
                raise ValueError("--context applies to transformer checkpoints only")
            if args.split in REAL_SPLITS and engine != "transformer":
                raise ValueError(f"--split {args.split} (the held-out real songs) is measured for transformer "
                                 f"checkpoints only; the {engine} task reads train / validation / test")
            r = evaluate_checkpoint(engine, source, args.data, args.split, max_items=args.max_items, **options)
            print(json.dumps(r), flush=True)
            rows.append(r)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
