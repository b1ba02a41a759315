"""The editing loop through Studio: edit one variant from its notes, undo and redo, keep as start, files made
again after pruning, and the named editing endpoints' path (an uploaded song)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.request import RequestError
from studio.pipeline import restore
from tokenizer import load_midi, write_midi
from tokenizer import vocab as V

ROOT = Path(__file__).resolve().parents[2]
SONG = ROOT / "tests" / "fixtures" / "midi" / "city_blues_redfarn.mid"  # piano, guitar, drums

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(score) -> set:
    return {tuple(r) for r in np.stack([score.notes[f] for f in ("onset", "group", "pitch")], 1).tolist()}


def test_edit_one_variant_keeps_the_other_and_undo_redo_walk_the_states(first):
    st, session = first
    history = st.history(session)
    before = history.current
    res = st.edit_variant(session, 2, "add_part", {"part": "strings", "seed": "5"})
    assert res.action == "variant 2: strings part added" and len(res.variants) == 2
    assert res.variants[0] is before.variants[0]  # variant 1 untouched
    new, old = res.variants[1], before.variants[1]
    assert new.index == 2 and "strings" in new.score.notes_per_group()
    assert rows(old.score) <= rows(new.score)  # every note of the variant stays
    assert new.adherence["prompt_notes_kept"] == 1.0 and "variant 2: strings part added" in res.summary
    assert load_midi(new.midi).drum_kit == V.DRUM_KITS["tr-808"]  # the prompt's kit is kept
    assert history.current is res and history.can_undo and not history.can_redo
    assert st.undo(session) is before and history.can_redo
    assert st.redo(session) is res and not history.can_redo
    with pytest.raises(RequestError, match=r"^Nothing to redo\.$"):
        st.redo(session)


def test_continue_and_infill_a_variant(first):
    st, session = first
    panel = {"part": "bass", "bars": 1, "first_bar": 1, "last_bar": 1}  # the page's edit panel sends every field
    res = st.edit_variant(session, 1, "continue", {**panel, "seed": "6"})
    v = res.variants[0]
    assert v.bars == 3 and "2 prompt bars + 1 new bars" in res.summary
    res = st.edit_variant(session, 1, "infill", {"first_bar": 2, "last_bar": 2, "seed": "7"})
    w = res.variants[0]
    bar = w.score.bar_steps
    outside = lambda s: s.notes[(s.notes["onset"] < bar) | (s.notes["onset"] >= 2 * bar)]  # noqa: E731
    assert np.array_equal(outside(w.score)[["onset", "group", "pitch"]], outside(v.score)[["onset", "group", "pitch"]])
    with pytest.raises(RequestError, match="^Infill bars must be"):
        st.edit_variant(session, 1, "infill", {"first_bar": 3, "last_bar": 9, "seed": "7"})
    with pytest.raises(RequestError, match="^Part: the MIDI file already has a piano part"):
        st.edit_variant(session, 1, "add_part", {"part": "piano", "seed": "7"})
    with pytest.raises(RequestError, match="engine gru cannot"):
        st.edit_variant(session, 1, "add_part", {"engine": "gru", "part": "strings", "seed": "7"})
    with pytest.raises(RequestError, match="unknown field 'bras'"):
        st.edit_variant(session, 1, "continue", {"bras": 1})
    with pytest.raises(RequestError, match="^Variants must be a whole number from 1 to 2 "):
        st.edit_variant(session, 3, "continue", {"bars": 1})
    long = st.history("long")
    long.push(replace(st.history(session).current, variants=[
        replace(st.history(session).current.variants[0], score=replace(w.score, length=65 * bar))]))
    res = st.edit_variant("long", 1, "continue", {"bars": 1, "seed": "7"})  # past the old 64-bar limit
    assert res.variants[0].bars == 66
    keep = st.keep("long", 1)
    assert keep.bars == 66  # Generate continues the whole variant


def test_nothing_to_edit_undo_or_keep_before_a_generation(make_studio):
    st = make_studio()
    with pytest.raises(RequestError, match="^Generate first: there is no variant to edit yet"):
        st.edit_variant("new", 1, "continue", {})
    with pytest.raises(RequestError, match=r"^Nothing to undo\.$"):
        st.undo("new")
    with pytest.raises(RequestError, match=r"^Generate first: there is no variant to keep yet\.$"):
        st.keep("new", 1)


def test_keep_as_start_gives_the_variants_midi_and_bars(first):
    st, session = first
    state = st.history(session).current
    keep = st.keep(session, 2)
    assert keep.midi == state.variants[1].midi and keep.midi.is_file()
    assert keep.bars == state.variants[1].bars
    with pytest.raises(RequestError, match="^Generate first"):
        st.keep(session, 3)


def test_restore_renders_pruned_files_again(first):
    st, session = first
    state = st.history(session).current
    for v in state.variants:
        v.mp3.unlink()
    again = restore(state, st.store)
    assert again is not state and all(p.exists() for v in again.variants for p in v.files())
    assert [v.score for v in again.variants] == [v.score for v in state.variants]
    assert restore(again, st.store) is again  # nothing missing: the same state
    st.history(session).replace(again)


def test_undo_makes_pruned_files_again(first):
    st, session = first
    st.edit_variant(session, 1, "regenerate_part", {"part": "bass", "seed": "8"})
    earlier = st.history(session)._past[-2]
    for v in earlier.variants:
        v.midi.unlink()
    back = st.undo(session)
    assert all(v.midi.is_file() for v in back.variants) and st.history(session).current is back


def test_an_uploaded_song_is_edited_whole_and_its_copy_lives_beside_the_variant(make_studio, tmp_path):
    """A prompt file may be an upload Gradio prunes: the recipe keeps its own copy in the request folder."""
    st = make_studio()
    upload = write_midi(load_midi(SONG).first_bars(2), tmp_path / "upload.mid")  # a 2-bar song
    song = load_midi(upload)
    res = st.edit_upload("add_part", {"midi": {"path": str(upload)}, "part": "strings", "seed": "3"})
    upload.unlink()
    v = res.variants[0]
    assert v.recipe.prompt_file.exists() and v.recipe.prompt_file.parent == v.midi.parent
    assert res.action == "strings part added" and v.bars == song.bars and rows(song) <= rows(v.score)
    assert sorted(s.group for s in v.stems) == sorted(v.score.notes_per_group())  # a short song: every part's stem
    assert st.history(None).current is None  # no history for the named endpoints
    with pytest.raises(RequestError, match="^MIDI file: add part needs a MIDI file"):
        st.edit_upload("add_part", {"part": "strings"})
    with pytest.raises(RequestError, match="^MIDI file: the upload is no longer on the server"):
        st.edit_upload("continue", {"midi": str(upload)})


def test_continuing_a_long_song_previews_the_new_bars_and_the_bars_before(make_studio, tmp_path):
    """The MIDI holds the whole song; the MP3 plays the edit with 4 bars before it, and the roll's playhead starts
    where the MP3 does."""
    from bench.fair import dense_song
    from render.roll import roll_data

    song = dense_song(notes=600, bars=40, tracks=3)
    upload = write_midi(song, tmp_path / "long.mid")
    res = make_studio().edit_upload("continue", {"midi": str(upload), "bars": 2, "seed": "3"})
    v = res.variants[0]
    assert v.bars >= 42 and rows(load_midi(upload)) <= rows(v.score)
    assert v.preview_bars == (37, 42) and v.stems == []
    bar_seconds = song.bar_steps / V.STEPS_PER_QUARTER * 60.0 / song.bpm
    assert 6 * bar_seconds <= v.audio_seconds <= 6 * bar_seconds + 3.0  # the window and its release
    assert abs(v.audio_start - 36 * bar_seconds) < 1e-6
    assert roll_data(v.score, v.audio_seconds, v.audio_start)["audio_start"] == round(v.audio_start, 4)
    assert "the preview plays bars 37-42" in res.summary
    assert any(w.startswith("stems left out of the zip: an edit of a long song previews bars 37-42") for w in res.warnings)


def spy_renders(monkeypatch) -> tuple[list[str], list]:
    """(the thread of every FluidSynth run, what each `Backing.audio` call returned), filled as they happen."""
    import threading

    from render import ahead, audio

    runs, used = [], []
    synthesize, backing_audio = audio._synthesize, ahead.Backing.audio
    monkeypatch.setattr(audio, "_synthesize", lambda midi, *a, **k: runs.append(threading.current_thread().name)
                        or synthesize(midi, *a, **k))
    monkeypatch.setattr(ahead.Backing, "audio", lambda self, midi, rate: used.append(backing_audio(self, midi, rate))
                        or used[-1])
    return runs, used


def test_a_long_part_edit_renders_the_songs_other_parts_while_it_writes_the_new_one(make_studio, tmp_path,
                                                                                    monkeypatch):
    """Where a part edit's previews write the new part's stem alone and the song is long (here both limits are
    lowered), the song's other parts are rendered while the model writes, and the preview's mix takes that audio;
    a shorter song's are rendered after."""
    from studio import budget as B
    from studio import pipeline

    monkeypatch.setattr(B, "PART_STEMS_SECONDS", 1)
    upload = write_midi(load_midi(SONG).first_bars(2), tmp_path / "upload.mid")
    runs, used = spy_renders(monkeypatch)
    st = make_studio()
    res = st.edit_upload("add_part", {"midi": {"path": str(upload)}, "part": "strings", "seed": "3"})
    assert [[s.group for s in v.stems] for v in res.variants] == [["strings"]] and used == [] and len(runs) == 2
    monkeypatch.setattr(pipeline, "AHEAD_PART_SECONDS", 0.0)
    runs.clear()
    res = st.edit_upload("add_part", {"midi": {"path": str(upload)}, "part": "strings", "seed": "3"})
    assert [[s.group for s in v.stems] for v in res.variants] == [["strings"]]
    assert len(used) == 1 and used[0] is not None
    assert runs.count("render-backing") == 1 and len(runs) == 2  # the song's parts, then the new part alone


@pytest.mark.parametrize("kind, fields", [("continue", {"bars": 2}), ("infill", {"first_bar": 20, "last_bar": 21})])
def test_a_long_songs_span_edit_renders_the_bars_around_it_while_it_writes(make_studio, tmp_path, monkeypatch, kind,
                                                                           fields):
    """A continuation or an infill of a long song previews a window of bars: the window's kept notes are rendered
    while the model writes, and after it the new notes alone."""
    from bench.fair import dense_song

    upload = write_midi(dense_song(notes=600, bars=40, tracks=3), tmp_path / "long.mid")
    runs, used = spy_renders(monkeypatch)
    res = make_studio().edit_upload(kind, {"midi": str(upload), "seed": "3", **fields})
    v = res.variants[0]
    assert v.preview_bars is not None and v.mp3.is_file()
    assert len(used) == 1 and used[0] is not None
    assert runs.count("render-backing") == 1  # the kept notes, ahead; after generation, the new ones alone
