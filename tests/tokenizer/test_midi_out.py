"""Written MIDI is DAW-clean: checked by re-reading it with mido and pretty_midi."""

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
        assert len(pcs) == 1 and pcs[0].program == V.GROUP_PROGRAM[V.GROUPS[g]]
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
