"""Normalized scores: MIDI in (a bounded scan, then symusic), MIDI out (mido, DAW-clean).

A `Score` holds notes on the 1/32-note grid as one numpy structured array (see NOTE_DTYPE), sorted
in token order (onset, group, pitch), plus the tempo, time signature and style.  Normalization
happens once, in `normalize_notes`; everything downstream can rely on it.

Input limits and policies.  Every refusal is a `MidiError` whose one-line message says what to change.
- Work: `scan_midi` checks the header, the declared track count, every chunk length and every event of
  every track in one linear pass over the bytes before symusic parses anything, so a refusal costs at most
  that pass and no large allocation (about 17 MB/s on real files; 0.4 to 1 s for a 4 MB file built to be
  slow, on a busy 2-core machine).  Limits: MAX_FILE_BYTES (4 MB), MAX_TRACKS (1,024 track chunks),
  MAX_PARTS (4,096 distinct track/channel/program parts set by program changes: symusic makes one track
  per part), and the header may not declare more tracks than the file holds (a truncated file is
  refused, not read in part).
- Structure: the scan follows the grammar of symusic's parser (running status, sysex, meta lengths; the
  rest of a track after its end-of-track event is ignored) and refuses an event, meta or sysex that runs
  past its chunk, a data byte where an event should start, a data byte above 127 in a channel event and
  an unknown status byte.
- Time: a track's delta times may add up to at most MAX_TICK (2**31 - 1, the most the parser's times
  hold); note onsets must lie before MAX_STEPS = 1024 * MAX_SHIFT = 131,072 steps (4,096 bars of 4/4,
  about 2.3 hours at 120 BPM: far more than any engine or the page uses, and its silence costs at most
  1,024 rest triples).  A longer piece is refused, never cut.  Onsets and durations are computed in
  64 bits and checked before they are stored in NOTE_DTYPE's 32 bits, so they cannot wrap.
- Tempo: a score keeps one tempo, the first (notes live on the beat grid, so later tempo changes do not
  move them and are ignored).  It must be MIN_FILE_BPM..MAX_FILE_BPM (20..400 BPM, a superset of the
  page's 40..240 so every file the app writes reads back); no tempo event means 120 BPM (the MIDI
  default).  A tempo event of 0 microseconds per quarter note or shorter than 3 bytes is refused wherever
  it stands.  A tempo is never clamped.
- Time signature: the first one is kept and must be 1..MAX_NUMERATOR (32) over 1, 2, 4, 8, 16 or 32 (a bar
  must be a whole number of 1/32-note steps); none means 4/4.  A numerator of 0, a denominator beyond
  1/128 or an event shorter than 2 bytes is refused wherever it stands; later valid changes are ignored.
- Drum kit: the program of the first program change on the drum channel (MIDI channel 10; the earliest
  tick, then the first track) becomes `Score.drum_kit` (a GM kit such as vocab.DRUM_KITS["tr-808"] = 25);
  none means 0, the standard kit.  The writer puts it back as the drum track's program change.  A score
  without drum notes writes no drum track, so its kit does not survive a round trip (it reads back as 0).
`Score()` itself enforces what the writer needs (onsets 0..MAX_STEPS-1, bpm and time signature in these
ranges, length at most MAX_STEPS, drum kit 0..127), so every Score writes a file that `load_midi` reads
back, with delta times far below the 0x0FFFFFFF that MIDI can hold.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from . import vocab as V

log = logging.getLogger(__name__)

NOTE_DTYPE = np.dtype([
    ("onset", np.int32),  # steps (1/32 note) from the start, 0..MAX_STEPS-1
    ("duration", np.int32),  # steps, a DURATION_LEVELS value
    ("velocity", np.int8),  # level 0..7
    ("group", np.int8),  # 0..11 (11 = drums)
    ("pitch", np.int8),  # 0..127
])

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_TRACKS = 1024
MAX_PARTS = 4096
MAX_TICK = 2**31 - 1
MAX_STEPS = 1024 * V.MAX_SHIFT
MIN_FILE_BPM, MAX_FILE_BPM = 20.0, 400.0
MAX_NUMERATOR = 32
DENOMINATORS = (1, 2, 4, 8, 16, 32)
OUTPUT_TPQ = 480
MAX_DELTA = 0x0FFFFFFF  # the largest delta time a MIDI variable-length quantity holds

# the writer's largest time (a note at the last step ringing its longest) fits one delta time
assert (MAX_STEPS + V.MAX_DURATION) * (OUTPUT_TPQ // V.STEPS_PER_QUARTER) <= MAX_DELTA

REEXPORT = "re-export it from your MIDI editor or DAW"
TEMPO_HINT = f"re-export the file with a tempo between {MIN_FILE_BPM:g} and {MAX_FILE_BPM:g} BPM"
METER_HINT = (f"re-export the file with a time signature such as 4/4, 3/4 or 6/8 (numerator 1 to {MAX_NUMERATOR}, "
              f"denominator {', '.join(map(str, DENOMINATORS[:-1]))} or {DENOMINATORS[-1]})")


class MidiError(ValueError):
    """Input that is not a MIDI file we can read; the message says what is wrong and what to change."""


@dataclass
class Score:
    notes: np.ndarray = field(default_factory=lambda: np.zeros(0, NOTE_DTYPE))
    bpm: float = 120.0
    time_signature: tuple[int, int] = (4, 4)
    style: str | None = None
    length: int | None = None  # steps; when set, the piece lasts exactly this long (e.g. N whole bars)
    drum_kit: int = 0  # GM program of the drum track on channel 10 (vocab.DRUM_KITS; 0 = standard kit)

    def __post_init__(self) -> None:
        self.notes = normalize_notes(self.notes)
        problem = meter_problem(self.bpm, self.time_signature)
        if problem:
            raise ValueError(problem)
        self.time_signature = (int(self.time_signature[0]), int(self.time_signature[1]))
        if self.length is not None and not 0 <= self.length <= MAX_STEPS:
            raise ValueError(f"a score's length must be 0..{MAX_STEPS:,} steps (got {self.length:,})")
        if isinstance(self.drum_kit, bool) or not isinstance(self.drum_kit, (int, np.integer)) \
                or not 0 <= self.drum_kit <= 127:
            raise ValueError(f"a score's drum kit must be a GM program 0..127 (got {self.drum_kit!r}); "
                             f"kits: {', '.join(f'{k} {p}' for k, p in V.DRUM_KITS.items())}")
        self.drum_kit = int(self.drum_kit)

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

    @property
    def bars(self) -> int:
        """Whole bars the score spans: its length when set (a cut or generated score), else the bars its
        onsets reach."""
        return self.length // self.bar_steps if self.length else self.n_bars

    @property
    def span_steps(self) -> int:
        """Steps the score spans on the bar grid: its length when set, else the whole bars its onsets reach."""
        return self.length if self.length else self.n_bars * self.bar_steps

    @property
    def sounding_bars(self) -> int:
        """Bars up to the end of the score's length or of its last sounding note, whichever is later (a note
        ringing past the last bar line adds a bar)."""
        return -(-max(self.length or 0, self.end_step) // self.bar_steps)

    def notes_per_group(self) -> dict[str, int]:
        g, c = np.unique(self.notes["group"], return_counts=True)
        return {V.GROUPS[int(i)]: int(k) for i, k in zip(g, c)}

    def seconds(self) -> float:
        return self.end_step / V.STEPS_PER_QUARTER * 60.0 / self.bpm

    def first_bars(self, n_bars: int) -> "Score":
        """The notes whose onset lies in the first n bars, cut at the bar line."""
        limit = n_bars * self.bar_steps
        return Score(cut_at(self.notes, limit), self.bpm, self.time_signature, self.style, length=limit,
                     drum_kit=self.drum_kit)


    def window(self, first_bar: int, last_bar: int) -> "Score":
        """Bars first_bar..last_bar (1-based, inclusive) as a score of their own, starting at the first bar's line:
        the notes that sound in them, each ringing as in the song; a note held into the first bar starts there,
        with what is left of it (rounded down to a duration level)."""
        lo, hi = (first_bar - 1) * self.bar_steps, last_bar * self.bar_steps
        n = self.notes
        part = n[(n["onset"] < hi) & (n["onset"] + n["duration"] > lo)].copy()
        held = part["onset"] < lo
        levels = np.asarray(V.DURATION_LEVELS)
        room = part["onset"][held].astype(np.int64) + part["duration"][held] - lo
        part["duration"][held] = levels[np.maximum(np.searchsorted(levels, room, side="right") - 1, 0)]
        part["onset"] = np.maximum(part["onset"].astype(np.int64) - lo, 0)
        return Score(part, self.bpm, self.time_signature, self.style, length=hi - lo, drum_kit=self.drum_kit)


def meter_problem(bpm, time_signature) -> str | None:
    """Why a tempo (BPM) and time signature (numerator, denominator) cannot be a score's, or None."""
    try:
        bpm = float(bpm)
        num, den = (int(x) for x in time_signature)
    except (TypeError, ValueError):
        return f"a score needs a numeric BPM and a (numerator, denominator) pair (got {bpm!r}, {time_signature!r})"
    if not MIN_FILE_BPM <= bpm <= MAX_FILE_BPM:  # NaN fails too
        return f"a score's tempo must be {MIN_FILE_BPM:g} to {MAX_FILE_BPM:g} BPM (got {bpm:g})"
    if not (1 <= num <= MAX_NUMERATOR and den in DENOMINATORS):
        return f"a score's time signature must be 1..{MAX_NUMERATOR} over {'/'.join(map(str, DENOMINATORS))} " \
               f"(got {num}/{den})"
    return None


