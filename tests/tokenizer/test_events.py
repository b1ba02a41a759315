"""Note events in segments (the style-conditioned VAE's representation) and their inverses."""

import numpy as np
import pytest

import tokenizer as T
from tests.conftest import MIDI_FIXTURES
from tokenizer import vocab as V
from tokenizer.events import (
    DEFAULT_VELOCITY,
    HEADER,
    N_PITCH,
    events_to_notes,
    notes_to_events,
    pack_segment,
    segments_to_notes,
    unpack_segment,
)

SEG = 2 * V.STEPS_PER_BAR


def _sorted(notes):
    return notes[np.lexsort((notes["pitch"], notes["group"], notes["onset"]))]


@pytest.mark.parametrize("path", MIDI_FIXTURES[:4], ids=lambda p: p.name)
def test_segments_to_notes_inverts_notes_to_events(path):
    notes = T.load_midi(path).notes  # durations are duration levels after loading
    segs = notes_to_events(notes, SEG)
    back = segments_to_notes(segs, SEG)
    want = _sorted(notes)
    for f in ("onset", "duration", "group", "pitch"):
        assert np.array_equal(back[f], want[f]), f
    assert (back["velocity"] == DEFAULT_VELOCITY).all()
    for e in segs:
        assert e.dtype == np.int64 and e.shape[1] == 3
        assert (e[:, 0] >= 0).all() and (len(e) == 0 or e[:, 0].sum() < SEG)  # onsets stay in the segment
        assert ((0 <= e[:, 2]) & (e[:, 2] < N_PITCH)).all()


def test_a_silent_segment_is_empty_and_keeps_its_place():
    notes = T.make_notes([3, 2 * SEG + 5, 2 * SEG + 5], [4, 8, 8], 5, [1, 0, V.DRUM_GROUP], [60, 64, 36])
    segs = notes_to_events(notes, SEG)
    assert [len(e) for e in segs] == [1, 0, 2]
    assert segs[2].tolist() == [[5, V.duration_level(8), 64], [0, V.duration_level(8), V.DRUM_GROUP * 128 + 36]]
    assert segments_to_notes(segs, SEG)["onset"].tolist() == [3, 2 * SEG + 5, 2 * SEG + 5]
    assert events_to_notes(segs[2], start=7)["onset"].tolist() == [12, 12]


def test_no_notes_no_segments():
    assert notes_to_events(T.make_notes([], [], 5, [], []), SEG) == []
    assert len(segments_to_notes([], SEG)) == 0


def test_pack_and_unpack_are_inverse_and_mark_cut_segments():
    ev = np.tile([[1, 3, 60]], (10, 1))
    p = pack_segment(ev, 2, 8)
    assert p.dtype == np.int16 and p.shape == (8 + HEADER, 3) and p[0].tolist() == [2, 8, 1]
    style, kept, cut = unpack_segment(p)
    assert (style, cut) == (2, True) and kept.tolist() == ev[:8].tolist()
    whole = pack_segment(ev[:4], 5, 8)
    assert whole[0].tolist() == [5, 4, 0] and not whole[HEADER + 4:].any()  # zero padding
    style, kept, cut = unpack_segment(whole)
    assert (style, cut) == (5, False) and kept.tolist() == ev[:4].tolist()
