"""A small style classifier, to check whether generated music sounds like the style it was asked for.

Per-piece feature vector (`style_features`): pitch-class histogram (raw and rotated to the best
major-scale tonic), group usage, drum-kit usage by instrument family, onset positions within the beat
(drums and pitched notes apart) and within the 4/4 bar, inter-onset-interval and note-length
histograms, densities, polyphony and the other scalar metrics.  No tempo or time signature: generated
pieces get theirs from the request.  Model: a one-hidden-layer MLP (or softmax regression with
hidden=0) on standardized features, trained with full-batch Adam on the corpus's train split (the first
8 bars of every piece, and bars 9-16 where a piece has them), seed fixed: deterministic on one machine.

    python -m evaluation.style train --data data/corpus --out checkpoints/style_classifier
    python -m evaluation.style eval  --data data/corpus --classifier checkpoints/style_classifier

The folder holds model.safetensors (float32 weights and the standardization) and config.json (styles,
feature size, hidden width, train/test accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

import tokenizer
from tokenizer import Score
from tokenizer import vocab as V

from . import metrics as M

EXCERPT_BARS = 8
FEATURE_VERSION = 1

# GM drum keys -> kit family (anything else: "other")
_DRUM_FAMILIES = {
    "kick": (35, 36),
    "snare": (37, 38, 39, 40),
    "closed_hat": (42, 44),
    "open_hat": (46,),
    "ride": (51, 53, 59),
    "crash": (49, 52, 55, 57),
    "toms": (41, 43, 45, 47, 48, 50),
    "hand_drums": (60, 61, 62, 63, 64, 65, 66, 78, 79),
    "shakers": (54, 58, 69, 70, 73, 74, 82),
    "clicks": (56, 67, 68, 75, 76, 77, 80, 81),
}
DRUM_FAMILY_NAMES = tuple(_DRUM_FAMILIES) + ("other",)
_DRUM_FAMILY_OF = np.full(128, len(_DRUM_FAMILIES), np.int64)
for _i, _keys in enumerate(_DRUM_FAMILIES.values()):
    _DRUM_FAMILY_OF[list(_keys)] = _i


def _share(values: np.ndarray, n: int) -> np.ndarray:
    h = np.bincount(np.asarray(values, np.int64), minlength=n)[:n].astype(np.float64)
    return h / h.sum() if h.sum() else h


def style_features(score: Score) -> np.ndarray:
    """Fixed-length float32 feature vector of one score (use an excerpt of the length you classify)."""
    n = score.notes
    drums = n[n["group"] == V.DRUM_GROUP]
    pit = n[n["group"] != V.DRUM_GROUP]
    bars = M.n_bars_of(score)
    pch = M.pitch_class_histogram(n)
    tonic = int((M.SCALES[:12] @ pch).argmax()) if pch.sum() else 0
    parts = [
        pch,
        np.roll(pch, -tonic),
        _share(n["group"], V.N_GROUPS),
        np.array([float(g in set(n["group"].tolist())) for g in range(V.N_GROUPS)]),
        _share(_DRUM_FAMILY_OF[drums["pitch"].astype(np.int64)], len(DRUM_FAMILY_NAMES)),
        _share(drums["onset"] % V.STEPS_PER_QUARTER, V.STEPS_PER_QUARTER),
        _share(pit["onset"] % V.STEPS_PER_QUARTER, V.STEPS_PER_QUARTER),
        _share((drums["onset"] % V.STEPS_PER_BAR) // 2, V.STEPS_PER_BAR // 2),
        _share((n["onset"] % V.STEPS_PER_BAR) // 2, V.STEPS_PER_BAR // 2),
        M.ioi_histogram(n),
        M.note_length_histogram(n),
    ]
    scal = []
    for v in (M.pitch_class_entropy(n), M.scale_consistency(n), M.groove_consistency(n, score.bar_steps, bars),
              M.empty_beat_rate(n, M.piece_length(score)), M.polyphony(n), M.pitch_range(n) / 12.0,
              M.mean_ioi(n) / 8.0, float(pit["pitch"].mean()) / 12.0 if len(pit) else float("nan")):
        scal += [0.0, 1.0] if np.isnan(v) else [float(v), 0.0]  # value, "undefined" flag
    scal += [np.log1p(len(n) / bars), np.log1p(len(drums) / bars), np.log1p(len(pit) / bars),
             float(n["velocity"].mean()) / V.N_VELOCITY if len(n) else 0.0,
             float(np.log2(pit["duration"].astype(np.float64)).mean()) if len(pit) else 0.0,
             float(len(drums) > 0), float(len(pit) > 0)]
    parts.append(np.asarray(scal))
    return np.concatenate(parts).astype(np.float32)


def n_features() -> int:
    return len(style_features(Score()))


# ---- corpus excerpts ------------------------------------------------------------------------------------
def excerpt(score: Score, start_bar: int = 0, bars: int = EXCERPT_BARS) -> Score:
    """Bars [start_bar, start_bar + bars) of a score, shifted to start at 0 and cut at the end."""
    bs = score.bar_steps
    n = score.notes[score.notes["onset"] >= start_bar * bs].copy()
    n["onset"] -= start_bar * bs
    return Score(n, score.bpm, score.time_signature, score.style).first_bars(bars)


def corpus_scores(data, split: str, rows: list[dict] | None = None) -> list[tuple[dict, Score]]:
    """(index row, full Score) for the pieces of a split (or the given rows of it)."""
    from training.data import load_split, piece_tokens

    toks, index = load_split(data, split)
    rows = index if rows is None else rows
    out = []
    for r in rows:
        s = tokenizer.decode(piece_tokens(toks, r), r.get("bpm", 120.0), r.get("time_signature", (4, 4)))
        s.style = r["style"]
        out.append((r, s))
    return out


def excerpt_dataset(pairs, second_window: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(features, style ids) of the first 8 bars of each piece (and bars 9-16 where present)."""
    X, y = [], []
    for r, s in pairs:
        if r["style"] not in V.STYLES:
            continue
        starts = [0] + ([EXCERPT_BARS] if second_window and s.n_bars > 2 * EXCERPT_BARS - 2 else [])
        for b in starts:
            e = excerpt(s, b)
            if len(e.notes):
                X.append(style_features(e))
                y.append(V.STYLES.index(r["style"]))
    if not X:
        return np.zeros((0, n_features()), np.float32), np.zeros(0, np.int64)
    return np.stack(X), np.asarray(y, np.int64)