_FIELD_RANGES = (("onset", 0, MAX_STEPS - 1), ("velocity", 0, V.N_VELOCITY - 1), ("group", 0, V.N_GROUPS - 1),
                 ("pitch", 0, 127))


def _check_fields(columns: dict) -> None:
    """ValueError unless every note field lies in its range (so that NOTE_DTYPE holds it unchanged)."""
    for name, lo, hi in _FIELD_RANGES:
        v = columns[name]
        if v.size and (v.min() < lo or v.max() > hi):
            bad = v[(v < lo) | (v > hi)].flat[0]
            raise ValueError(f"note {name} {int(bad):,} is outside {lo}..{hi:,}")


def make_notes(onset, duration, velocity_level, group, pitch) -> np.ndarray:
    """Notes from columns (arrays or scalars).  Durations are clipped to 1..MAX_DURATION steps (the
    documented policy); any other field out of range raises ValueError instead of wrapping."""
    cols = {k: np.asarray(v).astype(np.int64) for k, v in
            (("onset", onset), ("velocity", velocity_level), ("group", group), ("pitch", pitch))}
    _check_fields(cols)
    arr = np.zeros(len(cols["onset"]), NOTE_DTYPE)
    arr["onset"], arr["velocity"], arr["group"], arr["pitch"] = (cols[k] for k in ("onset", "velocity", "group",
                                                                                  "pitch"))
    arr["duration"] = np.clip(np.asarray(duration).astype(np.int64), 1, V.MAX_DURATION)
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
    """Apply the documented policies; idempotent.  Raises ValueError on a field out of range.

    - onsets 0..MAX_STEPS-1, velocity levels 0..7, groups 0..11, pitches 0..127 (checked, never changed);
    - durations at least one step and quantized to DURATION_LEVELS (<= 16 bars);
    - exact duplicates (onset, group, pitch) keep the longest, loudest one;
    - an earlier same-pitch note still sounding at a later onset is cut there;
    - sorted by (onset, group, pitch).
    """
    notes = np.asarray(notes, NOTE_DTYPE).copy()
    if not len(notes):
        return notes
    _check_fields({name: notes[name] for name, _, _ in _FIELD_RANGES})
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


