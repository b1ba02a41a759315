"""On-the-fly augmentation of the transformer's training windows (training.data.Augment): every kind keeps
the 3-token grammar and does what it says, the windows are a function of (seed, epoch, index), and the
training command's --augment flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokenizer import vocab as V
from tokenizer.harmony import REGISTERS
from training.data import (
    AUGMENTATIONS,
    REMAP_FAMILIES,
    Augment,
    RandomWindows,
    join_parts,
    load_tokens,
    window_parts,
)
from training.train import main as train_main
from training.train import parser

POP909 = Path(__file__).resolve().parents[1] / "fixtures" / "pop909"
LENGTH = 257


def assert_grammar(tokens: np.ndarray) -> None:
    """Controls only between whole notes; notes as (shift, durvel, grouppitch) triples; a prefix of START,
    DRUMS_ON/OFF, ascending group tokens, an optional style; simultaneous notes in (group, pitch) order;
    the notes of a piece whose prefix is in the window only in the groups it names."""
    toks = np.asarray(tokens, np.int64)
    assert toks.min() >= 0 and toks.max() < V.VOCAB_SIZE
    slots = np.asarray([V.token_slot(int(t)) for t in toks])
    i, prefix_groups, prefix_drums, prev = 0, None, None, None
    while i < len(toks):
        t, s = int(toks[i]), slots[i]
        if s < 0:
            if t == V.START:
                assert slots[i + 1] < 0 and toks[i + 1] in (V.DRUMS_ON, V.DRUMS_OFF) if i + 1 < len(toks) else True
                j = i + 2
                groups = []
                while j < len(toks) and V.GROUP_OFFSET <= toks[j] < V.STYLE_OFFSET:
                    groups.append(int(toks[j]) - V.GROUP_OFFSET)
                    j += 1
                assert groups == sorted(set(groups))
                prefix_groups = set(groups)
                prefix_drums = i + 1 < len(toks) and toks[i + 1] == V.DRUMS_ON
                prev = None
            i += 1
            continue
        assert s == 0, f"token {i} ({V.describe(t)}) starts a note but is not a shift"
        if i + 2 >= len(toks):  # the window may end inside a note
            assert list(slots[i:]) == [0, 1][: len(toks) - i]
            break
        assert slots[i + 1] == 1 and slots[i + 2] == 2, f"note at {i} is not a triple"
        if toks[i + 2] != V.GROUPPITCH_REST:
            g, p = divmod(int(toks[i + 2]) - V.GROUPPITCH_OFFSET, 128)
            if prefix_groups is not None:
                assert (g == V.DRUM_GROUP and prefix_drums) or g in prefix_groups
            if prev is not None and toks[i] == V.SHIFT_OFFSET:
                assert (g, p) > prev, "simultaneous notes out of (group, pitch) order"
            prev = (g, p)
        i += 3


def note_rows(tokens: np.ndarray) -> list[np.ndarray]:
    """The windows's runs of notes (onsets from each run's start)."""
    return [p for kind, p in window_parts(tokens) if kind == "notes"]


@pytest.fixture(scope="module")
def stream(tiny_corpus):
    return np.asarray(load_tokens(tiny_corpus, "train"), np.int64)


@pytest.fixture(scope="module")
def pop_stream(tmp_path_factory):
    """The POP909 fixture songs as one token stream (melodic groups: reed, pipe, piano)."""
    from training import corpus

    out = tmp_path_factory.mktemp("augpop")
    corpus.build(out, workers=1, progress=False, sources=["pop909"], pop909=POP909)
    return np.concatenate([np.asarray(load_tokens(out, s), np.int64) for s in corpus.ALL_SPLITS])


def part(notes: np.ndarray, group: int) -> list[tuple[int, int, int, int]]:
    """The sorted (onset, pitch, duration, velocity) of one group's notes."""
    n = notes[notes["group"] == group]
    return sorted(zip(n["onset"].tolist(), n["pitch"].tolist(), n["duration"].tolist(), n["velocity"].tolist()))


