"""Doom engine music: the lumps of a WAD file, and MUS (Doom's own music format) converted to MIDI.

A WAD is a header ("IWAD" or "PWAD", lump count, directory offset; little-endian int32s) and a
directory of 16-byte entries (offset, size, 8-byte NUL-padded name).  Level music lives in lumps named
D_* (D_E1M1, D_RUNNIN, ...), each either a standard MIDI file ("MThd") or a MUS file ("MUS\\x1a").

MUS (the format Doom shipped its music in):
  header    "MUS\\x1a", then uint16 LE: score length, score offset, primary channels, secondary
            channels, instrument count, reserved; then one uint16 per instrument
  events    from the score offset: a descriptor byte (bit 7: a delay follows; bits 4-6: event type;
            bits 0-3: channel), the event's data bytes, then, when bit 7 was set, the delay in ticks
            as a variable-length number (7 bits a byte, high bit = more bytes follow)
  types     0 release note (note) | 1 play note (bit 7 of the note byte: a volume byte follows; else
            the channel's last volume) | 2 pitch wheel (0..255, 128 = centre) | 3 system event
            (10..14) | 4 controller (number 0..9, value; number 0 = instrument change) | 5 end of
            measure | 6 end of score | 7 unused
  time      140 ticks a second
  channels  0..14 melodic, 15 percussion (General MIDI channel 10)
`mus_to_midi` writes a type-0 MIDI file of the same events at 70 ticks per quarter and 120 BPM
(500,000 us per quarter: 140 ticks a second, as Chocolate Doom's mus2mid does), so one MUS tick is
one MIDI tick; MUS channel 15 goes to MIDI channel 10, channels 9..14 to 11..16.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import NamedTuple

import mido

MUS_MAGIC = b"MUS\x1a"
MIDI_MAGIC = b"MThd"
MUS_TICKS_PER_SECOND = 140
MIDI_TPQ = 70  # with 500,000 us per quarter: 140 ticks a second, one MIDI tick per MUS tick
MIDI_TEMPO = 500_000
MUS_PERCUSSION = 15
# MUS controller number -> MIDI controller (0 is the instrument, a MIDI program change)
MUS_CONTROLLERS = {1: 0, 2: 1, 3: 7, 4: 10, 5: 11, 6: 91, 7: 93, 8: 64, 9: 67}
# MUS system event -> MIDI channel-mode controller (all sounds off, all notes off, mono, poly, reset)
MUS_SYSTEM = {10: 120, 11: 123, 12: 126, 13: 127, 14: 121}
MAX_LUMPS = 65_536


class DoomError(ValueError):
    """A WAD or MUS file that cannot be read; the message says what is wrong."""


class Lump(NamedTuple):
    """One entry of a WAD directory: the lump's name (upper case), byte offset and size."""

    name: str
    offset: int
    size: int


# ---- WAD -------------------------------------------------------------------------------------------
def wad_directory(data: bytes) -> list[Lump]:
    """The lumps of a WAD file's bytes, in directory order; DoomError for a file that is not a WAD or
    whose directory or lumps run past its end."""
    if len(data) < 12 or data[:4] not in (b"IWAD", b"PWAD"):
        raise DoomError("not a WAD file (no IWAD/PWAD header)")
    n, table = struct.unpack_from("<ii", data, 4)
    if not 0 <= n <= MAX_LUMPS or table < 12 or table + 16 * n > len(data):
        raise DoomError(f"the WAD directory ({n} lumps at offset {table}) does not fit in the file ({len(data)} bytes)")
    lumps = []
    for i in range(n):
        pos, size, raw = struct.unpack_from("<ii8s", data, table + 16 * i)
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace").upper()
        if size < 0 or pos < 0 or pos + size > len(data):
            raise DoomError(f"lump {i} ({name}) runs past the end of the WAD")
        lumps.append(Lump(name, pos, size))
    return lumps


