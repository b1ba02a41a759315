"""Pianorolls (tokenizer/pianoroll.py): an inverse pair on the coarse grid, windows, and the window
engines' consecutive windows and their packed bits (inverse pairs too)."""

import numpy as np
import pytest

from tokenizer import Score, make_notes
from tokenizer import vocab as V
from tokenizer.pianoroll import (
    CELL,
    DEFAULT_VELOCITY_LEVEL,
    DRUM_TRACK,
    N_TRACKS,
    STEPS_PER_BEAT,
    TRACK_TO_GROUP,
    WINDOW,
    join_windows,
    pack_windows,
    pianoroll_to_score,
    piece_windows,
    score_to_pianoroll,
    score_windows,
    unpack_windows,
    windows,
)


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


@pytest.mark.parametrize("seed", range(3))
def test_piece_windows_and_join_windows_are_an_inverse_pair(seed):
    score = grid_score(seed)
    w = piece_windows(score)
    assert w.dtype == bool and w.shape[1:] == (N_TRACKS, WINDOW, 128)
    assert len(w) == -(-score_to_pianoroll(score, STEPS_PER_BEAT).shape[1] // WINDOW)
    assert np.array_equal(pianoroll_to_score(join_windows(w), STEPS_PER_BEAT).notes, score.notes)


def test_piece_windows_from_a_start_and_at_most_n():
    """Notes that start in the windows taken (here none crosses a window's end: one cell each)."""
    notes = grid_score(0).notes.copy()
    notes["duration"] = CELL
    score = Score(notes)
    w = piece_windows(score)
    assert np.array_equal(piece_windows(score, 2, start=1), w[1:3])
    assert np.array_equal(piece_windows(score, start=2), w[2:])
    assert piece_windows(score, 3, start=len(w)).shape == (0, N_TRACKS, WINDOW, 128)
    assert piece_windows(Score()).shape == (0, N_TRACKS, WINDOW, 128)


def test_score_windows_drop_silent_windows():
    bar = V.STEPS_PER_BAR
    score = Score(make_notes([0, 9 * bar], [CELL, CELL], 5, 0, [60, 62]))  # windows 0 and 2 play, 1 is silent
    w = score_windows(score)
    assert len(w) == 2 and w[0, 0, 0, 60] and w[1, 0, bar // CELL, 62]
    assert len(score_windows(score, max_windows=2)) == 1


def test_pack_and_unpack_windows_are_an_inverse_pair():
    w = np.random.default_rng(0).random((3, N_TRACKS, WINDOW, 128)) < 0.1
    packed = pack_windows(w)
    assert packed.dtype == np.uint8 and packed.shape == (3, N_TRACKS, WINDOW, 16)
    assert np.array_equal(unpack_windows(packed), w) and unpack_windows(packed).dtype == bool
