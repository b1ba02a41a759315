"""How much do an engine's outputs vary?  Mean pairwise distances between generated pianorolls.

Two figures per engine (the MusicGenDL study behind the cnn and vae-nn engines reports that the CNN's
output hardly changes with its start and that the VAE-NN's latent noise fixes this):
- same start: the variants generated from one start (a held-out window given as the prompt), their
  mean pairwise distance, averaged over the starts;
- different starts: one output per start (same seed), their mean pairwise distance.
With --alphas, for engines with built-in references (vae-nn): the distance of the generated windows to
the reference song's nearest window, per alpha, against the distance to the other references.
For scale, the distance between the starts themselves is reported too, and both figures again for
the last generated window alone (do the outputs converge to one attractor as generation goes on?),
and the distance between each start and the first window generated from it (how much is copied).

Distances on the generated part only (the prompt removed), as 5-track pianorolls at 2 steps per beat:
Jaccard distance of the active cells (1 - |A & B| / |A | B|; two silent rolls: 0) and Hamming
distance (share of cells that differ).

    python -m evaluation.variety --engines vae-nn cnn --data data/corpus --starts 16 --variants 4 --bars 16 \
        --noise-sd 0 0.5 0.75 1.0 --alphas 0 0.5 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time

import numpy as np

from model import rollwindows as RW
from model.engine import Engine, GenerationRequest, get_engine
from tokenizer import Score
from tokenizer import vocab as V
from tokenizer.pianoroll import pianoroll_to_score, score_to_pianoroll, unpack_windows
from training.tasks.rollwindows import start_set, window_pairs

log = logging.getLogger(__name__)

PITCHED = ("piano", "guitar", "bass", "strings")


def jaccard_distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 0.0 if union == 0 else 1.0 - float(np.logical_and(a, b).sum()) / float(union)


def hamming_distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a != b).mean())


def mean_pairwise(rolls, fn=jaccard_distance) -> float:
    """Mean of fn over all unordered pairs (0 for fewer than two)."""
    pairs = list(itertools.combinations(range(len(rolls)), 2))
    return float(np.mean([fn(rolls[i], rolls[j]) for i, j in pairs])) if pairs else 0.0


def continuation_roll(score: Score, offset: int, bars: int) -> np.ndarray:
    """The generated part of a score (notes from `offset` on) as a (5, bars*8, 128) bool pianoroll."""
    n = score.notes[score.notes["onset"] >= offset].copy()
    n["onset"] -= offset
    steps = bars * V.STEPS_PER_BAR // RW.CELL
    return score_to_pianoroll(Score(n), RW.STEPS_PER_BEAT, n_steps=steps)


def held_out_starts(data: str, n: int, split: str = "test") -> list[np.ndarray]:
    """n held-out windows (5, 32, 128) where the piano and at least one other track play, evenly spaced."""
    windows, pairs = window_pairs(data, 8, splits=(split,))[split]
    packed = start_set(windows, pairs, n)
    return [w.astype(bool) for w in unpack_windows(packed)]


def window_prompt(window: np.ndarray) -> Score:
    """A (5, 32, 128) window as a 4-bar prompt Score."""
    s = pianoroll_to_score(window, RW.STEPS_PER_BEAT)
    return Score(s.notes, bpm=120.0, length=RW.BARS_PER_WINDOW * V.STEPS_PER_BAR)


def variety(engine: Engine, starts: list[np.ndarray], variants: int = 4, bars: int = 16, seed: int = 0,
            extra: dict | None = None) -> dict:
    """Same-start and different-start mean pairwise distances of an engine's outputs."""
    extra = {k: v for k, v in (extra or {}).items() if engine.supports(k)}
    t0 = time.perf_counter()
    per_start: list[list[np.ndarray]] = []
    for w in starts:
        prompt = window_prompt(w)
        req = engine.restrict(GenerationRequest(groups=PITCHED, drums=True, bars=bars, variants=variants, seed=seed,
                                                prompt=prompt, extra=extra)).validate()
        scores = engine.generate(req)
        per_start.append([continuation_roll(s, prompt.length, bars) for s in scores])
    firsts = [r[0] for r in per_start]
    all_rolls = [r for rs in per_start for r in rs]
    cells_per_bar = [r.sum() / bars for r in all_rolls]
    return {
        "engine": engine.name, "starts": len(starts), "variants": variants, "bars": bars, "seed": seed, **extra,
        "same_start_jaccard": float(np.mean([mean_pairwise(r, jaccard_distance) for r in per_start])),
        "same_start_hamming": float(np.mean([mean_pairwise(r, hamming_distance) for r in per_start])),
        "different_start_jaccard": mean_pairwise(firsts, jaccard_distance),
        "different_start_hamming": mean_pairwise(firsts, hamming_distance),
        "different_start_jaccard_last_window": mean_pairwise([r[:, -RW.WINDOW:] for r in firsts], jaccard_distance),
        "same_start_jaccard_last_window": float(np.mean([mean_pairwise([x[:, -RW.WINDOW:] for x in r], jaccard_distance)
                                                         for r in per_start])),
        "starts_jaccard": mean_pairwise(starts, jaccard_distance),
        "start_to_first_window_jaccard": float(np.mean([jaccard_distance(w, r[:, :RW.WINDOW])
                                                        for w, r in zip(starts, firsts)])),
        "active_cells_per_bar": float(np.mean(cells_per_bar)),
        "starts_active_cells_per_bar": float(np.mean([w.sum() / RW.BARS_PER_WINDOW for w in starts])),
        "silent_outputs": float(np.mean([not r.any() for r in all_rolls])),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def reference_pull(engine: Engine, starts: list[np.ndarray], alphas=(0.0, 0.5, 1.0), n_refs: int = 8,
                   bars: int = 16, seed: int = 0) -> list[dict]:
    """For engines with built-in references: how close the generated windows come to the reference song's
    windows (mean over generated windows of the Jaccard distance to the nearest reference window), per
    alpha; the same outputs' distance to the other references' windows for comparison."""
    refs = list(engine.references)[:n_refs]
    ref_windows = {r: _reference_windows(engine, r) for r in refs}
    out = []
    for alpha in alphas:
        own, other = [], []
        for k, r in enumerate(refs):
            w = starts[k % len(starts)]
            prompt = window_prompt(w)
            req = engine.restrict(GenerationRequest(groups=PITCHED, drums=True, bars=bars, variants=1, seed=seed,
                                                    prompt=prompt, extra={"reference": r, "alpha": alpha})).validate()
            roll = continuation_roll(engine.generate(req)[0], prompt.length, bars)
            gen = [roll[:, i:i + RW.WINDOW] for i in range(0, roll.shape[1], RW.WINDOW)]
            own.append(_nearest(gen, ref_windows[r]))
            others = [_nearest(gen, ref_windows[o]) for o in refs if o != r]
            if others:
                other.append(float(np.mean(others)))
        out.append({"engine": engine.name, "alpha": alpha, "references": len(refs), "bars": bars,
                    "to_own_reference_jaccard": float(np.mean(own)),
                    "to_other_references_jaccard": float(np.mean(other)) if other else None})
    return out


def _nearest(generated: list[np.ndarray], windows: list[np.ndarray]) -> float:
    """Mean over the generated windows of the Jaccard distance to the nearest of `windows`."""
    return float(np.mean([min(jaccard_distance(g, w) for w in windows) for g in generated]))


def _reference_windows(engine: Engine, name: str) -> list[np.ndarray]:
    m = engine.model  # engines with references store their windows packed (model/vae_nn.py)
    idx = (m.ref_song == engine.references.index(name)).nonzero().flatten().numpy()
    return [w.astype(bool) for w in unpack_windows(m.ref_windows.numpy()[idx])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.variety", description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", nargs="+", default=["vae-nn", "cnn"])
    p.add_argument("--data", default="data/corpus", help="corpus: starts are held-out windows of --split")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--starts", type=int, default=8)
    p.add_argument("--variants", type=int, default=4)
    p.add_argument("--bars", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-sd", type=float, nargs="*", default=None,
                   help="latent noise levels to measure for engines with the noise_sd control (default: theirs)")
    p.add_argument("--alphas", type=float, nargs="*", default=None,
                   help="also measure the pull towards built-in references at these alphas (engines with references)")
    p.add_argument("--references", type=int, default=30, help="how many built-in references --alphas uses")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    try:
        starts = held_out_starts(args.data, args.starts, args.split)
        for name in args.engines:
            engine = get_engine(name)
            levels = args.noise_sd if args.noise_sd and engine.supports("noise_sd") else [None]
            for sd in levels:
                extra = {} if sd is None else {"noise_sd": sd}
                print(json.dumps(variety(engine, starts, args.variants, args.bars, args.seed, extra)), flush=True)
            if args.alphas and engine.supports("reference") and engine.references:
                for row in reference_pull(engine, starts, args.alphas, args.references, args.bars, args.seed):
                    print(json.dumps(row), flush=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
