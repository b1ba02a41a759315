"""studio.pipeline and Studio.generate: engine -> variants -> rendered files -> zip, with a missing soundfont,
progress and Stop, plain words for parts an engine left out, the summary, the stems' limit, and the runners
(local, and ZeroGPU's spaces.GPU sized per request)."""

from __future__ import annotations

import re
from pathlib import Path

import mido
import numpy as np
import pytest

import studio
from model.request import GenerationRequest, RequestError
from render import audio
from studio.budget import stem_groups
from studio.results import missing_parts
from studio.runner import LocalRunner, ZeroGPURunner, default_runner, gpu_seconds
from tokenizer import Score
from tokenizer import vocab as V
from tokenizer.score import NOTE_DTYPE

OPENMSX = sorted(Path("/usr/share/games/openttd/baseset/openmsx").glob("*.mid"))
SMALL = {"groups": ["piano"], "drums": False, "bars": 2, "variants": 1, "seed": "3"}

pytestmark = pytest.mark.usefixtures("one_thread")


def test_missing_soundfont_still_delivers_midi(make_studio, tmp_path, monkeypatch):
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    res = make_studio().generate({**SMALL, "drums": True, "variants": 2})
    assert len(res.variants) == 2
    for v in res.variants:
        assert v.midi.is_file() and v.png.is_file() and v.mp3 is None
        assert v.preview_error.startswith("no preview: soundfont")
    assert res.warnings and "no preview" in res.summary
    assert res.zip_path.is_file()


def test_progress_and_stop(make_studio):
    st = make_studio()
    seen = []
    st.generate(SMALL, session="s", progress=lambda f, what: seen.append((f, what)))
    fracs = [f for f, _ in seen]
    assert fracs[0] == 0.0 and fracs[-1] == 1.0 and fracs == sorted(fracs)
    bars = [re.fullmatch(r"generating: (\d+) of (\d+) bars", what) for _, what in seen if what.startswith("gen")]
    done = [int(m[1]) for m in bars]  # bars done of bars to do, as the progress bar says
    assert all(bars) and {int(m[2]) for m in bars} == {int(SMALL["bars"])} and done[0] == 0 and done == sorted(done)

    def stop_at_first_report(f, what):
        st.stop("s")

    with pytest.raises(studio.Cancelled):
        st.generate({**SMALL, "bars": 8}, session="s", progress=stop_at_first_report)
    assert st.history("s").current is not None and not st.history("s").can_undo  # a stopped run is not pushed
    # the engine is free again after a stop, and the session's flag is cleared by the next run
    assert st.generate({**SMALL, "bars": 1, "seed": "4"}, session="s").variants
    assert st.history("s").can_undo


def test_with_a_session_the_result_becomes_its_current_state(make_studio):
    st = make_studio()
    res = st.generate({**SMALL, "bars": 1}, session="a")
    assert st.history("a").current is res and st.history("b").current is None
    assert st.generate({**SMALL, "bars": 1}).variants and st.history("a").current is res  # no session: not kept


def test_request_an_engine_cannot_serve_is_a_clear_message(make_studio):
    with pytest.raises(RequestError, match="^Instrument groups: choose at least one"):
        make_studio().generate({"engine": "lstm", "groups": [], "drums": True, "bars": 2, "variants": 1, "seed": "3",
                                "bpm": 110})


def test_only_files_in_the_upload_cache_are_read(make_studio, tmp_path):
    if not OPENMSX:
        pytest.skip("openttd-openmsx MIDI files are not installed")
    st = make_studio(uploads=studio.UploadCache(tmp_path / "cache"))
    with pytest.raises(RequestError, match="only a file uploaded to this page"):
        st.generate({**SMALL, "midi": str(OPENMSX[0])})
    with pytest.raises(RequestError, match="only a file uploaded to this page"):
        st.edit_upload("continue", {"midi": str(OPENMSX[0]), "bars": 1})


