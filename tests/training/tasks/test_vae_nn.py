"""Training and held-out evaluation of the vae-nn engine on the tiny corpus: the joint loss, reference songs
and start windows stored in the checkpoint, thresholds calibrated along the generation path."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from model import checkpoint as ckpt
from model.engine import GenerationRequest
from model.vae_nn import PRESETS, VAENN, VAENNEngine
from tokenizer.pianoroll import TRACKS
from training.tasks import evaluate_checkpoint
from training.tasks import rollwindows as RW
from training.tasks import vae_nn as VT


@pytest.fixture(scope="module")
def vae_run(tiny_corpus, tmp_path_factory):
    from training.train import main

    run = tmp_path_factory.mktemp("run_vae_nn")
    rc = main(["--engine", "vae-nn", "--preset", "tiny", "--data", str(tiny_corpus), "--out", str(run), "--steps",
               "30", "--batch", "8", "--lr", "3e-3", "--eval-every", "15", "--ckpt-every", "15", "--val-windows", "16",
               "--log-every", "5", "--threads", "1", "--quiet"])
    assert rc == 0
    return run


def test_loss_and_its_summary():
    m = VAENN(PRESETS["tiny"])
    x = (torch.rand(3, 5, 32, 128) < 0.05)
    loss, sums = VT.vae_nn_loss(m, torch.stack([x, x], 1))
    out = VT.summarize({k: float(v) for k, v in sums.items()})
    assert loss.ndim == 0 and out["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert {f"{k}_{t}" for k in ("bce", "kl", "mse", "hits") for t in TRACKS} <= set(out)


def test_tiny_training_loss_falls(vae_run):
    rows = [r for r in csv.DictReader((vae_run / "metrics.csv").open()) if r["split"] == "train"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_checkpoint_carries_starts_references_and_thresholds(vae_run):
    state, config = ckpt.load_checkpoint(vae_run / "best", engine="vae-nn")
    assert config["model"]["reference_names"] == ["rock: city_blues_redfarn"]  # the test piece with a piano
    assert state["start_windows"].any() and state["ref_windows"].any()
    assert len(state["ref_windows"]) == config["model"]["n_ref_windows"] == 4 and not state["ref_song"].any()
    assert not torch.allclose(state["thresholds"], torch.full((5,), 0.5))
    eng = VAENNEngine(vae_run / "best")
    out = eng.generate(GenerationRequest(bars=4, variants=2, extra={"reference": eng.references[0]}))
    assert [s.length for s in out] == [4 * 32] * 2


def test_thresholds_are_calibrated_along_the_generation_path_with_the_default_noise(vae_run, tiny_corpus):
    model = VAENNEngine(vae_run / "best").model
    stored = model.thresholds.clone()
    val = RW.WindowPairs(*RW.window_pairs(tiny_corpus, model.cfg.windows_per_piece)["validation"], max_pairs=16)
    RW.calibrate(model, RW.batch_of(val, 256), VT.calibration_probs)
    assert torch.allclose(model.thresholds, stored)
    RW.calibrate(model, RW.batch_of(val, 256), VT.generation_probs)  # without noise: other thresholds
    assert not torch.allclose(model.thresholds, stored)


def test_evaluate_checkpoint(vae_run, tiny_corpus):
    out = evaluate_checkpoint("vae-nn", vae_run / "best", tiny_corpus, "test", max_items=8, batch=4)
    assert out["engine"] == "vae-nn" and out["pairs"] == 8 and out["loss"] > 0
    for name in TRACKS:
        assert out[f"bce_{name}"] > 0 and out[f"kl_{name}"] >= 0 and 0 <= out[f"next_f1_{name}"] <= 1
    assert 0 <= out["recon_frame_hit_rate"] <= 1 and out["next_bce"] > 0
    again = evaluate_checkpoint("vae-nn", vae_run / "best", tiny_corpus, "test", max_items=8, batch=4)
    assert again["loss"] == out["loss"]  # the sampled posterior is seeded


def test_the_evaluate_command_takes_the_engine_from_the_checkpoint(vae_run, tiny_corpus, capsys):
    from training.evaluate import main

    assert main([str(vae_run / "best"), "--data", str(tiny_corpus), "--split", "validation", "--max-items", "4"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["engine"] == "vae-nn" and line["split"] == "validation" and line["pairs"] == 4


def test_reference_titles():
    assert RW.reference_title({"id": "abc:ryansMammoth/AllTheGoReel.abc#1~1"}) == "ryansMammoth/AllTheGoReel #1"
    assert RW.reference_title({"id": "m21:bach/bwv66.6.mxl", "composer": "Bach"}) == "Bach: bach/bwv66.6"


def test_no_eligible_reference_song_is_a_clear_error(tiny_corpus, tmp_path):
    import shutil

    data = shutil.copytree(tiny_corpus, tmp_path / "corpus", ignore=shutil.ignore_patterns("derived"))
    rows = [json.loads(x) for x in (data / "test.index.jsonl").read_text().splitlines()]
    (data / "test.index.jsonl").write_text("".join(json.dumps({**r, "bars": 8}) + "\n" for r in rows))
    with pytest.raises(ValueError, match="no test-split piece"):
        RW.reference_set(data, 3, 4)
