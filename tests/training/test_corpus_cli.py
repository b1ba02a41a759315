"""`python -m training.corpus build`: errors a newcomer can act on (exit status 2, one line on stderr),
progress bars with totals, and library code that logs instead of printing."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tokenizer
from training import corpus
from training.corpus.__main__ import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "training" / "corpus"


def _write_midis(folder: Path, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        notes = tokenizer.make_notes(np.arange(16) * 8, 8, 5, 0, 60 + np.arange(16) % 12)
        tokenizer.write_midi(tokenizer.Score(notes, bpm=100 + i), folder / f"{i}.mid")
    return folder


def test_missing_midi_dir_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "training.corpus", "build", "--out", str(out), "--midi-dir",
                        "/no/such/folder", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "/no/such/folder" in lines[0] and "--midi-dir" in lines[0]
    assert r.stdout == "" and not out.exists()


def test_midi_dir_without_midi_files_exits_2(tmp_path, capsys):
    src = tmp_path / "empty"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "notes.txt").write_text("not midi")
    assert main(["build", "--out", str(tmp_path / "out"), "--midi-dir", str(src), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(src) in err[0] and "no MIDI files" in err[0]
    with pytest.raises(corpus.CorpusError):
        corpus.build(tmp_path / "out2", midi_dirs=[src], progress=False)
    assert not (tmp_path / "out2").exists()


def test_nothing_to_build_exits_2(tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path / "out"), "--no-default", "--quiet"]) == 2
    assert "--midi-dir" in capsys.readouterr().err


def test_build_with_no_pieces_exits_2(tmp_path, capsys):
    src = tmp_path / "broken"
    src.mkdir()
    (src / "x.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\xff\xffgarbage")
    out = tmp_path / "out"
    assert main(["build", "--out", str(out), "--midi-dir", str(src), "--no-default", "--workers", "1",
                 "--quiet"]) == 2
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "0 pieces" in errors[0] and str(out / "report.md") in errors[0]
    assert captured.out == ""


def test_build_prints_json_and_exits_0(tmp_path, capsys):
    src = _write_midis(tmp_path / "m", 2)
    assert main(["build", "--out", str(tmp_path / "out"), "--midi-dir", str(src), "--no-default",
                 "--workers", "1", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["pieces"] == 2


def test_in_process_items_keep_stdout_for_the_json(capfd):
    """With --workers 1, abc2midi's warnings (written to fd 1 by its C parser) no longer land in stdout."""
    from training.corpus.build import _fd1_silenced

    with _fd1_silenced():
        os.write(1, b"Warning in line-char 11-38 : Ignoring reserved character\n")
    print("kept")
    assert capfd.readouterr().out == "kept\n"


def test_progress_bars_show_totals(tmp_path, capsys):
    src = _write_midis(tmp_path / "m", 3)
    corpus.build(tmp_path / "out", midi_dirs=[src], workers=1, default=False, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"processing: 100%.*\b3/3\b", err), err
    assert re.search(r"assembling: 100%.*\b3/3\b", err), err
    # a resumed build counts the cached items as done
    _write_midis(src, 1, start=3)
    corpus.build(tmp_path / "out", midi_dirs=[src], workers=1, default=False, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"processing: +75%.*\b3/4\b", err) and re.search(r"processing: 100%.*\b4/4\b", err), err


def test_limit_help_says_what_it_limits(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "at most N items in all" in help_text


def test_library_code_logs_and_says_what_things_are():
    files = sorted(PACKAGE.glob("*.py"))
    assert files and not (ROOT / "training" / "corpus.py").exists()
    for path in files:
        text = path.read_text()
        assert not re.search(r"DESIGN\.md|\bsection \d|\bseed 0\d\d", text, re.I), path.name
        if path.name == "__main__.py":  # the CLI prints its result
            continue
        calls = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"{path.name}:{calls[0].lineno} prints; use logging or tqdm"


def test_merge_concatenates_splits_with_offsets_moved_on(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["build", "--out", str(a), "--midi-dir", str(_write_midis(tmp_path / "ma", 12)), "--no-default",
                 "--quiet", "--workers", "1"]) == 0
    assert main(["build", "--out", str(b), "--midi-dir", str(_write_midis(tmp_path / "mb", 12, start=50)),
                 "--no-default", "--quiet", "--workers", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "mix"
    assert main(["merge", "--out", str(out), str(a), str(b)]) == 0
    for split in ("train", "validation", "test"):
        ta, tb = (np.load(d / f"{split}.tokens.npy") for d in (a, b))
        tm = np.load(out / f"{split}.tokens.npy")
        assert np.array_equal(tm, np.concatenate([ta, tb]))
        rows = [json.loads(x) for x in (out / f"{split}.index.jsonl").read_text().splitlines()]
        n_a = len((a / f"{split}.index.jsonl").read_text().splitlines())
        for r in rows:  # every row still points at its own piece's tokens
            src = a if rows.index(r) < n_a else b
            own = next(json.loads(x) for x in (src / f"{split}.index.jsonl").read_text().splitlines()
                       if json.loads(x)["id"] == r["id"])
            seg = tm[r["offset"]: r["offset"] + r["length"]]
            assert np.array_equal(seg, np.load(src / f"{split}.tokens.npy")[own["offset"]: own["offset"] + own["length"]])
        ridx = np.load(out / f"{split}.pianoroll_index.npy")
        assert len(ridx) == len(np.load(out / f"{split}.pianoroll.npy")) and (len(ridx) == 0 or ridx.max() < len(rows))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["merged_from"] == [str(a), str(b)]
    assert stats["splits"]["train"]["tokens"] == len(np.load(out / "train.tokens.npy"))


def test_merge_of_a_folder_that_is_not_a_corpus_exits_2(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["merge", "--out", str(tmp_path / "mix"), str(tmp_path / "x"), str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a built corpus" in err[0] and "training.corpus build" in err[0]
