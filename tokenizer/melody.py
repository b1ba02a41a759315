"""One part as a token sequence, in the two schemes of the recurrent engines (numpy only).

- chord8 (`gru`): one token per eighth-note step: the chord (or single note) starting there, HOLD (the
  previous chord sounds on) or REST.  Single notes are always in the vocabulary; multi-note chords are
  the training data's most frequent ones (`chord_vocabulary`), and an unseen chord keeps its highest
  pitches that form a known chord.  `chord8_tokens(part, chords)` / `chord8_decode(tokens, chords)`.
- melody (`lstm`): the part's top voice (`skyline`) as (PITCH | REST, DURATION) token pairs on the
  1/32-note grid, durations and rests 1 to 32 steps.  `melody_tokens(part)` / `melody_decode(tokens)`.

Both start with token ids PAD = 0 and BOS = 1 (a piece's first token in a training stream).  Decoded
notes are in group 0 at a default velocity; the engine sets the group it writes.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import numpy as np

from . import vocab as V
from .score import make_notes

DEFAULT_VELOCITY = V.velocity_level(100)
PAD, BOS = 0, 1

# chord8: one token per eighth-note step
CHORD_GRID = V.STEPS_PER_QUARTER // 2  # 4 steps = an eighth note
HOLD, REST8 = 2, 3
CHORD_OFFSET = 4  # single notes 4..131 (pitch p -> 4 + p), then multi-note chords
CHORD_VOCAB_BASE = CHORD_OFFSET + 128  # vocabulary size before the data's chords

# melody: (PITCH | REST, DUR) pairs on the 1/32 grid
MEL_REST = 2
MEL_PITCH_OFFSET = 3  # 3..130
MEL_MAX_DUR = V.STEPS_PER_BAR  # durations and rests 1..32 steps (longer: clamped to one bar)
MEL_DUR_OFFSET = MEL_PITCH_OFFSET + 128  # 131..162: duration 1..32
MEL_VOCAB = MEL_DUR_OFFSET + MEL_MAX_DUR


# ---- choosing the part ----------------------------------------------------------------------------
def melody_part(notes: np.ndarray, min_notes: int = 8) -> np.ndarray:
    """The notes of one part: the pitched group with the highest mean pitch (the melody), among
    groups with at least `min_notes` notes.  Empty if there is none."""
    pitched = notes[notes["group"] != V.DRUM_GROUP]
    best, best_mean = None, -1.0
    for g in np.unique(pitched["group"]):
        p = pitched["pitch"][pitched["group"] == g]
        if len(p) >= min_notes and p.mean() > best_mean:
            best, best_mean = g, float(p.mean())
    return pitched[pitched["group"] == best] if best is not None else pitched[:0]


def skyline(notes: np.ndarray) -> np.ndarray:
    """Monophonic top voice: the highest pitch at each onset, each note cut at the next onset."""
    if not len(notes):
        return notes
    n = notes[np.lexsort((-notes["pitch"].astype(np.int64), notes["onset"]))]
    n = n[np.r_[True, n["onset"][1:] != n["onset"][:-1]]].copy()
    nxt = np.r_[n["onset"][1:], np.iinfo(np.int32).max]
    n["duration"] = np.minimum(n["duration"], nxt - n["onset"])
    return n


def remove_short_notes(notes: np.ndarray, min_steps: int) -> np.ndarray:
    """Drop notes shorter than `min_steps` (the LSTM melody app: shorter than 1/16 = 2 steps); timing is kept."""
    return notes[notes["duration"] >= min_steps]


# ---- chord8 ---------------------------------------------------------------------------------------
def chord_events(part: np.ndarray, max_notes: int = 4) -> tuple[np.ndarray, list[tuple[int, tuple[int, ...]]]]:
    """Part notes -> (per-eighth-step base tokens HOLD/REST (T,), [(step, chord pitches), ...]).

    Onsets snap to the nearest eighth; a chord keeps its `max_notes` highest pitches."""
    on = np.rint(part["onset"] / CHORD_GRID).astype(np.int64)
    end = np.maximum(on + 1, np.rint((part["onset"] + part["duration"]) / CHORD_GRID).astype(np.int64))
    start = int(on.min())
    on, end = on - start, end - start
    T = int(end.max())
    cover = np.zeros(T + 1, np.int64)
    np.add.at(cover, on, 1)
    np.add.at(cover, end, -1)
    base = np.where(np.cumsum(cover)[:T] > 0, HOLD, REST8)  # (T,)
    order = np.lexsort((part["pitch"], on))
    on_s, pitch_s = on[order], part["pitch"][order].astype(np.int64)
    cuts = np.flatnonzero(np.diff(on_s)) + 1
    events = []
    for steps, pitches in zip(np.split(on_s, cuts), np.split(pitch_s, cuts)):
        ch = tuple(sorted(set(pitches.tolist())))[-max_notes:]
        events.append((int(steps[0]), ch))
    return base, events


def chord_vocabulary(parts: Iterable[np.ndarray], max_chords: int) -> list[list[int]]:
    """The `max_chords` most frequent multi-note chords of the parts (first seen first among equals)."""
    count = Counter(ch for part in parts for _, ch in chord_events(part)[1] if len(ch) > 1)
    return [list(ch) for ch, _ in count.most_common(max_chords)]


def chord_index(chords: list) -> dict[tuple[int, ...], int]:
    """Token of every chord: single notes first (always present), then the vocabulary's chords."""
    idx = {(p,): CHORD_OFFSET + p for p in range(128)}
    for i, ch in enumerate(chords):
        idx[tuple(ch)] = CHORD_VOCAB_BASE + i
    return idx