def test_summary_of_a_continuation_counts_prompt_and_new_bars_at_the_uploads_tempo(make_studio, tmp_path):
    """A 3/4 upload at 153 BPM used to be summarized as '8 bars at 120 BPM' while the variant held 12."""
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr += [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(153)), mido.MetaMessage("time_signature", numerator=3)]
    for i in range(12):  # 4 bars of 3/4, a note a beat
        tr += [mido.Message("note_on", note=60 + i % 5, velocity=90, time=0),
               mido.Message("note_off", note=60 + i % 5, velocity=0, time=480)]
    mf.tracks.append(tr)
    path = tmp_path / "waltz.mid"
    mf.save(path)
    res = make_studio().generate({**SMALL, "midi": str(path), "prompt_bars": 4})
    assert "4 prompt bars + 2 new bars at 153 BPM in 3/4" in res.summary, res.summary
    assert "- variant 1: 6 bars" in res.summary


def test_generate_continues_every_bar_of_a_long_upload(make_studio, tmp_path):
    """"Use the first N bars" goes past the 64 bars a request writes: a 90-bar song is continued whole."""
    from bench.fair import dense_song
    from tokenizer import load_midi, write_midi

    path = write_midi(dense_song(notes=500, bars=90, tracks=2), tmp_path / "long.mid")
    res = make_studio().generate({**SMALL, "midi": str(path), "prompt_bars": 90})
    assert "90 prompt bars + 2 new bars" in res.summary, res.summary
    v = res.variants[0]
    assert v.bars == 92 and len(v.score.notes) > len(load_midi(path).notes) - 5
    assert v.preview_bars == (87, 92)  # the new bars with 4 before


def test_summary_counts_the_engines_own_unit(make_studio):
    res = make_studio().generate({**SMALL, "engine": "multi-rnn", "bars": 1})
    assert "frames/s" in res.summary and "tokens/s" not in res.summary


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
    said = missing_parts(eng, req, Score(notes))
    assert said.startswith("engine gru does not play bass, strings (for this request it writes only piano)"), said
    req = GenerationRequest(groups=("piano", "bass"), drums=False).validate()
    tf = get_engine("transformer")
    assert missing_parts(tf, req, Score(notes)) == ("no bass notes in this variant (the model left it out; "
                                                    "try another seed)")
    added = GenerationRequest(groups=("piano",), drums=False, prompt=Score(notes), edit="add_part",
                              part="strings").validate()
    said = missing_parts(tf, added, Score(notes))  # an added part: only it is asked for
    assert "strings" in said and "piano" not in said.split("(")[0]
    with_part = notes.copy()
    with_part["group"] = V.GROUPS.index("strings")
    assert missing_parts(tf, added, Score(np.concatenate([notes, with_part]))) is None


class FakeSpaces:
    """The `spaces` API: GPU(duration=fn)(f) runs f, recording the duration asked for."""
    seen: dict = {}

    @staticmethod
    def GPU(duration):  # noqa: N802 (the spaces API)
        def wrap(fn):
            def call(*args):
                FakeSpaces.seen["seconds"] = duration(*args)
                return fn(*args)
            return call
        return wrap


def test_on_a_zero_gpu_space_generation_runs_under_spaces_gpu(checkpoint_root, make_studio, monkeypatch):
    """With a `spaces` module, the engine call is wrapped in spaces.GPU with a duration sized to the request;
    the runner is chosen when the studio is built."""
    from model.engine import get_engine

    assert isinstance(default_runner(), LocalRunner)
    monkeypatch.setattr("studio.runner.import_spaces", lambda: FakeSpaces)
    assert isinstance(studio.Studio(studio.OutputStore(Path("unused"))).runner, ZeroGPURunner)
    run = ZeroGPURunner(FakeSpaces)
    eng = get_engine("transformer")
    small = GenerationRequest(groups=("piano",), drums=False, bars=1, seed=3).validate()
    scores, stats = run(eng, None, small)
    assert len(scores) == 1 and stats["tokens"] > 0
    short = FakeSpaces.seen["seconds"]
    run(eng, None, GenerationRequest(groups=("piano",), drums=False, bars=3, variants=5, seed=3).validate())
    assert short == gpu_seconds("transformer", None, small) and FakeSpaces.seen["seconds"] > short
    res = make_studio(runner=run).generate({**SMALL, "bars": 1})
    assert res.variants and FakeSpaces.seen["seconds"] == short


