"""Notes rendered ahead (render.ahead.Backing, real FluidSynth): a part edit's other parts and a span edit's window
around its new notes, rendered while the model writes; the preview takes that audio only when the kept notes are
exactly the ones rendered, and sounds as rendering them then."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np

from render import audio
from render.ahead import Backing
from render.audio import SAMPLE_RATE, decode_audio, render_preview
from tests.render.conftest import needs_synth
from tests.render.test_render_audio import _envelope
from tests.render.test_render_stems import db
from tokenizer import vocab as V

pytestmark = needs_synth


def test_parts_rendered_ahead_are_the_other_parts_audio(tmp_path, small_score, monkeypatch):
    """A part edit's song parts rendered while the new part is written (`Backing`): the preview takes their audio
    instead of a FluidSynth run of its own, and is the same audio as rendering them then; a backing of other
    notes, or one that was cancelled, is not used; `claim` is held while its FluidSynth runs."""
    score, bass = small_score(), V.GROUPS.index("bass")
    kept = [g for g in score.groups if g != bass]
    runs = []
    real = audio._synthesize
    monkeypatch.setattr(audio, "_synthesize", lambda midi, *a, **k: runs.append(midi) or real(midi, *a, **k))
    then, then_stems = render_preview(score, tmp_path / "then", "v", stem_groups=[bass], processes=1)
    assert len(runs) == 2  # the other parts, then the bass
    claimed = []

    @contextlib.contextmanager
    def claim():
        claimed.append("in")
        yield
        claimed.append("out")

    with Backing.of_groups(score, kept, claim=claim) as backing:
        assert backing.audio(backing.midi, SAMPLE_RATE) is not None  # waits for it
        assert claimed == ["in", "out"] and runs[-1] == backing.midi
        runs.clear()
        res, stems = render_preview(score, tmp_path / "ahead", "v", stem_groups=[bass], processes=1, backing=backing)
    assert len(runs) == 1  # the bass alone
    for a, b in ((res.path, then.path), (stems[0].audio, then_stems[0].audio)):
        assert np.array_equal(decode_audio(a, channels=2), decode_audio(b, channels=2))
    assert res.gain_db == then.gain_db

    other = replace(score, notes=score.notes[1:])  # a piano note fewer: not the song's other parts
    with Backing.of_groups(other, kept) as stale:
        assert stale.audio(stale.midi, SAMPLE_RATE) is not None
        runs.clear()
        res, _ = render_preview(score, tmp_path / "stale", "v", stem_groups=[bass], processes=1, backing=stale)
    assert len(runs) == 2 and np.array_equal(decode_audio(res.path, channels=2), decode_audio(then.path, channels=2))

    long = replace(score, length=300 * V.STEPS_PER_BAR)  # 10 minutes
    backing = Backing.of_groups(long, kept)
    backing.cancel()  # FluidSynth killed (or never started)
    assert backing.audio(backing.midi, SAMPLE_RATE) is None


def test_a_span_edits_window_renders_its_new_notes_beside_the_kept_ones_rendered_ahead(tmp_path, small_score,
                                                                                     monkeypatch):
    """An infill's or a continuation's preview window (`Backing.outside`): the notes outside the edited steps are
    rendered ahead; the preview renders the others alone and adds them: one FluidSynth run, the same music as
    the window rendered whole (loudness, envelope); a window whose kept notes differ is rendered whole."""
    score = small_score()
    lo, hi = V.STEPS_PER_BAR, 2 * V.STEPS_PER_BAR  # the second bar written anew
    runs = []
    real = audio._synthesize
    monkeypatch.setattr(audio, "_synthesize", lambda midi, *a, **k: runs.append(midi) or real(midi, *a, **k))
    whole, _ = render_preview(score, tmp_path / "whole", "v", stems=False)
    with Backing.outside(score, lo, hi) as backing:
        known, new = backing.split(score)
        assert len(known.notes) + len(new.notes) == len(score.notes) and (new.notes["onset"] >= lo).all()
        assert backing.audio(backing.midi, SAMPLE_RATE) is not None
        runs.clear()
        res, stems = render_preview(score, tmp_path / "ahead", "v", stems=False, backing=backing)
        assert runs == [audio._midi_bytes(new)] and stems == []
        mix, want = decode_audio(res.path, channels=2), decode_audio(whole.path, channels=2)
        assert mix.shape == want.shape and abs(db(mix) - db(want)) < 0.2 and abs(res.gain_db - whole.gain_db) < 0.1
        assert np.corrcoef(_envelope(mix[:, 0]), _envelope(want[:, 0]))[0, 1] > 0.98
        moved = replace(score, notes=score.notes[score.notes["onset"] != 0])  # the first beat's notes not kept
        runs.clear()
        render_preview(moved, tmp_path / "moved", "v", stems=False, backing=backing)
        assert runs == [audio._midi_bytes(moved)]
