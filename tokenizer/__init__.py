"""MIDI in and out: loading, normalization, the 3-token vocabulary, pianorolls, DAW-clean writing."""

from . import vocab
from .codec import control_prefix, decode, decode_notes, encode, encode_notes, parse_prefix, piece_notes, stream_pieces
from .score import NOTE_DTYPE, MidiError, Score, load_midi, make_notes, to_midi_bytes, write_midi

__all__ = [
    "vocab", "NOTE_DTYPE", "MidiError", "Score", "load_midi", "make_notes", "to_midi_bytes", "write_midi",
    "control_prefix", "decode", "decode_notes", "encode", "encode_notes", "parse_prefix", "piece_notes",
    "stream_pieces",
]
