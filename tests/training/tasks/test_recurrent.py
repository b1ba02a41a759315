"""Training and held-out evaluation of the recurrent engines (gru, lstm, multi-rnn) on a tiny corpus."""

from __future__ import annotations

import csv
import glob
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

import tokenizer as T
from model import checkpoint as ckpt
from model.engine import GenerationRequest
from model.recurrent import PRESETS, GRUEngine, LSTMEngine, MultiRNNEngine
from tests.conftest import train_tiny
from tokenizer import melody as M
from tokenizer.pianoroll import score_to_pianoroll, windows
from training.tasks import recurrent as R
from training.tasks import train_task

OPENMSX = sorted(glob.glob("/usr/share/games/openttd/baseset/openmsx/*.mid"))
ENGINES = {"gru": GRUEngine, "lstm": LSTMEngine, "multi-rnn": MultiRNNEngine}


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
    return {name: train_tiny(name, rec_corpus, tmp_path_factory.mktemp(f"run_{name}"), 50, 25, 8)
            for name in ENGINES}


def args(data, **kw):
    return SimpleNamespace(**{"preset": "tiny", "data": str(data), "seed": 0, "val_windows": 8, "context": 0, **kw})


# ---- derived data ---------------------------------------------------------------------------------
def test_token_streams_are_derived_once_per_corpus(rec_corpus, monkeypatch):
    cfg, streams = R.derived_streams(rec_corpus, PRESETS["gru"]["tiny"])
    assert 0 < len(cfg.chords) <= PRESETS["gru"]["tiny"].max_chords
    assert cfg.vocab_size == M.CHORD_VOCAB_BASE + len(cfg.chords)
    for s in ("train", "validation", "test"):
        toks = np.asarray(streams[s])
        assert toks[0] == M.BOS and toks.max() < cfg.vocab_size and (toks[1:] >= M.HOLD).mean() > 0.9
    # a second call reads the cache
    monkeypatch.setattr(R, "corpus_parts", lambda *a: pytest.fail("rebuilt the derived streams"))
    again, streams2 = R.derived_streams(rec_corpus, PRESETS["gru"]["tiny"], splits=("test",))
    assert again == cfg and np.array_equal(streams2["test"], streams["test"])


def test_melody_streams_are_pairs_after_each_bos(rec_corpus):
    cfg, streams = R.derived_streams(rec_corpus, PRESETS["lstm"]["tiny"], splits=("train",))
    assert cfg == PRESETS["lstm"]["tiny"]
    toks = np.asarray(streams["train"], np.int64)
    for piece in np.split(toks, np.flatnonzero(toks == M.BOS))[1:]:
        body = piece[1:]
        assert len(body) % 2 == 0 and (body[1::2] >= M.MEL_DUR_OFFSET).all() and (body[0::2] < M.MEL_DUR_OFFSET).all()


def test_tasks_read_the_training_options(rec_corpus):
    t = train_task("lstm", args(rec_corpus, context=24, val_windows=3))
    assert t.engine == "lstm" and t.config.seq_len == 24 and len(t.val_set) <= 3
    assert t.train_set[0].shape == (25,)
    frames = train_task("multi-rnn", args(rec_corpus))
    assert frames.train_set[0].shape == (5, 32, 128) and len(frames.config.notes_per_frame) == 5
    with pytest.raises(ValueError, match="context"):
        train_task("multi-rnn", args(rec_corpus, context=16))
    with pytest.raises(ValueError, match="unknown preset"):
        train_task("gru", args(rec_corpus, preset="huge"))


# ---- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENGINES))
def test_tiny_training_loss_falls(runs, name):
    rows = list(csv.DictReader((runs[name] / "metrics.csv").open()))
    train = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert len(train) >= 5 and train[-1] < train[0] - 0.3, train
    conf = json.loads((runs[name] / "best" / "config.json").read_text())
    assert conf["engine"] == name
    assert ckpt.folder_bytes(runs[name] / "best") < 5_000_000


def test_the_chord_vocabulary_travels_in_the_checkpoint(runs, rec_corpus):
    conf = json.loads((runs["gru"] / "best" / "config.json").read_text())
    cfg, _ = R.derived_streams(rec_corpus, PRESETS["gru"]["tiny"], splits=())
    assert conf["model"]["chords"] == cfg.chords and conf["model"]["vocab_size"] == cfg.vocab_size


@pytest.mark.parametrize("name", list(ENGINES))
def test_a_trained_checkpoint_generates(runs, name):
    eng = ENGINES[name](runs[name] / "best")
    scores = eng.generate(GenerationRequest(groups=("piano",), drums=True, bars=2, variants=2, seed=3))
    assert len(scores) == 2 and all(len(s.notes) for s in scores)


# ---- held-out evaluation --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENGINES))
def test_evaluate_checkpoint_on_test_split(runs, rec_corpus, name):
    from training.tasks import evaluate_checkpoint

    r = evaluate_checkpoint(name, runs[name] / "best", rec_corpus, "test", max_items=4)
    assert r["engine"] == name and r["split"] == "test" and 0 < r["windows"] <= 4 and r["scored"] > 0
    assert 0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["loss"]) and math.isfinite(r["unigram_loss"])
    assert r["loss"] < r["unigram_loss"] + 1.0
    if name == "multi-rnn":
        assert r["uniform_loss"] == pytest.approx(math.log(128)) and "loss_drums" in r


def test_evaluate_command(runs, rec_corpus, capsys):
    from training.evaluate import main

    rc = main(["--data", str(rec_corpus), "--split", "validation", "--max-items", "3"]
              + [str(runs[n] / "best") for n in ENGINES])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["engine"] for r in lines] == list(ENGINES) and all(r["windows"] <= 3 for r in lines)


def test_evaluate_uses_the_checkpoints_own_chord_vocabulary(runs, rec_corpus, tmp_path):
    """A rebuilt corpus may rank its chords differently: the checkpoint is measured with its own
    vocabulary (streams encoded with it), not refused."""
    other = tmp_path / "other"
    shutil.copytree(runs["gru"] / "best", other)
    conf = json.loads((other / "config.json").read_text())
    assert len(conf["model"]["chords"]) > 1
    conf["model"]["chords"] = conf["model"]["chords"][::-1]
    (other / "config.json").write_text(json.dumps(conf))
    a = R.evaluate_checkpoint("gru", runs["gru"] / "best", rec_corpus, "test")
    b = R.evaluate_checkpoint("gru", other, rec_corpus, "test")
    assert a["windows"] == b["windows"] and a["loss"] != b["loss"]  # the same pieces, other token ids
