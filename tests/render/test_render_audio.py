"""MIDI -> MP3 with the real FluidSynth and soundfont: decodes, is not silent, lasts exactly the piece plus the
release tail, and every failure is a clear RenderError."""

from __future__ import annotations

import numpy as np
import pytest

from render import audio
from render.audio import (
    MP3_FRAME,
    RELEASE_TAIL,
    SAMPLE_RATE,
    RenderError,
    decode_audio,
    piece_seconds,
    preview_frames,
    render_mp3,
    render_preview,
    render_wav,
)
from render.loudness import integrated_loudness
from tests.render.conftest import needs_synth
from tokenizer import Score, make_notes, to_midi_bytes
from tokenizer import vocab as V


@needs_synth
@pytest.mark.parametrize("as_bytes", [False, True])
def test_render_small_score_to_mp3(tmp_path, as_bytes, small_score):
    score = small_score()
    res = render_mp3(to_midi_bytes(score) if as_bytes else score, tmp_path / "out.mp3")
    head = res.path.read_bytes()[:3]
    assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0), head  # ID3 tag or MPEG frame sync
    assert not list(tmp_path.glob("*.part"))
    pcm = decode_audio(res.path, channels=2)
    # 2 bars at 120 BPM = 4 s, plus the release tail, to within one MP3 frame (measured: exact)
    assert res.seconds == pytest.approx(4.0 + RELEASE_TAIL)
    assert abs(len(pcm) - (4.0 + RELEASE_TAIL) * SAMPLE_RATE) <= MP3_FRAME, len(pcm)
    rms = float(np.sqrt(np.mean(pcm ** 2)))
    assert rms > 0.02, rms  # not silent
    assert np.abs(pcm[-100:]).max() < 1e-3  # the tail fades out: no click at the cut


@needs_synth
@pytest.mark.parametrize("bpm, ts, length, steps", [
    (93.0, (3, 4), 3 * 24, 3 * 24),  # 3 bars of 3/4 at an odd tempo
    (150.0, (6, 8), None, 40 + 12),  # no length: the end of the last note (onset 40 + 12 steps)
    (60.0, (4, 4), 16, 16),  # a note ringing past the length is cut at length + tail
])
def test_mp3_lasts_the_piece_plus_the_tail(tmp_path, bpm, ts, length, steps):
    notes = make_notes([0, 8, 40], [8, 8, 12 if length is None else 64], 5, [0, 4, 0], [60, 40, 67])
    score = Score(notes, bpm=bpm, time_signature=ts, length=length)
    want = steps / V.STEPS_PER_QUARTER * 60.0 / bpm + RELEASE_TAIL
    assert piece_seconds(score) + RELEASE_TAIL == pytest.approx(want, abs=1e-5)
    res = render_mp3(score, tmp_path / "x.mp3")
    got = len(decode_audio(res.path)) / SAMPLE_RATE
    assert abs(got - want) <= MP3_FRAME / SAMPLE_RATE, (got, want)
    assert res.seconds == pytest.approx(want, abs=1 / SAMPLE_RATE)


@needs_synth
def test_render_bpm_changes_length(tmp_path, small_score):
    slow = decode_audio(render_mp3(small_score(60), tmp_path / "slow.mp3").path)
    fast = decode_audio(render_mp3(small_score(180), tmp_path / "fast.mp3").path)
    assert len(slow) == pytest.approx((8 + RELEASE_TAIL) * SAMPLE_RATE, abs=MP3_FRAME)
    assert len(fast) == pytest.approx((8 / 3 + RELEASE_TAIL) * SAMPLE_RATE, abs=MP3_FRAME)


@needs_synth
def test_empty_score_is_a_silent_tail(tmp_path):
    res, stems = render_preview(Score(length=0), tmp_path, "empty")
    assert stems == [] and res.loudness_lufs is None and res.gain_db == 0.0 and not res.peak_limited
    assert res.peak_dbfs is None or res.peak_dbfs < -120  # FluidSynth's effects leave a trace at about -150 dBFS
    pcm = decode_audio(res.path)
    assert abs(len(pcm) - RELEASE_TAIL * SAMPLE_RATE) <= MP3_FRAME and np.abs(pcm).max() < 1e-3


@needs_synth
def test_render_wav_is_the_raw_synth(tmp_path, small_score):
    score = small_score()
    x, rate = audio.read_wav(render_wav(score, tmp_path / "raw.wav"))
    assert rate == SAMPLE_RATE and x.shape[1] == 2
    assert len(x) >= preview_frames(score)  # FluidSynth renders on past the end of the piece
    assert np.abs(x).max() > 0.05


def test_fit_cuts_or_pads_and_fades():
    rate = 1000
    x = np.ones((3000, 2), np.float32)
    y = audio._fit(x, 2000, rate)
    fade = int(audio.FADE_OUT * rate)
    assert y.shape == (2000, 2) and np.array_equal(y[:2000 - fade], x[:2000 - fade])
    assert y[-1].max() == 0.0 and np.all(np.diff(y[-fade:, 0]) <= 0)  # falls to silence
    z = audio._fit(x[:500], 2000, rate)
    assert z.shape == (2000, 2) and np.array_equal(z[:500], x[:500]) and not z[500:].any()


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


def test_too_long_or_unreadable_midi_is_refused(tmp_path):
    long = Score(make_notes([0], [8], 5, [0], [60]), bpm=20.0, length=8 * 60 * 31)  # 31 minutes at 20 BPM
    with pytest.raises(RenderError, match="longer than 30 minutes"):
        render_mp3(long, tmp_path / "x.mp3")
    with pytest.raises(RenderError, match="the MIDI data cannot be read"):
        render_mp3(b"MThd garbage", tmp_path / "x.mp3")


