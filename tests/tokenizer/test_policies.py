"""The policies documented in tokenizer/vocab.py's docstring."""

import numpy as np
import pytest

from tokenizer import Score, decode, encode, encode_notes, load_midi, make_notes, parse_prefix
from tokenizer import vocab as V
from tokenizer.score import normalize_notes

REST = [V.SHIFT_OFFSET + V.MAX_SHIFT, V.DURVEL_REST, V.GROUPPITCH_REST]


def one_note(onset, duration=4, group=0, pitch=60, vel=5):
    return make_notes([onset], [duration], [vel], [group], [pitch])


@pytest.mark.parametrize("gap,n_rest,shift", [
    (0, 0, 0), (1, 0, 1), (128, 0, 128), (129, 1, 1), (256, 1, 128), (257, 2, 1), (1000, 7, 104),
])
def test_long_gaps_become_rest_triples(gap, n_rest, shift):
    notes = normalize_notes(np.concatenate([one_note(0), one_note(gap, pitch=62)]))
    if gap == 0:
        notes = normalize_notes(np.concatenate([one_note(0), one_note(0, pitch=62)]))
    toks = encode_notes(notes).tolist()
    assert toks[:3][0] == V.shift_token(0)
    body = toks[3:]
    assert body[: 3 * n_rest] == REST * n_rest
    assert body[3 * n_rest] == V.shift_token(shift)
    assert len(body) == 3 * (n_rest + 1)
    back = decode(encode(Score(notes))).notes
    assert back["onset"].tolist() == [0, gap]


def test_leading_silence_is_kept_with_rest_triples():
    notes = normalize_notes(one_note(300))
    toks = encode_notes(notes).tolist()
    assert toks[:6] == REST * 2 and toks[6] == V.shift_token(300 - 256)
    assert decode(encode(Score(notes))).notes["onset"].tolist() == [300]


@pytest.mark.parametrize("dur,expected", [(0, 1), (1, 1), (32, 32), (33, 34), (35, 36), (513, 512), (10_000, 512)])
def test_durations_quantized_and_long_notes_kept(dur, expected):
    n = normalize_notes(one_note(0, duration=dur))
    assert len(n) == 1 and n["duration"][0] == expected
    assert expected in V.DURATION_LEVELS and V.MAX_DURATION == 512 == 16 * V.STEPS_PER_BAR


def test_long_notes_from_a_file_are_shortened_not_dropped(midi_paths):
    s = load_midi(midi_paths["long_notes"])
    assert len(s.notes) == 3
    assert sorted(s.notes["duration"].tolist()) == [8, V.MAX_DURATION, V.MAX_DURATION]


def test_same_pitch_overlap_is_cut_at_the_later_onset():
    n = normalize_notes(make_notes([0, 8], [64, 8], 5, 0, 60))
    assert n["onset"].tolist() == [0, 8] and n["duration"].tolist() == [8, 8]
    # a different group or pitch is not cut
    n = normalize_notes(make_notes([0, 8, 8], [64, 8, 8], 5, [0, 1, 0], [60, 60, 61]))
    assert n["duration"][n["onset"] == 0].tolist() == [64]


@pytest.mark.parametrize("gap", [33, 35, 37, 65, 67, 130, 300, 511])
def test_cut_notes_never_overlap_after_quantization(gap):
    """A cut length between two duration levels is rounded down, so the note ends before the next."""
    n = normalize_notes(make_notes([0, gap], [600, 4], 5, 0, 60))
    assert n["duration"][0] <= gap and n["duration"][0] in V.DURATION_LEVELS


def test_no_same_pitch_overlaps_after_normalization(any_midi):
    n = load_midi(any_midi).notes
    order = np.lexsort((n["onset"], n["pitch"], n["group"]))
    m = n[order]
    same = (m["group"][1:] == m["group"][:-1]) & (m["pitch"][1:] == m["pitch"][:-1])
    assert not (same & (m["onset"][:-1] + m["duration"][:-1] > m["onset"][1:])).any()


def test_overlap_fixture(midi_paths):
    s = load_midi(midi_paths["overlap_same_pitch"])
    got = {(int(o), int(p)): (int(d), int(v)) for o, d, v, p in
           zip(s.notes["onset"], s.notes["duration"], s.notes["velocity"], s.notes["pitch"], strict=False)}
    # note-offs pair first-in first-out (symusic): 0..2q and q..4q; the first is cut at q
    assert got[(0, 60)][0] == 8 and got[(8, 60)][0] == 24
    # duplicates at one onset: only the longest survives (0..2q, the velocity-120 one under FIFO)
    assert got[(0, 64)] == (16, V.velocity_level(120))
    assert got[(0, 67)][0] == 32 and (33, 67) in got  # cut at 33 steps -> level 32


def test_exact_duplicates_keep_longest_then_loudest():
    n = normalize_notes(make_notes([0, 0, 0], [8, 16, 16], [7, 2, 4], 0, 60))
    assert len(n) == 1 and n["duration"][0] == 16 and n["velocity"][0] == 4


def test_simultaneous_notes_ordered_by_group_then_pitch(midi_paths):
    notes = make_notes([0, 0, 0, 0, 0, 0], [4] * 6, 5, [11, 4, 0, 4, 0, 5], [36, 40, 67, 28, 60, 72])
    toks = encode_notes(normalize_notes(notes)).reshape(-1, 3)
    gp = [(int(t) - V.GROUPPITCH_OFFSET) for t in toks[:, 2]]
    assert [divmod(x, 128) for x in gp] == [(0, 60), (0, 67), (4, 28), (4, 40), (5, 72), (11, 36)]
    assert toks[:, 0].tolist() == [V.shift_token(0)] * 6
    # from a file with chords in several groups: the first note of each chord carries the shift
    s = load_midi(midi_paths["simultaneous_groups"])
    toks = encode(s)
    _, _, _, i = parse_prefix(toks)
    body = toks[i:-1].reshape(-1, 3)
    shifts = body[:, 0] - V.SHIFT_OFFSET
    per_chord = len(s.notes) // 4
    assert shifts.tolist() == ([0] * per_chord + ([32] + [0] * (per_chord - 1)) * 3)
    keys = [(int(g), int(p)) for g, p in zip(s.notes["group"], s.notes["pitch"], strict=False)]
    for c in range(4):
        chunk = keys[c * per_chord:(c + 1) * per_chord]
        assert chunk == sorted(chunk)


def test_prefix_lists_groups_drums_and_style():
    notes = make_notes([0, 0, 4], [4, 4, 4], 5, [5, 0, 11], [60, 60, 36])
    toks = encode(Score(notes, style="jazz")).tolist()
    assert toks[:5] == [V.START, V.DRUMS_ON, V.group_token(0), V.group_token(5), V.style_token("jazz")]
    assert toks[-1] == V.END
    assert decode(toks).style == "jazz"


def test_velocity_levels():
    assert [V.velocity_level(v) for v in (1, 15, 22, 23, 120, 127)] == [0, 0, 0, 1, 7, 7]
    assert [V.level_velocity(i) for i in range(V.N_VELOCITY)] == [15, 30, 45, 60, 75, 90, 105, 120]


def test_decode_rejects_a_token_in_the_wrong_slot():
    toks = [V.START, V.DRUMS_OFF, V.group_token(0), V.shift_token(0), V.shift_token(0), V.grouppitch_token(0, 60)]
    with pytest.raises(ValueError, match="slot"):
        decode(toks)
