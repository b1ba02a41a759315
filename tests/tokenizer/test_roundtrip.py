"""Round trips: MIDI -> notes -> tokens -> notes, and notes -> MIDI bytes -> notes."""

import numpy as np
import pytest

from tokenizer import Score, decode, encode, load_midi, make_notes, parse_prefix, to_midi_bytes
from tokenizer import vocab as V
from tokenizer.score import normalize_notes


def assert_same_notes(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and len(a) == len(b)
    for f in a.dtype.names:
        assert np.array_equal(a[f], b[f]), f


def test_encode_decode_round_trip(any_midi):
    score = load_midi(any_midi)
    assert len(score.notes) > 0
    tokens = encode(score)
    _, _, _, first = parse_prefix(tokens)
    assert tokens[-1] == V.END and (len(tokens) - 1 - first) % 3 == 0
    assert ((tokens >= 0) & (tokens < V.VOCAB_SIZE)).all()
    back = decode(tokens)
    assert_same_notes(back.notes, score.notes)
    assert back.groups == score.groups and back.has_drums == score.has_drums


def test_write_load_round_trip(any_midi):
    score = load_midi(any_midi)
    again = load_midi(to_midi_bytes(score))
    assert_same_notes(again.notes, score.notes)
    assert again.time_signature == score.time_signature
    assert again.bpm == pytest.approx(score.bpm, rel=1e-4)


def test_normalization_is_idempotent(any_midi):
    notes = load_midi(any_midi).notes
    assert_same_notes(normalize_notes(notes), notes)


def test_fixture_specifics(fixture_case):
    name, path, info = fixture_case
    score = load_midi(path)
    if "groups" in info:
        assert set(score.notes_per_group()) == info["groups"]
    if "onsets" in info:
        assert score.notes["onset"].tolist() == info["onsets"]
    if "durations" in info:
        assert score.notes["duration"].tolist() == info["durations"]
    if "bpm" in info:
        assert score.bpm == pytest.approx(info["bpm"], rel=1e-4)
    if "time_signature" in info:
        assert score.time_signature == info["time_signature"]
    assert (score.notes["duration"] >= 1).all()
    assert np.isin(score.notes["duration"], V.DURATION_LEVELS).all()


def test_offgrid_onsets_round_to_the_nearest_step(midi_paths):
    import mido

    for name in ("offgrid_tpq96", "offgrid_tpq480", "offgrid_tpq1000"):
        mf = mido.MidiFile(midi_paths[name])
        tpq, now, onsets = mf.ticks_per_beat, 0, set()
        for msg in mf.tracks[0]:
            now += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                onsets.add(round(now * V.STEPS_PER_QUARTER / tpq))
        assert set(load_midi(midi_paths[name]).notes["onset"].tolist()) == onsets


def test_type0_channels_and_program_change_groups(midi_paths):
    s = load_midi(midi_paths["program_change_mid_track"])
    by_pitch = {int(p): V.GROUPS[int(g)] for p, g in zip(s.notes["pitch"], s.notes["group"], strict=False)}
    assert by_pitch == {60: "piano", 62: "piano", 64: "brass", 65: "brass", 67: "pipe"}
    s = load_midi(midi_paths["drums_channel10"])
    drums = s.notes[s.notes["group"] == V.DRUM_GROUP]
    assert len(drums) == 16 and set(drums["pitch"].tolist()) == {36, 42}


def test_zero_length_notes_are_kept_as_one_step(midi_paths):
    s = load_midi(midi_paths["zero_length"])
    assert len(s.notes) == 6
    assert sorted(s.notes["duration"].tolist()) == [1, 1, 1, 1, 1, 8]


@pytest.mark.parametrize("seed", range(5))
def test_random_scores_round_trip(seed):
    rng = np.random.default_rng(seed)
    n = 400
    onset = np.sort(rng.integers(0, 3000, n))
    onset[rng.random(n) < 0.05] += rng.integers(200, 2000)  # some long gaps
    notes = make_notes(np.sort(onset), rng.integers(0, 800, n), rng.integers(0, V.N_VELOCITY, n),
                       rng.integers(0, V.N_GROUPS, n), rng.integers(0, 128, n))
    score = Score(notes, bpm=float(rng.integers(40, 240)))
    assert_same_notes(decode(encode(score)).notes, score.notes)
    assert_same_notes(load_midi(to_midi_bytes(score)).notes, score.notes)


def test_empty_score_round_trip():
    score = Score()
    tokens = encode(score)
    assert tokens.tolist() == [V.START, V.DRUMS_OFF, V.END]
    assert len(decode(tokens).notes) == 0


def test_bar_counts_of_a_score():
    """`bars`: the length's whole bars, else the bars the onsets reach; `sounding_bars`: up to the later of the
    length and the last note's end; `span_steps`: the length, else the onsets' whole bars."""
    s = Score(make_notes([0, 70], [8, 32], [4, 4], [0, 0], [60, 62]), time_signature=(3, 4))  # 24-step bars
    assert (s.bar_steps, s.bars, s.sounding_bars, s.span_steps) == (24, 3, 5, 72)
    cut = s.first_bars(3)
    assert (cut.length, cut.bars, cut.sounding_bars, cut.span_steps) == (72, 3, 3, 72)
    longer = Score(s.notes, time_signature=(3, 4), length=240)
    assert (longer.bars, longer.sounding_bars, longer.span_steps) == (10, 10, 240)
    assert (Score().bars, Score().sounding_bars, Score().span_steps) == (0, 0, 0)
