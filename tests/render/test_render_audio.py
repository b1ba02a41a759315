"""MIDI -> MP3 with the real FluidSynth and soundfont: decodes, is not silent, is trimmed and normalized."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from render import audio
from render.audio import RenderError, decode_audio, normalize_peak, render_mp3, trim_silence
from tokenizer import to_midi_bytes

needs_synth = pytest.mark.skipif(shutil.which("fluidsynth") is None or shutil.which("ffmpeg") is None,
                                 reason="fluidsynth and ffmpeg are needed for a real render")


@needs_synth
@pytest.mark.parametrize("as_bytes", [False, True])
def test_render_small_score_to_mp3(tmp_path, as_bytes, small_score):
    score = small_score()
    res = render_mp3(to_midi_bytes(score) if as_bytes else score, tmp_path / "out.mp3")
    head = res.path.read_bytes()[:3]
    assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0), head  # ID3 tag or MPEG frame sync
    pcm = decode_audio(res.path)
    seconds = len(pcm) / audio.SAMPLE_RATE
    # 2 bars at 120 BPM = 4 s of notes; trimming keeps the decay of the last notes but not minutes of silence
    assert 3.5 <= seconds <= 4.0 + 3.0, seconds
    assert abs(res.seconds - seconds) < 0.2
    rms = float(np.sqrt(np.mean(pcm ** 2)))
    assert rms > 0.02, rms  # not silent
    peak = float(np.abs(pcm).max())
    assert 0.7 < peak <= 1.0, peak  # peak-normalized to about -1 dBFS (MP3 adds a little overshoot)


@needs_synth
def test_render_bpm_changes_length(tmp_path, small_score):
    slow = decode_audio(render_mp3(small_score(60), tmp_path / "slow.mp3").path)
    fast = decode_audio(render_mp3(small_score(180), tmp_path / "fast.mp3").path)
    assert len(slow) > 2 * len(fast)


def test_trim_silence_cuts_the_tail_only():
    rate = 1000
    x = np.zeros((5 * rate, 2), np.float32)
    x[100:2000] = 0.5  # sound from 0.1 s to 2 s, then 3 s of silence
    y = trim_silence(x, rate, tail=0.25)
    assert len(y) == 2000 + 250
    assert np.array_equal(y[:2000], x[:2000])  # nothing before the tail is touched (leading silence kept)
    assert len(trim_silence(np.zeros((rate, 2), np.float32), rate, tail=0.1)) == 100
    assert len(trim_silence(np.zeros((0, 2), np.float32), rate)) == 0


def test_normalize_peak():
    x = np.array([[0.1, -0.2], [0.05, 0.0]], np.float32)
    y = normalize_peak(x, peak=0.9)
    assert np.isclose(np.abs(y).max(), 0.9)
    assert np.allclose(y / y[0, 1], x / x[0, 1])  # only scaled
    z = np.zeros((10, 2), np.float32)
    assert np.array_equal(normalize_peak(z), z)  # silence stays silence, no division by zero


def test_missing_soundfont_gives_clear_error(tmp_path, monkeypatch, small_score):
    with pytest.raises(RenderError, match=r"^no preview: soundfont .*nope\.sf2 not found"):
        render_mp3(small_score(), tmp_path / "x.mp3", soundfont=tmp_path / "nope.sf2")
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / "gone.sf2"))
    with pytest.raises(RenderError, match="no preview: soundfont .*gone.sf2 not found"):
        render_mp3(small_score(), tmp_path / "x.mp3")
    monkeypatch.delenv(audio.SOUNDFONT_ENV)
    monkeypatch.setattr(audio, "SOUNDFONT_CANDIDATES", (str(tmp_path / "none.sf2"),))
    with pytest.raises(RenderError, match="no preview: no General MIDI soundfont found"):
        render_mp3(small_score(), tmp_path / "x.mp3")
    assert not (tmp_path / "x.mp3").exists()


def test_missing_fluidsynth_gives_clear_error(tmp_path, monkeypatch, small_score):
    monkeypatch.setenv("PATH", str(tmp_path))  # no programs at all
    sf2 = tmp_path / "fake.sf2"
    sf2.write_bytes(b"RIFF")
    with pytest.raises(RenderError, match="no preview: FluidSynth is not installed"):
        render_mp3(small_score(), tmp_path / "x.mp3", soundfont=sf2)


@needs_synth
def test_broken_soundfont_is_an_error_not_a_hang(tmp_path, small_score):
    sf2 = tmp_path / "broken.sf2"
    sf2.write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + b"\x00" * 64)
    with pytest.raises(RenderError, match="^no preview: FluidSynth could not load the soundfont"):
        render_mp3(small_score(), tmp_path / "x.mp3", soundfont=sf2, timeout=30)
