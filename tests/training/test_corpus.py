"""The training corpus builder: a small real build, --midi-dir with a broken file, splits, --limit."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

import tokenizer
from tokenizer import vocab as V
from training import corpus
from training.data import load_pianoroll, load_split, piece_tokens


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    # 16 items: 2 from each of the 8 default sources (openmsx, classical, 6 ABC collections)
    stats = corpus.build(out, limit=16, workers=2, progress=False)
    return out, stats


def test_limit_build_shards_load_and_decode(small):
    out, stats = small
    assert stats["pieces"] > 10
    total_pieces = total_tokens = 0
    for split in corpus.SPLITS:
        for name in ("tokens.npy", "index.jsonl", "pianoroll.npy", "pianoroll_index.npy"):
            assert (out / f"{split}.{name}").exists()
        toks, index = load_split(out, split)
        assert toks.dtype == np.uint16 and isinstance(toks, np.memmap)
        c = stats["splits"][split]
        assert len(index) == c.get("pieces", 0) and len(toks) == c.get("tokens", 0)
        offset = 0
        for row in index:
            assert row["offset"] == offset and row["split"] == split
            offset += row["length"]
            t = piece_tokens(toks, row)
            assert t[0] == V.START and t[-1] == V.END
            groups, drums, style, _ = tokenizer.parse_prefix(t)
            assert drums == row["drums"] and style == row["style"]
            assert [V.GROUPS[g] for g in groups] == row["groups"]
            score = tokenizer.decode(t)
            assert len(score.notes) == row["n_notes"]
        assert offset == len(toks)
        roll, rows = load_pianoroll(out, split)
        assert roll.shape[1:] == (5, 32, 128) and roll.dtype == bool and len(rows) == len(roll)
        if len(rows):
            assert rows.min() >= 0 and rows.max() < len(index)
        total_pieces += len(index)
        total_tokens += len(toks)
    assert total_pieces == stats["pieces"] and total_tokens == stats["tokens"]
    saved = json.loads((out / "stats.json").read_text())
    assert saved["pieces"] == stats["pieces"] and saved["tokens"] == stats["tokens"]
    assert (out / "report.md").read_text().startswith("# Training corpus report")
    # the default sources give drums and several styles even in a tiny build
    assert stats["drums_share"] > 0.3 and len(stats["styles"]) >= 5
    assert set(stats["styles"]) <= set(V.STYLES) | {"none"}


def test_rebuild_uses_cache_and_is_identical(small, tmp_path):
    out, stats = small
    before = (out / "train.tokens.npy").read_bytes()
    again = corpus.build(out, limit=16, workers=1, progress=False)
    assert again["items_processed"] == 0 and again["items_cached"] == stats["items"]
    assert (out / "train.tokens.npy").read_bytes() == before
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_no_tune_leaks_across_splits(small):
    out, _ = small
    where = defaultdict(set)
    for split in corpus.SPLITS:
        for row in load_split(out, split)[1]:
            where[row["group"]].add(split)
            assert corpus.split_of(row["group"]) == split
    assert all(len(s) == 1 for s in where.values())
    # several arrangements of one tune share the tune's group
    arranged = defaultdict(list)
    for split in corpus.SPLITS:
        for row in load_split(out, split)[1]:
            if row["source"] == "abc":
                arranged[row["group"]].append(row["id"])
    assert any(len(v) > 1 for v in arranged.values())


def test_split_is_deterministic_and_balanced():
    ids = [f"abc:x/tune{i}.abc#1" for i in range(4000)]
    a = [corpus.split_of(i) for i in ids]
    assert a == [corpus.split_of(i) for i in ids]
    share = {s: a.count(s) / len(a) for s in corpus.SPLITS}
    assert 0.87 < share["train"] < 0.93 and 0.03 < share["test"] < 0.07


def test_arrangements_of_a_tune_share_one_split():
    item = next(corpus.iter_abc())
    res = corpus.process_item(item)
    assert res["pieces"], res["skipped"]
    groups = {meta["group"] for meta, _, _ in res["pieces"]}
    assert groups == {item["group"]}
    assert len({corpus.split_of(g) for g in groups}) == 1


def _score(seed: int) -> tokenizer.Score:
    rng = np.random.default_rng(seed)
    n = 40
    notes = tokenizer.make_notes(np.arange(n) * 8, 8, 5, rng.choice([0, 4, 11], n), rng.integers(40, 80, n))
    return tokenizer.Score(notes, bpm=110)


def test_midi_dir_streams_and_skips_broken(tmp_path):
    src = tmp_path / "midis"
    (src / "sub").mkdir(parents=True)
    tokenizer.write_midi(_score(1), src / "a.mid")
    tokenizer.write_midi(_score(2), src / "sub" / "b.MID")
    tokenizer.write_midi(_score(3), src / "sub" / "c.midi")
    (src / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\xff\xffgarbage")
    (src / "notes.txt").write_text("not midi")
    out = tmp_path / "out"
    stats = corpus.build(out, midi_dirs=[src], workers=1, default=False, progress=False)
    assert stats["pieces"] == 3 and stats["items"] == 4
    assert stats["skipped_total"] == 1
    (reason,) = stats["skipped"]
    assert reason.startswith("broken")
    assert stats["skipped_examples"][reason] == ["midi:midis/broken.mid"]
    rows = [r for s in corpus.SPLITS for r in load_split(out, s)[1]]
    assert {r["style"] for r in rows} == {None} and all(r["source"] == "midi" for r in rows)
    for r in rows:
        toks = load_split(out, r["split"])[0]
        assert len(tokenizer.decode(piece_tokens(toks, r)).notes) == 40


def test_midi_walk_is_lazy_and_edits_invalidate_the_cache(tmp_path):
    import inspect

    src = tmp_path / "m"
    src.mkdir()
    tokenizer.write_midi(_score(4), src / "x.mid")
    walk = corpus.walk_midi(str(src))
    assert inspect.isgenerator(walk) and list(walk) == [str(src / "x.mid")]
    (item,) = corpus.iter_midi_dir(str(src))
    key = item["cache_key"]
    tokenizer.write_midi(tokenizer.Score(_score(5).notes[:10], bpm=90), src / "x.mid")
    (item2,) = corpus.iter_midi_dir(str(src))
    assert item2["id"] == item["id"] and item2["cache_key"] != key


def test_limit_counts_items_in_all_taken_in_turn_from_each_source(tmp_path):
    """--limit N is N items in all (it was N per source and per ABC collection: --limit 200 took
    ~1,500 items), every source gives some, and each gives the first items of its full order."""
    full = list(corpus.iter_items())
    n_sources = 2 + len(corpus.ABC_DIRS)
    limited = list(corpus.iter_items(limit=20))
    assert len(limited) == 20
    by_source = defaultdict(list)
    for it in limited:
        by_source[it.get("collection", it["source"])].append(it)
    assert len(by_source) == n_sources
    assert {len(v) for v in by_source.values()} == {2, 3}  # 20 = 4 x 3 + 4 x 2, in build order
    # a subset of the full build in the same order
    position = {it["id"]: i for i, it in enumerate(full)}
    assert [position[it["id"]] for it in limited] == sorted(position[it["id"]] for it in limited)
    for src, its in by_source.items():
        first = [it for it in full if it.get("collection", it["source"]) == src][:len(its)]
        assert its == first
    # MIDI folders share the same total
    dirs = []
    for name, n in (("a", 1), ("b", 5)):
        d = tmp_path / name
        d.mkdir()
        for i in range(n):
            tokenizer.write_midi(_score(i), d / f"{i}.mid")
        dirs.append(d)
    got = [it["id"] for it in corpus.iter_items(dirs, limit=4, default=False)]
    assert got == ["midi:a/0.mid", "midi:b/0.mid", "midi:b/1.mid", "midi:b/2.mid"]
    assert len(list(corpus.iter_items(dirs, limit=100, default=False))) == 6


def test_limit_quotas():
    from training.corpus.sources import limit_quotas

    assert limit_quotas([5, 5, 5], 7) == [3, 2, 2]
    assert limit_quotas([0, 1, 9], 6) == [0, 1, 5]
    assert limit_quotas([2, 2], 10) == [2, 2]
    assert limit_quotas([3, 3], 1) == [1, 0]