# ---- MIDI in: the bounded scan ----------------------------------------------------------------
# Bytes a channel or system message takes, status byte included, as symusic's parser (minimidi) reads
# them; 0 = a status byte it refuses.  Sysex (F0) and meta (FF) events carry their own lengths.
_MSG_LEN = bytes([0] * 0x80 + [3] * 0x40 + [2] * 0x20 + [3] * 0x10
                 + [0, 2, 3, 2, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 0])
# Runs of the commonest events, skipped in C: a one-byte delta time and two data bytes under running status
# (3 bytes each), or a one-byte delta time, a 3-byte channel status and two data bytes (4 bytes each).  Their
# delta times are every 3rd / 4th byte of the run, so the ticks add up with one slice.
_RUN3 = re.compile(rb"(?:[\x00-\x7f]{3})+")
_RUN4 = re.compile(rb"(?:[\x00-\x7f][\x80-\xbf\xe0-\xef][\x00-\x7f]{2})+")


@dataclass
class MidiScan:
    """What `scan_midi` learned: enough to choose the tempo and meter before parsing."""
    tpq: int
    n_tracks: int
    tempos: list = field(default_factory=list)  # (tick, track, microseconds per quarter note)
    time_signatures: list = field(default_factory=list)  # (tick, track, numerator, denominator)
    parts: set = field(default_factory=set)  # (track, channel, program) set by program changes
    drum_program: tuple | None = None  # (tick, track, program) of the first program change on the drum channel


