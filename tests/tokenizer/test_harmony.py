import numpy as np
import pytest

import tokenizer as T
from tests.conftest import MIDI_FIXTURES
from tokenizer import harmony as H
from tokenizer import vocab as V


@pytest.mark.parametrize("text, tonic, mode, pcs", [
    ("D minor", 2, "minor", {2, 4, 5, 7, 9, 10, 0}),
    ("C major", 0, "major", {0, 2, 4, 5, 7, 9, 11}),
    ("Bb major", 10, "major", {10, 0, 2, 3, 5, 7, 9}),
    ("f# harmonic minor", 6, "harmonic-minor", {6, 8, 9, 11, 1, 2, 5}),
    ("A dorian", 9, "dorian", {9, 11, 0, 2, 4, 6, 7}),
    ("E blues", 4, "blues", {4, 7, 9, 10, 11, 2}),
    ("G major pentatonic", 7, "major-pentatonic", {7, 9, 11, 2, 4}),
    ("A minor-pentatonic", 9, "minor-pentatonic", {9, 0, 2, 4, 7}),
    ("Dm", 2, "minor", {2, 4, 5, 7, 9, 10, 0}),
    ("E", 4, "major", {4, 6, 8, 9, 11, 1, 3}),
    ("C# locrian", 1, "locrian", {1, 2, 4, 6, 7, 9, 11}),
])
def test_parse_key(text, tonic, mode, pcs):
    key = H.parse_key(text)
    assert (key.tonic, key.mode) == (tonic, mode)
    assert key.pitch_classes == frozenset(pcs)
    assert H.parse_key(str(key)) == key  # the normalized text reads back


def test_every_mode_parses_and_has_its_tonic():
    for mode, steps in H.MODES.items():
        key = H.parse_key(f"C {mode}")
        assert 0 in key.pitch_classes and len(key.pitch_classes) == len(steps)


@pytest.mark.parametrize("bad, says", [("H minor", "tonic"), ("D minorish", "unknown mode"), ("", "tonic"),
                                       ("  ", "tonic"), (None, "tonic")])
def test_bad_keys_say_what_is_allowed(bad, says):
    with pytest.raises(ValueError, match=says):
        H.parse_key(bad)


def test_parse_chords():
    chords = H.parse_chords("Dm Bb, F | C/E G7 Cmaj7 Am7 Bdim Caug Dsus2 Dsus4")
    names = [str(c) for c in chords]
    assert names == ["Dm", "Bb", "F", "C/E", "G7", "Cmaj7", "Am7", "Bdim", "Caug", "Dsus2", "Dsus4"]
    assert chords[0].tones == {2, 5, 9} and chords[0].bass == 2
    assert chords[3].tones == {0, 4, 7} and chords[3].bass == 4
    assert chords[4].tones == {7, 11, 2, 5}
    assert chords[7].tones == {11, 2, 5} and chords[8].tones == {0, 4, 8}
    assert H.parse_chord("C/Bb").tones == {0, 4, 7, 10}  # a slash bass outside the triad counts
    assert [str(c) for c in H.parse_chords(" ".join(names))] == names


@pytest.mark.parametrize("bad", ["", "Xm", "C/H", "Cmaj9", "C#m7b5", 3])
def test_bad_chords_are_refused(bad):
    with pytest.raises(ValueError):
        H.parse_chords(bad)


def test_pitch_mask():
    m = H.pitch_mask({0, 7})
    assert m.shape == (128,) and m[60] and m[67] and m[0] and not m[61]
    assert m.sum() == 11 + 11  # C0..C10, G0..G10 (127)


def test_register_table_covers_every_pitched_group():
    assert set(H.REGISTERS) == set(V.PITCHED_GROUPS)
    for name, (lo, hi) in H.REGISTERS.items():
        assert 0 <= lo < hi <= 127 and hi - lo >= 12, name  # at least an octave: every pitch class fits
    assert H.register_mask(V.DRUM_GROUP).all()
    assert H.register_mask(V.GROUPS.index("bass")).sum() == H.REGISTERS["bass"][1] - H.REGISTERS["bass"][0] + 1


def test_registers_command_measures_the_files(capsys):
    assert H.main(["registers", str(MIDI_FIXTURES[0].parent)]) == 0
    out = capsys.readouterr().out
    assert "'bass': (" in out and "'piano': (" in out
    table = H.measure_registers([T.load_midi(f) for f in MIDI_FIXTURES])
    assert all(lo <= hi for lo, hi in table.values())
    assert H.main([]) == 2


def test_figures():
    notes = T.make_notes(onset=[0, 0, 8, 16, 32, 48], duration=4, velocity_level=5,
                         group=[4, 0, 0, 0, 4, V.DRUM_GROUP], pitch=[38, 62, 61, 65, 46, 36])
    key = H.parse_key("D minor")
    assert H.in_key_share(notes, key) == pytest.approx(4 / 5)  # C# is out; drums do not count
    chords = H.parse_chords("Dm Bb")
    # strong beats in 4/4: steps 0 and 16 of each bar -> D (bass), D (piano), F (piano), Bb (bass, bar 2)
    assert H.chord_tone_share(notes, chords, 32) == 1.0
    assert H.chord_tone_share(notes, chords, 32, strong_only=False) == pytest.approx(4 / 5)
    assert H.parts_per_bar(notes, 32, 2) == [["piano", "bass"], ["bass", "drums"]]
    assert H.kept_share(notes[:3], notes) == 1.0 and H.kept_share(notes[:0], notes) is None
    assert H.kept_share(notes, notes[:3]) == pytest.approx(0.5)
    assert H.in_key_share(notes[notes["group"] == V.DRUM_GROUP], key) is None
    assert list(H.strong_beat(np.array([0, 12, 24, 36]), 24, numerator=3)) == [True, False, True, False]


