"""Objective music metrics on Score note arrays (pitch classes, scale, groove, density, ...).

Each metric is a small pure function of a note array (tokenizer.score.NOTE_DTYPE: onset and duration
in 1/32-note steps, velocity level, group 0..11 with 11 = drums, pitch), plus the bar length or the
piece length in steps where the metric needs one.  Drums never enter the pitch metrics.  A metric
that is undefined for the input (no pitched notes, fewer than two bars) returns NaN; the comparison
code drops NaNs.

Definitions follow the literature they are named after:
- pitch-class entropy, scale consistency, polyphony, empty-beat rate: as in the MuseGAN /
  C-RNN-GAN / Wu & Yang (MuseMorphose, 2023) evaluations;
- groove consistency: 1 - mean Hamming distance (as a share of the bar's positions) between the
  onset patterns of consecutive bars (Wu & Yang, MuseMorphose);
- pitch-class transition matrix, inter-onset intervals, note-length histogram: Yang & Lerch, "On the
  evaluation of generative models in music" (2018).
"""

from __future__ import annotations

import math

import numpy as np

from tokenizer import Score
from tokenizer import vocab as V

NAN = float("nan")

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)  # natural minor


def _scale_masks() -> np.ndarray:
    """(24, 12) bool: 12 major then 12 natural-minor scales, tonic C..B."""
    m = np.zeros((24, 12), bool)
    for k in range(12):
        m[k, [(k + i) % 12 for i in MAJOR]] = True
        m[12 + k, [(k + i) % 12 for i in MINOR]] = True
    return m


SCALES = _scale_masks()

# Note-length classes in steps (1/32 note): lower edges of 12 classes, from a 1/32 note to 2+ bars.
NOTE_LENGTH_EDGES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
NOTE_LENGTH_LABELS = ("1/32", "1/16", "3/32", "1/8", "3/16", "1/4", "3/8", "1/2", "3/4", "1", "1.5", "2+")
# Inter-onset-interval classes in steps (same edges, last class open).
IOI_EDGES = NOTE_LENGTH_EDGES


# ---- selections -------------------------------------------------------------------------------------
def pitched(notes: np.ndarray, group: int | None = None) -> np.ndarray:
    """The pitched (non-drum) notes, optionally of one group only."""
    sel = notes["group"] != V.DRUM_GROUP
    if group is not None:
        sel &= notes["group"] == group
    return notes[sel]


def of_group(notes: np.ndarray, group: int) -> np.ndarray:
    return notes[notes["group"] == group]


def per_group(fn, notes: np.ndarray, *args, drums: bool = False, **kw) -> dict[str, float]:
    """{group name: fn(notes of that group, ...)} for the groups present (drums only if asked)."""
    out = {}
    for g in np.unique(notes["group"]):
        g = int(g)
        if g == V.DRUM_GROUP and not drums:
            continue
        out[V.GROUPS[g]] = fn(notes[notes["group"] == g], *args, **kw)
    return out


def piece_length(score: Score) -> int:
    """Steps the piece lasts: its declared length, else the end of its last note."""
    return int(score.length) if score.length else score.end_step


# ---- pitch ---------------------------------------------------------------------------------------------
def pitch_class_histogram(notes: np.ndarray, group: int | None = None) -> np.ndarray:
    """(12,) share of pitched notes per pitch class (zeros when there are none)."""
    p = pitched(notes, group)["pitch"].astype(np.int64)
    h = np.bincount(p % 12, minlength=12).astype(np.float64)
    return h / h.sum() if h.sum() else h


def pitch_class_entropy(notes: np.ndarray, group: int | None = None) -> float:
    """Shannon entropy (bits) of the pitch-class histogram; 0 for one pitch class, log2(12) at most."""
    h = pitch_class_histogram(notes, group)
    if not h.sum():
        return NAN
    h = h[h > 0]
    return float(max(0.0, -(h * np.log2(h)).sum()))


def scale_consistency(notes: np.ndarray, group: int | None = None) -> float:
    """Largest share of pitched notes that lie in one of the 24 major / natural-minor scales."""
    p = pitched(notes, group)["pitch"].astype(np.int64)
    if not len(p):
        return NAN
    counts = np.bincount(p % 12, minlength=12)
    return float((SCALES @ counts).max() / len(p))


def pitch_range(notes: np.ndarray, group: int | None = None) -> float:
    """Highest minus lowest pitched note, in semitones."""
    p = pitched(notes, group)["pitch"].astype(np.int64)
    return float(p.max() - p.min()) if len(p) else NAN


def pitch_class_transition_matrix(notes: np.ndarray, normalize: str = "all") -> np.ndarray:
    """(12, 12) counts of pitch class i followed by pitch class j, within each pitched group, notes
    in (onset, pitch) order.  normalize: "all" (the matrix sums to 1), "row" (rows sum to 1) or
    "none"."""
    m = np.zeros((12, 12), np.float64)
    for g in np.unique(notes["group"]):
        if int(g) == V.DRUM_GROUP:
            continue
        n = notes[notes["group"] == g]
        n = n[np.lexsort((n["pitch"], n["onset"]))]
        pc = n["pitch"].astype(np.int64) % 12
        if len(pc) > 1:
            np.add.at(m, (pc[:-1], pc[1:]), 1.0)
    if normalize == "all":
        s = m.sum()
        return m / s if s else m
    if normalize == "row":
        s = m.sum(1, keepdims=True)
        return np.divide(m, s, out=np.zeros_like(m), where=s > 0)
    if normalize == "none":
        return m
    raise ValueError(f"normalize must be all, row or none (got {normalize!r})")


