"""The studio's editing loop without the page: edit one variant, undo and redo, bounded histories, files
made again after pruning, the zip's session.json replayed by the CLI, plain words for parts an engine left
out, and the ZeroGPU wrapper."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import studio
from model.request import GenerationRequest, RequestError
from tokenizer import Score, load_midi
from tokenizer import vocab as V
from tokenizer.score import NOTE_DTYPE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def first(checkpoint_root, tmp_path_factory):
    """(store, history) after one generation of two 2-bar variants (piano, bass, drums; tr-808 kit)."""
    store = studio.OutputStore(tmp_path_factory.mktemp("loop") / "out", keep=100)
    res = studio.generate("transformer", ["piano", "bass"], True, 2, 2, 1.0, 0.95, 0, "11", 120,
                          drum_kit="tr-808", store=store)
    history = studio.History()
    history.push(res)
    return store, history


def test_edit_one_variant_keeps_the_other_and_undo_redo_walk_the_states(first):
    store, history = first
    before = history.current
    res = studio.edit_variant(history, 2, "add_part", store, part="strings", seed="5")
    assert res.action == "variant 2: strings part added" and len(res.variants) == 2
    assert res.variants[0] is before.variants[0]  # variant 1 untouched
    new, old = res.variants[1], before.variants[1]
    assert new.index == 2 and "strings" in new.score.notes_per_group()
    kept = {tuple(r) for r in np.stack([old.score.notes[f] for f in ("onset", "group", "pitch")], 1).tolist()}
    got = {tuple(r) for r in np.stack([new.score.notes[f] for f in ("onset", "group", "pitch")], 1).tolist()}
    assert kept <= got  # every note of the variant stays
    assert new.adherence["prompt_notes_kept"] == 1.0 and "variant 2: strings part added" in res.summary
    assert load_midi(new.midi).drum_kit == V.DRUM_KITS["tr-808"]  # the prompt's kit is kept
    assert history.can_undo and not history.can_redo
    assert history.undo() is before and history.can_redo
    assert history.redo() is res and not history.can_redo


def test_continue_and_infill_a_variant(first):
    store, history = first
    res = studio.edit_variant(history, 1, "continue", store, bars=1, seed="6")
    v = res.variants[0]
    assert v.bars == 3 and "2 prompt bars + 1 new bars" in res.summary
    res = studio.edit_variant(history, 1, "infill", store, infill_first=2, infill_last=2, seed="7")
    w = res.variants[0]
    bar = w.score.bar_steps
    outside = lambda s: s.notes[(s.notes["onset"] < bar) | (s.notes["onset"] >= 2 * bar)]  # noqa: E731
    assert np.array_equal(outside(w.score)[["onset", "group", "pitch"]], outside(v.score)[["onset", "group", "pitch"]])
    with pytest.raises(RequestError, match="^Infill bars must be"):
        studio.edit_variant(history, 1, "infill", store, infill_first=3, infill_last=9, seed="7")
    with pytest.raises(RequestError, match="^Part: the MIDI file already has a piano part"):
        studio.edit_variant(history, 1, "add_part", store, part="piano", seed="7")
    long = studio.History()
    long.push(replace(history.current, variants=[replace(history.current.variants[0],
                                                         score=replace(w.score, length=65 * bar))]))
    with pytest.raises(RequestError, match="^Variant 1 has 65 bars; editing works on at most 64"):
        studio.edit_variant(long, 1, "continue", store, bars=1, seed="7")
    with pytest.raises(RequestError, match="engine gru cannot"):
        studio.edit_variant(history, 1, "add_part", store, engine="gru", part="strings", seed="7")


def test_zip_session_replays_to_the_same_midi(first, tmp_path):
    store, history = first
    state = studio.restore(history.current, store)
    with zipfile.ZipFile(state.zip_path) as z:
        names = z.namelist()
        z.extractall(tmp_path / "zip")
    assert "session.json" in names and all(f"variant-{v.index}/variant-{v.index}.mid" in names for v in state.variants)
    for v in state.variants:  # stems: one MIDI and one audio file per track
        for group in v.score.notes_per_group():
            assert {f"variant-{v.index}/stems/{group}.mid", f"variant-{v.index}/stems/{group}.flac"} <= set(names)
    session = json.loads((tmp_path / "zip" / "session.json").read_text())
    assert session["format"] == studio.SESSION_FORMAT and len(session["variants"]) == len(state.variants)
    assert any(e["request"]["edit"] for e in session["variants"])  # an edited variant: its prompt is in the zip
    out = subprocess.run([sys.executable, "-m", "model.generate", "--session", str(tmp_path / "zip" / "session.json"),
                          "--out", str(tmp_path / "replay")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for v in state.variants:
        again = (tmp_path / "replay" / f"variant-{v.index}.mid").read_bytes()
        assert again == (tmp_path / "zip" / f"variant-{v.index}" / f"variant-{v.index}.mid").read_bytes()


def test_a_broken_session_file_is_one_line(tmp_path):
    bad = tmp_path / "session.json"
    bad.write_text(json.dumps({"format": "something else"}))
    out = subprocess.run([sys.executable, "-m", "model.generate", "--session", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a MIDI Bangers session" in out.stderr


def test_restore_renders_pruned_files_again(first):
    store, history = first
    state = history.current
    for v in state.variants:
        v.mp3.unlink()
    again = studio.restore(state, store)
    assert again is not state and all(p.exists() for v in again.variants for p in v.files())
    assert [v.score for v in again.variants] == [v.score for v in state.variants]
    assert studio.restore(again, store) is again  # nothing missing: the same state


def test_history_and_sessions_are_bounded():
    h = studio.History(limit=3)
    states = [object() for _ in range(5)]
    for s in states:
        h.push(s)
    assert h.current is states[-1] and h.undo() is states[-2] and h.undo() is states[-3] and h.undo() is None
    h.push(states[0])
    assert not h.can_redo  # a new state forgets the redo branch
    sessions = studio.Sessions(limit=2, max_age=3600)
    a = sessions.get("a")
    assert sessions.get("a") is a
    sessions.get("b"), sessions.get("c")
    assert len(sessions) == 2 and sessions.get("a") is not a  # the least recently used went first
    sessions = studio.Sessions(limit=10, max_age=0.0)
    old = sessions.get("x")
    old.touched -= 1
    assert sessions.get("x") is not old  # too old: forgotten
    assert sessions.get(None) is not sessions.get(None)  # no session: nothing kept


def test_parts_an_engine_cannot_play_are_named(checkpoint_root):
    """gru (one melody part) asked for piano, bass and strings: the summary names the parts it does not
    play; the transformer's missing part is one the model left out."""
    from model.engine import get_engine

    try:
        eng = get_engine("gru")
    except FileNotFoundError:
        pytest.skip("no gru checkpoint")
    req = GenerationRequest(groups=("piano", "bass", "strings"), drums=False).validate()
    notes = np.zeros(1, NOTE_DTYPE)
    notes["group"], notes["pitch"], notes["duration"] = V.GROUPS.index("piano"), 60, 4
    said = studio.missing_parts(eng, req, Score(notes))
    assert said.startswith("engine gru does not play bass, strings (for this request it writes only piano)"), said
    req = GenerationRequest(groups=("piano", "bass"), drums=False).validate()
    tf = get_engine("transformer")
    assert studio.missing_parts(tf, req, Score(notes)) == ("no bass notes in this variant (the model left it out; "
                                                           "try another seed)")


