"""Written MIDI is DAW-clean: checked by re-reading it with mido and pretty_midi; the drum kit round trip."""

import io
from collections import defaultdict

import mido
import numpy as np
import pretty_midi
import pytest

from tokenizer import Score, load_midi, make_notes, to_midi_bytes, write_midi
from tokenizer import vocab as V


@pytest.fixture(params=["simultaneous_groups", "type0_multichannel", "overlap_same_pitch", "zero_length",
                        "waltz_3_4", "offgrid_tpq1000"])
def written(request, midi_paths):
    score = load_midi(midi_paths[request.param])
    return score, to_midi_bytes(score)


def test_the_file_is_byte_for_byte_what_mido_writes_for_its_messages(written):
    """to_midi_bytes writes the bytes itself (fast); mido, reading them and writing them again, changes nothing."""
    _, data = written
    again = io.BytesIO()
    mido.MidiFile(file=io.BytesIO(data)).save(file=again)
    assert again.getvalue() == data


def test_mido_structure(written):
    score, data = written
    mf = mido.MidiFile(file=io.BytesIO(data))
    assert mf.type == 1
    meta = [m for m in mf.tracks[0] if m.is_meta]
    assert any(m.type == "set_tempo" for m in meta)
    ts = [m for m in meta if m.type == "time_signature"]
    assert len(ts) == 1 and (ts[0].numerator, ts[0].denominator) == score.time_signature
    tracks = mf.tracks[1:]
    assert len(tracks) == len(score.groups)
    names = [next(m.name for m in tr if m.type == "track_name") for tr in tracks]
    assert names == [V.GROUPS[g].title() for g in score.groups]
    for tr, g in zip(tracks, score.groups, strict=False):
        pcs = [m for m in tr if m.type == "program_change"]
        want = score.drum_kit if g == V.DRUM_GROUP else V.GROUP_PROGRAM[V.GROUPS[g]]
        assert len(pcs) == 1 and pcs[0].program == want
        chans = {m.channel for m in tr if not m.is_meta}
        assert len(chans) == 1
        assert (chans == {V.DRUM_CHANNEL}) == (g == V.DRUM_GROUP)
    # one channel per track
    all_chans = [next(m.channel for m in tr if not m.is_meta) for tr in tracks]
    assert len(set(all_chans)) == len(all_chans)


def test_every_note_on_has_a_note_off_and_no_overlaps(written):
    _, data = written
    mf = mido.MidiFile(file=io.BytesIO(data))
    for tr in mf.tracks[1:]:
        active = defaultdict(int)
        now, last_on = 0, {}
        for m in tr:
            now += m.time
            if m.type == "note_on" and m.velocity > 0:
                active[(m.channel, m.note)] += 1
                assert active[(m.channel, m.note)] == 1, "same-pitch notes overlap on one channel"
                last_on[(m.channel, m.note)] = now
            elif m.type == "note_off" or (m.type == "note_on" and m.velocity == 0):
                active[(m.channel, m.note)] -= 1
                assert active[(m.channel, m.note)] == 0, "note-off without note-on"
                assert now > last_on[(m.channel, m.note)], "zero-length note"
        assert not any(active.values()), "hanging note"


def test_pretty_midi_reads_it(written):
    score, data = written
    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    assert len(pm.instruments) == len(score.groups)
    assert sum(len(i.notes) for i in pm.instruments) == len(score.notes)
    for inst in pm.instruments:
        assert inst.is_drum == (inst.name == "Drums")
        assert all(n.end > n.start for n in inst.notes)
    assert any(i.is_drum for i in pm.instruments) == score.has_drums
    assert pm.time_signature_changes[0].numerator == score.time_signature[0]
    assert pm.get_tempo_changes()[1][0] == pytest.approx(score.bpm, rel=1e-3)


def test_write_midi_is_atomic_and_readable(tmp_path):
    score = Score(make_notes([0, 8, 8], [8, 8, 4], 5, [0, 4, 11], [60, 40, 36]), bpm=93.0)
    out = write_midi(score, tmp_path / "out.mid")
    assert out.exists() and not list(tmp_path.glob("*.tmp"))
    back = load_midi(out)
    assert np.array_equal(back.notes, score.notes)
    assert back.bpm == pytest.approx(93.0, rel=1e-4)


def _drum_score(kit: int = 0, **kw) -> Score:
    return Score(make_notes([0, 8, 16], [8, 8, 4], 5, [0, V.DRUM_GROUP, V.DRUM_GROUP], [60, 36, 38]), drum_kit=kit, **kw)


