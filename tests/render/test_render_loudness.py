"""Loudness: the BS.1770-4 measure against reference values, and previews of very different scores all at
TARGET_LUFS (measured on the MP3 decoded by ffmpeg), with the peak ceiling reported when it limits."""

from __future__ import annotations

import numpy as np
import pytest

from render import audio, loudness
from render.audio import SAMPLE_RATE, decode_audio, render_mp3
from render.loudness import (
    PEAK_CEILING_DB,
    TARGET_LUFS,
    block_powers,
    integrated_loudness,
    k_filter,
    k_weighting,
    loudness_gain,
)
from tests.render.conftest import needs_synth
from tokenizer import Score, make_notes
from tokenizer import vocab as V


def sine(rate, seconds=5.0, freq=997.0, amp=1.0):
    return amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_997hz_full_scale_sine_reads_minus_3_01_lufs(rate):
    assert integrated_loudness(sine(rate), rate) == pytest.approx(-3.01, abs=0.01)
    assert integrated_loudness(sine(rate)[:, None], rate) == pytest.approx(-3.01, abs=0.01)  # (frames, 1)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_ebu_3341_stereo_sine_at_minus_23_dbfs_reads_minus_23_lufs(rate):
    s = sine(rate, 20.0, 1000.0, 10 ** (-23 / 20))
    assert integrated_loudness(np.stack([s, s], 1), rate) == pytest.approx(-23.0, abs=0.05)


def test_k_weighting_is_the_bs1770_table_at_48k():
    b1, a1, b2, a2 = k_weighting(48000)
    assert np.allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-12)
    assert np.allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-12)
    assert np.allclose(b2, [1.0, -2.0, 1.0]) and np.allclose(a2, [1.0, -1.99004745483398, 0.99007225036621],
                                                                atol=1e-12)


def test_k_filter_is_the_two_biquads():
    rate = 44100
    x = np.random.default_rng(0).standard_normal(6000)
    want = x.copy()
    for b, a in (k_weighting(rate)[:2], k_weighting(rate)[2:]):  # direct form I, sample by sample
        y = np.zeros_like(want)
        for n in range(len(want)):
            y[n] = (b[0] * want[n] + (b[1] * want[n - 1] if n else 0) + (b[2] * want[n - 2] if n > 1 else 0)
                    - (a[1] * y[n - 1] if n else 0) - (a[2] * y[n - 2] if n > 1 else 0))
        want = y
    # float32 arithmetic (the samples are 16-bit audio: 3e-5 a step), of a signal of unit variance
    assert np.abs(k_filter(x[:, None], rate)[:, 0] - want).max() < 1e-5


def test_k_filter_is_the_same_across_its_blocks_and_threads():
    """The overlap-save blocks join without a seam: a signal of many blocks filtered whole is, sample for sample,
    the filter run one stretch after another carrying its state (lfilter's direct form, in numpy); two threads
    give the same samples and the same block powers as one."""
    rate = 8000  # a 0.1 s impulse response of 800 samples: blocks of about 32,000 samples
    x = np.random.default_rng(1).standard_normal((100_000, 2)).astype(np.float32) * 0.3
    one, two = k_filter(x, rate), k_filter(x, rate, threads=2)
    assert np.array_equal(one, two)
    ir_len, spec = loudness._k_response(rate)
    ir = np.fft.irfft(spec, loudness._FFT)[:ir_len]
    want = np.stack([np.convolve(x[:, c].astype(np.float64), ir)[:len(x)] for c in range(2)], 1)
    assert np.abs(one - want).max() < 1e-5
    assert np.array_equal(block_powers(x, rate), block_powers(x, rate, threads=2))
    assert len(block_powers(x, rate)) == len(x) // (rate // 10) - 3


