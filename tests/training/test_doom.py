"""Doom music: the WAD lump reader, MUS -> MIDI (checked note for note against freedoom's own conversion of
real MUS lumps) and freedoom as a corpus source."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import mido
import pytest

import tokenizer
from tokenizer import vocab as V
from training import corpus
from training.corpus import doom, sources
from training.data import load_split

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "freedoom"
SONGS = ("d_intro", "d_introa")


def midi_notes(mid: mido.MidiFile) -> list[tuple[int, int, int, int, int]]:
    """(start tick, end tick, channel, pitch, velocity) of every note of a MIDI file, sorted."""
    out = []
    for track in mid.tracks:
        tick, sounding = 0, {}
        for m in track:
            tick += m.time
            if m.type == "note_on" and m.velocity > 0:
                sounding[(m.channel, m.note)] = (tick, m.velocity)
            elif m.type in ("note_on", "note_off") and (m.channel, m.note) in sounding:
                start, vel = sounding.pop((m.channel, m.note))
                out.append((start, tick, m.channel, m.note, vel))
    return sorted(out)


def programs(mid: mido.MidiFile) -> set[tuple[int, int]]:
    return {(m.channel, m.program) for t in mid.tracks for m in t if m.type == "program_change"}


@pytest.mark.parametrize("name", SONGS)
def test_mus_to_midi_matches_freedooms_own_conversion(name):
    mus = (FIXTURES / f"{name}.mus").read_bytes()
    ours = mido.MidiFile(file=io.BytesIO(doom.mus_to_midi(mus)))
    ref = mido.MidiFile(FIXTURES / f"{name}.mid")
    assert ours.type == 0 and ours.ticks_per_beat == doom.MIDI_TPQ
    notes = midi_notes(ours)
    assert len(notes) > 60 and notes == midi_notes(ref)
    assert programs(ours) - {(9, 0)} == programs(ref) - {(9, 0)}
    assert any(ch == 9 for _, _, ch, _, _ in notes)  # MUS channel 15 is the drums, MIDI channel 10
    # and it reads as a score: drums on the drum group, 140 MUS ticks a second at 120 BPM
    score = tokenizer.load_midi(doom.mus_to_midi(mus))
    assert score.has_drums and score.bpm == 120.0
    first_ref = min(s for s, *_ in notes)
    assert int(score.notes["onset"].min()) == round(first_ref * V.STEPS_PER_QUARTER / doom.MIDI_TPQ)


def _mus(events: bytes, instruments=(0,)) -> bytes:
    head = struct.pack("<4s6H", doom.MUS_MAGIC, len(events), 16 + 2 * len(instruments), 1, 0, len(instruments), 0)
    return head + struct.pack(f"<{len(instruments)}H", *instruments) + events


def test_mus_events_follow_the_format():
    ev = bytes([
        0x40, 0x00, 0x28,          # controller 0 (instrument) on channel 0: program 40
        0x10 | 0x80, 0x80 | 60, 100, 0x81, 0x00,  # play 60 at volume 100, then a delay of 128 ticks (2 bytes)
        0x00 | 0x80, 60, 10,        # release 60, delay 10
        0x10, 62,                   # play 62 without a volume byte: the channel's last volume (100)
        0x1F, 0x80 | 36, 90,        # play drum 36 on MUS channel 15 (percussion)
        0x19, 64,                   # play 64 on MUS channel 9 -> MIDI channel 10 (zero-based 10)
        0x50 | 0x80, 5,             # end of measure, delay 5
        0x00, 62, 0x0F, 36, 0x09, 64,
        0x60,                       # end of score: what follows is not read
        0x70, 0x70,
    ])
    events = doom.mus_events(_mus(ev))
    msgs = [(t, m.type, m.channel, getattr(m, "note", getattr(m, "program", None)), getattr(m, "velocity", None))
            for t, m in events]
    assert msgs[0] == (0, "program_change", 0, 40, None)
    assert msgs[1] == (0, "note_on", 0, 60, 100)
    assert msgs[2] == (128, "note_off", 0, 60, 0)
    assert msgs[3] == (138, "note_on", 0, 62, 100)
    assert msgs[4] == (138, "note_on", 9, 36, 90)
    assert msgs[5] == (138, "note_on", 10, 64, 127)  # a fresh channel's volume is 127
    assert [m[0] for m in msgs[6:]] == [143, 143, 143] and len(msgs) == 9
    assert doom.midi_channel(15) == 9 and doom.midi_channel(8) == 8 and doom.midi_channel(9) == 10


def test_broken_mus_is_refused_with_a_reason():
    with pytest.raises(doom.DoomError, match="not a MUS"):
        doom.mus_to_midi(b"MThd" + bytes(20))
    with pytest.raises(doom.DoomError, match="cut off"):
        doom.mus_to_midi(_mus(bytes([0x90])))  # play note, then nothing
    with pytest.raises(doom.DoomError, match="unknown MUS event type 7"):
        doom.mus_to_midi(_mus(bytes([0x70, 0x00])))
    with pytest.raises(doom.DoomError, match="neither"):
        doom.lump_to_midi(b"RIFF1234")


def write_wad(path: Path, lumps: list[tuple[str, bytes]], kind: bytes = b"PWAD") -> Path:
    """A WAD file holding these lumps, the directory after the data."""
    data, table = b"", b""
    for name, blob in lumps:
        table += struct.pack("<ii8s", 12 + len(data), len(blob), name.encode())
        data += blob
    path.write_bytes(struct.pack("<4sii", kind, len(lumps), 12 + len(data)) + data + table)
    return path


def test_wad_music_lumps_and_broken_wads(tmp_path):
    mus = (FIXTURES / "d_intro.mus").read_bytes()
    mid = (FIXTURES / "d_introa.mid").read_bytes()
    wad = write_wad(tmp_path / "x.wad", [("MAP01", b"\0" * 10), ("D_INTRO", mus), ("D_INTROA", mid),
                                         ("D_JUNK", b"nonsense"), ("DEMO1", b"")])
    assert [n for n, _ in doom.music_lumps(wad)] == ["D_INTRO", "D_INTROA"]
    assert doom.lump_bytes(wad, "d_intro") == mus and doom.lump_to_midi(mid) == mid
    with pytest.raises(doom.DoomError, match="no lump"):
        doom.lump_bytes(wad, "D_NONE")
    with pytest.raises(doom.DoomError, match="not a WAD"):
        doom.wad_directory(b"ZWAD" + bytes(20))
    with pytest.raises(doom.DoomError, match="does not fit"):
        doom.wad_directory(struct.pack("<4sii", b"IWAD", 5, 12))
    with pytest.raises(doom.DoomError, match="past the end"):
        doom.wad_directory(struct.pack("<4sii", b"IWAD", 1, 12) + struct.pack("<ii8s", 0, 999, b"D_X"))


def test_freedoom_source_dedupes_and_builds(tmp_path, monkeypatch):
    mus = (FIXTURES / "d_intro.mus").read_bytes()
    mid = (FIXTURES / "d_introa.mid").read_bytes()
    write_wad(tmp_path / "freedoom1.wad", [("D_INTRO", mus), ("D_INTROA", mid)], b"IWAD")
    write_wad(tmp_path / "freedoom2.wad", [("D_DM2TTL", mid), ("D_BROKEN", b"MUS\x1a" + bytes(3))], b"IWAD")
    monkeypatch.setattr(sources, "FREEDOOM_DIR", tmp_path)
    items = list(corpus.iter_freedoom())
    assert [it["id"] for it in items] == ["freedoom:freedoom1.wad/D_INTRO", "freedoom:freedoom1.wad/D_INTROA",
                                          "freedoom:freedoom2.wad/D_BROKEN"]  # D_DM2TTL repeats D_INTROA
    out = tmp_path / "out"
    stats = corpus.build(out, workers=1, progress=False, sources=["freedoom"])
    src = stats["per_source"]["freedoom"]
    assert src["pieces"] == src["segments"] == 2
    (reason,) = src["skipped"]
    assert reason.startswith("broken") and src["skipped"][reason] == 1
    rows = [r for s in corpus.ALL_SPLITS for r in load_split(out, s)[1]]
    assert {r["license"] for r in rows} == {"BSD-3-Clause"} and {r["style"] for r in rows} == {"game"}
    for r in rows:
        assert r["split"] == corpus.split_of(r["group"], "freedoom")
    # without the package the build says what it left out and goes on
    monkeypatch.setattr(sources, "FREEDOOM_DIR", tmp_path / "none")
    stats = corpus.build(tmp_path / "out2", workers=1, progress=False, sources=["freedoom", "openmsx"], limit=2)
    assert [line.split(":")[0] for line in stats["left_out"]] == ["freedoom"]
    assert stats["pieces"] + stats["real"]["pieces"] == 2 and list(stats["per_source"]) == ["openmsx"]


@pytest.mark.skipif(not sources.freedoom_wads(), reason="Debian freedoom is not installed")
def test_every_installed_freedoom_lump_reads():
    items = list(corpus.iter_freedoom())
    assert len(items) >= 60
    for it in items[:: max(1, len(items) // 12)]:
        score = tokenizer.load_midi(doom.lump_to_midi(doom.lump_bytes(it["path"], it["lump"])), style="game")
        assert len(score.notes) > 50
