"""POP909 as a corpus source (the song reader: parts, chords, key), the held-out real-songs splits, licences
in the index, long pieces cut into segments, and the command line's --sources / --pop909."""

from __future__ import annotations

import importlib
import json
from collections import defaultdict
from pathlib import Path

import mido
import numpy as np
import pytest

import tokenizer
from tokenizer import vocab as V
from training import corpus
from training.corpus.__main__ import main
from training.corpus.pop909 import ROLE_GROUP, read_labels, seconds_to_ticks
from training.data import load_split, piece_tokens

build_mod = importlib.import_module("training.corpus.build")  # the module (the package's `build` is the function)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pop909"
SONGS = {"229": "train", "147": "realdev", "317": "realtest"}


@pytest.mark.parametrize("song", sorted(SONGS))
def test_read_song_keeps_parts_chords_and_key(song):
    s = corpus.read_song(FIXTURES / song)
    mid = mido.MidiFile(FIXTURES / song / f"{song}.mid")
    per_track = {t.name: sum(m.type == "note_on" and m.velocity > 0 for m in t) for t in mid.tracks if t.name}
    got = s.score.notes_per_group()
    assert set(got) == {ROLE_GROUP[r] for r, n in per_track.items() if n}
    assert sum(got.values()) <= sum(per_track.values())  # only exact duplicates merge
    assert got["reed"] >= 0.95 * per_track["MELODY"] and got["piano"] >= 0.95 * per_track["PIANO"]
    assert s.score.style == "pop" and s.score.time_signature != (1, 4)
    # chords: on the step grid, in order, inside the song, the file's own labels less "N"
    labels = [c for _, _, c in read_labels(FIXTURES / song / "chord_midi.txt") if c != "N"]
    assert [c for _, _, c in s.chords] == labels
    starts = np.asarray([a for a, _, _ in s.chords])
    assert (np.diff(starts) > 0).all() and all(b > a for a, b, _ in s.chords)
    assert s.chords[-1][1] <= s.score.end_step + 4 * V.STEPS_PER_BAR
    assert s.key and s.key == read_labels(FIXTURES / song / "key_audio.txt")[0][2]


def test_chords_sit_on_the_notes_they_name():
    """The chord labels' roots sound in the piano part while the chord lasts (the step conversion is right)."""
    s = corpus.read_song(FIXTURES / "229")
    names = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6, "Gb": 6, "G": 7,
             "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11}
    n = s.score.notes
    hits = 0
    for a, b, chord in s.chords:
        root = names[chord.split(":")[0]]
        inside = n[(n["onset"] >= a) & (n["onset"] < b) & (n["group"] == V.GROUPS.index("piano"))]
        hits += bool(len(inside)) and root in set(inside["pitch"] % 12)
    assert hits / len(s.chords) > 0.8


def test_seconds_to_ticks_follows_tempo_changes():
    tempos = [(0, 500_000), (960, 1_000_000)]  # 120 BPM for 2 quarters (1 s), then 60 BPM
    got = seconds_to_ticks(np.asarray([0.0, 0.5, 1.0, 2.0]), tempos, 480)
    assert np.allclose(got, [0, 480, 960, 1440])
    assert np.allclose(seconds_to_ticks(np.asarray([1.0]), [], 480), [960])


@pytest.fixture(scope="module")
def pop_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("pop")
    return out, corpus.build(out, workers=1, progress=False, sources=["pop909"], pop909=FIXTURES)


def test_pop909_pieces_land_in_their_splits_with_licence_and_labels(pop_build):
    out, stats = pop_build
    rows = {r["id"]: r for s in corpus.ALL_SPLITS for r in load_split(out, s)[1]}
    assert {pid: r["split"] for pid, r in rows.items()} == {f"pop909:{k}": v for k, v in SONGS.items()}
    for r in rows.values():
        assert r["license"] == "MIT" and r["source"] == "pop909" and r["style"] == "pop"
        assert r["key"] and r["chord_labels"] > 10 and r["segments"] == 1 and r["start_step"] == 0
        assert set(r["groups"]) <= {"reed", "pipe", "piano"} and not r["drums"]
        toks = load_split(out, r["split"])[0]
        assert len(tokenizer.decode(piece_tokens(toks, r)).notes) == r["n_notes"]
    assert stats["splits"]["realdev"]["pieces"] == stats["splits"]["realtest"]["pieces"] == 1
    assert stats["pieces"] == 1 and stats["real"]["pieces"] == 2  # "pieces": the in-domain splits
    assert stats["per_source"]["pop909"]["pieces"] == 3 and stats["licenses"] == {"pop909": "MIT"}
    report = (out / "report.md").read_text()
    assert "| pop909 | MIT | 3 | 3 |" in report and "realtest (held out)" in report