def test_gates():
    rate = 44100
    tone = sine(rate, 4.0, amp=10 ** (-20 / 20))
    alone = integrated_loudness(tone, rate)  # 40 hops of 100 ms: 37 blocks of 400 ms, all alike
    # after the tone, 3 blocks hold 3/4, 2/4 and 1/4 of it and pass both gates; the rest is gated out:
    # the mean of 37 + 0.75 + 0.5 + 0.25 blocks over 40
    edge = alone + 10 * np.log10(38.5 / 40)
    # silence: the absolute gate (-70 LUFS)
    assert integrated_loudness(np.concatenate([tone, np.zeros(10 * rate)]), rate) == pytest.approx(edge, abs=0.01)
    # a passage 40 dB quieter (about -63 LUFS, above the absolute gate): the relative gate (-10 LU)
    quiet = sine(rate, 10.0, amp=10 ** (-60 / 20))
    assert integrated_loudness(np.concatenate([tone, quiet]), rate) == pytest.approx(edge, abs=0.01)
    assert integrated_loudness(quiet, rate) == pytest.approx(alone - 40, abs=0.01)
    assert integrated_loudness(np.zeros(rate), rate) == float("-inf")
    assert integrated_loudness(tone[: rate // 4], rate) == float("-inf")  # shorter than one 400 ms block


def test_loudness_gain_stops_at_the_peak_ceiling():
    assert loudness_gain(-30.0, -20.0) == (pytest.approx(14.0), False)
    gain, limited = loudness_gain(-30.0, -5.0)
    assert limited and gain == pytest.approx(PEAK_CEILING_DB + 5.0)
    assert loudness_gain(float("-inf"), -90.0) == (0.0, False)


def quiet_solo_piano() -> Score:
    """Two bars of soft piano chords (velocity 15)."""
    on = [b * 8 for b in range(8) for _ in range(3)]
    pitch = [p for _ in range(8) for p in (60, 64, 67)]
    return Score(make_notes(on, 8, 0, 0, pitch), length=64)


def loud_full_band() -> Score:
    """Two bars of six pitched groups and drums, every note at velocity 120."""
    on, grp, pit = [], [], []
    for beat in range(8):
        for g, ps in ((0, (60, 64, 67)), (3, (52, 55, 59)), (4, (36,)), (5, (72, 76)), (6, (67, 70)),
                      (2, (48, 55)), (V.DRUM_GROUP, (36, 42) if beat % 2 == 0 else (38, 42, 49))):
            on += [beat * 8] * len(ps)
            grp += [g] * len(ps)
            pit += list(ps)
    return Score(make_notes(on, 8, 7, grp, pit), length=64)


@needs_synth
def test_quiet_piano_and_loud_band_both_reach_the_target(tmp_path):
    measured = {}
    for name, score in (("piano", quiet_solo_piano()), ("band", loud_full_band())):
        raw = integrated_loudness(audio.read_wav(audio.render_wav(score, tmp_path / f"{name}.wav"))[0], SAMPLE_RATE)
        res = render_mp3(score, tmp_path / f"{name}.mp3")
        assert not res.peak_limited and res.loudness_lufs == pytest.approx(TARGET_LUFS, abs=0.01)
        assert res.peak_dbfs <= PEAK_CEILING_DB
        pcm = decode_audio(res.path, channels=2)
        measured[name] = (raw, integrated_loudness(pcm, SAMPLE_RATE), res.gain_db)
        assert np.abs(pcm).max() <= 10 ** ((PEAK_CEILING_DB + 0.5) / 20)  # MP3 coding overshoots a little at most
    (raw_p, lufs_p, gain_p), (raw_b, lufs_b, gain_b) = measured["piano"], measured["band"]
    assert raw_b - raw_p > 20  # very different scores: FluidSynth's raw output differs by more than 20 LU
    assert gain_p - gain_b > 20
    assert lufs_p == pytest.approx(TARGET_LUFS, abs=0.5) and lufs_b == pytest.approx(TARGET_LUFS, abs=0.5)
    assert abs(lufs_p - lufs_b) < 0.5


@needs_synth
def test_peak_ceiling_limits_the_gain_and_says_so(tmp_path):
    # one claves hit: a few milliseconds of sound in a 400 ms block, so its loudness is far below its peak
    score = Score(make_notes([0], [1], 0, V.DRUM_GROUP, 75), length=V.STEPS_PER_BAR)
    res = render_mp3(score, tmp_path / "hit.mp3")
    assert res.peak_limited
    assert res.peak_dbfs == pytest.approx(PEAK_CEILING_DB, abs=1e-6)
    assert res.loudness_lufs < TARGET_LUFS
