"""Bad files raise MidiError with a clear message (never another exception)."""

import os

import pytest

from tokenizer import MidiError, load_midi
from tokenizer.score import MAX_FILE_BYTES


@pytest.fixture(scope="module")
def good(midi_paths) -> bytes:
    return midi_paths["type0_multichannel"].read_bytes()


def cases(good: bytes) -> dict[str, tuple[bytes, str]]:
    return {
        "random": (os.urandom(2000), "not a MIDI file"),
        "empty": (b"", "empty"),
        "text": (b"this is not music\n" * 20, "not a MIDI file"),
        "truncated": (good[: len(good) // 2], "truncated MIDI file: chunk 1 declares"),
        "header_only": (good[:14], "truncated"),
        "short_header": (good[:10], "truncated"),
        "smpte": (good[:12] + bytes([0xE7, 0x28]) + good[14:], "SMPTE"),
        "zero_tracks": (good[:10] + b"\x00\x00" + good[12:], "no tracks"),
        "zero_division": (good[:12] + b"\x00\x00" + good[14:], "division"),
        "format_3": (good[:8] + b"\x00\x03" + good[10:], "format"),
        "too_big": (good + b"\x00" * (MAX_FILE_BYTES + 1), "limit"),
        "header_length": (good[:7] + b"\x07" + good[8:], "header chunk is 7 bytes long instead of 6"),
        "too_many_tracks": (good[:10] + b"\x04\x01" + good[12:], "declares 1,025 tracks; the limit is 1,024"),
        "missing_tracks": (good[:10] + b"\x00\x02" + good[12:], "declares 2 tracks but the file holds only 1"),
        "bad_status": (_patch_first_event(good, b"\x00\xf4"), "unknown status byte 0xF4"),
        "stray_data_byte": (_patch_first_event(good, b"\x00\x40"), "a data byte .0x40. stands where an event"),
        "data_byte_above_127": (_patch_first_event(good, b"\x00\x90\xc8"), "data byte above 127"),
    }


def _patch_first_event(good: bytes, raw: bytes) -> bytes:
    """The file with `raw` (delta time + event bytes) replacing the start of its first track's events."""
    return good[:22] + raw + good[22 + len(raw):]


@pytest.mark.parametrize("name", ["random", "empty", "text", "truncated", "header_only", "short_header",
                                  "smpte", "zero_tracks", "zero_division", "format_3", "too_big", "header_length",
                                  "too_many_tracks", "missing_tracks", "bad_status", "stray_data_byte",
                                  "data_byte_above_127"])
def test_bad_bytes(name, good, tmp_path):
    data, words = cases(good)[name]
    for source in (data, tmp_path / f"{name}.mid"):
        if not isinstance(source, bytes):
            source.write_bytes(data)
        with pytest.raises(MidiError, match=words) as e:
            load_midi(source)
        msg = str(e.value)
        assert msg and "\n" not in msg and "Traceback" not in msg
        if name in ("truncated", "header_length", "too_many_tracks", "missing_tracks", "bad_status",
                    "stray_data_byte", "data_byte_above_127"):
            assert "re-export" in msg or "merge" in msg  # says what to change


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MidiError, match="cannot read"):
        load_midi(tmp_path / "nope.mid")
    with pytest.raises(MidiError, match="cannot read"):
        load_midi(tmp_path)


def test_midi_error_is_a_value_error():
    assert issubclass(MidiError, ValueError)