def starts(stream: np.ndarray, n: int = 12) -> list[int]:
    return [int(x) for x in np.linspace(0, len(stream) - 2 * LENGTH - 1, n)]


def only(kind: str, **kw) -> Augment:
    return Augment(kinds=frozenset({kind}), **kw)


def test_parts_round_trip_and_every_kind_keeps_the_grammar(stream, pop_stream):
    for s in (stream, pop_stream):
        for a in starts(s):
            raw = s[a:a + 2 * LENGTH]
            again = join_parts(window_parts(raw))
            off = int(np.flatnonzero([V.token_slot(int(t)) <= 0 for t in raw])[0])
            assert np.array_equal(again, raw[off:off + len(again)]) and len(again) >= len(raw) - off - 3 * 8
            for kinds in [{k} for k in AUGMENTATIONS] + [set(AUGMENTATIONS)]:
                w = Augment(kinds=frozenset(kinds), remap_p=1.0, drop_p=0.5).window(s, a, LENGTH, seed=a)
                assert len(w) == LENGTH and w.dtype == np.int64
                assert_grammar(w)


def test_transpose_moves_pitched_notes_by_one_interval_within_registers(stream, pop_stream):
    moved = set()
    for s in (stream, pop_stream):
        for a in starts(s):
            raw = s[a:a + 2 * LENGTH]
            for seed in range(4):
                got = note_rows(only("transpose").apply(raw, np.random.default_rng(seed)))
                ref = note_rows(join_parts(window_parts(raw)))
                shifts = set()
                for g, r in zip(got, ref):
                    for f in ("onset", "duration", "velocity", "group"):
                        assert np.array_equal(g[f], r[f])
                    drums = r["group"] == V.DRUM_GROUP
                    assert np.array_equal(g["pitch"][drums], r["pitch"][drums])
                    shifts |= set((g["pitch"][~drums].astype(int) - r["pitch"][~drums]).tolist())
                    for grp in np.unique(r["group"][~drums]):
                        lo, hi = REGISTERS[V.GROUPS[grp]]
                        before, after = r["pitch"][r["group"] == grp], g["pitch"][g["group"] == grp]
                        assert after.min() >= min(lo, before.min()) and after.max() <= max(hi, before.max())
                assert len(shifts) <= 1 and all(abs(k) <= 5 for k in shifts)
                moved |= shifts
    assert len(moved) >= 4  # several intervals occur


def test_velocity_scales_and_jitters_levels_only(stream):
    for a in starts(stream):
        raw = stream[a:a + 2 * LENGTH]
        ref = note_rows(join_parts(window_parts(raw)))
        got = note_rows(only("velocity", velocity_scale=(1.5, 1.5), velocity_jitter=0.0).apply(raw, np.random.default_rng(0)))
        for g, r in zip(got, ref):
            for f in ("onset", "duration", "group", "pitch"):
                assert np.array_equal(g[f], r[f])
            want = np.clip(np.rint((r["velocity"] + 1.0) * 1.5) - 1, 0, V.N_VELOCITY - 1)
            assert np.array_equal(g["velocity"], want)
        jit = note_rows(only("velocity", velocity_scale=(1.0, 1.0), velocity_jitter=1.0).apply(raw, np.random.default_rng(1)))
        for g, r in zip(jit, ref):
            d = g["velocity"].astype(int) - r["velocity"]
            assert set(np.abs(d).tolist()) <= {0, 1} and (d != 0).mean() > 0.5