def _corrupt(track: int, offset: int, what: str) -> MidiError:
    return MidiError(f"track {track + 1} is corrupt at byte {offset:,}: {what}; {REEXPORT}")


def _vlq(data: bytes, pos: int, end: int, track: int) -> tuple[int, int]:
    """A variable-length quantity (at most 4 bytes, as the parser reads it) -> (value, next position)."""
    value = 0
    for i in range(4):
        if pos + i >= end:
            raise _corrupt(track, pos, "a delta time or length runs past the end of the track")
        b = data[pos + i]
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            break
    return value, pos + i + 1


def _scan_meta(data: bytes, pos: int, end: int, track: int, tick: int, scan: MidiScan) -> int:
    """The meta event at `pos` (FF type length data): records tempo and time signature events; returns the
    next position, or -1 at the end of the track."""
    if pos + 2 >= end:
        raise _corrupt(track, pos, "a meta event is cut off by the end of the track")
    kind = data[pos + 1]
    n, p = _vlq(data, pos + 2, end, track)
    if p + n > end:
        raise _corrupt(track, pos, f"a meta event declares {n:,} bytes but only {end - p:,} remain in the track")
    if kind == 0x2F:
        return -1
    if kind == 0x51:
        if n < 3:
            raise _corrupt(track, pos, f"the tempo event at tick {tick:,} holds {n} bytes instead of 3")
        scan.tempos.append((tick, track, int.from_bytes(data[p:p + 3], "big")))
    elif kind == 0x58:
        if n < 2:
            raise _corrupt(track, pos, f"the time signature at tick {tick:,} holds {n} bytes instead of 4")
        scan.time_signatures.append((tick, track, data[p], 2 ** data[p + 1]))
    return p + n


def _scan_track(data: bytes, pos: int, end: int, track: int, scan: MidiScan) -> None:
    """Walk one track chunk event by event as the parser will, summing delta times."""
    tick = run_status = run_len = 0
    msg_len, run3, run4 = _MSG_LEN, _RUN3.match, _RUN4.match
    while pos < end:
        m = run3(data, pos, end) if run_len == 3 and run_status < 0xF0 else None
        if m:
            tick += sum(data[pos:m.end():3])
            pos = m.end()
            continue
        m = run4(data, pos, end)
        if m:
            tick += sum(data[pos:m.end():4])
            run_status, run_len, pos = data[m.end() - 3], 3, m.end()
            continue
        b = data[pos]
        if b < 0x80:
            pos += 1
            tick += b
        else:
            delta, pos = _vlq(data, pos, end, track)
            tick += delta
            if tick > MAX_TICK:  # one-byte deltas cannot cross it by much in 4 MB: checked at the end
                break
        if pos >= end:
            raise _corrupt(track, pos, "an event is cut off by the end of the track")
        s = data[pos]
        if s < 0x80:  # running status: the previous status byte again
            if not run_len:
                raise _corrupt(track, pos, f"a data byte (0x{s:02X}) stands where an event should start")
            n, status, first = run_len - 1, run_status, pos
        elif s == 0xFF:
            pos = _scan_meta(data, pos, end, track, tick, scan)
            if pos < 0:
                break
            continue  # meta events leave running status alone
        elif s == 0xF0:
            length, p = _vlq(data, pos + 1, end, track)
            if p + length > end:
                raise _corrupt(track, pos, f"a sysex event declares {length:,} bytes but only {end - p:,} remain")
            run_status, run_len = s, p + length - pos
            pos = p + length
            continue
        else:
            n = msg_len[s]
            if not n:
                raise _corrupt(track, pos, f"unknown status byte 0x{s:02X}")
            run_status, run_len, status, first = s, n, s, pos + 1
            n -= 1
            pos += 1
        if pos + n > end:
            raise _corrupt(track, pos, "an event is cut off by the end of the track")
        if status < 0xF0 and n and (data[first] | data[pos + n - 1]) & 0x80:
            raise _corrupt(track, pos, "a note or controller event holds a data byte above 127")
        if status & 0xF0 == 0xC0:
            scan.parts.add((track, status & 0x0F, data[first]))
            if status & 0x0F == V.DRUM_CHANNEL and (scan.drum_program is None or (tick, track) < scan.drum_program[:2]):
                scan.drum_program = (tick, track, data[first])
        pos += n
    if tick > MAX_TICK:
        raise MidiError(f"the delta times of track {track + 1} add up to {tick:,} ticks, past the {MAX_TICK:,} a MIDI "
                        f"time can hold: the file is corrupt; {REEXPORT}")


