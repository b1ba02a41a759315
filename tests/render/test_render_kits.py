"""Drum kits: FluidSynth with FluidR3_GM plays the kit the drum track's program change names (bank 128)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from render.audio import SOUNDFONT_CANDIDATES, read_wav, render_wav
from tokenizer import Score, make_notes
from tokenizer import vocab as V

FLUIDR3 = Path(SOUNDFONT_CANDIDATES[0])
pytestmark = pytest.mark.skipif(shutil.which("fluidsynth") is None or not FLUIDR3.is_file(),
                                reason="fluidsynth and FluidR3_GM are needed for a real render")


def beat(kit: int) -> Score:
    """One bar of kick, snare and closed hi-hat on the drum channel."""
    on = [0, 8, 16, 24, 0, 4, 8, 12, 16, 20, 24, 28]
    pitch = [36, 38, 36, 38] + [42] * 8
    return Score(make_notes(on, 2, 6, V.DRUM_GROUP, pitch), length=V.STEPS_PER_BAR, drum_kit=kit)


def spectrum(x: np.ndarray, bands: int = 48) -> np.ndarray:
    """Energy (dB) in log-spaced bands from 30 Hz to 16 kHz."""
    mag = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 44100)
    edges = np.geomspace(30, 16000, bands + 1)
    return np.array([10 * np.log10(mag[(freqs >= lo) & (freqs < hi)].sum() + 1e-12)
                     for lo, hi in zip(edges[:-1], edges[1:])])


def test_the_kit_changes_the_sound(tmp_path):
    def render(kit, name):
        return read_wav(render_wav(beat(kit), tmp_path / f"{name}.wav", soundfont=FLUIDR3))[0]

    standard, again = render(V.DRUM_KITS["standard"], "a"), render(V.DRUM_KITS["standard"], "b")
    tr808 = render(V.DRUM_KITS["tr-808"], "808")
    n = min(len(standard), len(tr808))
    assert np.array_equal(standard, again)  # the render is deterministic: any difference is the kit
    rms = float(np.sqrt(np.mean(standard[:n] ** 2)))
    diff = float(np.sqrt(np.mean((standard[:n] - tr808[:n]) ** 2)))
    assert diff > 0.5 * rms  # not the same samples at all
    # and not just a level change: the spectra differ in shape by several dB on average
    a, b = spectrum(standard[:n]), spectrum(tr808[:n])
    assert np.mean(np.abs((a - a.mean()) - (b - b.mean()))) > 3.0
    # every other kit sounds different from the standard one too
    for name, kit in V.DRUM_KITS.items():
        if kit not in (0, 25):
            x = render(kit, name)[:n]
            assert float(np.sqrt(np.mean((standard[:len(x)] - x) ** 2))) > 0.1 * rms, name


def bank128_presets(sf2: Path) -> set[int]:
    """Programs of the bank 128 (percussion) presets in a SoundFont 2 file, from its 'phdr' chunk."""
    with open(sf2, "rb") as f:
        riff, _, form = f.read(4), f.read(4), f.read(4)
        assert riff == b"RIFF" and form == b"sfbk"
        while True:
            head = f.read(8)
            assert len(head) == 8, "no pdta chunk"
            cid, size = head[:4], int.from_bytes(head[4:], "little")
            if cid == b"LIST" and f.read(4) == b"pdta":
                end = f.tell() + size - 4
                while f.tell() < end:
                    sub = f.read(8)
                    sid, ssize = sub[:4], int.from_bytes(sub[4:], "little")
                    data = f.read(ssize)
                    if sid == b"phdr":
                        recs = [data[i:i + 38] for i in range(0, len(data) - 38, 38)]  # the last is the terminal
                        return {int.from_bytes(r[20:22], "little") for r in recs
                                if int.from_bytes(r[22:24], "little") == 128}
                raise AssertionError("no phdr chunk")
            f.seek(size + (size & 1) - (4 if cid == b"LIST" else 0), 1)


def test_every_kit_is_a_bank_128_preset_of_fluidr3():
    presets = bank128_presets(FLUIDR3)
    assert set(V.DRUM_KITS.values()) <= presets, sorted(set(V.DRUM_KITS.values()) - presets)
