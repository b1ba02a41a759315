"""The vae-nn engine (per-instrument VAEs + MelodyNN + ConditionalNNs): shapes, latent interpolation,
options, reference songs, generation through a tiny untrained checkpoint, the CLI."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint as ckpt
from model import rollwindows as RW
from model import vae_nn as VN
from model.engine import get_engine
from model.request import LABELS, MAX_NOISE_SD, GenerationRequest
from tokenizer import Score
from tokenizer import vocab as V
from tokenizer.pianoroll import pack_windows, pianoroll_to_score

REFERENCES = ["rock: song a", "jazz: song b"]


def random_windows(n: int, seed: int = 0, density: float = 0.03) -> np.ndarray:
    return np.random.default_rng(seed).random((n, RW.N_TRACKS, RW.WINDOW, RW.PITCHES)) < density


def _prompt(pitch: int) -> Score:
    w = np.zeros((5, 32, 128), bool)
    w[0, ::4, pitch] = True
    w[2, ::8, pitch - 24] = True
    return Score(pianoroll_to_score(w, RW.STEPS_PER_BEAT).notes, length=RW.BARS_PER_WINDOW * V.STEPS_PER_BAR)


def save_tiny(directory: Path, seed: int = 0) -> Path:
    """An untrained tiny vae-nn checkpoint with 4 start windows and two reference songs of 3 windows each,
    its thresholds set so that about 5% of the cells play."""
    torch.manual_seed(seed)
    cfg = replace(VN.PRESETS["tiny"], n_ref_windows=6, reference_names=REFERENCES)
    model = VN.VAENN(cfg).eval()
    starts = random_windows(cfg.n_start, seed)
    model.start_windows.copy_(torch.from_numpy(pack_windows(starts)))
    model.ref_windows.copy_(torch.from_numpy(pack_windows(random_windows(6, seed + 1, 0.1))))
    model.ref_song.copy_(torch.tensor([0, 0, 0, 1, 1, 1]))
    probs = model.next_probs(torch.from_numpy(starts))
    model.thresholds.copy_(torch.stack([torch.quantile(probs[:, k].flatten(), 0.95) for k in range(RW.N_TRACKS)]))
    return ckpt.save_checkpoint(directory, model.state_dict(), {"engine": "vae-nn", "model": asdict(cfg), "meta": {}})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("vae_nn_tiny") / "ckpt")


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return VN.VAENNEngine(tiny_dir)


def _equal(a, b) -> bool:
    return all(np.array_equal(x.notes, y.notes) for x, y in zip(a, b))


def test_shapes():
    cfg = VN.PRESETS["tiny"]
    m = VN.VAENN(cfg)
    x = (torch.rand(3, 5, 32, 128) < 0.05).float()
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (3, 5, cfg.latent)
    assert m.decode(mu).shape == (3, 5, 32, 128)
    assert m.predict(mu).shape == (3, 5, cfg.latent)
    assert m.predict(mu, mu[:, 0]).shape == (3, 5, cfg.latent)
    p = m.next_probs(x, noise=torch.zeros(3, 5, cfg.latent))
    assert p.shape == (3, 5, 32, 128) and torch.equal(p, m.next_probs(x))


def test_cpu_preset_follows_musicgendl():
    cfg = VN.PRESETS["cpu"]
    assert cfg.latent == 16 and 0.5 <= cfg.noise_sd <= 1.0 and cfg.alpha == 0.5
    m = VN.VAENN(cfg)
    assert list(m.vaes) == ["piano", "guitar", "bass", "strings", "drums"]
    assert list(m.cond) == ["guitar", "bass", "strings", "drums"]
    assert sum(p.numel() for p in m.parameters()) * 2 < 5e6  # fp16 bytes


def test_style_mix_edge_cases():
    z, s = torch.randn(4, 5, 16), torch.randn(4, 5, 16)
    assert torch.equal(VN.style_mix(z, s, 0.0), z)
    assert torch.equal(VN.style_mix(z, None, 0.7), z)
    assert torch.equal(VN.style_mix(z, s, 1.0), s)
    assert torch.allclose(VN.style_mix(z, s, 0.5), (z + s) / 2)
    assert torch.equal(VN.style_mix(z, s[:1], 1.0), s[:1].expand_as(z))


def test_shipped_checkpoint_generates_windows():
    eng = get_engine("vae-nn")
    assert len(eng.references) == 30
    out = eng.generate(GenerationRequest(groups=("piano", "bass"), drums=True, bars=8, variants=2, seed=3,
                                         extra={"reference": eng.references[0]}))
    assert [s.length for s in out] == [8 * V.STEPS_PER_BAR] * 2
    assert eng.speed()[1] == "windows" and eng.last_stats["windows"] == 2 * 2
    assert eng.last_stats["alpha"] == eng.cfg.alpha and eng.last_stats["noise_sd"] == eng.cfg.noise_sd
    assert "seed 0" not in eng.description.lower() and "MusicGenDL" in eng.description


def test_a_given_checkpoint_is_used(tiny_dir, tmp_path):
    mine = get_engine("vae-nn", tiny_dir)
    assert mine.source == str(tiny_dir) and mine.references == tuple(REFERENCES)
    assert mine.cfg.latent == VN.PRESETS["tiny"].latent != get_engine("vae-nn").cfg.latent
    other = VN.VAENNEngine(save_tiny(tmp_path / "other", seed=1))
    req = GenerationRequest(groups=("piano", "guitar"), drums=True, bars=4, variants=2, seed=1)
    assert not _equal(mine.generate(req), other.generate(req))
    with pytest.raises(FileNotFoundError):
        get_engine("vae-nn", tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        VN.VAENNEngine(tmp_path / "missing")


def test_a_cnn_checkpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'cnn' checkpoint, not 'vae-nn'"):
        VN.VAENNEngine(ckpt.CHECKPOINT_ROOT / "cnn")


def test_fp16_checkpoint_keeps_starts_and_references(tiny_dir, tmp_path):
    dst = ckpt.convert(tiny_dir, tmp_path / "vae16", "fp16")
    state, config = ckpt.load_checkpoint(dst)
    ref, _ = ckpt.load_checkpoint(tiny_dir)
    for k in ("start_windows", "ref_windows", "ref_song"):
        assert torch.equal(state[k], ref[k])
    eng = VN.VAENNEngine(dst)
    assert eng.references == tuple(REFERENCES)
    eng.generate(GenerationRequest(bars=2, extra={"reference": REFERENCES[1]}))


def test_seeded_generation_is_deterministic_and_exact(engine):
    req = GenerationRequest(groups=("piano", "strings"), drums=True, bars=7, variants=3, seed=5)
    a, b = engine.generate(req), engine.generate(req)
    assert _equal(a, b)
    for s in a:
        assert s.length == 7 * V.STEPS_PER_BAR and len(s.notes)
        assert set(s.groups) <= {V.GROUPS.index("piano"), V.GROUPS.index("strings"), V.DRUM_GROUP}
    assert engine.last_stats["windows"] == 3 * 2
    out = engine.generate(GenerationRequest(groups=("bass",), drums=False, bars=4, seed=5))
    assert set(out[0].groups) <= {V.GROUPS.index("bass")}


def test_noise_makes_variants_differ_and_zero_noise_does_not(engine):
    req = GenerationRequest(groups=("piano",), bars=8, variants=2, seed=1, prompt=_prompt(60))
    a, b = engine.generate(replace(req, extra={"noise_sd": 0}))
    assert np.array_equal(a.notes, b.notes)
    a, b = engine.generate(replace(req, extra={"noise_sd": 1.5}))
    assert not np.array_equal(a.notes, b.notes)


def test_alpha_zero_is_no_reference_and_alpha_one_is_the_reference(engine):
    ref = engine.references[0]
    base = dict(groups=("piano", "bass"), drums=True, bars=8, variants=2, seed=3)
    none = engine.generate(GenerationRequest(**base, extra={"noise_sd": 0.8}))
    zero = engine.generate(GenerationRequest(**base, extra={"noise_sd": 0.8, "alpha": 0.0, "reference": ref}))
    assert _equal(none, zero)
    # alpha 1: the latents are the reference's, whatever the start
    one_a, one_b = (engine.generate(GenerationRequest(**{**base, "variants": 1}, prompt=_prompt(p),
                                                      extra={"alpha": 1.0, "reference": ref}))[0] for p in (60, 72))
    off = one_a.length - 8 * V.STEPS_PER_BAR
    assert np.array_equal(one_a.notes[one_a.notes["onset"] >= off], one_b.notes[one_b.notes["onset"] >= off])


def test_uploaded_reference(engine):
    out = engine.generate(GenerationRequest(bars=4, extra={"reference": _prompt(64), "alpha": 0.5}))
    assert out[0].length == 4 * V.STEPS_PER_BAR and engine.last_stats["alpha"] == 0.5


@pytest.mark.parametrize("extra, field", [
    ({"noise_sd": MAX_NOISE_SD + 0.1}, "noise_sd"),
    ({"noise_sd": -0.1}, "noise_sd"),
    ({"noise_sd": "lots"}, "noise_sd"),
    ({"noise_sd": True}, "noise_sd"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"reference": "no such song"}, None),
    ({"reference": 3}, "reference"),
    ({"reference": Score()}, "reference_midi"),
])
def test_bad_options_are_clear_errors(engine, extra, field):
    """Messages name the field as the page labels it (the request checks), or the unknown song (the engine)."""
    match = re.escape(LABELS[field]) if field else "unknown reference song 'no such song'"
    with pytest.raises(ValueError, match=match):
        engine.generate(GenerationRequest(bars=2, extra=extra))


def test_cli_passes_the_options(tiny_dir, tmp_path, monkeypatch, capsys):
    from model import engine as E
    from model.generate import main
    from tokenizer import write_midi

    root = tmp_path / "ck"
    shutil.copytree(tiny_dir, root / "vae-nn")
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", root)
    monkeypatch.setattr(E, "_INSTANCES", {})
    midi = tmp_path / "ref.mid"
    write_midi(_prompt(62), midi)
    for opts in (["--noise-sd", "0.5", "--alpha", "0.3", "--reference", REFERENCES[0]], ["--reference", str(midi)]):
        rc = main(["--engine", "vae-nn", "--instruments", "piano,guitar", "--bars", "6", "--seed", "2",
                   "--out", str(tmp_path / "out"), *opts])
        assert rc == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["engine"] == "vae-nn" and line["bars"] == [6]
    assert main(["--engine", "vae-nn", "--alpha", "2", "--out", str(tmp_path / "out")]) == 2
    assert "alpha" in capsys.readouterr().err
