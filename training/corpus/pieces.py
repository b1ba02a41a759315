"""What becomes of a piece on its way into the corpus: the checks, its segments, its split.

- A piece with no notes is left out; a long one (more than MAX_NOTES notes or MAX_SECONDS long) is cut
  at bar lines into segments of whole bars that each fit, never left out.
- Splits are by piece group (a tune with all its arrangements, a song with all its segments), by a hash
  of the group id: train / validation / test, 90 / 5 / 5.  Before that, the real-songs yardstick holds
  out a share of the songs of the sources in REAL_HOLDOUT (pop songs and game music, the music users
  bring), again by a hash of the group id, half to realdev and half to realtest: no window of them is
  ever trained on.
"""

from __future__ import annotations

import numpy as np

from tokenizer import Score
from tokenizer.score import cut_at

from .common import Skip, stable_hash

SPLITS = ("train", "validation", "test")
REAL_SPLITS = ("realdev", "realtest")
ALL_SPLITS = SPLITS + REAL_SPLITS
# source -> percent of its piece groups held out for realdev + realtest
REAL_HOLDOUT = {"pop909": 10, "freedoom": 15, "openmsx": 15}
MAX_NOTES = 20_000
MAX_SECONDS = 30 * 60


def split_of(group_id: str, source: str | None = None) -> str:
    """Deterministic split of a piece group: realdev / realtest for the held-out songs of a REAL_HOLDOUT
    source, else train / validation / test (90 / 5 / 5)."""
    share = REAL_HOLDOUT.get(source or "", 0)
    if share:
        h = stable_hash("real:" + group_id)
        if h % 100 < share:
            return REAL_SPLITS[(h // 100) % 2]
    r = stable_hash("split:" + group_id) % 100
    return "train" if r < 90 else "validation" if r < 95 else "test"


def check_score(score: Score) -> None:
    """Raises Skip for a piece the corpus leaves out: one with no notes."""
    if len(score.notes) == 0:
        raise Skip("no notes")


def too_long(score: Score, max_notes: int = MAX_NOTES, max_seconds: float = MAX_SECONDS) -> bool:
    """Whether a piece must be cut into segments: more than max_notes notes or longer than max_seconds."""
    return len(score.notes) > max_notes or score.seconds() > max_seconds


def segment_bounds(score: Score, max_notes: int = MAX_NOTES, max_seconds: float = MAX_SECONDS) -> list[tuple[int, int]]:
    """[(first step, end step)] of the segments of a score: runs of whole bars, each with at most max_notes
    note onsets and at most max_seconds long, taken greedily from the start; bars without notes at a
    segment's start are skipped.  Skip when one bar alone holds more than max_notes notes."""
    bar = score.bar_steps
    bar_seconds = bar / 8 * 60.0 / score.bpm
    max_bars = max(1, int(max_seconds // bar_seconds))
    counts = np.bincount(score.notes["onset"] // bar)
    if counts.max() > max_notes:
        raise Skip(f"one bar holds more than {max_notes} notes")
    out, b = [], 0
    while b < len(counts):
        while b < len(counts) and counts[b] == 0:
            b += 1
        if b >= len(counts):
            break
        e, n = b, 0
        while e < len(counts) and e - b < max_bars and n + counts[e] <= max_notes:
            n += counts[e]
            e += 1
        out.append((b * bar, e * bar))
        b = e
    return out


def segment_piece(p: dict, max_notes: int = MAX_NOTES, max_seconds: float = MAX_SECONDS) -> list[dict]:
    """A piece dict (id, group, source, style, score, extra) -> its segments as piece dicts.  A piece that
    fits is its own one segment (same id); a long one gives ids "ID@K" (K from 0), the same group (so one
    split), each segment's notes from its first bar line on, cut at its last, and extra fields segment,
    segments and start_step (where it starts in the whole piece)."""
    score = p["score"]
    check_score(score)
    if not too_long(score, max_notes, max_seconds):
        return [dict(p, extra={**p.get("extra", {}), "segment": 0, "segments": 1, "start_step": 0})]
    bounds = segment_bounds(score, max_notes, max_seconds)
    out = []
    for k, (a, b) in enumerate(bounds):
        notes = cut_at(score.notes[score.notes["onset"] >= a], b)
        notes["onset"] -= a
        seg = Score(notes, bpm=score.bpm, time_signature=score.time_signature, style=score.style,
                    drum_kit=score.drum_kit)
        out.append(dict(p, id=f"{p['id']}@{k}", score=seg,
                        extra={**p.get("extra", {}), "segment": k, "segments": len(bounds), "start_step": a}))
    return out
