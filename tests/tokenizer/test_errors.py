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
        "truncated": (good[: len(good) // 2], "broken MIDI file"),
        "header_only": (good[:14], "truncated"),
        "short_header": (good[:10], "truncated"),
        "smpte": (good[:12] + bytes([0xE7, 0x28]) + good[14:], "SMPTE"),
        "zero_tracks": (good[:10] + b"\x00\x00" + good[12:], "no tracks"),
        "zero_division": (good[:12] + b"\x00\x00" + good[14:], "division"),
        "format_3": (good[:8] + b"\x00\x03" + good[10:], "format"),
        "too_big": (good + b"\x00" * (MAX_FILE_BYTES + 1), "limit"),
    }


@pytest.mark.parametrize("name", ["random", "empty", "text", "truncated", "header_only", "short_header",
                                  "smpte", "zero_tracks", "zero_division", "format_3", "too_big"])
def test_bad_bytes(name, good, tmp_path):
    data, words = cases(good)[name]
    for source in (data, tmp_path / f"{name}.mid"):
        if not isinstance(source, bytes):
            source.write_bytes(data)
        with pytest.raises(MidiError, match=words) as e:
            load_midi(source)
        msg = str(e.value)
        assert msg and "\n" not in msg and "Traceback" not in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MidiError, match="cannot read"):
        load_midi(tmp_path / "nope.mid")
    with pytest.raises(MidiError, match="cannot read"):
        load_midi(tmp_path)


def test_midi_error_is_a_value_error():
    assert issubclass(MidiError, ValueError)
