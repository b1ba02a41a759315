"""MIDI fixtures written with mido, one per hidden corner a real file can have.

Each builder returns (bytes, info); `info` holds what the test of that corner checks.
"""

from __future__ import annotations

import glob
import io
import os
import random
import sys
from pathlib import Path

import mido
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPENMSX = sorted(glob.glob("/usr/share/games/openttd/baseset/openmsx/*.mid"))

M = mido.Message
MM = mido.MetaMessage


def midi_bytes(tracks, tpq: int = 480, type: int = 1) -> bytes:
    """tracks: lists of (absolute_tick, message); written with delta times."""
    mf = mido.MidiFile(type=type, ticks_per_beat=tpq)
    for events in tracks:
        tr = mido.MidiTrack()
        now = 0
        for tick, msg in sorted(events, key=lambda e: e[0]):  # stable: keeps order at equal ticks
            tr.append(msg.copy(time=tick - now))
            now = tick
        mf.tracks.append(tr)
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def note(ch, pitch, on, off, vel=100, vel0_off=False):
    """A note as two events; vel0_off writes the note-off as note_on velocity 0."""
    end = M("note_on", channel=ch, note=pitch, velocity=0) if vel0_off else \
        M("note_off", channel=ch, note=pitch, velocity=64)
    return [(on, M("note_on", channel=ch, note=pitch, velocity=vel)), (off, end)]


def conductor(bpm=120, ts=(4, 4), tempo_changes=()):
    ev = [(0, MM("set_tempo", tempo=mido.bpm2tempo(bpm))),
          (0, MM("time_signature", numerator=ts[0], denominator=ts[1]))]
    ev += [(t, MM("set_tempo", tempo=mido.bpm2tempo(b))) for t, b in tempo_changes]
    return ev


def prog(ch, program, tick=0):
    return (tick, M("program_change", channel=ch, program=program))


