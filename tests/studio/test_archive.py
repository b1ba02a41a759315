"""studio.archive and model.session: the zip of a page state (every variant's files, stems, session.json), the
session format written and read in one place, and the CLI that makes the zip's MIDI again from it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model.request import GenerationRequest, RequestError
from model.session import SESSION_FORMAT, SessionEntry, read_session, session_content
from studio.pipeline import restore
from tokenizer import Score, write_midi
from tokenizer.score import NOTE_DTYPE

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model.generate", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_zip_session_replays_to_the_same_midi(first, tmp_path):
    st, session = first
    st.edit_variant(session, 2, "add_part", {"part": "strings", "seed": "5"})
    state = restore(st.history(session).current, st.store)
    with zipfile.ZipFile(state.zip_path) as z:
        names = z.namelist()
        z.extractall(tmp_path / "zip")
        kinds = {Path(i.filename).suffix: i.compress_type for i in z.infolist()}
    # MP3, FLAC and PNG are compressed already: stored as they are; MIDI and session.json deflated
    assert kinds == {".mid": zipfile.ZIP_DEFLATED, ".json": zipfile.ZIP_DEFLATED, ".png": zipfile.ZIP_STORED,
                     ".mp3": zipfile.ZIP_STORED, ".flac": zipfile.ZIP_STORED}
    v = state.variants[0]
    assert (tmp_path / "zip" / "variant-1" / "variant-1.mp3").read_bytes() == v.mp3.read_bytes()
    assert "session.json" in names and all(f"variant-{v.index}/variant-{v.index}.mid" in names for v in state.variants)
    for v in state.variants:  # stems: one MIDI and one audio file per track (the edited variant's too: it is short)
        stems = {n for n in names if n.startswith(f"variant-{v.index}/stems/")}
        assert stems == {f"variant-{v.index}/stems/{g}.{ext}" for g in v.score.notes_per_group() for ext in ("mid", "flac")}
    session_file = tmp_path / "zip" / "session.json"
    content = json.loads(session_file.read_text())
    assert content["format"] == SESSION_FORMAT and len(content["variants"]) == len(state.variants)
    assert content["variants"][1]["request"]["edit"] == "add_part"  # the edited variant: its prompt is in the zip
    assert "prompts/variant-2-prompt.mid" in names
    entries = read_session(session_file)
    assert [e.variant for e in entries] == [1, 2] and entries[1].request.prompt is not None
    out = cli("--session", str(session_file), "--out", str(tmp_path / "replay"), "--threads", "1")  # as `first`
    assert out.returncode == 0, out.stderr[-2000:]
    for v in state.variants:
        again = (tmp_path / "replay" / f"variant-{v.index}.mid").read_bytes()
        assert again == (tmp_path / "zip" / f"variant-{v.index}" / f"variant-{v.index}.mid").read_bytes()


def test_a_broken_session_file_is_one_line(tmp_path):
    bad = tmp_path / "session.json"
    bad.write_text(json.dumps({"format": "something else"}))
    out = cli("--session", str(bad), timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a MIDI Bangers session" in out.stderr


def test_session_content_reads_back_as_the_same_requests(tmp_path):
    """What session_content writes, read_session reads: the requests (validated), their prompt cut to its bars,
    an uploaded reference; a bad entry is one ValueError that names what it lacks."""
    notes = np.zeros(3, NOTE_DTYPE)
    notes["group"], notes["pitch"], notes["duration"], notes["onset"] = 0, [60, 64, 67], 4, [0, 32, 64]
    song = write_midi(Score(notes), tmp_path / "song.mid")
    plain = GenerationRequest(groups=("piano", "bass"), bars=2, seed=7, key="D minor").validate()
    cont = GenerationRequest(groups=("piano",), bars=1, seed=8, prompt=Score(notes).first_bars(2),
                             edit="continue").validate()
    ref = GenerationRequest(seed=9, extra={"reference": Score(notes), "alpha": 0.3}).validate()
    entries = [SessionEntry(1, "transformer", None, plain, 0), SessionEntry(2, "transformer", "runs/x", cont, 0, song, 2),
               SessionEntry(3, "vae-nn", None, ref, 1, reference_file=song)]
    content, files = session_content(entries)
    assert files == {"prompts/variant-2-prompt.mid": song, "prompts/variant-3-reference.mid": song}
    folder = tmp_path / "unzipped"
    for name, path in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(path.read_bytes())
    (folder / "session.json").write_text(json.dumps(content))
    back = read_session(folder / "session.json")
    assert [(e.variant, e.engine, e.checkpoint, e.result_index) for e in back] == [
        (1, "transformer", None, 0), (2, "transformer", "runs/x", 0), (3, "vae-nn", None, 1)]
    assert back[0].request == plain and back[1].request.to_json() == cont.to_json()
    assert np.array_equal(back[1].request.prompt.notes, cont.prompt.notes) and back[1].request.prompt.bars == 2
    assert np.array_equal(back[2].request.extra["reference"].notes, notes) and back[2].request.extra["alpha"] == 0.3
    assert back[0].recipe_key() != back[1].recipe_key()
    del content["variants"][0]["engine"]
    (folder / "session.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="session.json: a session entry lacks or mistypes 'engine'"):
        read_session(folder / "session.json")
    content["variants"][0]["engine"], content["variants"][0]["request"]["bars"] = "transformer", 99
    (folder / "session.json").write_text(json.dumps(content))
    with pytest.raises(RequestError, match="^Length"):
        read_session(folder / "session.json")