def test_part_fit_against_the_song():
    bar = 32
    # the song: C major triads on beats 1 and 3 of 4 bars (a grid of steps 0 and 16)
    song_on = np.repeat(np.arange(8) * 16, 3)
    song = T.make_notes(onset=song_on, duration=8, velocity_level=5, group=0,
                        pitch=np.tile([60, 64, 67], 8))
    assert H.song_scale(song) == H.parse_key("C major").pitch_classes
    assert list(np.flatnonzero(H.song_grid(song, bar))) == [0, 16]
    # a bass: 2 notes in bar 1, 4 in bar 2, none in bars 3-4; one note off the grid (step 8), one off the scale
    part = T.make_notes(onset=[0, 16, 32, 40, 48, 56], duration=4, velocity_level=5, group=4,
                        pitch=[36, 43, 41, 42, 36, 43])
    fit = H.part_fit(part, song, bar, 4)
    assert fit["notes_per_bar"] == pytest.approx(3.0) and fit["heard_in_bars"] == 0.5
    assert fit["in_song_scale"] == pytest.approx(5 / 6)
    assert fit["on_song_grid"] == pytest.approx(4 / 6)  # steps 40 and 56 (8 and 24 in the bar) are off
    # in a 3/4 bar of 24 steps, 3 notes a bar are 4 per 4/4 bar (32 steps)
    assert H.part_fit(part[:3], song, 24, 2)["notes_per_bar"] == pytest.approx((3 / 2) * 32 / 24)
    silent = H.part_fit(part[:0], song, bar, 4)
    assert silent["notes_per_bar"] is None and silent["heard_in_bars"] == 0 and silent["on_song_grid"] is None
    drums = H.part_fit(T.make_notes(onset=[0], duration=1, velocity_level=5, group=V.DRUM_GROUP, pitch=[36]),
                       song, bar, 4)
    assert drums["in_song_scale"] is None and drums["on_song_grid"] == 1.0


def test_registers_and_densities_come_from_the_corpus_command(tiny_corpus, capsys):
    """evaluation.registers measures per group pitch percentiles and notes per bar; the tables in
    tokenizer.harmony hold its output for data/corpus (every pitched group has a density too)."""
    from evaluation import registers as R

    stats = R.measure(tiny_corpus, "train")
    assert stats["pieces"] == 5
    bass = stats["groups"]["bass"]
    assert bass["register"][0] < bass["register"][1] and bass["density"][0] <= bass["density"][1] <= bass["density"][2]
    assert stats["groups"]["drums"]["register"] is None and stats["groups"]["drums"]["density"]
    assert R.main(["--data", str(tiny_corpus), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "REGISTERS: dict[str, tuple[int, int]] = {" in out and "    'bass': (" in out and "PART_DENSITY" in out
    assert set(H.PART_DENSITY) == set(V.GROUPS) and all(d > 0 for d in H.PART_DENSITY.values())
    assert "python -m evaluation.registers --data data/corpus --split train" in open(H.__file__).read()


def test_song_scale_figures_follow_key_changes_and_repeats():
    """At song scale: a part that follows the song's key change is in its local scale throughout (though half
    out of the song's one scale), and a part that repeats where the song repeats correlates with it."""
    bar, bars = 32, 16
    on = np.arange(bars) * bar
    # the song: C major triads for 8 bars, then F# major; bars alternate between two rhythms (A B A B ...)
    root = np.where(np.arange(bars) < 8, 60, 66)
    song_on = np.concatenate([on, on, on, on + np.where(np.arange(bars) % 2, 8, 16)])
    song_pitch = np.concatenate([root, root + 4, root + 7, root + 12])
    song = T.make_notes(onset=song_on, duration=4, velocity_level=5, group=0, pitch=song_pitch)
    # a bass on each bar's third (E, then A#) with the song's A/B rhythm; and one on C throughout, its rhythm
    # out of phase (A A B B ...): it ignores both the key change and the repeats
    follow = T.make_notes(onset=np.concatenate([on, on + np.where(np.arange(bars) % 2, 8, 16)]), duration=4,
                          velocity_level=5, group=4, pitch=np.tile(root - 20, 2))
    other = T.make_notes(onset=np.concatenate([on, on + np.where(np.arange(bars) % 4 < 2, 8, 16)]), duration=4,
                         velocity_level=5, group=4, pitch=36)
    fit = H.part_fit(follow, song, bar, bars)
    assert fit["in_local_scale"] >= 0.85 and fit["in_song_scale"] <= 0.6, fit
    assert fit["repeats_with_song"] > 0.9
    assert H.part_fit(other, song, bar, bars)["repeats_with_song"] < 0.5
    drums = T.make_notes(onset=on, duration=1, velocity_level=5, group=V.DRUM_GROUP, pitch=36)
    assert H.part_fit(drums, song, bar, bars)["in_local_scale"] is None
    assert H.repeats_with_song(follow[:2], song, bar, bars) is None  # fewer than 3 bars where both play