# ---- builders ---------------------------------------------------------------------------------
def type0_multichannel():
    q = 480
    ev = conductor() + [prog(0, 0), prog(1, 33), prog(2, 48), prog(3, 65)]
    for i in range(8):
        ev += note(0, 60 + i, i * q, (i + 1) * q)
        ev += note(1, 36 + i % 3, i * q, i * q + q // 2)
        ev += note(2, 67, i * q, (i + 1) * q)
        ev += note(3, 72, i * q + q // 2, (i + 1) * q, vel=90)
        ev += note(9, 36 if i % 2 == 0 else 38, i * q, i * q + 60)
    return midi_bytes([ev], type=0), {"groups": {"piano", "bass", "strings", "reed", "drums"}}


def tempo_changes():
    q = 480
    ev = conductor(100, tempo_changes=[(4 * q, 140), (9 * q + 100, 72)]) + [prog(0, 24)]
    for i in range(16):
        ev += note(0, 50 + i, i * q, i * q + q)
    return midi_bytes([ev]), {"onsets": [i * 8 for i in range(16)], "bpm": 100.0}


def overlap_same_pitch():
    q = 480
    ev = conductor() + [prog(0, 0)]
    ev += note(0, 60, 0, 4 * q)  # cut at the next onset
    ev += note(0, 60, q, 2 * q)
    ev += note(0, 64, 0, 2 * q, vel=60)  # exact duplicates: keep longest, loudest
    ev += note(0, 64, 0, q, vel=120)
    ev += note(0, 67, 0, int(4.125 * q))  # cut at 33 steps -> rounded down to a level
    ev += note(0, 67, int(4.125 * q), 5 * q)
    return midi_bytes([ev]), {}


def velocity0_offs():
    q = 480
    ev = conductor() + [prog(0, 40)]
    for i in range(8):
        ev += note(0, 70 - i, i * q, i * q + 3 * q // 4, vel0_off=True)
    return midi_bytes([ev]), {"durations": [6] * 8}


def zero_length():
    q = 480
    ev = conductor() + [prog(0, 0)]
    for i in range(4):
        ev += note(0, 60 + i, i * q, i * q)  # on and off at the same tick
    ev += note(0, 72, 5 * q, 6 * q)
    ev += note(9, 42, 0, 0)
    return midi_bytes([ev]), {}


def drums_channel10():
    q = 480
    ev = conductor() + [prog(9, 0)]
    for i in range(16):
        ev += note(9, 36 if i % 4 == 0 else 42, i * q // 2, i * q // 2 + 30)
    ev2 = [prog(0, 32)] + note(0, 40, 0, 8 * q)
    return midi_bytes([conductor(), ev, ev2]), {"groups": {"drums", "bass"}}


def program_change_mid_track():
    q = 480
    ev = conductor() + [prog(0, 0)]
    ev += note(0, 60, 0, q) + note(0, 62, q, 2 * q)
    ev += [prog(0, 56, 2 * q)]  # trumpet: brass
    ev += note(0, 64, 2 * q, 3 * q) + note(0, 65, 3 * q, 4 * q)
    ev += [prog(0, 73, 4 * q)]  # flute: pipe
    ev += note(0, 67, 4 * q, 5 * q)
    return midi_bytes([conductor(), ev]), {"groups": {"piano", "brass", "pipe"}}


def long_notes():
    q = 480
    ev = conductor() + [prog(0, 48)]
    ev += note(0, 48, 0, 80 * q)  # 20 bars > 16 bars
    ev += note(0, 55, 0, 64 * q + 100)
    ev += note(0, 60, q, 2 * q)
    return midi_bytes([ev]), {}


def long_gaps():
    q = 480
    ev = conductor() + [prog(0, 0)]
    t = 0
    onsets = []
    for gap_steps in (0, 128, 129, 256, 257, 300, 1000, 5):
        t += gap_steps * q // 8
        onsets.append(t * 8 // q)
        ev += note(0, 60, t, t + q // 8)
    return midi_bytes([ev]), {"onsets": onsets}


def simultaneous_groups():
    q = 480
    tracks = [conductor()]
    for ch, program, pitches in ((0, 0, (60, 64, 67)), (1, 33, (36,)), (2, 48, (55, 72)), (3, 80, (79,))):
        ev = [prog(ch, program)]
        for bar in range(4):
            for p in pitches:
                ev += note(ch, p, bar * 4 * q, bar * 4 * q + 2 * q)
        tracks.append(ev)
    tracks.append([ev for bar in range(4) for ev in note(9, 36, bar * 4 * q, bar * 4 * q + 30)
                   + note(9, 49, bar * 4 * q, bar * 4 * q + 30)])
    return midi_bytes(tracks), {}


def _offgrid(tpq, seed):
    rng = random.Random(seed)
    ev = conductor(97) + [prog(0, 0), prog(1, 25), prog(9, 0)]
    for _ in range(120):
        ch = rng.choice((0, 1, 9))
        on = rng.randrange(0, 32 * tpq)
        off = on + rng.randrange(0, 3 * tpq)
        ev += note(ch, rng.randrange(30, 90), on, off, vel=rng.randrange(1, 128), vel0_off=rng.random() < 0.5)
    return midi_bytes([ev], tpq=tpq, type=0), {"tpq": tpq}


def offgrid_tpq96():
    return _offgrid(96, 1)


def offgrid_tpq480():
    return _offgrid(480, 2)


def offgrid_tpq1000():
    return _offgrid(1000, 3)


def waltz_3_4():
    q = 480
    ev = conductor(ts=(3, 4)) + [prog(0, 0)]
    for bar in range(4):
        ev += note(0, 48, bar * 3 * q, bar * 3 * q + q)
        ev += note(0, 60, bar * 3 * q + q, bar * 3 * q + 2 * q)
        ev += note(0, 64, bar * 3 * q + 2 * q, bar * 3 * q + 3 * q)
    return midi_bytes([ev]), {"time_signature": (3, 4)}


BUILDERS = {f.__name__: f for f in (
    type0_multichannel, tempo_changes, overlap_same_pitch, velocity0_offs, zero_length, drums_channel10,
    program_change_mid_track, long_notes, long_gaps, simultaneous_groups, offgrid_tpq96, offgrid_tpq480,
    offgrid_tpq1000, waltz_3_4,
)}


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("midi")
    for name, build in BUILDERS.items():
        (d / f"{name}.mid").write_bytes(build()[0])
    return d


@pytest.fixture(scope="session")
def midi_paths(fixture_dir) -> dict[str, Path]:
    return {name: fixture_dir / f"{name}.mid" for name in BUILDERS}


@pytest.fixture(params=sorted(BUILDERS))
def fixture_case(request, midi_paths):
    """(name, path, info) for each fixture."""
    name = request.param
    return name, midi_paths[name], BUILDERS[name]()[1]


def real_and_fixture_ids():
    return [f"fixture:{n}" for n in sorted(BUILDERS)] + [f"openmsx:{os.path.basename(p)}" for p in OPENMSX]


@pytest.fixture(params=real_and_fixture_ids() + ([] if OPENMSX else ["openmsx:absent"]))
def any_midi(request, midi_paths) -> Path:
    """Every fixture and every openttd-openmsx song (skipped where the package is absent)."""
    kind, name = request.param.split(":", 1)
    if kind == "fixture":
        return midi_paths[name]
    if not OPENMSX:
        pytest.skip("openttd-openmsx is not installed")
    return Path("/usr/share/games/openttd/baseset/openmsx") / name
