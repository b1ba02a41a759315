"""The vae-nn engine (per-instrument VAEs + MelodyNN + ConditionalNNs): shapes, a tiny training run,
latent interpolation, options, generation through a tiny checkpoint, the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from model import checkpoint as ckpt
from model import rollwindows as RW
from model import vae_nn as VN
from model.engine import MAX_NOISE_SD, GenerationRequest
from tokenizer import Score
from tokenizer import vocab as V


@pytest.fixture(scope="module")
def vae_run(roll_corpus, tmp_path_factory):
    from training.train import main

    run = tmp_path_factory.mktemp("run_vae_nn")
    rc = main(["--engine", "vae-nn", "--preset", "tiny", "--data", str(roll_corpus), "--out", str(run), "--steps", "40",
               "--batch", "8", "--lr", "3e-3", "--eval-every", "20", "--ckpt-every", "20", "--val-windows", "16",
               "--log-every", "5", "--threads", "1", "--quiet"])
    assert rc == 0
    return run


@pytest.fixture(scope="module")
def engine(vae_run):
    return VN.VAENNEngine(vae_run / "best")


def _prompt(pitch: int) -> Score:
    from evaluation.variety import window_prompt

    w = np.zeros((5, 32, 128), bool)
    w[0, ::4, pitch] = True
    w[2, ::8, pitch - 24] = True
    return window_prompt(w)


def _equal(a, b) -> bool:
    return all(np.array_equal(x.notes, y.notes) for x, y in zip(a, b))


def test_shapes():
    cfg = VN.PRESETS["tiny"]
    m = VN.build_model(cfg)
    x = (torch.rand(3, 5, 32, 128) < 0.05).float()
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (3, 5, cfg.latent)
    assert m.decode(mu).shape == (3, 5, 32, 128)
    assert m.predict(mu).shape == (3, 5, cfg.latent)
    assert m.predict(mu, mu[:, 0]).shape == (3, 5, cfg.latent)
    loss, sums = VN.vae_nn_loss(m, torch.stack([x, x], 1).to(torch.uint8))
    assert loss.ndim == 0 and set(VN.summarize({k: float(v) for k, v in sums.items()})) >= {"loss", "accuracy"}


def test_presets_follow_the_seed():
    cfg = VN.PRESETS["cpu"]
    assert cfg.latent == 16 and 0.5 <= cfg.noise_sd <= 1.0 and cfg.alpha == 0.5
    m = VN.build_model(cfg)
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


def test_tiny_training_loss_falls(vae_run):
    rows = [r for r in csv.DictReader((vae_run / "metrics.csv").open()) if r["split"] == "train"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_checkpoint_carries_starts_references_and_thresholds(vae_run, tmp_path):
    dst = ckpt.convert(vae_run / "best", tmp_path / "vae16", "fp16")
    state, config = ckpt.load_checkpoint(dst)
    ref, _ = ckpt.load_checkpoint(vae_run / "best")
    for k in ("start_windows", "ref_windows", "ref_song"):
        assert torch.equal(state[k], ref[k])
    assert state["start_windows"].any() and state["ref_windows"].any()
    assert config["model"]["reference_names"] == ["game: city_blues_redfarn"]
    assert not torch.allclose(ref["thresholds"], torch.full((5,), 0.5))
    eng = VN.VAENNEngine(dst)
    assert eng.references == ("game: city_blues_redfarn",)
    eng.generate(GenerationRequest(bars=2, extra={"reference": eng.references[0]}))


def test_seeded_generation_is_deterministic_and_exact(engine):
    req = GenerationRequest(groups=("piano", "strings"), drums=True, bars=7, variants=3, seed=5)
    a, b = engine.generate(req), engine.generate(req)
    assert _equal(a, b)
    for s in a:
        assert s.length == 7 * V.STEPS_PER_BAR
        assert set(s.groups) <= {V.GROUPS.index("piano"), V.GROUPS.index("strings"), V.DRUM_GROUP}
    out = engine.generate(GenerationRequest(groups=("bass",), drums=False, bars=4, seed=5))
    assert set(out[0].groups) <= {V.GROUPS.index("bass")}


def test_noise_makes_the_latents_differ_and_zero_noise_does_not(engine):
    start = RW.unpack(engine.model.start_windows.numpy()[:1]).astype(bool).repeat(3, 0)
    quiet = engine.rollout(start, 2, seed=0, noise_sd=0.0, alpha=0.0, ref=None)
    assert (quiet[0] == quiet[1]).all() and (quiet[1] == quiet[2]).all()
    req = GenerationRequest(groups=("piano",), bars=8, variants=2, seed=1, prompt=_prompt(60), extra={"noise_sd": 0})
    a, b = engine.generate(req)
    assert np.array_equal(a.notes, b.notes)


def test_alpha_zero_is_no_reference_and_alpha_one_is_the_reference(engine):
    ref = engine.references[0]
    base = dict(groups=("piano", "bass"), drums=True, bars=8, variants=2, seed=3)
    none = engine.generate(GenerationRequest(**base, extra={"noise_sd": 0.8}))
    zero = engine.generate(GenerationRequest(**base, extra={"noise_sd": 0.8, "alpha": 0.0, "reference": ref}))
    assert _equal(none, zero)
    # alpha 1: the latents are the reference's, whatever the start
    one_a = engine.generate(GenerationRequest(**{**base, "variants": 1}, prompt=_prompt(60),
                                              extra={"alpha": 1.0, "reference": ref}))
    one_b = engine.generate(GenerationRequest(**{**base, "variants": 1}, prompt=_prompt(72),
                                              extra={"alpha": 1.0, "reference": ref}))
    off = one_a[0].length - 8 * V.STEPS_PER_BAR
    cont_a = one_a[0].notes[one_a[0].notes["onset"] >= off]
    cont_b = one_b[0].notes[one_b[0].notes["onset"] >= off]
    assert np.array_equal(cont_a, cont_b)


def test_uploaded_reference(engine):
    ref = _prompt(64)
    out = engine.generate(GenerationRequest(bars=4, extra={"reference": ref, "alpha": 0.5}))
    assert out[0].length == 4 * V.STEPS_PER_BAR


@pytest.mark.parametrize("extra, match", [
    ({"noise_sd": MAX_NOISE_SD + 0.1}, "noise sd"),
    ({"noise_sd": -0.1}, "noise sd"),
    ({"noise_sd": "lots"}, "noise sd"),
    ({"noise_sd": True}, "noise sd"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"reference": "no such song"}, "unknown reference"),
    ({"reference": 3}, "reference must be"),
    ({"reference": Score()}, "no notes"),
])
def test_bad_options_are_clear_errors(engine, extra, match):
    with pytest.raises(ValueError, match=match):
        engine.generate(GenerationRequest(bars=2, extra=extra))


def test_evaluate_checkpoint(vae_run, roll_corpus):
    out = VN.evaluate_checkpoint(vae_run / "best", roll_corpus, "test", batch=8)
    assert out["pairs"] > 0 and out["loss"] > 0
    for name in RW.TRACKS:
        assert out[f"bce_{name}"] > 0 and 0 <= out[f"next_f1_{name}"] <= 1


def test_cli_passes_the_options(vae_run, tmp_path, monkeypatch, capsys):
    from model import engine as E
    from model.generate import main
    from tokenizer import write_midi

    root = tmp_path / "ck"
    shutil.copytree(vae_run / "best", root / "vae-nn")
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", root)
    monkeypatch.setattr(E, "_INSTANCES", {})
    midi = tmp_path / "ref.mid"
    write_midi(_prompt(62), midi)
    for opts in (["--noise-sd", "0.5", "--alpha", "0.3", "--reference", "game: city_blues_redfarn"],
                 ["--reference", str(midi)]):
        rc = main(["--engine", "vae-nn", "--instruments", "piano,guitar", "--bars", "6", "--seed", "2",
                   "--out", str(tmp_path / "out"), *opts])
        assert rc == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["engine"] == "vae-nn" and line["bars"] == [6]
    assert main(["--engine", "vae-nn", "--alpha", "2", "--out", str(tmp_path / "out")]) == 2
    assert "alpha" in capsys.readouterr().err


def test_reference_pull_measures_closeness_to_the_reference(engine):
    from evaluation.variety import reference_pull

    starts = list(RW.unpack(engine.model.start_windows.numpy()[:2]).astype(bool))
    rows = reference_pull(engine, starts, (0.0, 1.0), n_refs=2, bars=4)
    assert [r["alpha"] for r in rows] == [0.0, 1.0] and rows[0]["references"] == 1
    assert 0.0 <= rows[1]["to_own_reference_jaccard"] <= 1.0 and rows[1]["to_other_references_jaccard"] is None
