"""The melody and chord token schemes of the recurrent engines (tokenizer.melody)."""

from __future__ import annotations

import glob
import subprocess
import sys

import numpy as np
import pytest

import tokenizer as T
from tokenizer import melody as M
from tokenizer import vocab as V

OPENMSX = sorted(glob.glob("/usr/share/games/openttd/baseset/openmsx/*.mid"))


def notes(onset, duration, pitch, group=0):
    return T.make_notes(onset, duration, M.DEFAULT_VELOCITY, group, pitch)


def openmsx_part(i: int) -> np.ndarray:
    if len(OPENMSX) <= i:
        pytest.skip("openttd-openmsx is not installed (scripts/setup.sh installs it)")
    part = M.melody_part(T.load_midi(OPENMSX[i]).notes)
    assert len(part) and len(np.unique(part["group"])) == 1
    return part


# ---- choosing the part ----------------------------------------------------------------------------
def test_melody_part_is_the_highest_group_with_enough_notes():
    low = notes(range(0, 80, 8), [4] * 10, [40] * 10, group=V.GROUPS.index("bass"))
    high = notes(range(0, 80, 8), [4] * 10, [72] * 10, group=V.GROUPS.index("strings"))
    few = notes([0, 8], [4, 4], [100, 100], group=V.GROUPS.index("guitar"))  # too few notes
    drums = notes(range(0, 80, 8), [1] * 10, [110] * 10, group=V.DRUM_GROUP)
    part = M.melody_part(np.concatenate([low, high, few, drums]))
    assert set(part["group"].tolist()) == {V.GROUPS.index("strings")} and len(part) == 10
    assert len(M.melody_part(np.concatenate([few, drums]))) == 0


def test_skyline_keeps_the_top_pitch_cut_at_the_next_onset():
    sky = M.skyline(notes([0, 0, 4, 10], [8, 8, 16, 2], [60, 67, 64, 62]))
    assert sky["onset"].tolist() == [0, 4, 10]
    assert sky["pitch"].tolist() == [67, 64, 62]
    assert sky["duration"].tolist() == [4, 6, 2]


def test_short_notes_are_removed():
    kept = M.remove_short_notes(notes([0, 4, 8, 9], [1, 2, 1, 8], [60, 62, 64, 65]), 2)
    assert kept["pitch"].tolist() == [62, 65] and kept["onset"].tolist() == [4, 9]


# ---- melody ---------------------------------------------------------------------------------------
def test_melody_tokens_round_trip():
    part = notes([8, 12, 20, 60], [4, 8, 40, 2], [60, 62, 64, 65])  # a rest of 4, a note longer than a bar
    toks = M.melody_tokens(part)
    assert len(toks) % 2 == 0 and toks.max() < M.MEL_VOCAB
    back = M.melody_decode(toks)
    assert back["pitch"].tolist() == [60, 62, 64, 65]
    assert back["onset"].tolist() == [0, 4, 12, 12 + M.MEL_MAX_DUR + 8]  # time from the first note
    assert back["duration"].tolist() == [4, 8, M.MEL_MAX_DUR, 2]


def test_melody_tokens_round_trip_the_skyline_of_a_real_file():
    part = openmsx_part(0)
    sky = M.skyline(part)
    back = M.melody_decode(M.melody_tokens(part))
    assert np.array_equal(back["pitch"], sky["pitch"])
    assert np.array_equal(back["onset"], sky["onset"] - sky["onset"][0])  # no gap here exceeds a bar
    assert np.array_equal(back["duration"], np.minimum(sky["duration"], M.MEL_MAX_DUR))


def test_melody_decode_skips_pairs_outside_the_scheme():
    good = [M.MEL_PITCH_OFFSET + 60, M.MEL_DUR_OFFSET + 3]
    back = M.melody_decode([M.BOS, M.MEL_DUR_OFFSET] + good + [M.MEL_DUR_OFFSET, M.MEL_PITCH_OFFSET])
    assert back["pitch"].tolist() == [60] and back["duration"].tolist() == [4]


# ---- chord8 ---------------------------------------------------------------------------------------
def test_chord8_round_trip_of_chords_holds_and_rests():
    # C major (3 notes) for a quarter, rest an eighth, a single note for an eighth, C major again
    part = notes([0, 0, 0, 12, 16, 16, 16], [8, 8, 8, 4, 4, 4, 4], [60, 64, 67, 72, 60, 64, 67])
    chords = M.chord_vocabulary([part], max_chords=10)
    assert chords == [[60, 64, 67]]
    toks = M.chord8_tokens(part, chords)
    c = M.CHORD_VOCAB_BASE
    assert toks.tolist() == [c, M.HOLD, M.REST8, M.CHORD_OFFSET + 72, c]
    back = M.chord8_decode(toks, chords)
    order = np.lexsort((part["pitch"], part["onset"]))
    for f in ("onset", "duration", "pitch"):
        assert back[f].tolist() == part[f][order].tolist()


def test_chord8_keeps_onsets_of_a_real_file():
    part = openmsx_part(1)
    _, events = M.chord_events(part)
    chords = M.chord_vocabulary([part], max_chords=5)
    out = M.chord8_decode(M.chord8_tokens(part, chords), chords)
    assert np.all(out["onset"] % M.CHORD_GRID == 0) and np.all(out["duration"] >= M.CHORD_GRID)
    assert sorted(set((out["onset"] // M.CHORD_GRID).tolist())) == sorted({st for st, _ in events})


def test_an_unknown_chord_keeps_its_highest_known_pitches():
    index = M.chord_index([[64, 67]])
    assert M.chord_token((40, 64, 67), index) == M.CHORD_VOCAB_BASE
    assert M.chord_token((40, 65, 69), index) == M.CHORD_OFFSET + 69


def test_chord_vocabulary_is_the_most_frequent_multi_note_chords():
    a = notes([0, 0, 8, 8, 16, 16, 24], [4] * 7, [60, 64, 60, 64, 62, 65, 70])
    assert M.chord_vocabulary([a], max_chords=1) == [[60, 64]]
    assert M.chord_vocabulary([a, a[4:6]], max_chords=5) == [[60, 64], [62, 65]]


def test_the_schemes_need_no_torch():
    code = "import sys, tokenizer.melody; print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