# ---- the model ------------------------------------------------------------------------------------------
class StyleClassifier:
    def __init__(self, tensors: dict[str, np.ndarray], config: dict):
        self.t = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
        self.config = config
        self.styles = tuple(config["styles"])

    # logits in numpy: no torch needed to use a trained classifier
    def logits(self, X: np.ndarray) -> np.ndarray:
        z = (np.asarray(X, np.float32) - self.t["mean"]) / self.t["std"]
        if "w1" in self.t:
            z = np.maximum(z @ self.t["w1"] + self.t["b1"], 0.0)
        return z @ self.t["w_out"] + self.t["b_out"]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.logits(X).argmax(1) if len(X) else np.zeros(0, np.int64)

    def predict_styles(self, scores: list[Score]) -> list[str]:
        if not scores:
            return []
        return [self.styles[i] for i in self.predict(np.stack([style_features(s) for s in scores]))]

    def save(self, directory) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in self.t.items()}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory) -> "StyleClassifier":
        d = Path(directory)
        config = json.loads((d / "config.json").read_text())
        if config.get("feature_version") != FEATURE_VERSION or config.get("n_features") != n_features():
            raise ValueError(f"style classifier at {d} was trained on other features; retrain it "
                             "(python -m evaluation.style train)")
        return cls(load_file(str(d / "model.safetensors")), config)