# ---- rhythm --------------------------------------------------------------------------------------------
def onset_patterns(notes: np.ndarray, bar_steps: int = V.STEPS_PER_BAR, n_bars: int | None = None) -> np.ndarray:
    """(n_bars, bar_steps) bool: which positions of each bar have an onset (any group)."""
    on = notes["onset"].astype(np.int64)
    if n_bars is None:
        n_bars = int(on.max()) // bar_steps + 1 if len(on) else 0
    pat = np.zeros((n_bars, bar_steps), bool)
    on = on[on < n_bars * bar_steps]
    pat[on // bar_steps, on % bar_steps] = True
    return pat


def groove_consistency(notes: np.ndarray, bar_steps: int = V.STEPS_PER_BAR, n_bars: int | None = None) -> float:
    """1 - mean over consecutive bar pairs of the Hamming distance between their onset patterns,
    divided by the positions per bar (Wu & Yang).  NaN for fewer than two bars."""
    pat = onset_patterns(notes, bar_steps, n_bars)
    if len(pat) < 2:
        return NAN
    return float(1.0 - (pat[1:] != pat[:-1]).mean(1).mean())


def empty_beat_rate(notes: np.ndarray, length: int, beat_steps: int = V.STEPS_PER_QUARTER) -> float:
    """Share of beats (quarters by default) up to `length` steps in which no note starts."""
    n_beats = -(-int(length) // beat_steps)
    if n_beats <= 0:
        return NAN
    on = notes["onset"].astype(np.int64)
    on = on[(on >= 0) & (on < n_beats * beat_steps)]
    filled = np.zeros(n_beats, bool)
    filled[on // beat_steps] = True
    return float(1.0 - filled.mean())


def polyphony(notes: np.ndarray, group: int | None = None, drums: bool = False) -> float:
    """Mean number of notes sounding over the steps where at least one sounds (pitched notes only
    unless drums=True, or the notes of one group)."""
    n = notes if drums else pitched(notes)
    if group is not None:
        n = n[n["group"] == group]
    if not len(n):
        return NAN
    on = n["onset"].astype(np.int64)
    end = on + n["duration"].astype(np.int64)
    delta = np.zeros(int(end.max()) + 1, np.int64)
    np.add.at(delta, on, 1)
    np.add.at(delta, end, -1)
    sounding = np.cumsum(delta)[:-1]
    active = sounding > 0
    return float(sounding[active].mean()) if active.any() else NAN


def note_density(notes: np.ndarray, n_bars: int) -> float:
    """Notes per bar."""
    return float(len(notes) / n_bars) if n_bars > 0 else NAN


def inter_onset_intervals(notes: np.ndarray) -> np.ndarray:
    """Steps between consecutive distinct onsets (all groups together)."""
    on = np.unique(notes["onset"].astype(np.int64))
    return np.diff(on)


def mean_ioi(notes: np.ndarray) -> float:
    ioi = inter_onset_intervals(notes)
    return float(ioi.mean()) if len(ioi) else NAN


def _class_histogram(values: np.ndarray, edges) -> np.ndarray:
    values = np.asarray(values, np.int64)
    idx = np.searchsorted(np.asarray(edges), values, side="right") - 1
    h = np.bincount(np.clip(idx, 0, len(edges) - 1), minlength=len(edges)).astype(np.float64)
    return h / h.sum() if h.sum() else h


def ioi_histogram(notes: np.ndarray) -> np.ndarray:
    """(12,) share of inter-onset intervals per IOI_EDGES class."""
    return _class_histogram(inter_onset_intervals(notes), IOI_EDGES)


def note_length_histogram(notes: np.ndarray, group: int | None = None, drums: bool = False) -> np.ndarray:
    """(12,) share of notes per NOTE_LENGTH_EDGES class (pitched notes unless drums=True)."""
    n = notes if drums else pitched(notes)
    if group is not None:
        n = n[n["group"] == group]
    return _class_histogram(n["duration"], NOTE_LENGTH_EDGES)


# ---- whole-score summaries -----------------------------------------------------------------------------
SCALAR_FEATURES = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "empty_beat_rate",
                   "polyphony", "note_density", "pitch_range", "mean_ioi")
VECTOR_FEATURES = ("pitch_class_histogram", "note_length_histogram", "pitch_class_transition_matrix")


def n_bars_of(score: Score) -> int:
    return max(1, math.ceil(piece_length(score) / score.bar_steps))


def score_features(score: Score) -> dict:
    """Every scalar feature (SCALAR_FEATURES) and vector feature (VECTOR_FEATURES) of one score."""
    n = score.notes
    bars = n_bars_of(score)
    return {
        "pitch_class_entropy": pitch_class_entropy(n),
        "scale_consistency": scale_consistency(n),
        "groove_consistency": groove_consistency(n, score.bar_steps, bars),
        "empty_beat_rate": empty_beat_rate(n, piece_length(score)),
        "polyphony": polyphony(n),
        "note_density": note_density(n, bars),
        "pitch_range": pitch_range(n),
        "mean_ioi": mean_ioi(n),
        "pitch_class_histogram": pitch_class_histogram(n),
        "note_length_histogram": note_length_histogram(n),
        "pitch_class_transition_matrix": pitch_class_transition_matrix(n).ravel(),
    }


def group_features(score: Score) -> dict[str, dict[str, float]]:
    """Per pitched group: pitch-class entropy, scale consistency, pitch range, polyphony, density."""
    n, bars = score.notes, n_bars_of(score)
    out = {}
    for g in score.groups:
        if g == V.DRUM_GROUP:
            continue
        gn = of_group(n, g)
        out[V.GROUPS[g]] = {"pitch_class_entropy": pitch_class_entropy(gn), "scale_consistency": scale_consistency(gn),
                            "pitch_range": pitch_range(gn), "polyphony": polyphony(gn),
                            "note_density": note_density(gn, bars)}
    return out
