"""Metrics on small hand-made scores with known answers."""

import math

import numpy as np
import pytest

from evaluation import metrics as M
from tokenizer import Score
from tokenizer import vocab as V
from tokenizer.score import make_notes

D = V.DRUM_GROUP


def notes(rows):
    """rows of (onset, duration, group, pitch) -> normalized note array."""
    on, du, gr, pi = zip(*rows) if rows else ((), (), (), ())
    return Score(make_notes(on, du, [4] * len(on), gr, pi)).notes


C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def test_c_major_scale_is_fully_consistent():
    n = notes([(8 * i, 8, 0, p) for i, p in enumerate(C_MAJOR)])
    assert M.scale_consistency(n) == 1.0
    # one chromatic note out of nine
    n2 = notes([(8 * i, 8, 0, p) for i, p in enumerate(C_MAJOR + [61])])
    assert M.scale_consistency(n2) == pytest.approx(8 / 9)


def test_drums_stay_out_of_pitch_metrics():
    n = notes([(8 * i, 8, 0, p) for i, p in enumerate(C_MAJOR)] + [(0, 1, D, 37), (8, 1, D, 49)])
    assert M.scale_consistency(n) == 1.0
    assert M.pitch_range(n) == 12
    assert M.pitch_class_histogram(n).sum() == pytest.approx(1.0)
    assert math.isnan(M.scale_consistency(notes([(0, 1, D, 36)])))


def test_pitch_class_entropy():
    assert M.pitch_class_entropy(notes([(8 * i, 4, 0, 60) for i in range(6)])) == 0.0
    assert M.pitch_class_entropy(notes([(0, 4, 0, 60), (8, 4, 0, 62)])) == pytest.approx(1.0)
    assert M.pitch_class_entropy(notes([(8 * i, 4, 0, 60 + i) for i in range(12)])) == pytest.approx(math.log2(12))
    # octaves are one pitch class
    assert M.pitch_class_entropy(notes([(0, 4, 0, 48), (8, 4, 0, 60), (16, 4, 1, 72)])) == 0.0


def test_empty_beats():
    # 2 bars = 8 beats; onsets in beats 0, 1 and 4 only
    n = notes([(0, 4, 0, 60), (8, 4, 0, 62), (32, 4, 0, 64)])
    assert M.empty_beat_rate(n, 64) == pytest.approx(5 / 8)
    # a bar with no onset at all counts as four empty beats
    assert M.empty_beat_rate(notes([(0, 32, 0, 60)]), 64) == pytest.approx(7 / 8)
    assert M.empty_beat_rate(notes([]), 32) == 1.0


def test_groove_consistency():
    pattern = [0, 8, 12, 20, 24]
    rep = notes([(32 * b + p, 2, D, 36) for b in range(4) for p in pattern])
    assert M.groove_consistency(rep, 32, 4) == 1.0
    # second bar differs in 2 of 32 positions, the rest equal: pairs (1-2, 2-3, 3-4) have distances 2/32, 2/32, 0
    rows = [(p, 2, D, 36) for p in pattern] + [(32 + p, 2, D, 36) for p in [0, 8, 12, 20, 28]]
    rows += [(64 + p, 2, D, 36) for p in pattern] + [(96 + p, 2, D, 36) for p in pattern]
    assert M.groove_consistency(notes(rows), 32, 4) == pytest.approx(1 - (2 / 32 + 2 / 32 + 0) / 3)
    # an empty bar after a busy one
    assert M.groove_consistency(notes([(p, 2, D, 36) for p in pattern]), 32, 2) == pytest.approx(1 - 5 / 32)
    assert math.isnan(M.groove_consistency(notes([(0, 2, 0, 60)]), 32, 1))


def test_polyphony():
    triad = notes([(0, 16, 0, 60), (0, 16, 0, 64), (0, 16, 0, 67)])
    assert M.polyphony(triad) == 3.0
    # a melody note alone, then a triad: 8 steps of 1, 16 steps of 3
    n = notes([(0, 8, 0, 72), (8, 16, 0, 60), (8, 16, 0, 64), (8, 16, 0, 67)])
    assert M.polyphony(n) == pytest.approx((8 * 1 + 16 * 3) / 24)
    # silence between notes does not count; drums do not count
    assert M.polyphony(notes([(0, 4, 0, 60), (32, 4, 0, 62), (0, 1, D, 36), (0, 1, D, 42)])) == 1.0


def test_density_range_ioi_histograms():
    n = notes([(0, 8, 0, 60), (8, 8, 0, 64), (8, 8, 4, 40), (24, 8, 0, 67)])
    assert M.note_density(n, 2) == 2.0
    assert M.pitch_range(n) == 27
    assert M.inter_onset_intervals(n).tolist() == [8, 16]
    assert M.mean_ioi(n) == 12.0
    h = M.note_length_histogram(n)
    assert h.sum() == pytest.approx(1.0) and h[M.NOTE_LENGTH_EDGES.index(8)] == 1.0
    assert M.ioi_histogram(n)[M.IOI_EDGES.index(8)] == 0.5
    assert M.per_group(M.pitch_range, n) == {"piano": 7.0, "bass": 0.0}


def test_pitch_class_transition_matrix():
    n = notes([(0, 4, 0, 60), (8, 4, 0, 67), (16, 4, 0, 60), (24, 4, 0, 67), (0, 8, 4, 36), (8, 8, 4, 38)])
    m = M.pitch_class_transition_matrix(n, "none")
    assert m[0, 7] == 2 and m[7, 0] == 1 and m[0, 2] == 1 and m.sum() == 4  # groups apart
    assert M.pitch_class_transition_matrix(n).sum() == pytest.approx(1.0)
    r = M.pitch_class_transition_matrix(n, "row")
    assert r[0].sum() == pytest.approx(1.0) and r[0, 7] == pytest.approx(2 / 3)


def test_score_features_on_an_empty_and_a_real_score():
    f = M.score_features(Score(length=256))
    assert set(f) == set(M.SCALAR_FEATURES) | set(M.VECTOR_FEATURES)
    assert f["empty_beat_rate"] == 1.0 and f["note_density"] == 0.0 and math.isnan(f["scale_consistency"])
    n = notes([(8 * i, 8, 0, p) for i, p in enumerate(C_MAJOR)] + [(32 * b, 1, D, 36) for b in range(8)])
    f = M.score_features(Score(n, length=256))
    assert f["scale_consistency"] == 1.0 and f["note_density"] == 2.0
    assert f["pitch_class_transition_matrix"].shape == (144,)
    assert set(M.group_features(Score(n, length=256))) == {"piano"}
    assert np.isfinite([f[k] for k in M.SCALAR_FEATURES]).all()