def test_on_a_zero_gpu_space_generation_runs_under_spaces_gpu(checkpoint_root):
    """With a `spaces` module, the engine call is wrapped in spaces.GPU with a duration sized to the request."""
    seen = {}

    class FakeSpaces:
        @staticmethod
        def GPU(duration):  # noqa: N802 (the spaces API)
            def wrap(fn):
                def call(*args):
                    seen["seconds"] = duration(*args)
                    return fn(*args)
                return call
            return wrap

    assert studio.gpu_call(None) is None
    run = studio.gpu_call(FakeSpaces)
    small = GenerationRequest(groups=("piano",), drums=False, bars=1, seed=3).validate()
    scores, stats = run("transformer", None, small)
    assert len(scores) == 1 and stats["tokens"] > 0
    short = seen["seconds"]
    run("transformer", None, GenerationRequest(groups=("piano",), drums=False, bars=3, variants=5, seed=3).validate())
    assert short == studio.gpu_seconds("transformer", None, small) and seen["seconds"] > short


def test_prompt_copies_live_beside_the_variants(first, tmp_path):
    """A prompt file may be an upload Gradio prunes: the recipe keeps its own copy in the request folder."""
    store, history = first
    src = ROOT / "tests" / "fixtures" / "midi"
    song = sorted(src.glob("*.mid"))[0]
    upload = tmp_path / "upload.mid"
    shutil.copy(song, upload)
    res = studio.edit("add_part", str(upload), part="guitar", prompt_bars=2, seed="3", store=store)
    upload.unlink()
    v = res.variants[0]
    assert v.recipe.prompt_file.exists() and v.recipe.prompt_file.parent == v.midi.parent


def test_stems_are_left_out_of_huge_requests_with_a_warning():
    notes = np.zeros(2, NOTE_DTYPE)
    notes["group"], notes["pitch"], notes["duration"] = [0, 4], [60, 40], 4
    notes["onset"] = [0, 64 * 32 - 8]  # 64 bars
    long = Score(notes, bpm=40)  # 64 bars at 40 BPM: 384 s, two tracks
    warnings: list[str] = []
    assert studio.stems_fit([long], warnings) and not warnings
    assert not studio.stems_fit([long] * 8, warnings)  # 8 x 2 x 384 s = 102 minutes
    assert warnings == ["stems left out of the zip: they would hold 102 minutes of audio (the limit is 40); ask for "
                        "fewer variants or bars to get them"]
