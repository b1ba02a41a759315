"""The style-conditioned VAE network and engine: Gumbel-softmax, codebook, the teacher-forced pass,
generation (styles, instrument mask, segment endings, chaining), style transfer, checkpoints."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

import tokenizer as T
from model import checkpoint as ckpt
from model import style_vae as S
from model.engine import GenerationRequest, get_engine
from model.sampling.filters import SamplingParams
from tests.conftest import MIDI_FIXTURES
from tokenizer import vocab as V
from tokenizer.events import HEADER, N_PITCH, notes_to_events, pack_segment

STYLES = ["game", "rock", "jazz"]


def save_tiny(folder, seed: int = 0, **changes):
    """A tiny style-vae checkpoint with seeded random weights (the engine's code paths, not its music)."""
    cfg = replace(S.PRESETS["tiny"], styles=list(STYLES), **changes)
    torch.manual_seed(seed)
    model = S.build_model(cfg)
    ckpt.save_checkpoint(folder, model.state_dict(), {"engine": "style-vae", "model": asdict(cfg), "meta": {}})
    return folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return S.StyleVAEEngine(save_tiny(tmp_path_factory.mktemp("style_vae") / "tiny"))


def packed_batch(cfg, path=MIDI_FIXTURES[0], style=1):
    segs = [e for e in notes_to_events(T.load_midi(path).notes, cfg.segment_steps) if len(e)]
    return torch.from_numpy(np.stack([pack_segment(e, style, cfg.max_events) for e in segs]).astype(np.int64))


# ---- the network's pieces -----------------------------------------------------------------------
def test_gumbel_softmax_at_small_tau_is_near_one_hot():
    logits = torch.randn(1024, 6, generator=torch.Generator().manual_seed(1))
    y = S.gumbel_softmax(logits, 0.02, torch.Generator().manual_seed(0))
    assert torch.allclose(y.sum(-1), torch.ones(1024))
    assert y.max(-1).values.mean() > 0.98 and (y.max(-1).values > 0.9).float().mean() > 0.94
    soft = S.gumbel_softmax(logits, 5.0, torch.Generator().manual_seed(0))
    assert soft.max(-1).values.mean() < 0.6
    # the sample follows the logits: a dominant class is picked almost always
    peaked = torch.tensor([[8.0, 0, 0, 0]]).expand(500, 4)
    assert (S.gumbel_softmax(peaked, 0.02).argmax(-1) == 0).float().mean() > 0.99


def test_style_vector_is_the_codebook_row_for_a_one_hot_style():
    cfg = S.PRESETS["tiny"]
    m = S.build_model(cfg)
    for s in (0, 3, cfg.n_styles - 1):
        z_cat = torch.nn.functional.one_hot(torch.tensor([s]), cfg.n_styles).float()
        assert torch.equal(m.style_vector(z_cat)[0], m.codebook[s])
    base = S.build_model(replace(cfg, style_mode="label"))
    assert not hasattr(base, "codebook") and base.cfg.z_style == cfg.n_styles
    with pytest.raises(ValueError, match="style_mode"):
        S.build_model(replace(cfg, style_mode="onehot"))


@pytest.mark.parametrize("position", [False, True])
def test_teacher_forced_pass_and_the_position_embedding(position):
    cfg = replace(S.PRESETS["tiny"], position=position, max_events=128)  # some segments fit whole
    m = S.build_model(cfg).eval()
    batch = packed_batch(cfg)
    out = m(batch, sample=False)
    B, T_ = batch.shape[0], batch.shape[1] - HEADER
    assert out["shift"].shape == (B, T_, cfg.n_shift) and out["duration"].shape == (B, T_, V.N_DURATION)
    assert out["pitch"].shape == (B, T_, N_PITCH) and out["mu"].shape == (B, cfg.z_content)
    assert all(torch.isfinite(v.float()).all() for v in out.values())
    n = batch[:, 0, 1]
    short = (n < T_).nonzero().flatten()
    assert len(short) and (out["target_shift"][short, n[short]] == cfg.eos).all()  # EOS follows the last event
    assert torch.equal(out["target_shift"][0, :n[0]], batch[0, HEADER:HEADER + n[0], 0])
    ev = torch.tensor([[[0, 3, 60], [8, 3, 64], [8, 3, 67]]])
    assert torch.equal(m.embed(ev[:, :1]), m.embed(ev[:, :1], torch.tensor([[0]])))
    assert torch.equal(m.embed(ev)[:, 2], m.embed(ev[:, 2:], torch.tensor([[16]]))[:, 0])  # onset = sum of shifts
    assert torch.equal(m.embed(ev[:, :1]), m.embed(ev[:, :1], torch.tensor([[16]]))) != position


def test_the_label_baseline_decodes_from_the_true_label():
    cfg = replace(S.PRESETS["tiny"], style_mode="label")
    m = S.build_model(cfg).eval()
    batch = packed_batch(cfg)
    other = batch.clone()
    other[:, 0, 0] = 2
    assert not torch.equal(m(batch, sample=False)["pitch"], m(other, sample=False)["pitch"])
    assert torch.equal(m(batch, sample=False)["mu"], m(other, sample=False)["mu"])  # the encoder ignores it


def test_prior_walk_stays_in_the_prior():
    gen = torch.Generator().manual_seed(0)
    first = torch.randn(4000, 3, generator=gen)
    walk = S.prior_walk(first, 12, 0.8, gen)
    assert walk.shape == (4000, 12, 3) and torch.equal(walk[:, 0], first)
    assert walk[:, -1].std().item() == pytest.approx(1.0, abs=0.05)
    corr = torch.corrcoef(torch.stack([walk[:, 5, 0], walk[:, 6, 0]]))[0, 1].item()
    assert corr == pytest.approx(0.8, abs=0.05)  # neighbouring segments share content


# ---- generation ---------------------------------------------------------------------------------
def test_engine_generates_the_requested_style_groups_and_bars(engine):
    assert engine.styles == tuple(STYLES) and engine.unit == "events"
    req = GenerationRequest(groups=("bass", "guitar"), drums=True, bars=5, variants=2, seed=3, style="jazz", bpm=96)
    scores = engine.generate(req)
    assert len(scores) == 2 and engine.last_stats["seconds"] > 0
    assert engine.last_stats["events"] == sum(len(s.notes) for s in scores) > 0
    assert engine.speed() == (engine.last_stats["events_per_s"], "events")
    allowed = {V.GROUPS.index("bass"), V.GROUPS.index("guitar"), V.DRUM_GROUP}
    for s in scores:
        assert s.style == "jazz" and s.length == 5 * V.STEPS_PER_BAR and s.bpm == 96
        assert set(s.groups) <= allowed
        assert s.end_step <= s.length
        assert T.load_midi(T.to_midi_bytes(s)).notes.size
    no_drums = engine.generate(GenerationRequest(groups=("piano",), drums=False, bars=2, seed=1, style="rock"))
    assert set(no_drums[0].groups) <= {0}


def test_seed_makes_generation_deterministic(engine):
    req = GenerationRequest(groups=("piano",), drums=True, bars=4, variants=2, seed=11, style="rock")
    a, b = engine.generate(req), engine.generate(req)
    c = engine.generate(replace(req, seed=12))
    assert all(np.array_equal(x.notes, y.notes) for x, y in zip(a, b))
    assert not all(np.array_equal(x.notes, y.notes) for x, y in zip(a, c))


def test_no_style_picks_one_per_variant_and_unknown_style_is_refused(engine):
    scores = engine.generate(GenerationRequest(groups=("piano",), bars=2, variants=3, seed=2))
    assert all(s.style in STYLES for s in scores)
    with pytest.raises(ValueError, match="styles"):
        engine.generate(GenerationRequest(groups=("piano",), bars=2, style="baroque"))


def test_sample_pieces_respects_the_pitch_mask(engine):
    allowed = S.allowed_pitches([V.GROUPS.index("strings")], drums=False)
    notes = S.sample_pieces(engine.model, 0, 3, 4, SamplingParams(1.5, 1.0, 0, 0), allowed)
    assert all(len(n) and set(np.unique(n["group"]).tolist()) == {V.GROUPS.index("strings")} for n in notes)


def test_segments_play_on_until_eos_is_allowed(engine):
    """EOS waits until the segment is eos_from done, so a chained piece has no hole at the end of every
    segment; with eos_from 0 the model ends segments itself."""
    m, cfg = engine.model, engine.model.cfg
    gen = torch.Generator().manual_seed(0)
    z_cat = torch.nn.functional.one_hot(torch.arange(32) % cfg.n_styles, cfg.n_styles).float()
    z = torch.cat([torch.randn(32, cfg.z_content, generator=gen), m.style_vector(z_cat)], -1)
    everything = torch.ones(N_PITCH, dtype=torch.bool)
    rows = m.decode(z, SamplingParams(1.5, 1.0, 0, 0), everything, gen)
    eos_at = int(cfg.eos_from * cfg.segment_steps)
    assert 0 < eos_at < cfg.segment_steps
    for r in rows:
        onset = int(r[:, 0].sum())
        assert onset < cfg.segment_steps
        assert len(r) == cfg.max_events or onset >= eos_at, (len(r), onset)
    free = m.decode(z, SamplingParams(1.5, 1.0, 0, 0), everything, gen, eos_from=0.0)
    assert any(len(r) < cfg.max_events and int(r[:, 0].sum()) < eos_at for r in free)


def test_style_transfer_uses_the_upload_and_walks_on_past_its_end(engine):
    cfg = engine.cfg
    src = T.load_midi(MIDI_FIXTURES[2]).first_bars(2)
    mu = S.encode_content(engine.model, src.notes)
    assert mu.shape == (2 // cfg.segment_bars, cfg.z_content)
    z = engine.restyle_content(src.notes, 4, seed=0)
    assert z.shape == (4, cfg.z_content) and torch.equal(z[:len(mu)], mu)
    req = GenerationRequest(groups=tuple(V.PITCHED_GROUPS), drums=True, bars=4, seed=0, style="rock", prompt=src,
                            temperature=0.5)
    out = engine.generate(req)[0]
    assert out.style == "rock" and out.length == 4 * V.STEPS_PER_BAR and len(out.notes)
    other = engine.generate(replace(req, prompt=T.load_midi(MIDI_FIXTURES[5]).first_bars(2)))[0]
    assert not np.array_equal(out.notes, other.notes)  # the upload's content code is used
    with pytest.raises(ValueError, match="no notes"):
        S.encode_content(engine.model, T.make_notes([], [], 5, [], []))


# ---- checkpoints --------------------------------------------------------------------------------
def test_the_shipped_checkpoint_generates():
    eng = S.StyleVAEEngine()
    assert eng.source == str(ckpt.CHECKPOINT_ROOT / "style-vae") and eng.cfg.style_mode == "codebook"
    s = eng.generate(GenerationRequest(groups=("piano", "bass"), bars=2, seed=0, style=eng.styles[0]))[0]
    assert len(s.notes) and eng.last_stats["events"] == len(s.notes)


def test_a_given_checkpoint_folder_is_the_one_loaded(tmp_path):
    a, b = save_tiny(tmp_path / "a", seed=1), save_tiny(tmp_path / "b", seed=2, style_mode="label")
    ea, eb = get_engine("style-vae", a), S.StyleVAEEngine(b)
    assert ea.source == str(a) and eb.source == str(b) and eb.cfg.style_mode == "label"
    shipped = get_engine("style-vae")
    assert shipped is not ea and shipped.cfg.hidden != ea.cfg.hidden
    assert not torch.equal(ea.model.to_mu.weight, eb.model.to_mu.weight)
    req = GenerationRequest(groups=("piano",), bars=2, seed=0, style="rock")
    assert not np.array_equal(ea.generate(req)[0].notes, eb.generate(req)[0].notes)


def test_a_missing_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nothing"):
        S.StyleVAEEngine(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="nothing"):
        get_engine("style-vae", tmp_path / "nothing")
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        S.StyleVAEEngine()


def test_another_engines_checkpoint_is_refused(tmp_path):
    folder = save_tiny(tmp_path / "x")
    conf = json.loads((folder / ckpt.CONFIG_NAME).read_text())
    (folder / ckpt.CONFIG_NAME).write_text(json.dumps({**conf, "engine": "cnn"}))
    with pytest.raises(ValueError, match="cnn"):
        S.StyleVAEEngine(folder)


def test_cli_generates_with_a_style(engine, tmp_path, capsys):
    from model.generate import main

    rc = main(["--engine", "style-vae", "--checkpoint", engine.source, "--style", "rock", "--instruments",
               "piano,bass", "--bars", "3", "--seed", "4", "--out", str(tmp_path / "out")])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["engine"] == "style-vae" and line["bars"] == [3] and line["files"]
    assert main(["--engine", "style-vae", "--checkpoint", engine.source, "--style", "nope",
                 "--out", str(tmp_path / "out")]) == 2
    assert "style" in capsys.readouterr().err
