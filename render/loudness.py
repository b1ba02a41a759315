"""Loudness, ITU-R BS.1770-4 / EBU R128, numpy only: K-weighting, 400 ms blocks overlapping by 75 %, absolute gate
-70 LUFS, relative gate -10 LU; and the gain that brings a preview to TARGET_LUFS without lifting a sample past
PEAK_CEILING_DB (render.audio applies it to every preview and its stems).

    integrated_loudness(samples, 44100)          # LUFS of (frames,) or (frames, channels) floats in [-1, 1]
    gain_db, limited = loudness_gain(lufs, peak_db)
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

TARGET_LUFS = -16.0  # integrated loudness of every preview
PEAK_CEILING_DB = -1.0  # no sample of the mix or of a stem goes above this (dBFS)


def k_weighting(rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two K-weighting biquads (b1, a1: the high shelf; b2, a2: the RLB high-pass) at any sample rate,
    designed as libebur128 does; at 48 kHz they are the coefficients BS.1770-4 tabulates."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    b1 = np.array([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    a1 = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    b2 = np.array([1.0, -2.0, 1.0])
    a2 = np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])
    return b1, a1, b2, a2


_FFT = 1 << 15  # FFT size of the overlap-save convolution: of 2^14 to 2^17, the fastest on an 8.7-minute mix


@functools.lru_cache(maxsize=4)
def _k_response(rate: int) -> tuple[int, np.ndarray]:
    """(impulse response length L, spectrum of the K-weighting impulse response cut at L, at _FFT points).

    The filters' slowest poles (the 38 Hz high-pass) decay by e^-23 within 0.1 s, so cutting the impulse
    response there leaves an error below 1e-9 of full scale: the convolution is the IIR filter."""
    b1, a1, b2, a2 = k_weighting(rate)
    ir_len = rate // 10
    m = 1 << (8 * ir_len - 1).bit_length()  # sampled finely enough that the aliased tail is negligible
    z = np.exp(-1j * np.pi * np.arange(m // 2 + 1) / (m // 2))
    resp = (np.polyval(b1[::-1], z) / np.polyval(a1[::-1], z)) * (np.polyval(b2[::-1], z) / np.polyval(a2[::-1], z))
    ir = np.fft.irfft(resp, m)[:ir_len]
    return ir_len, np.fft.rfft(ir, _FFT).astype(np.complex64)


def _k_convolve(x: np.ndarray, rate: int, block: int, out: Callable[[int, np.ndarray], None], threads: int) -> None:
    """K-filter float32 samples x (frames, channels) from silence by overlap-save FFT convolution (float32 FFTs),
    `block` output frames at a time (at most _FFT - L + 1): out(start, y) gets y (channels, n), the filtered frames
    [start, start + n).  The blocks go to `threads` threads in runs of consecutive blocks (numpy's FFTs release the
    GIL: D_ROMERO's 8.7-minute mix's block powers take 0.81 s on one thread and 0.42 s on two, `python -m bench.render
    --loudness`, docs/runs/bench-render-ahead.log; the overlap-add at 2^16 points before took 2.5-2.8 s on one, in a
    one-off run beside this on 8.7 minutes of noise)."""
    ir_len, spec = _k_response(rate)
    starts = list(range(0, len(x), block))

    def run(mine: list[int]) -> None:
        for start in mine:
            lo = start - (ir_len - 1)  # the frames before the block that ring into it
            seg = x[max(lo, 0):start + block]
            if lo < 0:
                seg = np.concatenate([np.zeros((-lo, x.shape[1]), np.float32), seg])
            y = np.fft.irfft(np.fft.rfft(seg.T, _FFT) * spec, _FFT)  # a channel a row
            out(start, y[:, ir_len - 1:len(seg)])

    per = -(-len(starts) // max(1, threads))
    runs = [starts[k:k + per] for k in range(0, len(starts), per)]
    if len(runs) <= 1:
        run(starts)
        return
    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(run, runs))


def k_filter(samples: np.ndarray, rate: int, threads: int = 1) -> np.ndarray:
    """K-weighted samples (frames, channels), float32: the two biquads applied from silence (float32 FFTs; the
    samples differ from float64 by under 2e-7 of full scale)."""
    x = np.asarray(samples, np.float32)
    y = np.empty(x.shape, np.float32)
    ir_len, _ = _k_response(rate)

    def out(start: int, part: np.ndarray) -> None:
        y[start:start + part.shape[1]] = part.T

    _k_convolve(x, rate, _FFT - ir_len + 1, out, threads)
    return y


def block_powers(samples: np.ndarray, rate: int, threads: int = 1) -> np.ndarray:
    """BS.1770-4 gating blocks: the K-weighted mean square of every 400 ms block (blocks start 100 ms
    apart; an incomplete last block is left out), summed over the channels (each weighs 1).  The filtered
    samples are summed a 100 ms hop at a time as they are made, not kept."""
    x = np.asarray(samples, np.float32)
    if x.ndim == 1:
        x = x[:, None]
    hop = int(round(0.1 * rate))  # 75 % overlap: a block is 4 hops
    n_hops = len(x) // hop
    if n_hops < 4:
        return np.zeros(0)
    ir_len, _ = _k_response(rate)
    power = np.zeros(n_hops)

    def out(start: int, y: np.ndarray) -> None:  # whole hops: the block is a multiple of the hop
        hops = y.reshape(len(y), -1, hop)
        power[start // hop:start // hop + hops.shape[1]] = np.einsum("cij,cij->i", hops, hops, dtype=np.float64)

    _k_convolve(x[:n_hops * hop], rate, (_FFT - ir_len + 1) // hop * hop, out, threads)
    return np.convolve(power, np.ones(4), "valid") / (4 * hop)


def gated_loudness(z: np.ndarray) -> float:
    """Integrated loudness (LUFS) from block powers: absolute gate -70 LUFS, then relative gate -10 LU."""
    with np.errstate(divide="ignore"):
        z = z[-0.691 + 10 * np.log10(z) > -70.0]
        if not len(z):
            return float("-inf")
        relative = -0.691 + 10 * math.log10(z.mean()) - 10.0
        z = z[-0.691 + 10 * np.log10(z) > relative]
    return float(-0.691 + 10 * math.log10(z.mean()))


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    """ITU-R BS.1770-4 integrated loudness in LUFS of mono (frames,) or (frames, channels) samples in
    [-1, 1]; every channel weighs 1 (mono, stereo; no surround weights).  -inf when no 400 ms block is
    louder than the absolute gate (silence, or less than 400 ms of audio).  A full-scale 997 Hz sine in one
    channel reads -3.01 LUFS."""
    return gated_loudness(block_powers(samples, rate))


def loudness_gain(loudness: float, peak_db: float, target: float = TARGET_LUFS,
                  ceiling: float = PEAK_CEILING_DB) -> tuple[float, bool]:
    """(gain in dB, peak_limited): the gain that brings `loudness` to `target`, or less when it would lift
    `peak_db` above `ceiling`.  Silence (-inf) keeps 0 dB."""
    if not math.isfinite(loudness) or not math.isfinite(peak_db):
        return 0.0, False
    gain = target - loudness
    if peak_db + gain > ceiling:
        return ceiling - peak_db, True
    return gain, False

