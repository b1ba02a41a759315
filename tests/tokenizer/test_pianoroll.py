"""Pianorolls (tokenizer/pianoroll.py): an inverse pair on the coarse grid, and windows."""

import numpy as np
import pytest

from tokenizer import Score, make_notes
from tokenizer import vocab as V
from tokenizer.pianoroll import (
    DEFAULT_VELOCITY_LEVEL,
    DRUM_TRACK,
    N_TRACKS,
    TRACK_TO_GROUP,
    pianoroll_to_score,
    score_to_pianoroll,
    windows,
)

CELL = V.STEPS_PER_QUARTER // 2  # 2 cells per beat


def grid_score(seed: int, n: int = 200) -> Score:
    rng = np.random.default_rng(seed)
    track = rng.integers(0, N_TRACKS, n)
    onset = rng.integers(0, 256, n) * CELL
    dur = np.where(track == DRUM_TRACK, 1, rng.integers(1, 9, n)) * CELL
    notes = make_notes(onset, dur, DEFAULT_VELOCITY_LEVEL, np.asarray(TRACK_TO_GROUP)[track], rng.integers(20, 100, n))
    notes = Score(notes).notes
    # a pianoroll merges same-pitch notes that touch or overlap: keep a sparse, separated subset
    keep, busy = [], {}
    for i, nt in enumerate(notes):
        key = (int(nt["group"]), int(nt["pitch"]))
        if busy.get(key, -1) < int(nt["onset"]):
            keep.append(i)
            busy[key] = int(nt["onset"] + nt["duration"])
    return Score(notes[keep])


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_on_the_coarse_grid(seed):
    score = grid_score(seed)
    roll = score_to_pianoroll(score)
    assert roll.dtype == bool and roll.shape[0] == N_TRACKS and roll.shape[2] == 128
    back = pianoroll_to_score(roll)
    assert np.array_equal(back.notes, score.notes)


def test_drum_hits_are_single_cells_and_groups_fold():
    notes = make_notes([0, 0, 0], [32, 32, 32], 5, [V.DRUM_GROUP, V.GROUPS.index("organ"),
                                                     V.GROUPS.index("brass")], [36, 60, 70])
    roll = score_to_pianoroll(Score(notes))
    assert roll[DRUM_TRACK, :, 36].sum() == 1
    assert roll[0, :, 60].sum() == 32 // CELL  # organ -> piano track
    assert roll[3, :, 70].sum() == 32 // CELL  # brass -> strings track


def test_n_steps_pads_or_crops():
    score = Score(make_notes([0, 40], [8, 8], 5, 0, 60))
    assert score_to_pianoroll(score, n_steps=64).shape == (N_TRACKS, 64, 128)
    assert score_to_pianoroll(score, n_steps=4).shape == (N_TRACKS, 4, 128)
    with pytest.raises(ValueError):
        score_to_pianoroll(score, steps_per_beat=3)
    with pytest.raises(ValueError, match="shape"):
        pianoroll_to_score(np.zeros((4, 8, 128)))


def test_windows_shape():
    roll = score_to_pianoroll(grid_score(0), n_steps=100)
    w = windows(roll, 32)
    assert w.ndim == 4 and w.shape[1:] == (N_TRACKS, 32, 128) and 1 <= len(w) <= 3
    assert np.array_equal(w[0], roll[:, :32])
    assert windows(roll, 32, hop=16).shape[0] <= 5
    assert windows(np.zeros((N_TRACKS, 64, 128), bool), 32).shape == (0, N_TRACKS, 32, 128)
    assert windows(roll[:, :10], 32).shape == (0, N_TRACKS, 32, 128)
