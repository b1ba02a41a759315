"""A budget per request, known before it runs: estimates from the request and the upload, a refusal that says
what to change, a deadline for a request the estimate got wrong, and the lane a request runs in."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.fair import dense_song
from model.request import GenerationRequest, RequestError
from model.sampling.plan import READ_NOTES_PER_BAR
from studio import budget as B
from studio.inputs import edit_request
from tokenizer import write_midi


def test_a_page_request_is_short_and_within_budget():
    req = GenerationRequest(groups=("piano", "guitar", "bass"), drums=True, bars=8, variants=4).validate()
    cost = B.estimate(req)
    assert cost.short and 0 < cost.seconds < B.SHORT_SECONDS and cost.kept_notes == 0
    B.check(cost)


def test_a_dense_upload_is_refused_before_it_starts_with_what_to_change(checkpoint_root):
    prepared = edit_request("regenerate_part", dense_song(bars=256), {"part": "piano", "seed": 1})
    cost = B.estimate(prepared.request)
    # the model reads only the busiest parts within READ_NOTES_PER_BAR (model.sampling.plan.read_groups)
    assert 5_000 < cost.kept_notes <= READ_NOTES_PER_BAR * 256 and not cost.short and cost.seconds > B.MAX_SECONDS
    with pytest.raises(RequestError, match="at most 240 s here. Ask for fewer bars or variants"):
        B.check(cost)


def test_the_studio_refuses_an_over_budget_edit_in_seconds(checkpoint_root, make_studio, tmp_path):
    path = write_midi(dense_song(bars=256), tmp_path / "dense.mid")
    studio = make_studio()
    t0 = time.perf_counter()
    with pytest.raises(RequestError, match="would take about"):
        studio.edit_upload("regenerate_part", {"midi": str(path), "part": "piano"})
    assert time.perf_counter() - t0 < 30


def test_a_request_past_its_deadline_is_stopped(monkeypatch):
    cost = B.Cost(steps=100, read_tokens=0, kept_notes=0, audio_seconds=1.0, seconds=1.0)
    deadline = B.Deadline(cost)
    assert deadline.limit == B.SHORT_SECONDS
    deadline.check()  # in time
    monkeypatch.setattr(B.time, "monotonic", lambda: deadline.start + B.SHORT_SECONDS + 1)
    with pytest.raises(RequestError, match=f"past its budget of {B.SHORT_SECONDS:.0f} s"):
        deadline.check()


def test_long_requests_run_on_their_own_lane_with_their_own_engine(checkpoint_root):
    from model.engine import get_engine
    from studio.runner import LocalRunner

    runner = LocalRunner()
    eng = get_engine("transformer")
    req = GenerationRequest(groups=("piano",), drums=False, bars=1, seed=2).validate()
    short, _ = runner(eng, None, req, short=True)
    long, stats = runner(eng, None, req, short=False)
    assert runner.long_engine(eng) is not eng and stats["tokens"] > 0
    assert np.array_equal(short[0].notes, long[0].notes)  # the same model, the same music


def test_loop_mode_costs_more_than_the_same_piece_without_it():
    plain = GenerationRequest(groups=("piano", "bass"), drums=True, bars=8, variants=2).validate()
    loop = GenerationRequest(groups=("piano", "bass"), drums=True, bars=8, variants=2, loop=True).validate()
    extra = B.estimate(loop).seconds - B.estimate(plain).seconds
    assert extra == pytest.approx(2 * (B.LOOP_SECONDS_PER_VARIANT + 8 * B.LOOP_SECONDS_PER_BAR))


def test_an_edit_of_a_span_of_a_long_song_previews_that_span_with_bars_around_it(checkpoint_root):
    """Continue and infill on a 100-bar song preview the edited bars with 4 before and 2 after (the MIDI keeps
    the whole song); an added part changes every bar and a short song is short: both previewed whole."""
    song = dense_song(notes=800, bars=100, tracks=3)
    cont = B.estimate(edit_request("continue", song, {"bars": 4, "seed": 1}).request)
    assert cont.preview == (97, 104)
    infill = B.estimate(edit_request("infill", song, {"first_bar": 50, "last_bar": 53, "seed": 1}).request)
    assert infill.preview == (46, 55)
    whole = B.estimate(edit_request("add_part", song, {"part": "strings", "seed": 1}).request)
    assert whole.preview is None
    short = B.estimate(edit_request("continue", dense_song(notes=200, bars=20, tracks=3), {"bars": 4, "seed": 1}).request)
    assert short.preview is None
    # the budget counts the audio of the window: 10 of 104 bars, no stems
    assert infill.audio_seconds < whole.audio_seconds / 8


def test_a_dense_songs_preview_keeps_fewer_bars_around_the_edit(checkpoint_root):
    """The 20,000-note upload (about 310 notes a bar): its infill of bars 30-31 previews 2 bars before and 1 after, not
    4 and 2 (those 6 bars would be about 1,900 notes for FluidSynth to play); a song of 2 notes a bar keeps them."""
    infill = B.estimate(edit_request("infill", dense_song(), {"first_bar": 30, "last_bar": 31, "seed": 1}).request)
    assert infill.preview == (28, 32)
    sparse = B.estimate(edit_request("infill", dense_song(notes=800, bars=64, tracks=3),
                                     {"first_bar": 30, "last_bar": 31, "seed": 1}).request)
    assert sparse.preview == (26, 33)
    around = dense_song(notes=3000, bars=64, tracks=3)  # about 47 notes a bar: 1,000 fit in about 21 bars
    assert B.estimate(edit_request("infill", around, {"first_bar": 30, "last_bar": 31, "seed": 1}).request).preview == (26, 33)


def test_an_added_part_costs_no_decisions_in_the_songs_repeats(checkpoint_root, monkeypatch):
    """The decoder copies an added part into the units that repeat earlier ones (model.sampling.repeats): the
    estimate counts its decisions only outside them."""
    from tests.model.test_repeats import looped_song

    song = looped_song(times=8)  # two bars, 8 times: 12 of the 16 bars repeat bars two or more bars before
    request = edit_request("add_part", song, {"part": "brass", "seed": 1}).request
    with_repeats = B.estimate(request)
    monkeypatch.setattr(B, "plan_repeats", lambda plan: (plan.bar_steps, {}))
    without = B.estimate(request)
    assert with_repeats.steps < 0.5 * without.steps and with_repeats.seconds < without.seconds