@needs_synth
def test_broken_soundfont_is_an_error_not_a_hang(tmp_path, small_score):
    sf2 = tmp_path / "broken.sf2"
    sf2.write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + b"\x00" * 64)
    with pytest.raises(RenderError, match="^no preview: FluidSynth could not load the soundfont"):
        render_mp3(small_score(), tmp_path / "x.mp3", soundfont=sf2, timeout=30)


def _envelope(x: np.ndarray, hop: int = SAMPLE_RATE // 20) -> np.ndarray:
    n = len(x) // hop
    return np.sqrt(np.square(x[:n * hop]).reshape(n, -1).mean(1))


@needs_synth
def test_a_long_mix_rendered_in_pieces_at_once_is_the_whole_render(tmp_path, monkeypatch, small_score):
    """Past PARALLEL_SECONDS the mix renders in pieces cut at bar lines, one FluidSynth per core: the sum has the
    whole render's length and loudness and follows its envelope (FluidSynth's 64-sample clock step at each cut
    moves the waveform by under 1.5 ms, not the music); a note ringing over a cut is heard in full."""
    two = small_score()
    bars = 12
    notes = np.concatenate([two.notes] + [
        np.array([tuple(n) for n in two.notes], dtype=two.notes.dtype) for _ in range(bars // 2 - 1)])
    notes["onset"] += np.repeat(np.arange(bars // 2) * 2 * V.STEPS_PER_BAR, len(two.notes)).astype(notes["onset"].dtype)
    held = make_notes([5 * V.STEPS_PER_BAR + 8], [V.DURATION_LEVELS[-1]], [6], [V.GROUPS.index("strings")], [72])
    score = Score(np.concatenate([notes, held]), bpm=120.0, length=bars * V.STEPS_PER_BAR)
    cuts = audio._split_step(score, 2)
    assert len(cuts) == 1 and cuts[0] % score.bar_steps == 0 and 0 < cuts[0] < score.length
    assert cuts[0] <= 5 * V.STEPS_PER_BAR + 8 < cuts[0] + V.DURATION_LEVELS[-1]  # the held note rings over the cut
    frames = preview_frames(score)
    whole = audio._fit(audio._synthesize(to_midi_bytes(score), tmp_path / "whole.f32", None, SAMPLE_RATE, 60),
                       frames, SAMPLE_RATE)
    parts = audio._fit(audio._synthesize_parts(score, frames, tmp_path, None, SAMPLE_RATE, 60, 2), frames, SAMPLE_RATE)
    assert parts.shape == whole.shape
    assert abs(integrated_loudness(parts, SAMPLE_RATE) - integrated_loudness(whole, SAMPLE_RATE)) < 0.2
    assert np.corrcoef(_envelope(parts[:, 0]), _envelope(whole[:, 0]))[0, 1] > 0.98
    # a part's stem alone takes the same path (a part edit's new part): its pieces at once, the mix beside them
    bass = V.GROUPS.index("bass")
    alone = audio._stem_parts(audio._stem_score(score, bass), frames, tmp_path, None, SAMPLE_RATE, 60, 1)[0]
    pieces = audio._stem_parts(audio._stem_score(score, bass), frames, tmp_path, None, SAMPLE_RATE, 60, 2)[0]
    assert abs(integrated_loudness(pieces, SAMPLE_RATE) - integrated_loudness(alone, SAMPLE_RATE)) < 0.2
    assert np.corrcoef(_envelope(pieces[:, 0]), _envelope(alone[:, 0]))[0, 1] > 0.98
    # render_mp3 takes the parallel path for a long piece and still lasts the piece plus the tail
    monkeypatch.setattr(audio, "PARALLEL_SECONDS", 5.0)
    monkeypatch.setattr(audio, "CORES", 2)
    calls = []
    real = audio._synthesize_parts
    monkeypatch.setattr(audio, "_synthesize_parts", lambda *a: calls.append(a) or real(*a))
    res = render_mp3(score, tmp_path / "long.mp3")
    assert len(calls) == 1
    assert abs(len(decode_audio(res.path)) - frames) <= MP3_FRAME


@needs_synth
def test_the_voice_limit_leaves_a_real_song_as_it_was(tmp_path, monkeypatch):
    """FluidSynth plays at most POLYPHONY voices at once (fewer than its default of 256, which made dense previews
    slow): a real multi-part song's render is the same, sample for sample, as with 256; a bar of the dense
    16-track upload (310 notes) is not, so the limit is in force."""
    from bench.fair import dense_song
    from tests.conftest import MIDI_FIXTURES
    from tokenizer import load_midi

    song = load_midi(next(f for f in MIDI_FIXTURES if f.name == "busy_schedule.mid"))
    song = song.window(1, 8)
    midi = to_midi_bytes(song)
    limited = np.array(audio._synthesize(midi, tmp_path / "a.raw", None, SAMPLE_RATE, 60.0))
    monkeypatch.setattr(audio, "POLYPHONY", 256)
    default = np.array(audio._synthesize(midi, tmp_path / "b.raw", None, SAMPLE_RATE, 60.0))
    assert limited.shape == default.shape and np.abs(limited).max() > 0.01
    assert np.array_equal(limited, default)
    dense = to_midi_bytes(dense_song(notes=620, bars=2).window(1, 1))
    full = np.array(audio._synthesize(dense, tmp_path / "c.raw", None, SAMPLE_RATE, 60.0))
    monkeypatch.setattr(audio, "POLYPHONY", 128)
    cut = np.array(audio._synthesize(dense, tmp_path / "d.raw", None, SAMPLE_RATE, 60.0))
    assert cut.shape != full.shape or not np.array_equal(cut, full)