def scan_midi(data: bytes) -> MidiScan:
    """Check the header, the track chunks and every event before anything is parsed; MidiError otherwise."""
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
    head_len = int.from_bytes(data[4:8], "big")
    fmt = int.from_bytes(data[8:10], "big")
    ntrk = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if head_len != 6:
        raise MidiError(f"the MIDI header chunk is {head_len:,} bytes long instead of 6: the file is corrupt; {REEXPORT}")
    if fmt > 2:
        raise MidiError(f"unknown MIDI format {fmt} (expected 0, 1 or 2); {REEXPORT}")
    if ntrk == 0:
        raise MidiError("the MIDI file declares no tracks")
    if division & 0x8000:
        raise MidiError("SMPTE time division is not supported; re-export the file with musical time (PPQ)")
    if division == 0:
        raise MidiError("the MIDI header has a time division of 0 ticks per quarter note")
    if ntrk > MAX_TRACKS:
        raise MidiError(f"the file declares {ntrk:,} tracks; the limit is {MAX_TRACKS:,}: merge tracks and re-export it")
    if 14 + 8 * ntrk > len(data):
        raise MidiError(f"truncated MIDI file: the header declares {ntrk:,} tracks but {len(data):,} bytes hold at "
                        f"most {(len(data) - 14) // 8:,}; {REEXPORT}")
    scan = MidiScan(tpq=division, n_tracks=ntrk)
    pos = 14
    for track in range(ntrk):
        while True:  # the next MTrk chunk; other chunk types are skipped, as the parser does
            if pos + 8 > len(data):
                found = f"holds only {track:,}" if pos == len(data) else f"breaks off after {track:,}"
                raise MidiError(f"truncated MIDI file: the header declares {ntrk:,} tracks but the file {found}; "
                                f"{REEXPORT}")
            size = int.from_bytes(data[pos + 4:pos + 8], "big")
            if size > len(data) - pos - 8:
                raise MidiError(f"truncated MIDI file: chunk {track + 1} declares {size:,} bytes but only "
                                f"{len(data) - pos - 8:,} remain; {REEXPORT}")
            is_track = data[pos:pos + 4] == b"MTrk"
            pos += 8 + size
            if is_track:
                break
        _scan_track(data, pos - size, pos, track, scan)
        if len(scan.parts) > MAX_PARTS:
            raise MidiError(f"the file's program changes make more than {MAX_PARTS:,} instrument parts: "
                            f"use fewer programs per channel and re-export it")
    return scan


def _fraction(num: int, den: int) -> str:
    return f"{num}/{den}" if den <= 1024 else f"{num}/2^{den.bit_length() - 1}"


