"""The recurrent engines (gru, lstm, multi-rnn): token schemes, tiny training runs, sampling, engines."""

from __future__ import annotations

import csv
import glob
import json
import math
import shutil

import numpy as np
import pytest
import torch

import tokenizer as T
from model import checkpoint as ckpt
from model import recurrent as R
from model.engine import GenerationRequest
from tokenizer import vocab as V
from tokenizer.pianoroll import score_to_pianoroll, windows

OPENMSX = sorted(glob.glob("/usr/share/games/openttd/baseset/openmsx/*.mid"))

ENGINES = {"gru": R.GRUEngine, "lstm": R.LSTMEngine, "multi-rnn": R.MultiRNNEngine}


@pytest.fixture(scope="module")
def rec_corpus(tmp_path_factory):
    """Token streams and packed pianoroll windows of real MIDI files, laid out like data/corpus."""
    if len(OPENMSX) < 8:
        pytest.skip("openttd-openmsx is not installed (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("rec_corpus")
    scores = [T.load_midi(f) for f in OPENMSX[:8]]
    for split, part in (("train", scores[:6]), ("validation", scores[6:7]), ("test", scores[7:8])):
        np.save(d / f"{split}.tokens.npy", np.concatenate([T.encode(s) for s in part]).astype(np.uint16))
        w = np.concatenate([windows(score_to_pianoroll(s, 2), 32) for s in part])
        np.save(d / f"{split}.pianoroll.npy", np.packbits(w, axis=-1))
    return d


@pytest.fixture(scope="module")
def runs(rec_corpus, tmp_path_factory):
    from training.train import main

    out = {}
    for name in ENGINES:
        run = tmp_path_factory.mktemp(f"run_{name}")
        rc = main(["--engine", name, "--preset", "tiny", "--data", str(rec_corpus), "--out", str(run),
                   "--steps", "50", "--batch", "16", "--lr", "1e-2", "--eval-every", "25", "--ckpt-every", "25",
                   "--val-windows", "8", "--log-every", "5", "--quiet"])
        assert rc == 0
        out[name] = run
    return out


@pytest.fixture(scope="module")
def engines(runs):
    return {name: cls(runs[name] / "best") for name, cls in ENGINES.items()}


# ---- token schemes ------------------------------------------------------------------------------
def test_melody_tokens_round_trip_the_skyline():
    s = T.load_midi(OPENMSX[0]) if OPENMSX else pytest.skip("no MIDI fixtures")
    part = R.melody_part(s.notes)
    assert len(part) and len(np.unique(part["group"])) == 1
    sky = R.skyline(part)
    toks = R.melody_tokens(part)
    back = R.melody_decode(toks)
    assert np.array_equal(back["pitch"], sky["pitch"])
    assert np.array_equal(back["onset"], sky["onset"] - sky["onset"][0])  # no gap here exceeds a bar
    assert np.array_equal(back["duration"], np.minimum(sky["duration"], R.MEL_MAX_DUR))


def test_chord8_tokens_keep_onsets_and_known_chords():
    s = T.load_midi(OPENMSX[1]) if OPENMSX else pytest.skip("no MIDI fixtures")
    part = R.melody_part(s.notes)
    base, events = R.chord_events(part)
    chords = sorted({ch for _, ch in events if len(ch) > 1})[:5]
    toks = R.chord8_tokens(base, events, R.chord_index([list(c) for c in chords]))
    notes = R.chord8_decode(toks, [list(c) for c in chords])
    assert np.all(notes["onset"] % R.CHORD_GRID == 0) and np.all(notes["duration"] >= R.CHORD_GRID)
    steps = sorted({st for st, _ in events})
    assert sorted(set((notes["onset"] // R.CHORD_GRID).tolist())) == steps
    # an unknown chord keeps its highest pitches
    assert R.chord_token((40, 64, 67), R.chord_index([[64, 67]])) == R.CHORD_OFFSET + 128


def test_short_notes_are_removed():
    notes = T.make_notes([0, 4, 8, 9], [1, 2, 1, 8], 5, 0, [60, 62, 64, 65])
    kept = R.remove_short_notes(notes, 2)
    assert kept["pitch"].tolist() == [62, 65]


# ---- training -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENGINES))
def test_tiny_training_loss_falls(runs, name):
    rows = list(csv.DictReader((runs[name] / "metrics.csv").open()))
    train = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert len(train) >= 5 and train[-1] < train[0] - 0.3, train
    conf = json.loads((runs[name] / "best" / "config.json").read_text())
    assert conf["engine"] == name
    assert ckpt.folder_bytes(runs[name] / "best") < 5_000_000


def test_presets_follow_the_seeds():
    gru, lstm, frame = (R.PRESETS[e]["cpu"] for e in ("gru", "lstm", "multi-rnn"))
    assert (gru.cell, gru.embed_dim, gru.layers) == ("gru", 96, 1)
    assert (lstm.cell, lstm.hidden, lstm.seq_len, lstm.min_note_steps) == ("lstm", 256, 32, 2)
    assert frame.seq_len == 32 and R.FrameRNN(frame).head.out_features == 640


@pytest.mark.parametrize("name", list(ENGINES))
def test_evaluate_checkpoint_on_test_split(runs, rec_corpus, name):
    r = R.evaluate_checkpoint(runs[name] / "best", rec_corpus, "test")
    assert r["engine"] == name and r["scored"] > 0
    assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["loss"]) and math.isfinite(r["unigram_loss"])


# ---- sampling and engines -----------------------------------------------------------------------
def _entropy(values) -> float:
    _, c = np.unique(np.asarray(values), return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def test_temperature_raises_output_entropy(engines):
    gru = engines["gru"]
    ent = []
    for t in (0.3, 2.0):
        rows = gru.sample_tokens(4, 16 * V.STEPS_PER_BAR, R.SamplingParams(temperature=t, top_p=1.0, seed=3))
        ent.append(_entropy(np.concatenate(rows)))
    assert ent[1] > ent[0] + 0.3, ent
    frames = [engines["multi-rnn"].sample_frames(4, 64, {0: 2}, t, seed=3) for t in (0.3, 2.0)]
    pitch_ent = [_entropy(torch.nonzero(f[:, :, 0])[:, -1].numpy()) for f in frames]
    assert pitch_ent[1] > pitch_ent[0] + 0.3, pitch_ent


@pytest.mark.parametrize("name", list(ENGINES))
def test_seed_makes_generation_deterministic(engines, name):
    req = GenerationRequest(groups=("piano",), drums=True, bars=4, variants=2, seed=11)
    a = engines[name].generate(req)
    b = engines[name].generate(req)
    c = engines[name].generate(GenerationRequest(groups=("piano",), drums=True, bars=4, variants=2, seed=12))
    assert all(np.array_equal(x.notes, y.notes) for x, y in zip(a, b))
    assert not all(np.array_equal(x.notes, y.notes) for x, y in zip(a, c))


@pytest.mark.parametrize("name", list(ENGINES))
def test_engines_generate_valid_scores(engines, name):
    eng = engines[name]
    req = GenerationRequest(groups=("bass", "strings"), drums=True, bars=3, variants=2, temperature=1.0, seed=5,
                            bpm=90.0)
    scores = eng.generate(req)
    assert len(scores) == 2 and eng.last_stats["tokens"] > 0 and eng.last_stats["tokens_per_s"] > 0
    for s in scores:
        assert isinstance(s, T.Score) and s.length == 3 * V.STEPS_PER_BAR and s.bpm == 90.0
        assert len(s.notes) and s.end_step <= s.length
        assert T.load_midi(T.to_midi_bytes(s)).notes.size  # writes valid MIDI
        groups = set(s.groups)
        if name == "multi-rnn":
            assert groups == {V.GROUPS.index("bass"), V.GROUPS.index("strings"), V.DRUM_GROUP}
        else:
            assert groups == {V.GROUPS.index("bass")}  # one part: the first requested group
            assert "drums" not in eng.controls
    assert set(eng.controls) <= {"groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed",
                                 "bpm", "style", "prompt"}


def test_lstm_output_has_no_note_shorter_than_a_sixteenth(engines):
    lstm = engines["lstm"]
    req = GenerationRequest(groups=("piano",), bars=8, variants=4, temperature=2.0, top_p=1.0, seed=1)
    raw = lstm.sample_tokens(4, 8 * V.STEPS_PER_BAR, R.SamplingParams(temperature=2.0, top_p=1.0, seed=1))
    assert sum((R.melody_decode(r)["duration"] < 2).sum() for r in raw) > 0  # the sampler does make them
    for s in lstm.generate(req):
        n = s.notes
        # only the bar line at the end may shorten a note (cut_at)
        assert ((n["duration"] >= 2) | (n["onset"] + n["duration"] == s.length)).all()


def test_multi_rnn_samples_the_note_count_per_instrument(engines):
    frames = engines["multi-rnn"].sample_frames(2, 16, {0: 2, 4: 3}, 1.0, seed=0)
    per = frames.sum(-1)  # (B, T, 5)
    assert (per[:, :, 0] == 2).all() and (per[:, :, 4] == 3).all() and (per[:, :, 1:4] == 0).all()


def test_token_engines_need_a_pitched_group(engines):
    with pytest.raises(ValueError, match="pitched part"):
        engines["gru"].generate(GenerationRequest(groups=(), drums=True))
    drums_only = engines["multi-rnn"].generate(GenerationRequest(groups=(), drums=True, bars=2))
    assert drums_only[0].groups == [V.DRUM_GROUP]


def test_missing_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    for cls in ENGINES.values():
        with pytest.raises(FileNotFoundError, match="checkpoint"):
            cls()


def test_cli_generates_with_each_engine(runs, tmp_path, monkeypatch, capsys):
    from model import engine as E
    from model.generate import main

    root = tmp_path / "ck"
    for name in ENGINES:
        shutil.copytree(runs[name] / "best", root / name)
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", root)
    for name in ENGINES:
        monkeypatch.delitem(E._INSTANCES, name, raising=False)
        rc = main(["--engine", name, "--instruments", "piano", "--bars", "2", "--seed", "4", "--out",
                   str(tmp_path / "out")])
        assert rc == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["engine"] == name and line["bars"] == [2] and line["files"]
    for name in ENGINES:
        E._INSTANCES.pop(name, None)