def test_gpu_time_counts_the_bars_an_edit_writes_and_reads(checkpoint_root):
    notes = np.zeros(1, NOTE_DTYPE)
    notes["group"], notes["pitch"], notes["duration"] = V.GROUPS.index("piano"), 60, 4
    song = Score(notes).first_bars(4)
    base = gpu_seconds("transformer", None, GenerationRequest(bars=2).validate())
    cont = gpu_seconds("transformer", None, GenerationRequest(bars=2, prompt=song, edit="continue").validate())
    add = gpu_seconds("transformer", None, GenerationRequest(bars=2, prompt=song, edit="add_part",
                                                             part="bass").validate())
    assert (base, cont, add) == (23, 29, 26)  # 20 s + 1.5 s a bar: 2 new; 4 read + 2 new; 4 read


def test_stems_are_left_out_of_huge_requests_with_a_warning():
    request = GenerationRequest(groups=("piano", "bass"), bars=64, bpm=40).validate()
    assert stem_groups(request, 384, 2 * 384) == (None, None)  # 64 bars at 40 BPM: 384 s, two tracks
    assert stem_groups(request, 8 * 384, 8 * 2 * 384) == ([], (  # 8 variants: 102 minutes
        "stems left out of the zip: they would hold 102 minutes of audio (the limit is 40); ask for fewer variants "
        "or bars to get them"))


def test_a_long_part_edit_writes_the_new_parts_stem_only():
    """Every part's stems up to PART_STEMS_SECONDS of audio; past that, the new part's only (its other parts are
    unchanged); past STEMS_MAX_SECONDS of music, none."""
    from studio import budget as B

    notes = np.zeros(2, NOTE_DTYPE)
    notes["group"], notes["pitch"], notes["duration"], notes["onset"] = [0, 4], [60, 40], 4, [0, 8]
    request = GenerationRequest(prompt=Score(notes, length=64), edit="add_part", part="strings").validate()
    minutes = B.PART_STEMS_SECONDS // 60
    assert stem_groups(request, 60, 3 * 60) == (None, None)  # a short song: every part's, as before
    groups, note = stem_groups(request, 4 * 60, 3 * 4 * 60)
    assert groups == [V.GROUPS.index("strings")] and note.startswith(
        f"stems: the new strings part's only; every part's would hold 12 minutes of audio (an added or regenerated "
        f"part writes them up to {minutes})")
    assert stem_groups(request, B.STEMS_MAX_SECONDS + 60, 3 * (B.STEMS_MAX_SECONDS + 60))[0] == []
    from model.edits import DENSE_HELP  # the part edits' help says when (model/ cannot import the studio's limit)

    assert f"over {minutes} minutes of audio" in DENSE_HELP


def test_progress_reaches_the_page_when_its_text_changes_and_at_most_every_quarter_second(monkeypatch):
    from studio import pipeline

    clock = [100.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: clock[0])
    seen: list[str] = []
    stop = [False]
    report = pipeline.reporter(lambda f, what: seen.append(what), lambda: stop[0])
    for i in range(300):  # the engine reports at every note, far more often than the page needs
        report(i / 1000, f"generating: {i // 100} of 3 bars")
    assert seen == [f"generating: {b} of 3 bars" for b in range(3)]
    clock[0] += pipeline.REPORT_EVERY
    report(0.35, "generating: 2 of 3 bars")  # the same text, a quarter second later: the bar moves
    report(1.0, "done")
    assert seen[3:] == ["generating: 2 of 3 bars", "done"]
    stop[0] = True
    with pytest.raises(studio.Cancelled):
        report(0.5, "generating: 2 of 3 bars")
