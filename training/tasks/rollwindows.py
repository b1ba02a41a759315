"""What the training of the window engines `cnn` and `vae-nn` shares: data, calibration, evaluation.

Data: consecutive (t, t+1) pairs of 4-bar windows (tokenizer/pianoroll.py: 5 tracks x 32 steps x 128
pitches at 2 steps per beat).  The corpus' stored pianoroll windows are subsampled and not consecutive,
so the pairs are rebuilt from each piece's tokens (decode -> consecutive windows) and cached once per
corpus build (training.data.derived, "rollpairs").  At most `windows_per_piece` consecutive windows are
kept per piece (from a hashed offset); pairs where either window is silent are dropped.

Also here: what a checkpoint carries besides weights (a start set from the training pairs, reference
songs from the test split), the per-track thresholds (calibrated so the thresholded predictions on
validation pairs have the data's note density), and the held-out evaluation both engines share
(next-window BCE and cell F1 against the "repeat the window" and constant-density baselines).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from model.engine import engine_class
from model.rollwindows import WindowEngine
from tokenizer import Score
from tokenizer.codec import piece_notes, stream_pieces
from tokenizer.pianoroll import CELL, N_TRACKS, PITCHES, TRACKS, WINDOW, pack_windows, piece_windows, unpack_windows

from ..data import SPLITS, derived, load_split, load_tokens, piece_tokens
from .base import TrainTask, add_sums

log = logging.getLogger(__name__)

ProbsFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, pairs (B, 2, 5, 32, 128)) -> next-window probs


# ---- corpus -> consecutive window pairs -------------------------------------------------------------
def _hash(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def split_pairs(tokens: np.ndarray, split: str, windows_per_piece: int,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split's token stream -> (packed windows (M, 5, 32, 16) uint8, pairs (P, 2) int32 indices into them)."""
    wins, pairs, n = [], [], 0
    for k, notes in stream_pieces(tokens, limit):
        sc = Score(notes)
        if not len(sc.notes):
            continue
        total = -(-sc.end_step // (WINDOW * CELL))
        first = _hash(split, k) % max(1, total - windows_per_piece + 1)
        w = piece_windows(sc, windows_per_piece, first)  # (n, 5, 32, 128)
        if len(w) < 2:
            continue
        alive = w.reshape(len(w), -1).any(1)
        pairs += [(n + i, n + i + 1) for i in range(len(w) - 1) if alive[i] and alive[i + 1]]
        wins.append(pack_windows(w))
        n += len(w)
    W = np.concatenate(wins) if wins else np.zeros((0, N_TRACKS, WINDOW, PITCHES // 8), np.uint8)
    return W, np.asarray(pairs, np.int32).reshape(-1, 2)


def window_pairs(data: str | Path, windows_per_piece: int = 4, limit: int | None = None,
                 splits=SPLITS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: (packed windows (M, 5, 32, 16) uint8, pairs (P, 2) int32).  Built once per corpus build
    (all three splits; `limit`: the first pieces of each split only) and cached."""

    def build(folder: Path) -> None:
        for s in SPLITS:
            W, P = split_pairs(load_tokens(data, s), s, windows_per_piece, limit)
            np.save(folder / f"{s}.windows.npy", W)
            np.save(folder / f"{s}.pairs.npy", P)
            log.info("%s: %d windows, %d pairs", s, len(W), len(P))

    d = derived(data, "rollpairs", {"windows_per_piece": windows_per_piece, "limit": limit}, build)
    return {s: (np.load(d / f"{s}.windows.npy", mmap_mode="r"), np.load(d / f"{s}.pairs.npy")) for s in splits}


def evenly(n: int, k: int | None) -> np.ndarray:
    """Indices of k items evenly spaced over n (all n when k is None or at least n)."""
    return np.arange(n) if not k or n <= k else np.linspace(0, n - 1, k).astype(np.int64)


class WindowPairs(Dataset):
    """Items (2, 5, 32, 128) bool: a window and the one after it."""

    def __init__(self, windows: np.ndarray, pairs: np.ndarray, max_pairs: int | None = None):
        self.windows, self.pairs, self.idx = windows, pairs, evenly(len(pairs), max_pairs)

    def set_epoch(self, epoch: int) -> None:  # order comes from the loader's shuffling
        pass

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> torch.Tensor:
        a, b = self.pairs[self.idx[i]]
        return torch.from_numpy(unpack_windows(np.stack([self.windows[a], self.windows[b]])))


def batch_of(ds: WindowPairs, n: int) -> torch.Tensor:
    """n items evenly spaced over the set as one (n, 2, 5, 32, 128) tensor."""
    return torch.stack([ds[int(i)] for i in evenly(len(ds), n)])


# ---- what the checkpoints carry besides weights ------------------------------------------------------
def start_set(windows: np.ndarray, pairs: np.ndarray, n: int) -> np.ndarray:
    """n packed windows to start from when no prompt is given: first windows of pairs where the piano
    plays and at least two tracks play, evenly spaced over the set.  (n, 5, 32, 16) uint8."""
    firsts = np.unique(pairs[:, 0])
    good = []
    for i in firsts:
        on = unpack_windows(windows[i]).reshape(N_TRACKS, -1).any(1)
        if on[0] and on.sum() >= 2:
            good.append(i)
        if len(good) >= 50 * n:
            break
    good = np.asarray(good if good else firsts)
    pick = good[evenly(len(good), n)]
    return np.asarray(windows[np.sort(pick)], np.uint8)


def reference_set(data: str | Path, n_songs: int, windows_per_song: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Built-in reference songs from the test split: one or two per style, each with its windows.
    Returns (names "style: title", packed windows (N, 5, 32, 16) uint8, song index per window (N,))."""
    toks, index = load_split(data, "test")
    by_style: dict[str, list[int]] = {}
    for k, row in enumerate(index):
        if 16 <= row.get("bars", 0) <= 200 and row.get("time_signature", [4, 4]) == [4, 4]:
            by_style.setdefault(row["style"], []).append(k)
    order = []
    for r in range(n_songs):
        for st in sorted(by_style):
            if r < len(by_style[st]):
                order.append(by_style[st][_hash("ref", st, r) % len(by_style[st])] if r == 0
                             else by_style[st][(r * 7919) % len(by_style[st])])
    names, wins, song = [], [], []
    for k in dict.fromkeys(order):
        if len(names) >= n_songs:
            break
        row = index[k]
        notes = piece_notes(piece_tokens(toks, row))
        if notes is None:
            continue
        w = piece_windows(Score(notes), windows_per_song)
        w = w[w.reshape(len(w), -1).any(1)]
        if len(w) < 2 or not w[:, 0].any():
            continue
        name = f"{row['style']}: {reference_title(row)}"
        if name in names:
            continue
        names.append(name)
        wins.append(pack_windows(w))
        song += [len(names) - 1] * len(w)
    if not names:
        raise ValueError(f"no test-split piece of {data} can be a reference song (4/4, 16 to 200 bars)")
    return names, np.concatenate(wins), np.asarray(song, np.int64)


def reference_title(row: dict) -> str:
    """'abc:ryansMammoth/AllTheGoReel.abc#1~1' -> 'ryansMammoth/AllTheGoReel #1'."""
    t = row["id"].split(":", 1)[-1]
    t = re.sub(r"\.(abc|mid|midi|xml|mxl|krn|musicxml)", "", t)
    t = re.sub(r"~\d+$", "", t).replace("#", " #")
    if row.get("composer") and row["composer"] not in t:
        t = f"{row['composer']}: {t}"
    return t


# ---- metrics and thresholds ----------------------------------------------------------------------------
def frame_hits(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold-free accuracy: in every (track, step) that plays n notes, how many of the n most
    likely pitches play.  Returns (hits, notes) per track (5,)."""
    n = target.sum(-1, keepdim=True)  # (B, 5, 32, 1)
    order = logits.detach().float().argsort(-1, descending=True)
    ranked = target.gather(-1, order)  # (B, 5, 32, 128)
    top = torch.arange(target.shape[-1], device=target.device) < n
    return (ranked * top).sum((0, 2, 3)), n.sum((0, 2, 3))


def density_thresholds(probs: torch.Tensor, target: torch.Tensor, lo: float = 0.02, hi: float = 0.95) -> torch.Tensor:
    """Per track: the threshold at which the share of cells above it equals the targets' note density.
    probs, target (B, 5, 32, 128) -> (5,)."""
    out = torch.ones(probs.shape[1])
    for k in range(probs.shape[1]):
        p = probs[:, k].reshape(-1).float()
        d = float(target[:, k].float().mean())
        n_on = int(round(d * p.numel()))
        if n_on <= 0:
            continue
        t = torch.kthvalue(p, p.numel() - n_on + 1).values if n_on < p.numel() else p.min()
        out[k] = float(t)
    return out.clamp(lo, hi)


def calibrate(model: nn.Module, val_batch: torch.Tensor, probs: ProbsFn) -> None:
    """Set the model's per-track thresholds so that its thresholded next-window predictions (`probs`) on
    validation pairs (B, 2, 5, 32, 128) have the data's note density."""
    was = model.training
    model.eval()
    model.thresholds.copy_(density_thresholds(probs(model, val_batch), val_batch[:, 1]))
    model.train(was)


def f1_sums(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-track true positives, predicted and actual active cells.  (B, 5, 32, 128) each."""
    pred, target = pred.bool(), target.bool()
    return {"tp": (pred & target).sum((0, 2, 3)).float(), "pp": pred.sum((0, 2, 3)).float(),
            "ap": target.sum((0, 2, 3)).float()}


def f1(tp: float, pp: float, ap: float) -> float:
    return 2 * tp / (pp + ap) if pp + ap else 1.0


def density_bce(active: float, cells: float) -> float:
    """BCE per cell of the baseline that predicts every cell on with the data's density (the split's own:
    an optimistic baseline)."""
    d = min(max(active / max(cells, 1.0), 1e-9), 1 - 1e-9)
    return -(d * math.log(d) + (1 - d) * math.log(1 - d))


# ---- the task and the evaluation both engines use ---------------------------------------------------------
def preset(presets: dict, name: str, engine: str):
    if name not in presets:
        raise ValueError(f"unknown preset {name!r} for {engine}; choose from {', '.join(presets)}")
    return presets[name]


def window_task(engine: type[WindowEngine], args, presets: dict, loss, summarize: Callable, probs: ProbsFn,
                references: bool = False) -> TrainTask:
    """A window engine's TrainTask: pairs from the corpus, a start set (and with `references`, the
    reference songs) stored in the model's buffers, thresholds calibrated on 256 validation pairs before
    every checkpoint."""
    cfg = preset(presets, args.preset, engine.name)
    pairs = window_pairs(args.data, cfg.windows_per_piece, limit=getattr(args, "piece_limit", None))
    buffers = {"start_windows": start_set(*pairs["train"], cfg.n_start)}
    change = {"n_start": len(buffers["start_windows"])}
    if references:
        names, buffers["ref_windows"], buffers["ref_song"] = reference_set(args.data, cfg.n_references,
                                                                           cfg.ref_windows_per_song)
        change.update(n_ref_windows=len(buffers["ref_windows"]), reference_names=names)
    cfg = type(cfg)(**{**cfg.__dict__, **change})
    val = WindowPairs(*pairs["validation"], max_pairs=args.val_windows)
    calib = batch_of(val, 256)

    def build(c) -> nn.Module:
        m = engine.build(c)
        for k, v in buffers.items():
            getattr(m, k).copy_(torch.from_numpy(v))
        return m

    def state(m: nn.Module) -> dict:
        calibrate(m, calib.to(m.thresholds.device), probs)
        return m.state_dict()

    return TrainTask(engine=engine.name, config=cfg, build=build, loss=loss, summarize=summarize,
                     train_set=WindowPairs(*pairs["train"]), val_set=val, state_for_checkpoint=state)


@torch.no_grad()
def evaluate_pairs(engine: str, source, data, split: str, max_items: int | None, batch: int, loss,
                   summarize: Callable, probs: ProbsFn, hit_name: str) -> dict:
    """Held-out figures of a window-engine checkpoint on consecutive pairs of `split`: the loss summary
    (its "accuracy", a frame-hit rate, reported as `hit_name`), then next-window BCE per cell and cell F1
    at the stored thresholds per track, with the 'repeat the previous window' baseline's F1 and the
    constant-density baseline's BCE."""
    eng = engine_class(engine)(source)
    model = eng.model
    t0 = time.perf_counter()
    ds = WindowPairs(*window_pairs(data, model.cfg.windows_per_piece, splits=(split,))[split], max_pairs=max_items)
    torch.manual_seed(0)  # losses that sample (the VAE's posterior) give the same figures every run
    sums: dict[str, float] = {}
    acc = {k: torch.zeros(N_TRACKS) for k in ("tp", "pp", "ap", "btp", "bpp", "nbce")}
    for b in DataLoader(ds, batch_size=batch):
        add_sums(sums, loss(model, b)[1])
        p = probs(model, b)
        acc["nbce"] += F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), b[:, 1].float(), reduction="none").sum((0, 2, 3))
        c = f1_sums(p > model.thresholds[None, :, None, None], b[:, 1])
        base = f1_sums(b[:, 0], b[:, 1])
        for k in ("tp", "pp", "ap"):
            acc[k] += c[k]
        acc["btp"] += base["tp"]
        acc["bpp"] += base["pp"]
    out = summarize(sums)
    out[hit_name] = out.pop("accuracy")
    cells = len(ds) * WINDOW * PITCHES
    for k, name in enumerate(TRACKS):
        out[f"next_bce_{name}"] = float(acc["nbce"][k]) / max(cells, 1)
        out[f"next_f1_{name}"] = f1(float(acc["tp"][k]), float(acc["pp"][k]), float(acc["ap"][k]))
        out[f"repeat_f1_{name}"] = f1(float(acc["btp"][k]), float(acc["bpp"][k]), float(acc["ap"][k]))
        out[f"density_bce_{name}"] = density_bce(float(acc["ap"][k]), cells)
    out["density_bce"] = float(np.mean([out[f"density_bce_{name}"] for name in TRACKS]))
    out["next_bce"] = float(acc["nbce"].sum()) / max(cells * N_TRACKS, 1)
    out["next_f1"] = f1(float(acc["tp"].sum()), float(acc["pp"].sum()), float(acc["ap"].sum()))
    out["repeat_f1"] = f1(float(acc["btp"].sum()), float(acc["bpp"].sum()), float(acc["ap"].sum()))
    out.update({"engine": engine, "checkpoint": str(source), "dtype": eng.config.get("dtype"), "split": split,
                "pairs": len(ds), "thresholds": [round(float(t), 4) for t in model.thresholds],
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


__all__ = ["window_pairs", "split_pairs", "WindowPairs", "batch_of", "start_set", "reference_set", "frame_hits",
           "density_thresholds", "calibrate", "f1_sums", "f1", "density_bce", "window_task", "evaluate_pairs"]