def test_remap_permutes_groups_within_their_families(stream, pop_stream):
    family = {V.GROUPS.index(g): i for i, fam in enumerate(REMAP_FAMILIES) for g in fam}
    changed = 0
    for s in (stream, pop_stream):
        for a in starts(s):
            raw = s[a:a + 2 * LENGTH]
            out = only("remap", remap_p=1.0).apply(raw, np.random.default_rng(a))
            assert_grammar(out[:LENGTH])
            for g, r in zip(note_rows(out), note_rows(join_parts(window_parts(raw)))):
                assert len(g) == len(r)
                # each group's notes went, all together, to one group of its family; drums and bass stay
                outs = {int(k): part(g, k) for k in np.unique(g["group"])}
                for old in np.unique(r["group"]):
                    new = [k for k, notes in outs.items() if notes == part(r, old)]
                    assert new and (family.get(new[0]) == family[old] if old in family else new == [old])
                    changed += new[0] != old
    assert changed >= 5


def test_drop_leaves_out_whole_parts_and_keeps_time(stream):
    for a in starts(stream):
        raw = stream[a:a + 2 * LENGTH]
        out = only("drop", drop_p=1.0).apply(raw, np.random.default_rng(a))
        ref = join_parts(window_parts(raw))
        kept = {int(g) for n in note_rows(out) for g in np.unique(n["group"])}
        assert len(kept) == 1
        (g,) = kept
        for o, r in zip(note_rows(out), note_rows(ref)):
            same = r[r["group"] == g]
            assert np.array_equal(o, same)  # the same notes at the same times
        prefix_groups = [int(t) - V.GROUP_OFFSET for t in out if V.GROUP_OFFSET <= t < V.STYLE_OFFSET]
        assert set(prefix_groups) <= {g}
        if V.DRUMS_ON in out:
            assert g == V.DRUM_GROUP
        assert_grammar(out)


def test_a_window_at_the_end_of_the_stream_goes_on_from_its_start(stream):
    aug = Augment(kinds=frozenset(AUGMENTATIONS), drop_p=1.0)
    for seed in range(6):
        w = aug.window(stream, len(stream) - LENGTH - 1, LENGTH, seed)
        assert len(w) == LENGTH
        assert_grammar(w)


def test_windows_are_a_function_of_seed_epoch_and_index(stream):
    aug = Augment.parse("transpose,velocity,remap,drop")
    a = RandomWindows(stream, LENGTH, seed=3, augment=aug)
    b = RandomWindows(stream, LENGTH, seed=3, augment=aug)
    for i in (0, 5, 17):
        assert np.array_equal(a[i].numpy(), b[i].numpy())
    assert any(not np.array_equal(a[i].numpy(), RandomWindows(stream, LENGTH, seed=4, augment=aug)[i].numpy())
               for i in range(5))
    a.set_epoch(1)
    assert any(not np.array_equal(a[i].numpy(), b[i].numpy()) for i in range(5))
    # no augmentation: the windows of before, token for token
    plain, none = RandomWindows(stream, LENGTH, seed=3), RandomWindows(stream, LENGTH, seed=3, augment=Augment.parse(""))
    for i in range(5):
        assert np.array_equal(plain[i].numpy(), none[i].numpy())
    assert none.augment is None


def test_augment_flag(tiny_corpus, tmp_path, capsys):
    assert parser().parse_args(["--out", "x", "--augment", "drop, transpose"]).augment == "transpose,drop"
    assert parser().parse_args(["--out", "x"]).augment == ""
    with pytest.raises(SystemExit):
        parser().parse_args(["--out", "x", "--augment", "reverse"])
    assert "unknown augmentation reverse" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["--engine", "cnn", "--out", str(tmp_path / "c"), "--augment", "drop"])
    assert "transformer only" in capsys.readouterr().err
    out = tmp_path / "run"
    rc = train_main(["--preset", "tiny", "--data", str(tiny_corpus), "--out", str(out), "--steps", "4", "--batch", "4",
                     "--eval-every", "4", "--ckpt-every", "4", "--val-windows", "2", "--augment",
                     "transpose,velocity,remap,drop", "--quiet"])
    assert rc == 0
    meta = json.loads((out / "last" / "config.json").read_text())["meta"]["train"]
    assert meta["augment"] == "transpose,velocity,remap,drop"
