"""Shared by the pianoroll window engines `vae-nn` and `cnn` (seed 001, MusicGenDL).

Data: consecutive (t, t+1) pairs of 32-step x 128-pitch windows (5 tracks: piano, guitar, bass,
strings, drums; 2 steps per beat, so a window is 4 bars of 4/4).  The corpus' stored pianoroll
windows are subsampled and not consecutive, so the pairs are rebuilt from each piece's tokens
(decode -> score_to_pianoroll(steps_per_beat=2) -> consecutive windows) and cached once under
<corpus>/derived/rollpairs-v1/.  At most `windows_per_piece` consecutive windows are kept per piece
(from a hashed offset), pairs where either window is silent are dropped.

Also here: a corpus-free start set and built-in reference songs stored in the checkpoints
(packed bits, as uint8 buffers), threshold calibration (per track, so that the thresholded
predictions on validation pairs have the data's note density), cell F1, and the generation
scaffolding both engines share (start windows, requested tracks, writing the Score).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tokenizer import Score
from tokenizer import vocab as V
from tokenizer.codec import decode_notes, parse_prefix
from tokenizer.pianoroll import GROUP_TO_TRACK, N_TRACKS, TRACKS, pianoroll_to_score, score_to_pianoroll
from tokenizer.score import cut_at

from .engine import GenerationRequest

log = logging.getLogger(__name__)

STEPS_PER_BEAT = 2
WINDOW = 32  # pianoroll steps per window (4 bars of 4/4 at 2 steps per beat)
PITCHES = 128
CELL = V.STEPS_PER_QUARTER // STEPS_PER_BEAT  # score steps per pianoroll step (4)
BARS_PER_WINDOW = WINDOW * CELL // V.STEPS_PER_BAR  # 4
DERIVED_TAG = "rollpairs-v1"  # + "-w<windows_per_piece>"
SPLITS = ("train", "validation", "test")


# ---- corpus -> consecutive window pairs -------------------------------------------------------------
def _hash(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def piece_score(tokens: np.ndarray) -> Score | None:
    """One piece's tokens (START ... END) -> Score, or None if it does not decode."""
    piece = np.asarray(tokens, np.int64)
    _, _, _, i = parse_prefix(piece[:64])
    try:
        notes, _ = decode_notes(piece[i:])
    except ValueError:
        return None
    return Score(notes)


