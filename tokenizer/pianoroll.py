"""Pianorolls for the pianoroll engines (LPD-5 style): 5 tracks x time x 128 pitches.

Tracks: piano, guitar, bass, strings, drums.  The 12 groups fold in as LPD-5 does: keyboards
(piano, chromatic percussion, organ) into piano, every other melodic group into strings.
Resolution is `steps_per_beat` cells per quarter note (the reference: 2; windows of 32 cells).

`score_to_pianoroll` / `pianoroll_to_score` are an inverse pair for notes on the coarse grid:
a pitched note is a run of active cells (two same-pitch notes that touch merge into one, as in any
pianoroll); a drum hit is one active cell at its onset.

The window engines (cnn, vae-nn) see a piece as consecutive windows of `WINDOW` cells at
`STEPS_PER_BEAT` (4 bars of 4/4): `piece_windows` cuts a score into them and `join_windows` puts
windows back into one pianoroll; `pack_windows` / `unpack_windows` store them as bits (8 pitches a
byte, as checkpoints and derived data keep them).
"""

from __future__ import annotations

import numpy as np

from . import vocab as V
from .score import Score, make_notes

TRACKS = ("piano", "guitar", "bass", "strings", "drums")
N_TRACKS = len(TRACKS)
DRUM_TRACK = TRACKS.index("drums")
# group index -> pianoroll track index
GROUP_TO_TRACK = tuple(
    TRACKS.index({"piano": "piano", "chromatic": "piano", "organ": "piano", "guitar": "guitar",
                  "bass": "bass", "drums": "drums"}.get(g, "strings"))
    for g in V.GROUPS
)
TRACK_TO_GROUP = tuple(V.GROUPS.index(t) for t in TRACKS)
DEFAULT_VELOCITY_LEVEL = V.velocity_level(100)
PITCHES = 128
STEPS_PER_BEAT = 2  # the window engines' resolution (the reference's)
WINDOW = 32  # cells per window: 4 bars of 4/4 at 2 steps per beat
CELL = V.STEPS_PER_QUARTER // STEPS_PER_BEAT  # score steps per cell (4)
BARS_PER_WINDOW = WINDOW * CELL // V.STEPS_PER_BAR  # 4


def score_to_pianoroll(score: Score, steps_per_beat: int = 2, n_steps: int | None = None) -> np.ndarray:
    """Bool array (5, time, 128)."""
    if V.STEPS_PER_QUARTER % steps_per_beat:
        raise ValueError(f"steps_per_beat must divide {V.STEPS_PER_QUARTER}")
    f = V.STEPS_PER_QUARTER // steps_per_beat
    n = score.notes
    on = n["onset"] // f
    off = np.maximum(on + 1, np.rint((n["onset"] + n["duration"]) / f).astype(np.int64))
    track = np.asarray(GROUP_TO_TRACK)[n["group"]]
    off = np.where(track == DRUM_TRACK, on + 1, off)
    total = int(off.max()) if len(n) else 0
    T = total if n_steps is None else n_steps
    roll = np.zeros((N_TRACKS, T, 128), bool)
    for tr, a, b, p in zip(track, on, off, n["pitch"]):
        if a < T:
            roll[tr, a:min(b, T), p] = True
    return roll


def pianoroll_to_score(roll: np.ndarray, steps_per_beat: int = 2, bpm: float = 120.0,
                       velocity_level: int = DEFAULT_VELOCITY_LEVEL) -> Score:
    """Runs of active cells -> notes (drums: every active cell is a hit)."""
    roll = np.asarray(roll) > 0
    if roll.ndim != 3 or roll.shape[0] != N_TRACKS or roll.shape[2] != 128:
        raise ValueError(f"pianoroll must have shape (5, time, 128), got {roll.shape}")
    f = V.STEPS_PER_QUARTER // steps_per_beat
    parts = []
    for tr in range(N_TRACKS):
        r = roll[tr].astype(np.int8)  # (T, 128)
        if tr == DRUM_TRACK:
            t, p = np.nonzero(r)
            on, dur = t, np.ones_like(t)
        else:
            padded = np.pad(r, ((1, 1), (0, 0)))
            d = np.diff(padded, axis=0)  # +1 at starts, -1 at ends
            ts, ps = np.nonzero(d.T == 1)  # ordered by pitch, then time
            te, _ = np.nonzero(d.T == -1)
            p, on, dur = ts, ps, np.nonzero(d.T == -1)[1] - ps
            del te
        parts.append(make_notes(on * f, dur * f, velocity_level, TRACK_TO_GROUP[tr], p))
    notes = np.concatenate(parts)
    return Score(notes, bpm=bpm)


def windows(roll: np.ndarray, length: int = 32, hop: int | None = None, min_notes: int = 1) -> np.ndarray:
    """Cut (5, T, 128) into (N, 5, length, 128) windows; drops windows with fewer active cells."""
    hop = hop or length
    T = roll.shape[1]
    starts = range(0, max(T - length, 0) + 1, hop) if T >= length else []
    out = [roll[:, s:s + length] for s in starts if roll[:, s:s + length].sum() >= min_notes]
    return np.stack(out) if out else np.zeros((0, N_TRACKS, length, 128), bool)


# ---- consecutive windows (the window engines) ---------------------------------------------------------
def piece_windows(score: Score, max_windows: int | None = None, start: int = 0) -> np.ndarray:
    """Consecutive windows (n, 5, WINDOW, 128) bool of a score at STEPS_PER_BEAT, from window `start` on
    (at most `max_windows`; the last one silence-padded)."""
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


def join_windows(windows: np.ndarray) -> np.ndarray:
    """Consecutive windows (n, 5, WINDOW, 128) -> one pianoroll (5, n * WINDOW, 128): piece_windows' inverse
    (with pianoroll_to_score at STEPS_PER_BEAT)."""
    w = np.asarray(windows)
    return w.transpose(1, 0, 2, 3).reshape(N_TRACKS, -1, PITCHES)


def score_windows(score: Score, max_windows: int = 64) -> np.ndarray:
    """The non-silent windows (n, 5, WINDOW, 128) bool among a score's first `max_windows`."""
    w = piece_windows(score, max_windows)
    return w[w.reshape(len(w), -1).any(1)] if len(w) else w


def pack_windows(windows: np.ndarray) -> np.ndarray:
    """Bool windows (..., 128) -> bits (..., 16) uint8."""
    return np.packbits(np.asarray(windows, bool), axis=-1)


def unpack_windows(packed: np.ndarray) -> np.ndarray:
    """Bits (..., 16) uint8 -> bool windows (..., 128): pack_windows' inverse."""
    return np.unpackbits(np.asarray(packed, np.uint8), axis=-1, count=PITCHES).astype(bool)