def chord_token(ch: tuple[int, ...], index: dict) -> int:
    """A known chord's token; an unknown one keeps its highest pitches that form a known chord."""
    for k in range(len(ch), 0, -1):
        t = index.get(ch[-k:])
        if t is not None:
            return t
    raise KeyError(ch)


def chord8_tokens(part: np.ndarray, chords: list | dict) -> np.ndarray:
    """Part notes -> one token per eighth-note step (no BOS); time starts at the first onset.
    `chords`: the vocabulary's chords (or their `chord_index`, to build it once for many parts)."""
    index = chords if isinstance(chords, dict) else chord_index(chords)
    base, events = chord_events(part)
    toks = base.copy()
    for step, ch in events:
        toks[step] = chord_token(ch, index)
    return toks


def chord8_decode(tokens, chords: list) -> np.ndarray:
    """Tokens (no BOS) -> notes: a chord sounds until the next chord or REST."""
    inv = {v: k for k, v in chord_index(chords).items()}
    rows, cur, since = [], None, 0
    toks = [int(t) for t in tokens]
    for i, t in enumerate(toks + [REST8]):
        if t == HOLD and i < len(toks):
            continue
        if cur is not None:
            rows += [(since * CHORD_GRID, (i - since) * CHORD_GRID, p) for p in cur]
        cur, since = (inv.get(t), i) if t in inv else (None, i)
    return _notes(rows)


# ---- melody ---------------------------------------------------------------------------------------
def melody_tokens(part: np.ndarray) -> np.ndarray:
    """Part notes -> its skyline as (PITCH|REST, DUR) pairs (no BOS); time starts at the first note."""
    n = skyline(part)
    on = n["onset"].astype(np.int64)
    dur = np.clip(n["duration"].astype(np.int64), 1, MEL_MAX_DUR)
    prev_end = np.r_[on[0], (on + dur)[:-1]]  # time as the decoder counts it
    gap = np.clip(on - prev_end, 0, MEL_MAX_DUR)
    out = np.stack([np.full_like(on, MEL_REST), MEL_DUR_OFFSET + gap - 1,
                    MEL_PITCH_OFFSET + n["pitch"].astype(np.int64), MEL_DUR_OFFSET + dur - 1], 1)
    keep = np.stack([gap > 0, gap > 0, np.ones_like(gap, bool), np.ones_like(gap, bool)], 1)
    return out[keep]


def melody_decode(tokens) -> np.ndarray:
    """(PITCH|REST, DUR) pairs -> notes; pairs that do not fit the scheme are skipped."""
    rows, t = [], 0
    toks = [int(x) for x in tokens]
    for a, d in zip(toks[0::2], toks[1::2]):
        if not MEL_DUR_OFFSET <= d < MEL_VOCAB:
            continue
        dur = d - MEL_DUR_OFFSET + 1
        if MEL_PITCH_OFFSET <= a < MEL_DUR_OFFSET:
            rows.append((t, dur, a - MEL_PITCH_OFFSET))
        if a == MEL_REST or MEL_PITCH_OFFSET <= a < MEL_DUR_OFFSET:
            t += dur
    return _notes(rows)


def _notes(rows) -> np.ndarray:
    a = np.asarray(rows, np.int64).reshape(-1, 3)
    return make_notes(a[:, 0], a[:, 1], DEFAULT_VELOCITY, 0, a[:, 2])


__all__ = ["PAD", "BOS", "CHORD_GRID", "HOLD", "REST8", "CHORD_OFFSET", "CHORD_VOCAB_BASE", "MEL_REST",
           "MEL_PITCH_OFFSET", "MEL_MAX_DUR", "MEL_DUR_OFFSET", "MEL_VOCAB", "melody_part", "skyline",
           "remove_short_notes", "chord_events", "chord_vocabulary", "chord_index", "chord_token", "chord8_tokens",
           "chord8_decode", "melody_tokens", "melody_decode"]
