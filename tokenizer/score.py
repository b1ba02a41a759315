"""Normalized scores: MIDI in (symusic), MIDI out (mido, DAW-clean).

A `Score` holds notes on the 1/32-note grid as one numpy structured array (see NOTE_DTYPE), sorted
in token order (onset, group, pitch), plus the tempo, time signature and style.  Normalization
happens once, in `normalize_notes`; everything downstream can rely on it.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from . import vocab as V

log = logging.getLogger(__name__)

NOTE_DTYPE = np.dtype([
    ("onset", np.int32),  # steps (1/32 note) from the start
    ("duration", np.int32),  # steps, a DURATION_LEVELS value
    ("velocity", np.int8),  # level 0..7
    ("group", np.int8),  # 0..11 (11 = drums)
    ("pitch", np.int8),  # 0..127
])

MAX_FILE_BYTES = 4 * 1024 * 1024
OUTPUT_TPQ = 480


class MidiError(ValueError):
    """Input that is not a MIDI file we can read; the message says what is wrong."""


@dataclass
class Score:
    notes: np.ndarray = field(default_factory=lambda: np.zeros(0, NOTE_DTYPE))
    bpm: float = 120.0
    time_signature: tuple[int, int] = (4, 4)
    style: str | None = None
    length: int | None = None  # steps; when set, the piece lasts exactly this long (e.g. N whole bars)

    def __post_init__(self) -> None:
        self.notes = normalize_notes(self.notes)

    # convenience views
    @property
    def groups(self) -> list[int]:
        return sorted({int(g) for g in self.notes["group"]})

    @property
    def has_drums(self) -> bool:
        return bool((self.notes["group"] == V.DRUM_GROUP).any())

    @property
    def end_step(self) -> int:
        n = self.notes
        return int((n["onset"] + n["duration"]).max()) if len(n) else 0

    @property
    def bar_steps(self) -> int:
        num, den = self.time_signature
        return max(1, num * V.STEPS_PER_QUARTER * 4 // den)

    @property
    def n_bars(self) -> int:
        """Bars spanned by the onsets (a note may ring into the next bar)."""
        n = self.notes
        return 0 if not len(n) else int(n["onset"].max()) // self.bar_steps + 1

    def notes_per_group(self) -> dict[str, int]:
        g, c = np.unique(self.notes["group"], return_counts=True)
        return {V.GROUPS[int(i)]: int(k) for i, k in zip(g, c)}

    def seconds(self) -> float:
        return self.end_step / V.STEPS_PER_QUARTER * 60.0 / self.bpm

    def first_bars(self, n_bars: int) -> "Score":
        """The notes whose onset lies in the first n bars, cut at the bar line."""
        limit = n_bars * self.bar_steps
        return Score(cut_at(self.notes, limit), self.bpm, self.time_signature, self.style, length=limit)


def make_notes(onset, duration, velocity_level, group, pitch) -> np.ndarray:
    arr = np.zeros(len(onset), NOTE_DTYPE)
    arr["onset"], arr["duration"], arr["velocity"] = onset, duration, velocity_level
    arr["group"], arr["pitch"] = group, pitch
    return arr


def cut_at(notes: np.ndarray, limit: int) -> np.ndarray:
    """Notes with onset before `limit`, each ending at `limit` at the latest (durations rounded down
    to a level, so nothing rings past the cut)."""
    n = notes[notes["onset"] < limit].copy()
    levels = np.asarray(V.DURATION_LEVELS)
    room = np.minimum(n["duration"], limit - n["onset"])
    n["duration"] = levels[np.searchsorted(levels, room, side="right") - 1]
    return n


def normalize_notes(notes: np.ndarray) -> np.ndarray:
    """Apply the documented policies; idempotent.

    - durations at least one step and quantized to DURATION_LEVELS (<= 16 bars);
    - exact duplicates (onset, group, pitch) keep the longest, loudest one;
    - an earlier same-pitch note still sounding at a later onset is cut there;
    - sorted by (onset, group, pitch).
    """
    notes = np.asarray(notes, NOTE_DTYPE).copy()
    if not len(notes):
        return notes
    notes = notes[np.lexsort((-notes["velocity"], -notes["duration"], notes["pitch"], notes["group"],
                              notes["onset"]))]
    key = np.stack([notes["onset"], notes["group"], notes["pitch"]], 1)
    keep = np.ones(len(notes), bool)
    keep[1:] = (key[1:] != key[:-1]).any(1)
    notes = notes[keep]
    # quantize to the nearest level first, then cut overlaps of the same (group, pitch) with the
    # cut length rounded DOWN to a level, so that no normalized note overlaps the next one
    levels = np.asarray(V.DURATION_LEVELS)
    d = np.clip(notes["duration"], 1, V.MAX_DURATION)
    idx = np.searchsorted(levels, d)  # first level >= d
    lo = levels[np.maximum(idx - 1, 0)]
    hi = levels[np.minimum(idx, len(levels) - 1)]
    notes["duration"] = np.where((hi - d) <= (d - lo), hi, lo)
    order = np.lexsort((notes["onset"], notes["pitch"], notes["group"]))
    n = notes[order]
    same = (n["group"][1:] == n["group"][:-1]) & (n["pitch"][1:] == n["pitch"][:-1])
    end = n["onset"][:-1] + n["duration"][:-1]
    cut = same & (end > n["onset"][1:])
    gap = n["onset"][1:][cut] - n["onset"][:-1][cut]  # >= 1: duplicates are gone
    n["duration"][:-1][cut] = levels[np.searchsorted(levels, gap, side="right") - 1]
    notes = n[np.lexsort((n["pitch"], n["group"], n["onset"]))]
    return notes


# ---- MIDI in --------------------------------------------------------------------------------
def _check_header(data: bytes) -> None:
    if len(data) == 0:
        raise MidiError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise MidiError(f"the file is {len(data) / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
    if data[:4] == b"RIFF" and b"MThd" in data[:64]:
        raise MidiError("RIFF-wrapped MIDI (.rmi) is not supported; export a standard .mid file")
    if data[:4] != b"MThd":
        raise MidiError("not a MIDI file: it does not start with the 'MThd' header")
    if len(data) < 14:
        raise MidiError("truncated MIDI file: the header is incomplete")
    fmt = int.from_bytes(data[8:10], "big")
    ntrk = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if fmt > 2:
        raise MidiError(f"unknown MIDI format {fmt} (expected 0, 1 or 2)")
    if ntrk == 0:
        raise MidiError("the MIDI file declares no tracks")
    if division & 0x8000:
        raise MidiError("SMPTE time division is not supported; re-export the file with musical time (PPQ)")
    if division == 0:
        raise MidiError("the MIDI header has a time division of 0 ticks per quarter note")
    if data.find(b"MTrk", 14) < 0:
        raise MidiError("truncated MIDI file: no track chunk found")


def load_midi(source: str | os.PathLike | bytes, style: str | None = None) -> Score:
    """Read MIDI from a path or bytes and normalize it.  Raises MidiError on any bad input."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise MidiError(f"the file is {size / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
            data = path.read_bytes()
        except OSError as e:
            raise MidiError(f"cannot read {path.name}: {e.strerror or e}") from None
    _check_header(data)
    try:
        from symusic import Score as SymScore

        sym = SymScore.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError/ValueError with parser details
        msg = str(e).replace("MiniMidi:", "").replace(": iostream error", "").strip(" :") or "unreadable data"
        raise MidiError(f"broken MIDI file ({msg})") from None
    return from_symusic(sym, style=style)


def from_symusic(sym, style: str | None = None) -> Score:
    tpq = int(sym.ticks_per_quarter)
    if tpq <= 0:
        raise MidiError("the MIDI header has a non-positive time division")
    parts = []
    for track in sym.tracks:
        arr = track.notes.numpy()
        if not len(arr["time"]):
            continue
        start = arr["time"].astype(np.int64)
        end = start + np.maximum(arr["duration"].astype(np.int64), 0)
        on = np.rint(start * V.STEPS_PER_QUARTER / tpq).astype(np.int64)
        off = np.rint(end * V.STEPS_PER_QUARTER / tpq).astype(np.int64)
        vel = arr["velocity"].astype(np.int64)
        keep = vel > 0
        group = V.DRUM_GROUP if track.is_drum else V.GM_PROGRAM_TO_GROUP[int(track.program) & 127]
        vlev = np.clip(np.rint(vel / V.VELOCITY_STEP), 1, V.N_VELOCITY) - 1
        parts.append(make_notes(on[keep], np.maximum(off - on, 1)[keep], vlev[keep], group,
                                arr["pitch"].astype(np.int64)[keep] & 127))
    notes = np.concatenate(parts) if parts else np.zeros(0, NOTE_DTYPE)
    if len(notes):
        notes["onset"] -= 0  # keep absolute time: leading silence is part of the music
    bpm = float(sym.tempos[0].qpm) if len(sym.tempos) else 120.0
    ts = (int(sym.time_signatures[0].numerator), int(sym.time_signatures[0].denominator)) \
        if len(sym.time_signatures) else (4, 4)
    if ts[0] <= 0 or ts[1] <= 0:
        ts = (4, 4)
    return Score(notes, bpm=min(max(bpm, 20.0), 400.0), time_signature=ts, style=style)


# ---- MIDI out (DAW-clean) -------------------------------------------------------------------
def to_midi_file(score: Score, tpq: int = OUTPUT_TPQ) -> mido.MidiFile:
    """Type 1: a conductor track (name, tempo, time signature), then one named track per group
    with a program change; drums on channel 10; note-offs before note-ons at the same tick."""
    ticks = tpq // V.STEPS_PER_QUARTER
    mf = mido.MidiFile(type=1, ticks_per_beat=tpq)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("track_name", name="MIDI Bangers", time=0))
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(score.bpm), time=0))
    num, den = score.time_signature
    meta.append(mido.MetaMessage("time_signature", numerator=num, denominator=den, time=0))
    total = max(score.end_step, score.length or 0) * ticks
    meta.append(mido.MetaMessage("end_of_track", time=total))
    mf.tracks.append(meta)
    channels = [c for c in range(16) if c != V.DRUM_CHANNEL]
    for i, g in enumerate(score.groups):
        name = V.GROUPS[g]
        ch = V.DRUM_CHANNEL if g == V.DRUM_GROUP else channels[i % len(channels)]
        n = score.notes[score.notes["group"] == g]
        events = []  # (tick, order, message); order 0 = note-off first
        for on, dur, vel, pitch in zip(n["onset"], n["duration"], n["velocity"], n["pitch"]):
            events.append((int(on) * ticks, 1, int(pitch), V.level_velocity(int(vel))))
            events.append((int(on + dur) * ticks, 0, int(pitch), 0))
        events.sort()
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name=name.title(), time=0))
        tr.append(mido.Message("program_change", channel=ch, program=V.GROUP_PROGRAM[name], time=0))
        now = 0
        for tick, kind, pitch, vel in events:
            msg = "note_on" if kind else "note_off"
            tr.append(mido.Message(msg, channel=ch, note=pitch, velocity=vel if kind else 0, time=tick - now))
            now = tick
        tr.append(mido.MetaMessage("end_of_track", time=max(total - now, 0)))
        mf.tracks.append(tr)
    return mf


def to_midi_bytes(score: Score) -> bytes:
    buf = io.BytesIO()
    to_midi_file(score).save(file=buf)
    return buf.getvalue()


def write_midi(score: Score, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(to_midi_bytes(score))
    os.replace(tmp, path)
    return path