def music_lumps(path: str | Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every music lump (D_*) of a WAD file that holds MUS or MIDI data, in directory
    order."""
    data = Path(path).read_bytes()
    out = []
    for lump in wad_directory(data):
        if lump.name.startswith("D_"):
            blob = data[lump.offset:lump.offset + lump.size]
            if blob[:4] in (MUS_MAGIC, MIDI_MAGIC):
                out.append((lump.name, blob))
    return out


def lump_bytes(path: str | Path, name: str) -> bytes:
    """The bytes of the first lump called `name` in a WAD file; DoomError when there is none."""
    data = Path(path).read_bytes()
    for lump in wad_directory(data):
        if lump.name == name.upper():
            return data[lump.offset:lump.offset + lump.size]
    raise DoomError(f"{Path(path).name} has no lump {name}")


def lump_to_midi(blob: bytes) -> bytes:
    """A music lump as MIDI bytes: MIDI as it is, MUS converted; DoomError for anything else."""
    if blob[:4] == MIDI_MAGIC:
        return blob
    if blob[:4] == MUS_MAGIC:
        return mus_to_midi(blob)
    raise DoomError("the lump is neither MUS nor MIDI")


# ---- MUS -> MIDI -------------------------------------------------------------------------------------
def midi_channel(mus_channel: int) -> int:
    """The zero-based MIDI channel of a MUS channel: 15 (percussion) -> 9 (channel 10), 9..14 -> 10..15."""
    if mus_channel == MUS_PERCUSSION:
        return 9
    return mus_channel if mus_channel < 9 else mus_channel + 1


def mus_header(data: bytes) -> dict:
    """The MUS header's fields: score_length, score_start, primary_channels, secondary_channels,
    instruments (a list of instrument numbers)."""
    if len(data) < 16 or data[:4] != MUS_MAGIC:
        raise DoomError("not a MUS file (no MUS\\x1a header)")
    length, start, primary, secondary, n_instr, _ = struct.unpack_from("<6H", data, 4)
    if 16 + 2 * n_instr > len(data):
        raise DoomError(f"the MUS header lists {n_instr} instruments but the file ends first")
    if start >= len(data):
        raise DoomError(f"the MUS score starts at byte {start}, past the end of the file ({len(data)} bytes)")
    instruments = list(struct.unpack_from(f"<{n_instr}H", data, 16))
    return dict(score_length=length, score_start=start, primary_channels=primary, secondary_channels=secondary,
                instruments=instruments)


def mus_events(data: bytes) -> list[tuple[int, mido.Message]]:
    """The MUS score as (absolute tick, MIDI channel message), in order, up to the score end event (or
    the end of the data).  DoomError on an unknown event type or an event cut off by the end."""
    head = mus_header(data)
    pos, tick = head["score_start"], 0
    volume = [127] * 16  # the last volume of each MUS channel ("play note" without a volume byte uses it)
    out: list[tuple[int, mido.Message]] = []

    def byte() -> int:
        nonlocal pos
        if pos >= len(data):
            raise DoomError(f"a MUS event is cut off by the end of the file (byte {pos})")
        pos += 1
        return data[pos - 1]

    while pos < len(data):
        desc = byte()
        kind, mus_ch = (desc >> 4) & 7, desc & 15
        ch = midi_channel(mus_ch)
        if kind == 0:
            out.append((tick, mido.Message("note_off", channel=ch, note=byte() & 127, velocity=0)))
        elif kind == 1:
            note = byte()
            if note & 128:
                volume[mus_ch] = byte() & 127
            out.append((tick, mido.Message("note_on", channel=ch, note=note & 127, velocity=volume[mus_ch])))
        elif kind == 2:
            out.append((tick, mido.Message("pitchwheel", channel=ch, pitch=byte() * 64 - 8192)))
        elif kind == 3:
            ctrl = MUS_SYSTEM.get(byte())
            if ctrl is not None:
                out.append((tick, mido.Message("control_change", channel=ch, control=ctrl, value=0)))
        elif kind == 4:
            number, value = byte(), byte() & 127
            if number == 0:
                out.append((tick, mido.Message("program_change", channel=ch, program=value)))
            elif number in MUS_CONTROLLERS:
                out.append((tick, mido.Message("control_change", channel=ch, control=MUS_CONTROLLERS[number],
                                               value=value)))
        elif kind == 6:
            break
        elif kind != 5:
            raise DoomError(f"unknown MUS event type {kind} at byte {pos - 1}")
        if desc & 128:
            delay = 0
            while True:
                b = byte()
                delay = delay * 128 + (b & 127)
                if not b & 128:
                    break
            tick += delay
    return out


def mus_to_midi(data: bytes) -> bytes:
    """A MUS file's bytes -> the bytes of a type-0 MIDI file with the same events (see the module
    docstring for the time base and channel mapping)."""
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=MIDI_TEMPO, time=0))
    last = 0
    for tick, msg in mus_events(data):
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=0, ticks_per_beat=MIDI_TPQ)
    mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()