def piece_windows(score: Score, max_windows: int | None = None, start: int = 0) -> np.ndarray:
    """Consecutive windows (n, 5, 32, 128) bool of a score, from window `start` on."""
    n = score.notes
    a = start * WINDOW * CELL
    if max_windows is not None:
        n = n[(n["onset"] >= a) & (n["onset"] < a + max_windows * WINDOW * CELL)]
    else:
        n = n[n["onset"] >= a]
    if not len(n):
        return np.zeros((0, N_TRACKS, WINDOW, PITCHES), bool)
    n = n.copy()
    n["onset"] -= a
    roll = score_to_pianoroll(Score(n), STEPS_PER_BEAT)  # (5, T, 128)
    k = -(-roll.shape[1] // WINDOW)
    if max_windows is not None:
        k = min(k, max_windows)
    out = np.zeros((N_TRACKS, k * WINDOW, PITCHES), bool)
    T = min(roll.shape[1], k * WINDOW)
    out[:, :T] = roll[:, :T]
    return out.reshape(N_TRACKS, k, WINDOW, PITCHES).transpose(1, 0, 2, 3)


def _stamp(data: Path) -> dict:
    return {s: os.path.getsize(data / f"{s}.tokens.npy") for s in SPLITS if (data / f"{s}.tokens.npy").exists()}


def derived_pairs(data: str | Path, windows_per_piece: int = 4, limit: int | None = None,
                  splits=SPLITS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: (packed windows (M, 5, 32, 16) uint8, pairs (P, 2) int32 indices into them).
    Built once (all three splits) and cached under <data>/derived/rollpairs-v1/."""
    from training.data import load_tokens

    data = Path(data)
    d = data / "derived" / f"{DERIVED_TAG}-w{windows_per_piece}"
    meta_path = d / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    want = {"stamp": _stamp(data), "limit": limit, "windows_per_piece": windows_per_piece}
    if meta is None or any(meta.get(k) != v for k, v in want.items()) \
            or not all((d / f"{s}.windows.npy").exists() for s in SPLITS):
        t0 = time.time()
        d.mkdir(parents=True, exist_ok=True)
        counts = {}
        for s in SPLITS:
            toks = load_tokens(data, s)
            starts = np.flatnonzero(np.asarray(toks) == V.START)
            bounds = np.r_[starts, len(toks)]
            wins, pairs, n = [], [], 0
            for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                if limit is not None and k >= limit:
                    break
                sc = piece_score(toks[a:b])
                if sc is None or not len(sc.notes):
                    continue
                total = -(-sc.end_step // (WINDOW * CELL))
                first = _hash(s, k) % max(1, total - windows_per_piece + 1)
                w = piece_windows(sc, windows_per_piece, first)  # (n, 5, 32, 128)
                if len(w) < 2:
                    continue
                alive = w.reshape(len(w), -1).any(1)
                for i in range(len(w) - 1):
                    if alive[i] and alive[i + 1]:
                        pairs.append((n + i, n + i + 1))
                wins.append(np.packbits(w, axis=-1))
                n += len(w)
            W = np.concatenate(wins) if wins else np.zeros((0, N_TRACKS, WINDOW, PITCHES // 8), np.uint8)
            P = np.asarray(pairs, np.int32).reshape(-1, 2)
            np.save(d / f"{s}.windows.npy", W)
            np.save(d / f"{s}.pairs.npy", P)
            counts[s] = {"windows": int(len(W)), "pairs": int(len(P))}
            log.info("%s: %d windows, %d pairs (%.0fs)", s, len(W), len(P), time.time() - t0)
        meta_path.write_text(json.dumps({**want, "counts": counts, "seconds": round(time.time() - t0, 1)}))
    return {s: (np.load(d / f"{s}.windows.npy", mmap_mode="r"), np.load(d / f"{s}.pairs.npy")) for s in splits}


def unpack(packed) -> np.ndarray:
    return np.unpackbits(np.asarray(packed), axis=-1, count=PITCHES)


class WindowPairs(Dataset):
    """Items (2, 5, 32, 128) uint8: a window and the one after it."""

    def __init__(self, windows: np.ndarray, pairs: np.ndarray, max_pairs: int | None = None):
        self.windows, self.pairs = windows, pairs
        n = len(pairs)
        self.idx = np.arange(n) if not max_pairs or n <= max_pairs else np.linspace(0, n - 1, max_pairs).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:  # order comes from the loader's shuffling
        pass

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> torch.Tensor:
        a, b = self.pairs[self.idx[i]]
        return torch.from_numpy(unpack(np.stack([self.windows[a], self.windows[b]])))


def batch_of(ds: WindowPairs, n: int) -> torch.Tensor:
    """The first n items (evenly spaced over the set) as one (n, 2, 5, 32, 128) tensor."""
    idx = np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(np.int64)
    return torch.stack([ds[int(i)] for i in idx])


# ---- what the checkpoints carry besides weights ------------------------------------------------------
def start_set(windows: np.ndarray, pairs: np.ndarray, n: int) -> np.ndarray:
    """n packed windows to start from when no prompt is given: first windows of pairs where the piano
    plays and at least two tracks play, evenly spaced over the set.  (n, 5, 32, 16) uint8."""
    firsts = np.unique(pairs[:, 0])
    good = []
    for i in firsts:
        w = unpack(windows[i])
        on = w.reshape(N_TRACKS, -1).any(1)
        if on[0] and on.sum() >= 2:
            good.append(i)
        if len(good) >= 50 * n:
            break
    good = np.asarray(good if good else firsts)
    pick = good[np.linspace(0, len(good) - 1, min(n, len(good))).astype(np.int64)]
    return np.asarray(windows[np.sort(pick)], np.uint8)


def reference_set(data: str | Path, n_songs: int, windows_per_song: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Built-in reference songs from the test split: one or two per style, each with its windows.
    Returns (names "style: title", packed windows (N, 5, 32, 16) uint8, song index per window (N,))."""
    from training.corpus import load_split, piece_tokens

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
        sc = piece_score(piece_tokens(toks, row))
        if sc is None:
            continue
        w = piece_windows(sc, windows_per_song)
        w = w[w.reshape(len(w), -1).any(1)]
        if len(w) < 2 or not w[:, 0].any():
            continue
        title = reference_title(row)
        name = f"{row['style']}: {title}"
        if name in names:
            continue
        names.append(name)
        wins.append(np.packbits(w, axis=-1))
        song += [len(names) - 1] * len(w)
    return names, np.concatenate(wins), np.asarray(song, np.int64)


def reference_title(row: dict) -> str:
    """'abc:ryansMammoth/AllTheGoReel.abc#1~1' -> 'ryansMammoth/AllTheGoReel #1'."""
    t = row["id"].split(":", 1)[-1]
    t = re.sub(r"\.(abc|mid|midi|xml|mxl|krn|musicxml)", "", t)
    t = re.sub(r"~\d+$", "", t).replace("#", " #")
    if row.get("composer") and row["composer"] not in t:
        t = f"{row['composer']}: {t}"
    return t


def score_windows(score: Score, max_windows: int = 64) -> np.ndarray:
    """An uploaded reference -> its non-silent windows (n, 5, 32, 128) bool."""
    w = piece_windows(score, max_windows)
    return w[w.reshape(len(w), -1).any(1)] if len(w) else w


# ---- thresholds and metrics ------------------------------------------------------------------------
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


def f1_sums(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-track true positives, predicted and actual active cells.  (B, 5, 32, 128) bool each."""
    pred, target = pred.bool(), target.bool()
    return {"tp": (pred & target).sum((0, 2, 3)).float(), "pp": pred.sum((0, 2, 3)).float(),
            "ap": target.sum((0, 2, 3)).float()}


def density_bce(active: float, cells: float) -> float:
    """BCE per cell of the baseline that predicts every cell on with the data's density (the split's own:
    an optimistic baseline)."""
    d = min(max(active / max(cells, 1.0), 1e-9), 1 - 1e-9)
    return -(d * math.log(d) + (1 - d) * math.log(1 - d))


def f1(tp: float, pp: float, ap: float) -> float:
    return 2 * tp / (pp + ap) if pp + ap else 1.0


# ---- generation scaffolding ---------------------------------------------------------------------------
def variant_generator(seed: int, v: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(v)]).generate_state(1)[0]))


def output_groups(req: GenerationRequest) -> dict[int, int]:
    """track -> the group it is written as: the first requested group folding into it; drums iff asked."""
    out: dict[int, int] = {}
    for g in req.group_ids:
        out.setdefault(GROUP_TO_TRACK[g], g)
    if req.drums:
        out[GROUP_TO_TRACK[V.DRUM_GROUP]] = V.DRUM_GROUP
    return out


def prompt_offset(prompt: Score) -> int:
    return prompt.length if prompt.length else prompt.n_bars * prompt.bar_steps


def prompt_window(prompt: Score) -> np.ndarray:
    """The window a continuation starts from: the last 32 pianoroll steps before the prompt's end
    (for a prompt of 4 bars or less: its first window, silence-padded; if the prompt ends with 4 or
    more silent bars: the 32 steps up to its last note).  (5, 32, 128) bool."""
    end = -(-prompt_offset(prompt) // CELL)
    roll = score_to_pianoroll(prompt, STEPS_PER_BEAT, n_steps=end)  # (5, end, 128)
    active = np.flatnonzero(roll.any((0, 2)))
    if len(active) and active[-1] < end - WINDOW:  # a silent ending: start from the last window with notes
        end = int(active[-1]) + 1
    out = np.zeros((N_TRACKS, WINDOW, PITCHES), bool)
    take = roll[:, max(0, end - WINDOW):end]
    out[:, WINDOW - take.shape[1]:] = take
    if not out.any():
        raise ValueError("the uploaded MIDI has no notes to continue from")
    return out


def start_windows(req: GenerationRequest, packed_starts: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """(B, 5, 32, 128) bool start windows and the start-set index per variant (-1: the prompt).
    Without a prompt, the variants' starts are drawn (seeded) from the start-set windows in which every
    requested track plays (or, if none has them all, as many as any has): the engines mostly carry
    their start forward, so a start without drums would give a piece without drums."""
    B = req.variants
    if req.prompt is not None and len(req.prompt.notes):
        w = prompt_window(req.prompt)
        return np.repeat(w[None], B, 0), [-1] * B
    n = len(packed_starts)
    if n == 0:
        raise ValueError("this checkpoint has no start windows: upload a MIDI to continue")
    starts = unpack(packed_starts.numpy()).astype(bool)  # (n, 5, 32, 128)
    wanted = sorted(output_groups(req))
    plays = starts[:, wanted].any(axis=(2, 3)).sum(1)  # (n,) requested tracks playing in each start
    eligible = np.flatnonzero(plays == plays.max())
    rng = np.random.default_rng([int(req.seed), 17])
    picks = eligible[rng.permutation(len(eligible))[:B] if B <= len(eligible) else rng.integers(0, len(eligible), B)]
    return starts[picks], [int(i) for i in picks]


def windows_to_scores(req: GenerationRequest, rolls: np.ndarray) -> list[Score]:
    """Generated windows (B, n, 5, 32, 128) -> Scores with only the requested instruments, `bars` long,
    after the prompt when there is one."""
    out_group = output_groups(req)
    prompt = req.prompt if req.prompt is not None and len(req.prompt.notes) else None
    offset = prompt_offset(prompt) if prompt is not None else 0
    limit = req.bars * V.STEPS_PER_BAR
    scores = []
    for b in range(rolls.shape[0]):
        roll = rolls[b].transpose(1, 0, 2, 3).reshape(N_TRACKS, -1, PITCHES).copy()  # (5, T, 128)
        for tr in range(N_TRACKS):
            if tr not in out_group:
                roll[tr] = False
        notes = pianoroll_to_score(roll, STEPS_PER_BEAT, req.bpm).notes
        if len(notes):
            tr_of = np.asarray(GROUP_TO_TRACK)[notes["group"]]
            notes["group"] = np.asarray([out_group[int(t)] for t in tr_of], np.int8)
        notes = cut_at(notes, limit)
        if prompt is not None:
            notes = notes.copy()
            notes["onset"] += offset
            notes = np.concatenate([prompt.notes, notes])
            scores.append(Score(notes, bpm=req.bpm, time_signature=prompt.time_signature, length=offset + limit))
        else:
            scores.append(Score(notes, bpm=req.bpm, length=limit))
    return scores


def n_windows(bars: int) -> int:
    return math.ceil(bars / BARS_PER_WINDOW)


__all__ = ["TRACKS", "WINDOW", "derived_pairs", "WindowPairs", "density_thresholds", "f1_sums", "f1",
           "start_windows", "windows_to_scores", "output_groups", "reference_set", "start_set"]
