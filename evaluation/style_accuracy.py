"""Does the style-conditioned VAE generate the style it is asked for?  For each checkpoint: its held-out
figures (training.tasks.style_vae: reconstruction, segment fill of real and generated segments), then
`--per-style` generated pieces of `--bars` bars per style (instruments and drums left to the model), at
each of `--temperatures`, named by the evaluation's style classifier (evaluation.style): the share it
assigns the requested style.  One JSON line per checkpoint, side by side (e.g. the codebook model and the
label baseline).

    python -m evaluation.style_accuracy checkpoints/style-vae runs/style-vae-label/best --data data/corpus \\
        --max-items 3000 --per-style 10 --bars 8 --temperatures 1.0 0.5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from model import checkpoint as ckpt
from model.sampling.filters import SamplingParams
from model.style_vae import StyleVAE, StyleVAEEngine, sample_pieces
from tokenizer import Score
from tokenizer import vocab as V
from training.tasks import evaluate_checkpoint

from .style import StyleClassifier


def style_accuracy(model: StyleVAE, classifier, per_style: int, bars: int, seed: int,
                   temperature: float = 1.0) -> dict:
    """Generate `per_style` pieces per style the classifier knows (style s with seed + s) and let the
    classifier name each one's style: the share named as requested, overall and per style."""
    hits, per = 0, {}
    for s, name in enumerate(model.cfg.styles):
        if name not in classifier.config["styles"]:
            continue
        notes = sample_pieces(model, s, per_style, bars, SamplingParams(temperature, 1.0, 0, seed + s))
        scores = [Score(n, bpm=120.0, length=bars * V.STEPS_PER_BAR) for n in notes]
        ok = sum(p == name for p in classifier.predict_styles(scores))
        per[name] = ok / per_style
        hits += ok
    total = per_style * len(per)
    return {"style_accuracy": hits / max(total, 1), "pieces": total, "per_style": per}


def evaluate(source, data, classifier: StyleClassifier, split: str = "test", max_items: int | None = None,
             per_style: int = 10, bars: int = 8, seed: int = 0, temperatures=(1.0,)) -> dict:
    """One checkpoint's held-out figures and style accuracy per temperature (the first one is
    `style_accuracy`, `pieces`, `per_style`)."""
    out = evaluate_checkpoint("style-vae", source, data, split, max_items=max_items, seed=seed)
    model = StyleVAEEngine(source).model
    by_t = {t: style_accuracy(model, classifier, per_style, bars, seed, t) for t in temperatures}
    first = by_t[temperatures[0]]
    return {**out, **first, "chance": 1 / max(1, len(first["per_style"])),
            "style_accuracy_by_temperature": {t: r["style_accuracy"] for t, r in by_t.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.style_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="style-vae checkpoint folders or Hub ids; style-vae: the shipped one")
    p.add_argument("--data", default="data/corpus")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--max-items", "--max-segments", dest="max_items", type=int, default=None,
                   help="reconstruction on at most N segments, evenly spaced over the split")
    p.add_argument("--classifier", default=str(ckpt.CHECKPOINT_ROOT / "style_classifier"))
    p.add_argument("--per-style", type=int, default=10, help="generated pieces per style")
    p.add_argument("--bars", type=int, default=8, help="length of each generated piece")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                   help="sampling temperatures for the style measure (the first one is `style_accuracy`)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        clf = StyleClassifier.load(args.classifier)
        for c in args.checkpoints:
            source = ckpt.shipped(c) if c == "style-vae" and not Path(c).exists() else c
            r = evaluate(source, args.data, clf, args.split, args.max_items, args.per_style, args.bars, args.seed,
                         args.temperatures)
            print(json.dumps(r), flush=True)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
