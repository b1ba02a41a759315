"""Stems (real FluidSynth, FLAC through ffmpeg, MIDI through symusic): one per instrument group, each as long
as the mix, with the mix's gain, lined up with the music, and summing to the mix."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from render.audio import (
    decode_audio,
    preview_frames,
    read_wav,
    render_mp3,
    render_preview,
    render_stems,
    render_wav,
)
from render.loudness import PEAK_CEILING_DB
from tests.render.conftest import needs_synth
from tests.render.test_render_audio import _envelope
from tokenizer import Score, load_midi
from tokenizer import vocab as V

pytestmark = needs_synth


def db(x: np.ndarray) -> float:
    return 20 * np.log10(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12)


def test_one_stem_per_group_summing_to_the_mix(tmp_path, small_score):
    score = replace(small_score(), drum_kit=V.DRUM_KITS["jazz"])
    res, stems = render_preview(score, tmp_path, "v1")
    assert [s.group for s in stems] == ["piano", "bass", "drums"]
    assert res.path == tmp_path / "v1.mp3"
    mix = decode_audio(res.path, channels=2)
    frames = preview_frames(score)
    assert len(mix) == frames
    total = np.zeros_like(mix)
    for s in stems:
        assert s.audio == tmp_path / f"v1-{s.group}.flac" and s.midi == tmp_path / f"v1-{s.group}.mid"
        assert s.seconds == res.seconds
        pcm = decode_audio(s.audio, channels=2)
        assert pcm.shape == mix.shape  # same length, same start
        assert db(pcm) > -40  # every stem sounds
        total += pcm
        back = load_midi(s.midi)  # the group alone, with the piece's tempo, metre, length and kit
        group = V.GROUPS.index(s.group)
        assert np.array_equal(back.notes, score.notes[score.notes["group"] == group])
        assert back.bpm == pytest.approx(score.bpm) and back.time_signature == score.time_signature
        assert back.drum_kit == (score.drum_kit if s.group == "drums" else 0)
    # the FLACs are lossless, the mix is an MP3: their difference is MP3 coding noise (measured about -27 dB)
    assert db(total - mix) - db(mix) < -20
    assert np.abs(total).max() <= 10 ** (PEAK_CEILING_DB / 20) + 1e-4  # the stems summed are the mix: no clip


def test_stems_line_up_with_the_music(tmp_path, small_score):
    """Each stem starts where its group alone starts (one FluidSynth block, 1.5 ms, at most apart): a stem
    rendered after the others in the one-run render is not shifted."""
    score = small_score()
    _, stems = render_preview(score, tmp_path, "v")
    for s in stems:
        alone_score = Score(score.notes[score.notes["group"] == V.GROUPS.index(s.group)], score.bpm,
                            score.time_signature, length=score.length)
        alone = read_wav(render_wav(alone_score, tmp_path / f"{s.group}.wav"))[0].mean(axis=1)
        stem = decode_audio(s.audio)
        n = 1 << (len(stem) + len(alone)).bit_length()
        corr = np.fft.irfft(np.fft.rfft(stem, n) * np.conj(np.fft.rfft(alone, n)), n)
        window = np.concatenate([corr[-2000:], corr[:2001]])  # lags -2000..2000 samples (+-45 ms)
        best = int(np.argmax(window)) - 2000
        assert abs(best) <= 66, (s.group, best)  # 66 samples = 1.5 ms


def test_render_stems_uses_the_given_gain(tmp_path, small_score):
    score = small_score()
    res = render_mp3(score, tmp_path / "mix.mp3")
    quieter = render_stems(score, tmp_path / "a", "x", gain_db=res.gain_db - 6.0)
    assert not list((tmp_path / "a").glob("*.mp3"))
    res2, stems = render_preview(score, tmp_path / "b", "x")
    # the gain computed from the sum of the stems is the single-pass mix's to within 0.1 dB
    assert res2.gain_db == pytest.approx(res.gain_db, abs=0.1)
    for q, s in zip(quieter, stems, strict=True):
        delta = db(decode_audio(s.audio, channels=2)) - db(decode_audio(q.audio, channels=2))
        assert delta == pytest.approx(6.0 + res2.gain_db - res.gain_db, abs=0.02)


def test_no_stems_when_asked_for_none(tmp_path, small_score):
    res, stems = render_preview(small_score(), tmp_path, "v", stems=False)
    assert stems == [] and res.path.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["v.mp3"]
    with pytest.raises(TypeError, match="stems need a Score"):
        render_stems(b"MThd", tmp_path, "x")


@pytest.mark.parametrize("processes", [1, 2])
def test_stems_of_some_groups_beside_the_whole_mix(tmp_path, small_score, processes):
    """A part edit's stems: the new part's only, as loud as in the full render, beside the mix of every group
    (the other groups rendered apart, one after the other or at once, and summed with the stem)."""
    score = small_score()
    full, every = render_preview(score, tmp_path / "all", "v")
    res, stems = render_preview(score, tmp_path / "bass", "v", stem_groups=[V.GROUPS.index("bass")],
                                processes=processes)
    assert [s.group for s in stems] == ["bass"] and sorted(p.name for p in (tmp_path / "bass").iterdir()) == [
        "v-bass.flac", "v-bass.mid", "v.mp3"]
    # the same music: one FluidSynth run against the sum of the groups' runs (chorus and reverb start at other
    # moments of their cycles there, so the waveforms differ; the loudness and the envelope do not)
    assert res.gain_db == pytest.approx(full.gain_db, abs=0.1)
    mix, whole = decode_audio(res.path, channels=2), decode_audio(full.path, channels=2)
    assert mix.shape == whole.shape and abs(db(mix) - db(whole)) < 0.2
    assert np.corrcoef(_envelope(mix[:, 0]), _envelope(whole[:, 0]))[0, 1] > 0.98
    bass = decode_audio(stems[0].audio, channels=2)
    same = decode_audio(next(s for s in every if s.group == "bass").audio, channels=2)
    assert bass.shape == mix.shape and abs(db(bass) - db(same)) < 0.2
    assert np.corrcoef(_envelope(bass[:, 0]), _envelope(same[:, 0]))[0, 1] > 0.98
