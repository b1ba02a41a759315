"""The recurrent engines (gru, lstm, multi-rnn): networks, checkpoints, sampling and generation.

The engines run on tiny checkpoints with random weights (training is tested in
tests/training/tasks/test_recurrent.py); the head is scaled so that the model has preferences."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

import tokenizer as T
from model import checkpoint as ckpt
from model import recurrent as R
from model.engine import GenerationRequest, engine_class, get_engine
from model.sampling.filters import SamplingParams
from tokenizer import melody as M
from tokenizer import vocab as V
from tokenizer.pianoroll import TRACKS

ENGINES = {"gru": R.GRUEngine, "lstm": R.LSTMEngine, "multi-rnn": R.MultiRNNEngine}
CHORDS = [[60, 64, 67], [57, 60, 64], [55, 59, 62]]


def tiny_config(name: str):
    cfg = R.PRESETS[name]["tiny"]
    if name == "gru":
        cfg = replace(cfg, chords=CHORDS, vocab_size=M.CHORD_VOCAB_BASE + len(CHORDS))
    return cfg


def save_tiny(folder, name: str, seed: int = 0):
    """A tiny random checkpoint of engine `name` in `folder`."""
    torch.manual_seed(seed)
    cfg = tiny_config(name)
    model = R.build_model(cfg)
    with torch.no_grad():
        model.head.weight.mul_(20.0)
    ckpt.save_checkpoint(folder, model.state_dict(), {"engine": name, "model": asdict(cfg), "meta": {}})
    return folder


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rnn_ckpts")
    return {name: save_tiny(root / name, name) for name in ENGINES}


@pytest.fixture(scope="module")
def engines(tiny_dirs):
    return {name: cls(tiny_dirs[name]) for name, cls in ENGINES.items()}


# ---- layering and networks ------------------------------------------------------------------------
def test_importing_the_engines_imports_no_training_code():
    code = ("import sys, model.recurrent; "
            "print([m for m in sys.modules if m.split('.')[0] in ('training', 'evaluation')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_networks_give_logits_per_position():
    lm = R.build_model(tiny_config("lstm"))
    assert isinstance(lm, R.RNNLM) and isinstance(lm.rnn, torch.nn.LSTM)
    assert lm(torch.zeros(2, 7, dtype=torch.long)).shape == (2, 7, M.MEL_VOCAB)
    frames = R.build_model(tiny_config("multi-rnn"))
    assert isinstance(frames, R.FrameRNN) and isinstance(frames.rnn, torch.nn.GRU)
    assert frames(torch.zeros(2, 5, 5, 128)).shape == (2, 5, 5, 128)


# ---- checkpoints ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENGINES))
def test_a_checkpoint_folder_replaces_the_shipped_one(tiny_dirs, name):
    state, _ = ckpt.load_checkpoint(tiny_dirs[name])
    for eng in (get_engine(name, checkpoint=tiny_dirs[name]), engine_class(name)(tiny_dirs[name])):
        assert isinstance(eng, ENGINES[name]) and eng.source == str(tiny_dirs[name])
        assert torch.equal(eng.model.head.weight, state["head.weight"])
        assert eng.cfg == tiny_config(name)
    shipped = get_engine(name)
    assert shipped.model.head.weight.shape != state["head.weight"].shape or \
        not torch.equal(shipped.model.head.weight, state["head.weight"])


@pytest.mark.parametrize("name", list(ENGINES))
def test_a_missing_or_foreign_checkpoint_is_a_clear_error(tiny_dirs, tmp_path, monkeypatch, name):
    with pytest.raises(FileNotFoundError):
        get_engine(name, checkpoint=tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        ENGINES[name](tmp_path / "missing")
    other = "lstm" if name == "gru" else "gru"
    with pytest.raises(ValueError, match=f"not '{name}'"):
        ENGINES[name](tiny_dirs[other])
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        ENGINES[name]()


@pytest.mark.parametrize("name", list(ENGINES))
def test_the_shipped_checkpoints_generate(name):
    eng = get_engine(name)
    scores = eng.generate(GenerationRequest(groups=("piano", "bass"), drums=True, bars=2, seed=1))
    assert len(scores) == 1 and len(scores[0].notes) and scores[0].length == 2 * V.STEPS_PER_BAR


# ---- sampling -------------------------------------------------------------------------------------
def _entropy(values) -> float:
    _, c = np.unique(np.asarray(values), return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def test_temperature_raises_output_entropy(engines):
    ent = []
    for t in (0.3, 2.0):
        rows = engines["gru"].sample_tokens(4, 16 * V.STEPS_PER_BAR, SamplingParams(temperature=t, top_p=1.0, seed=3))
        ent.append(_entropy(np.concatenate(rows)))
    assert ent[1] > ent[0] + 0.3, ent
    frames = [engines["multi-rnn"].sample_frames(4, 64, {0: 2}, t, seed=3) for t in (0.3, 2.0)]
    pitch_ent = [_entropy(torch.nonzero(f[:, :, 0])[:, -1].numpy()) for f in frames]
    assert pitch_ent[1] > pitch_ent[0] + 0.3, pitch_ent


def test_token_sampling_follows_the_scheme(engines):
    rows = engines["lstm"].sample_tokens(2, 4 * V.STEPS_PER_BAR, SamplingParams(temperature=2.0, top_p=1.0, seed=0))
    for r in rows:
        pitch_or_rest, dur = np.asarray(r[0::2]), np.asarray(r[1::2])
        assert ((pitch_or_rest >= M.MEL_REST) & (pitch_or_rest < M.MEL_DUR_OFFSET)).all()
        assert ((dur >= M.MEL_DUR_OFFSET) & (dur < M.MEL_VOCAB)).all()
        assert sum(d - M.MEL_DUR_OFFSET + 1 for d in r[1::2]) >= 4 * V.STEPS_PER_BAR
    rows = engines["gru"].sample_tokens(2, 4 * V.STEPS_PER_BAR, SamplingParams(temperature=2.0, top_p=1.0, seed=0))
    assert all(len(r) == 4 * V.STEPS_PER_BAR // M.CHORD_GRID and min(r) >= M.HOLD for r in rows)


def test_multi_rnn_samples_the_note_count_per_instrument(engines):
    frames = engines["multi-rnn"].sample_frames(2, 16, {0: 2, 4: 3}, 1.0, seed=0)
    per = frames.sum(-1)  # (B, T, 5)
    assert (per[:, :, 0] == 2).all() and (per[:, :, 4] == 3).all() and (per[:, :, 1:4] == 0).all()


# ---- generation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ENGINES))
def test_seed_makes_generation_deterministic(engines, name):
    req = GenerationRequest(groups=("piano",), drums=True, bars=4, variants=2, seed=11)
    a = engines[name].generate(req)
    b = engines[name].generate(req)
    c = engines[name].generate(replace(req, seed=12))
    assert all(np.array_equal(x.notes, y.notes) for x, y in zip(a, b))
    assert not all(np.array_equal(x.notes, y.notes) for x, y in zip(a, c))


@pytest.mark.parametrize("name", list(ENGINES))
def test_engines_generate_valid_scores(engines, name):
    eng = engines[name]
    req = GenerationRequest(groups=("bass", "strings"), drums=True, bars=3, variants=2, seed=5, bpm=90.0)
    scores = eng.generate(eng.restrict(req))
    unit = "frames" if name == "multi-rnn" else "tokens"
    assert eng.unit == unit and eng.last_stats[unit] > 0 and eng.speed() == (eng.last_stats[f"{unit}_per_s"], unit)
    for s in scores:
        assert isinstance(s, T.Score) and s.length == 3 * V.STEPS_PER_BAR and s.bpm == 90.0
        assert len(s.notes) and s.end_step <= s.length
        assert T.load_midi(T.to_midi_bytes(s)).notes.size  # writes valid MIDI
        if name == "multi-rnn":
            assert set(s.groups) == {V.GROUPS.index("bass"), V.GROUPS.index("strings"), V.DRUM_GROUP}
        else:
            assert set(s.groups) == {V.GROUPS.index("bass")}  # one part: the first requested group
    assert ("drums" in eng.controls) == (name == "multi-rnn")


def test_lstm_output_has_no_note_shorter_than_a_sixteenth(engines):
    lstm = engines["lstm"]
    raw = lstm.sample_tokens(4, 8 * V.STEPS_PER_BAR, SamplingParams(temperature=2.0, top_p=1.0, seed=1))
    assert sum((M.melody_decode(r)["duration"] < 2).sum() for r in raw) > 0  # the sampler does make them
    for s in lstm.generate(GenerationRequest(groups=("piano",), bars=8, variants=4, temperature=2.0, top_p=1.0,
                                             seed=1)):
        n = s.notes
        # only the bar line at the end may shorten a note (cut_at)
        assert ((n["duration"] >= 2) | (n["onset"] + n["duration"] == s.length)).all()


def test_gru_writes_the_checkpoint_chords(engines):
    gru = engines["gru"]
    chord = M.CHORD_VOCAB_BASE + 1
    out = gru.decode([chord, M.HOLD, M.REST8, M.CHORD_OFFSET + 70])
    assert out["pitch"].tolist() == CHORDS[1] + [70] and out["duration"].tolist() == [8, 8, 8, 4]


def test_multi_rnn_notes_per_frame_from_the_request(engines):
    eng = engines["multi-rnn"]
    strings, drums = TRACKS.index("strings"), TRACKS.index("drums")
    assert eng.notes_per_track({}, {strings, drums}) == {strings: eng.cfg.notes_per_frame[strings],
                                                        drums: eng.cfg.notes_per_frame[drums]}
    assert eng.notes_per_track({"notes_per_frame": {"strings": 5}}, {strings}) == {strings: 5}
    req = GenerationRequest(groups=("strings",), drums=False, bars=1, seed=2, extra={"notes_per_frame": {"strings": 5}})
    assert set(eng.generate(req)[0].groups) == {V.GROUPS.index("strings")}
    for bad in ({"strings": 40}, {"flute": 2}, {"strings": 2.5}):
        with pytest.raises(ValueError, match="notes_per_frame"):
            eng.generate(replace(req, extra={"notes_per_frame": bad}))


def test_token_engines_need_a_pitched_group(engines):
    with pytest.raises(ValueError, match="pitched part"):
        engines["gru"].generate(GenerationRequest(groups=(), drums=True))
    drums_only = engines["multi-rnn"].generate(GenerationRequest(groups=(), drums=True, bars=2))
    assert drums_only[0].groups == [V.DRUM_GROUP]


def test_cli_generates_with_each_engine(tiny_dirs, tmp_path, capsys):
    from model.generate import main

    for name in ENGINES:
        rc = main(["--engine", name, "--checkpoint", str(tiny_dirs[name]), "--instruments", "piano", "--bars", "2",
                   "--seed", "4", "--out", str(tmp_path / name)])
        assert rc == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["engine"] == name and line["bars"] == [2] and line["files"]