def train_classifier(X: np.ndarray, y: np.ndarray, hidden: int = 64, steps: int = 400, lr: float = 0.01,
                     weight_decay: float = 1e-3, seed: int = 0) -> StyleClassifier:
    """Full-batch Adam on cross-entropy; deterministic for a given seed and input."""
    if len(X) == 0:
        raise ValueError("no training pieces for the style classifier")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        mean = X.mean(0)
        std = X.std(0) + 1e-3
        Xt = torch.from_numpy((X - mean) / std).float()
        yt = torch.from_numpy(y).long()
        k = len(V.STYLES)
        d = X.shape[1]

        def init(*shape):
            return (torch.randn(*shape, generator=g) / np.sqrt(shape[0])).requires_grad_()

        params = {}
        if hidden:
            params["w1"], params["b1"] = init(d, hidden), torch.zeros(hidden, requires_grad=True)
            params["w_out"], params["b_out"] = init(hidden, k), torch.zeros(k, requires_grad=True)
        else:
            params["w_out"], params["b_out"] = init(d, k), torch.zeros(k, requires_grad=True)
        opt = torch.optim.Adam(params.values(), lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            z = Xt
            if hidden:
                z = torch.relu(z @ params["w1"] + params["b1"])
            loss = torch.nn.functional.cross_entropy(z @ params["w_out"] + params["b_out"], yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    tensors = {k_: v.detach().numpy().astype(np.float32) for k_, v in params.items()}
    tensors["mean"], tensors["std"] = mean.astype(np.float32), std.astype(np.float32)
    config = {"styles": list(V.STYLES), "feature_version": FEATURE_VERSION, "n_features": int(d), "hidden": hidden,
              "steps": steps, "lr": lr, "weight_decay": weight_decay, "seed": seed, "excerpt_bars": EXCERPT_BARS,
              "train_excerpts": int(len(X)), "train_accuracy": None, "test_accuracy": None}
    clf = StyleClassifier(tensors, config)
    config["train_accuracy"] = float((clf.predict(X) == y).mean())
    return clf


def accuracy_report(clf: StyleClassifier, X: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, balanced accuracy and per-style recall on (X, y)."""
    if not len(X):
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "n": 0, "per_style": {}}
    p = clf.predict(X)
    per = {}
    for k in np.unique(y):
        sel = y == k
        per[clf.styles[int(k)]] = {"n": int(sel.sum()), "recall": float((p[sel] == k).mean())}
    return {"accuracy": float((p == y).mean()), "balanced_accuracy": float(np.mean([v["recall"] for v in per.values()])),
            "n": int(len(y)), "per_style": per}


def train_from_corpus(data, limit: int | None = None, hidden: int = 64, steps: int = 400, seed: int = 0) -> StyleClassifier:
    """Train on the train split (optionally a fixed-seed sample of `limit` pieces), score on test."""
    from training.data import load_split

    _, rows = load_split(data, "train")
    if limit is not None and limit < len(rows):
        pick = np.random.default_rng(seed).choice(len(rows), limit, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    X, y = excerpt_dataset(corpus_scores(data, "train", rows))
    clf = train_classifier(X, y, hidden=hidden, steps=steps, seed=seed)
    Xt, yt = excerpt_dataset(corpus_scores(data, "test"), second_window=False)
    rep = accuracy_report(clf, Xt, yt)
    clf.config.update({"test_accuracy": rep["accuracy"], "test_balanced_accuracy": rep["balanced_accuracy"],
                       "test_excerpts": rep["n"], "train_pieces": len(rows)})
    return clf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.style", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train on the train split, report test accuracy, save")
    t.add_argument("--data", default="data/corpus")
    t.add_argument("--out", default="checkpoints/style_classifier")
    t.add_argument("--limit", type=int, default=None, help="train on a fixed-seed sample of this many pieces")
    t.add_argument("--hidden", type=int, default=64, help="hidden width; 0 = softmax regression")
    t.add_argument("--steps", type=int, default=400)
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eval", help="test-split accuracy of a saved classifier")
    e.add_argument("--data", default="data/corpus")
    e.add_argument("--classifier", default="checkpoints/style_classifier")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.cmd == "train":
        clf = train_from_corpus(args.data, args.limit, args.hidden, args.steps, args.seed)
        clf.config["train_seconds"] = round(time.perf_counter() - t0, 1)
        clf.save(args.out)
        print(json.dumps({k: clf.config[k] for k in ("train_excerpts", "train_accuracy", "test_excerpts",
                                                       "test_accuracy", "test_balanced_accuracy", "train_seconds")}))
        return 0
    clf = StyleClassifier.load(args.classifier)
    Xt, yt = excerpt_dataset(corpus_scores(args.data, "test"), second_window=False)
    print(json.dumps(accuracy_report(clf, Xt, yt), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