@pytest.mark.parametrize("name", list(V.DRUM_KITS))
def test_drum_kit_is_written_and_read_back(tmp_path, name):
    kit = V.DRUM_KITS[name]
    score = _drum_score(kit)
    data = to_midi_bytes(score)
    mf = mido.MidiFile(file=io.BytesIO(data))
    drum_pcs = [m for tr in mf.tracks for m in tr if m.type == "program_change" and m.channel == V.DRUM_CHANNEL]
    assert [m.program for m in drum_pcs] == [kit]
    other = [m.program for tr in mf.tracks for m in tr if m.type == "program_change" and m.channel != V.DRUM_CHANNEL]
    assert other == [V.GROUP_PROGRAM["piano"]]  # the kit touches the drum track only
    assert load_midi(data).drum_kit == kit
    assert load_midi(write_midi(score, tmp_path / "k.mid")).drum_kit == kit
    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    assert [i.program for i in pm.instruments if i.is_drum] == [kit]


def test_drum_kit_kept_by_first_bars_and_checked():
    score = _drum_score(V.DRUM_KITS["tr-808"], length=64)
    assert score.first_bars(1).drum_kit == 25
    assert Score(drum_kit=np.int64(48)).drum_kit == 48 and type(Score(drum_kit=np.int64(48)).drum_kit) is int
    for bad in (-1, 128, 2.5, True, "jazz", None):
        with pytest.raises(ValueError, match="drum kit must be a GM program 0..127"):
            Score(drum_kit=bad)


def test_a_window_of_bars_starts_at_its_first_bar_line(midi_paths):
    bar = V.STEPS_PER_BAR
    # a note held from bar 1 into bar 3, notes in bars 2-4, one in bar 6
    notes = make_notes([0, bar + 4, 2 * bar, 3 * bar + 8, 5 * bar], [3 * bar, 8, 4, 16, 4], [3] * 5,
                       [V.GROUPS.index("piano")] * 5, [48, 60, 62, 64, 67])
    song = Score(notes, 97.0, (4, 4), drum_kit=V.DRUM_KITS["tr-808"])
    w = song.window(3, 4)
    assert w.length == 2 * bar and (w.bpm, w.time_signature, w.drum_kit) == (97.0, (4, 4), song.drum_kit)
    assert w.notes["pitch"].tolist() == [48, 62, 64]
    assert w.notes["onset"].tolist() == [0, 0, bar + 8]
    assert w.notes["duration"][0] <= bar and w.notes["duration"][0] in V.DURATION_LEVELS  # what is left of it
    assert w.notes["duration"][1:].tolist() == [4, 16]
    waltz = load_midi(midi_paths["waltz_3_4"])
    whole = waltz.window(1, waltz.bars)
    assert whole.notes.tolist() == waltz.notes.tolist() and whole.length == waltz.bars * waltz.bar_steps


def _file(tracks, tpq=480) -> bytes:
    mf = mido.MidiFile(type=1, ticks_per_beat=tpq)
    for msgs in tracks:
        mf.tracks.append(mido.MidiTrack(msgs))
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def _drum_hits(channel=V.DRUM_CHANNEL):
    return [mido.Message("note_on", channel=channel, note=36, velocity=90, time=0),
            mido.Message("note_off", channel=channel, note=36, velocity=0, time=240)]


def test_drum_kit_is_the_first_program_change_on_the_drum_channel():
    pc = lambda prog, t=0, ch=V.DRUM_CHANNEL: mido.Message("program_change", channel=ch, program=prog, time=t)  # noqa: E731
    # the earliest tick wins, whichever track holds it
    late = [pc(32, 480)] + _drum_hits()
    early = [pc(1, 0, ch=0), pc(25, 120)] + _drum_hits()
    assert load_midi(_file([late, early])).drum_kit == 25
    # same tick: the first track wins; within a track, the first event
    assert load_midi(_file([[pc(16)] + _drum_hits(), [pc(40)] + _drum_hits()])).drum_kit == 16
    assert load_midi(_file([[pc(8), pc(24)] + _drum_hits()])).drum_kit == 8
    # no program change on channel 10 (only on others): the standard kit
    assert load_midi(_file([[pc(25, ch=0)] + _drum_hits(0), _drum_hits()])).drum_kit == 0
    # a program change after a long run of notes (the scan's fast path) is still seen
    assert load_midi(_file([_drum_hits() * 50 + [pc(32)], [pc(16, 24_001)] + _drum_hits()])).drum_kit == 32


def test_drum_kit_from_symusic_without_the_scan():
    from symusic import Score as SymScore

    from tokenizer.score import from_symusic

    data = to_midi_bytes(_drum_score(V.DRUM_KITS["brush"]))
    assert from_symusic(SymScore.from_midi(data)).drum_kit == 40
    assert from_symusic(SymScore.from_midi(data), drum_kit=8).drum_kit == 8
    no_drums = Score(make_notes([0], [8], 5, [0], [60]), drum_kit=25)
    assert from_symusic(SymScore.from_midi(to_midi_bytes(no_drums))).drum_kit == 0  # no drum track is written