def test_real_splits_hold_out_a_share_of_the_real_sources_only():
    ids = [f"pop909:{i:03d}" for i in range(1, 910)]
    got = [corpus.split_of(i, "pop909") for i in ids]
    share = {s: got.count(s) / len(got) for s in corpus.ALL_SPLITS}
    assert 0.06 < share["realdev"] + share["realtest"] < 0.14 and min(share["realdev"], share["realtest"]) > 0.02
    assert got == [corpus.split_of(i, "pop909") for i in ids]
    # a held-out song's group is never in train; other sources and the plain call keep the old split
    for i in ids:
        if corpus.split_of(i, "pop909") not in corpus.REAL_SPLITS:
            assert corpus.split_of(i, "pop909") == corpus.split_of(i)
    assert all(corpus.split_of(i, "abc") in corpus.SPLITS for i in ids)
    assert set(corpus.REAL_HOLDOUT) == {"pop909", "freedoom", "openmsx"}


def test_long_pieces_are_cut_into_segments_at_bar_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(build_mod, "MAX_NOTES", 300)
    whole = corpus.read_song(FIXTURES / "229").score
    out = tmp_path / "seg"
    stats = corpus.build(out, workers=1, progress=False, sources=["pop909"], pop909=FIXTURES)
    rows = [r for s in corpus.ALL_SPLITS for r in load_split(out, s)[1]]
    by_song = defaultdict(list)
    for r in rows:
        by_song[r["group"]].append(r)
    assert set(by_song) == {f"pop909:{k}" for k in SONGS} and stats["skipped_total"] == 0
    segs = sorted(by_song["pop909:229"], key=lambda r: r["segment"])
    assert len(segs) >= 3 and [r["id"] for r in segs] == [f"pop909:229@{k}" for k in range(len(segs))]
    assert {r["split"] for r in segs} == {"train"} and {r["segments"] for r in segs} == {len(segs)}
    assert all(r["n_notes"] <= 300 for r in segs) and sum(r["n_notes"] for r in segs) == len(whole.notes)
    bar = whole.bar_steps
    assert all(r["start_step"] % bar == 0 for r in segs)
    assert [r["start_step"] for r in segs] == sorted(r["start_step"] for r in segs)
    # the segments put back together are the song (notes cut at the segment's end at most)
    toks = load_split(out, "train")[0]
    onsets = np.concatenate([tokenizer.decode(piece_tokens(toks, r)).notes["onset"] + r["start_step"] for r in segs])
    assert np.array_equal(np.sort(onsets), np.sort(whole.notes["onset"]))
    src = stats["per_source"]["pop909"]
    assert src["pieces"] == 3 and src["segments"] == len(rows) > 3


def test_pieces_skipped_as_too_long_by_an_older_build_are_segmented_on_reassembly(tmp_path, monkeypatch):
    out = tmp_path / "old"
    item = next(corpus.iter_pop909(FIXTURES))
    build_mod.save_cache(build_mod.cache_path(out, item["id"]),
                         dict(id=item["id"], pieces=[], skipped=[(item["id"], "too long (> 20000 notes)")], seconds=0))
    stats = corpus.build(out, workers=1, progress=False, sources=["pop909"], pop909=FIXTURES)
    assert stats["items_cached"] == 1 and stats["skipped_total"] == 0
    assert stats["per_source"]["pop909"]["pieces"] == 3


def test_cli_sources_and_pop909_folder(tmp_path, capsys, monkeypatch):
    assert main(["build", "--out", str(tmp_path / "a"), "--pop909", str(tmp_path / "nowhere"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "--pop909" in err[0]
    assert main(["build", "--out", str(tmp_path / "b"), "--sources", "pop909,lakh", "--quiet"]) == 2
    assert "unknown source lakh" in capsys.readouterr().err
    assert main(["build", "--out", str(tmp_path / "c"), "--sources", "pop909", "--pop909", str(FIXTURES),
                 "--workers", "1", "--quiet"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["per_source"]["pop909"]["pieces"] == 3 and got["real"]["pieces"] == 2 and got["left_out"] == []
    # the default folder missing: POP909 is left out, said so, and the other sources go on
    import training.corpus.__main__ as cli

    monkeypatch.setattr(cli, "DEFAULT_POP909", tmp_path / "no-pop909")
    assert main(["build", "--out", str(tmp_path / "d"), "--sources", "pop909,openmsx", "--limit", "2",
                 "--workers", "1", "--quiet"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got["left_out"]) == 1 and got["left_out"][0].startswith("pop909:")
    assert list(got["per_source"]) == ["openmsx"]