def file_meter(tempos, time_signatures) -> tuple[float, tuple[int, int]]:
    """(BPM, time signature) from tempo events (tick, track, microseconds per quarter note) and time
    signatures (tick, track, numerator, denominator): the first of each, range-checked; MidiError on an
    invalid event anywhere (see the module docstring)."""
    for tick, track, mspq in tempos:
        if mspq <= 0:
            raise MidiError(f"the tempo event at tick {tick:,} of track {track + 1} is {mspq} microseconds per quarter "
                            f"note (an infinitely fast tempo), which is not a valid tempo: {TEMPO_HINT}")
    for tick, track, num, den in time_signatures:
        if num <= 0 or den not in (1, 2, 4, 8, 16, 32, 64, 128):
            raise MidiError(f"the time signature at tick {tick:,} of track {track + 1} is {_fraction(num, den)}, "
                            f"which is not a valid time signature: {METER_HINT}")
    bpm, ts = 120.0, (4, 4)
    if tempos:
        tick, track, mspq = min(tempos, key=lambda t: t[:2])
        bpm = 60_000_000 / mspq
        if not MIN_FILE_BPM <= bpm <= MAX_FILE_BPM:
            raise MidiError(f"the tempo at tick {tick:,} of track {track + 1} is {bpm:.4g} BPM, outside "
                            f"{MIN_FILE_BPM:g} to {MAX_FILE_BPM:g}: {TEMPO_HINT}")
    if time_signatures:
        tick, track, num, den = min(time_signatures, key=lambda t: t[:2])
        ts = (num, den)
        if meter_problem(bpm, ts):
            raise MidiError(f"the time signature at tick {tick:,} of track {track + 1} is {num}/{den}, which this "
                            f"app cannot use: {METER_HINT}")
    return bpm, ts


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
    scan = scan_midi(data)
    bpm, ts = file_meter(scan.tempos, scan.time_signatures)
    try:
        from symusic import Score as SymScore

        sym = SymScore.from_midi(data)
    except MemoryError:
        raise
    except Exception as e:  # symusic raises RuntimeError/ValueError with parser details
        msg = str(e).replace("MiniMidi:", "").replace(": iostream error", "").strip(" :") or "unreadable data"
        raise MidiError(f"broken MIDI file ({msg}); {REEXPORT}") from None
    kit = scan.drum_program[2] if scan.drum_program is not None else 0
    return from_symusic(sym, style=style, bpm=bpm, time_signature=ts, drum_kit=kit)


def from_symusic(sym, style: str | None = None, bpm: float | None = None,
                 time_signature: tuple[int, int] | None = None, drum_kit: int | None = None) -> Score:
    """The notes of a parsed file on the step grid; MidiError if they run past MAX_STEPS.  Without `bpm` and
    `time_signature` (load_midi reads them exactly from the bytes), symusic's tempo and time signature
    events are checked as file_meter does.  Without `drum_kit` (load_midi reads the first program change on
    the drum channel from the bytes), the kit is the program of symusic's first drum track, 0 when none."""
    if bpm is None or time_signature is None:
        got = file_meter([(int(t.time), 0, int(t.mspq)) for t in sym.tempos],
                         [(int(t.time), 0, int(t.numerator), int(t.denominator)) for t in sym.time_signatures])
        bpm, time_signature = got[0] if bpm is None else bpm, got[1] if time_signature is None else time_signature
    tpq = int(sym.ticks_per_quarter)
    if tpq <= 0:
        raise MidiError("the MIDI header has a non-positive time division")
    parts = []
    for track in sym.tracks:
        arr = track.notes.numpy()
        keep = arr["velocity"] > 0
        if not keep.any():
            continue
        start = arr["time"].astype(np.int64)[keep]
        end = start + np.maximum(arr["duration"].astype(np.int64)[keep], 0)
        on = np.rint(start * V.STEPS_PER_QUARTER / tpq).astype(np.int64)
        off = np.rint(end * V.STEPS_PER_QUARTER / tpq).astype(np.int64)
        if on.min() < 0 or on.max() >= MAX_STEPS:
            bad = int(on.max() if on.max() >= MAX_STEPS else on.min())
            bar = bad // max(1, time_signature[0] * V.STEPS_PER_QUARTER * 4 // time_signature[1]) + 1
            raise MidiError(f"a note starts at step {bad:,} (bar {bar:,}), past the limit of {MAX_STEPS:,} steps "
                            f"({MAX_STEPS // V.STEPS_PER_BAR:,} bars of 4/4): cut the piece shorter (or remove "
                            f"stray notes far after its end) and re-export it")
        group = V.DRUM_GROUP if track.is_drum else V.GM_PROGRAM_TO_GROUP[int(track.program) & 127]
        vlev = np.clip(np.rint(arr["velocity"][keep].astype(np.int64) / V.VELOCITY_STEP), 1, V.N_VELOCITY) - 1
        parts.append(make_notes(on, np.maximum(off - on, 1), vlev, group, arr["pitch"].astype(np.int64)[keep] & 127))
    notes = np.concatenate(parts) if parts else np.zeros(0, NOTE_DTYPE)
    if drum_kit is None:
        drum_kit = next((int(t.program) & 127 for t in sym.tracks if t.is_drum), 0)
    return Score(notes, bpm=bpm, time_signature=time_signature, style=style, drum_kit=drum_kit)


# ---- MIDI out (DAW-clean) -------------------------------------------------------------------
def _put_vlq(data: bytearray, value: int) -> None:
    """Append a MIDI variable-length quantity."""
    if value < 0x80:
        data.append(value)
        return
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    data.extend(reversed(groups))


def _chunk(kind: bytes, data: bytes | bytearray) -> bytes:
    return kind + len(data).to_bytes(4, "big") + bytes(data)


def _group_track(score: Score, g: int, channel: int, ticks: int, total: int) -> bytes:
    """One group's track chunk: its name, program change, then its notes (note-offs before note-ons at the same
    tick, running status as mido writes it), ended at `total` ticks."""
    name = V.GROUPS[g]
    n = score.notes[score.notes["group"] == g]
    on = n["onset"].astype(np.int64) * ticks
    off = (n["onset"].astype(np.int64) + n["duration"]) * ticks
    pitch = n["pitch"].astype(np.int64)
    vel = (n["velocity"].astype(np.int64) + 1) * V.VELOCITY_STEP  # vocab.level_velocity
    tick = np.concatenate([off, on])
    kind = np.concatenate([np.zeros(len(n), np.int64), np.ones(len(n), np.int64)])  # 0 = note-off first
    key = np.concatenate([pitch, pitch])
    level = np.concatenate([np.zeros(len(n), np.int64), vel])
    order = np.lexsort((level, key, kind, tick))  # sorted as (tick, kind, pitch, velocity) tuples sort
    program = score.drum_kit if g == V.DRUM_GROUP else V.GROUP_PROGRAM[name]
    data = bytearray(b"\0" + bytes(mido.MetaMessage("track_name", name=name.title()).bytes()))
    data += bytes((0, 0xC0 | channel, program))
    running, now = 0xC0 | channel, 0
    statuses = (0x80 | channel, 0x90 | channel)
    for t, k, p, v in zip(tick[order].tolist(), kind[order].tolist(), key[order].tolist(), level[order].tolist()):
        _put_vlq(data, t - now)
        now = t
        if statuses[k] != running:
            running = statuses[k]
            data.append(running)
        data.append(p)
        data.append(v)
    _put_vlq(data, max(total - now, 0))
    data += bytes(mido.MetaMessage("end_of_track").bytes())
    return _chunk(b"MTrk", data)


def to_midi_bytes(score: Score, tpq: int = OUTPUT_TPQ) -> bytes:
    """A type 1 MIDI file: a conductor track (name, tempo, time signature), then one named track per group
    with a program change (the drum track's is the score's drum kit); drums on channel 10; note-offs (note-on
    events in mido's reading) before note-ons at the same tick.  Every delta time is at most MAX_DELTA (a
    Score's notes and length end by MAX_STEPS + 16 bars).  Written directly (20,000 notes in well under a
    tenth of a second; through mido's message objects it took 0.7 s), byte for byte as mido writes it."""
    ticks = tpq // V.STEPS_PER_QUARTER
    total = max(score.end_step, score.length or 0) * ticks
    if total > MAX_DELTA:
        raise ValueError(f"a score lasting {total:,} ticks cannot be written at {tpq} ticks per quarter note")
    num, den = score.time_signature
    meta = bytearray()
    for msg in (mido.MetaMessage("track_name", name="MIDI Bangers"),
                mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(score.bpm)),
                mido.MetaMessage("time_signature", numerator=num, denominator=den)):
        meta += b"\0" + bytes(msg.bytes())
    _put_vlq(meta, total)
    meta += bytes(mido.MetaMessage("end_of_track").bytes())
    channels = [c for c in range(16) if c != V.DRUM_CHANNEL]
    groups = score.groups
    tracks = [_chunk(b"MTrk", meta)]
    for i, g in enumerate(groups):
        tracks.append(_group_track(score, g, V.DRUM_CHANNEL if g == V.DRUM_GROUP else channels[i % len(channels)],
                                   ticks, total))
    header = _chunk(b"MThd", (1).to_bytes(2, "big") + len(tracks).to_bytes(2, "big") + tpq.to_bytes(2, "big"))
    return header + b"".join(tracks)


def to_midi_file(score: Score, tpq: int = OUTPUT_TPQ) -> mido.MidiFile:
    """`to_midi_bytes` read back by mido (the stems' sequencing edits its tracks)."""
    return mido.MidiFile(file=io.BytesIO(to_midi_bytes(score, tpq)))


def write_midi(score: Score, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(to_midi_bytes(score))
    os.replace(tmp, path)
    return path
