"""The cnn engine (MelodyCNN + conditional harmony CNNs): shapes, a tiny training run, thresholds,
generation through a tiny checkpoint, the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from model import checkpoint as ckpt
from model import cnn as C
from model import rollwindows as RW
from model.engine import GenerationRequest
from tokenizer import vocab as V
from tokenizer.pianoroll import TRACKS


@pytest.fixture(scope="module")
def cnn_run(roll_corpus, tmp_path_factory):
    from training.train import main

    run = tmp_path_factory.mktemp("run_cnn")
    rc = main(["--engine", "cnn", "--preset", "tiny", "--data", str(roll_corpus), "--out", str(run), "--steps", "40",
               "--batch", "8", "--lr", "3e-3", "--eval-every", "20", "--ckpt-every", "20", "--val-windows", "16",
               "--log-every", "5", "--threads", "1", "--quiet"])
    assert rc == 0
    return run


@pytest.fixture(scope="module")
def engine(cnn_run):
    return C.CNNEngine(cnn_run / "best")


def _rows(run, split):
    return [r for r in csv.DictReader((run / "metrics.csv").open()) if r["split"] == split]


def test_shapes():
    cfg = C.PRESETS["tiny"]
    m = C.build_model(cfg)
    x = (torch.rand(3, 5, 32, 128) < 0.05).float()
    assert m.melody(x[:, 0]).shape == (3, 32, 128)
    assert m.harmony["bass"](x[:, 0], x[:, 2]).shape == (3, 32, 128)
    assert m(x, x[:, 0]).shape == (3, 5, 32, 128)
    nxt = m.step(x.bool())
    assert nxt.shape == (3, 5, 32, 128) and nxt.dtype == torch.bool


def test_cpu_preset_follows_the_seed_and_fits_the_budget():
    m = C.build_model(C.PRESETS["cpu"])
    convs = [mod for mod in m.melody.modules() if isinstance(mod, torch.nn.Conv2d)]
    dense = [mod for mod in m.melody.modules() if isinstance(mod, torch.nn.Linear)]
    deconvs = [mod for mod in m.melody.modules() if isinstance(mod, torch.nn.ConvTranspose2d)]
    assert (len(convs), len(dense), len(deconvs)) == (3, 3, 3)
    n = sum(p.numel() for p in m.parameters())
    assert n * 2 < 7e6  # fp16 bytes


def test_tiny_training_loss_falls(cnn_run):
    rows = _rows(cnn_run, "train")
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert _rows(cnn_run, "validation")


def test_density_thresholds_match_the_data_density():
    g = torch.Generator().manual_seed(0)
    probs = 0.8 * torch.rand(8, 5, 32, 128, generator=g)
    target = torch.zeros(8, 5, 32, 128)
    target[:, 0, :, :13] = 1  # piano density 13/128
    target[:, 2, :, :4] = 1
    th = RW.density_thresholds(probs, target)
    assert th.shape == (5,)
    dens = (probs > th[None, :, None, None]).float().mean((0, 2, 3))
    assert abs(float(dens[0]) - 13 / 128) < 0.01 and abs(float(dens[2]) - 4 / 128) < 0.01
    assert float(th[1]) == pytest.approx(0.95)  # a silent track: the upper bound, (almost) no notes


def test_checkpoint_carries_start_windows_and_thresholds(cnn_run, tmp_path):
    dst = ckpt.convert(cnn_run / "best", tmp_path / "cnn16", "fp16")
    state, config = ckpt.load_checkpoint(dst)
    ref, _ = ckpt.load_checkpoint(cnn_run / "best")
    assert config["engine"] == "cnn"
    assert state["start_windows"].dtype == torch.uint8 and torch.equal(state["start_windows"], ref["start_windows"])
    assert state["start_windows"].any()
    assert torch.allclose(state["thresholds"], ref["thresholds"], atol=1e-3)
    assert not torch.allclose(ref["thresholds"], torch.full((5,), 0.5))  # calibrated on validation
    C.CNNEngine(dst).generate(GenerationRequest(bars=2))


def test_seeded_generation_is_deterministic_and_exact(engine):
    req = GenerationRequest(groups=("piano", "bass"), drums=False, bars=6, variants=3, seed=11)
    a, b = engine.generate(req), engine.generate(req)
    for x, y in zip(a, b):
        assert np.array_equal(x.notes, y.notes)
    for s in a:
        assert s.length == 6 * V.STEPS_PER_BAR
        assert set(s.groups) <= {V.GROUPS.index("piano"), V.GROUPS.index("bass")}
        assert (s.notes["onset"] + s.notes["duration"]).max(initial=0) <= s.length
    assert engine.last_stats["tokens"] == 3 * 2 * RW.WINDOW
    assert len(set(engine.last_stats["starts"])) == 3  # variants start from different stored windows


def test_only_requested_instruments_and_drums_iff_asked(engine):
    out = engine.generate(GenerationRequest(groups=("guitar",), drums=True, bars=4, variants=2, seed=1))
    for s in out:
        assert set(s.groups) <= {V.GROUPS.index("guitar"), V.DRUM_GROUP}
    out = engine.generate(GenerationRequest(groups=("organ",), drums=False, bars=4, seed=1))
    assert set(out[0].groups) <= {V.GROUPS.index("organ")}  # organ folds into the piano track


def test_prompt_is_continued_and_variants_are_equal(engine):
    w = np.zeros((5, 32, 128), bool)
    w[0, ::4, 60] = True
    w[2, ::8, 36] = True
    from evaluation.variety import window_prompt

    prompt = window_prompt(w)
    out = engine.generate(GenerationRequest(groups=("piano", "bass"), drums=False, bars=4, variants=2, seed=0,
                                            prompt=prompt))
    assert out[0].length == prompt.length + 4 * V.STEPS_PER_BAR
    first = out[0].notes[out[0].notes["onset"] < prompt.length]
    assert np.array_equal(first, prompt.notes)
    assert np.array_equal(out[0].notes, out[1].notes)  # deterministic given the start


def test_rollout_thresholds_to_notes(engine):
    start = RW.unpack(engine.model.start_windows.numpy()[:2]).astype(bool)
    rolls = engine.rollout(start, 3)
    assert rolls.shape == (2, 3, 5, 32, 128) and rolls.dtype == bool


def test_evaluate_checkpoint(cnn_run, roll_corpus):
    out = C.evaluate_checkpoint(cnn_run / "best", roll_corpus, "test", batch=16)
    assert out["pairs"] > 0 and out["loss"] > 0
    for name in TRACKS:
        assert 0.0 <= out[f"f1_{name}"] <= 1.0
    assert len(out["thresholds"]) == 5


def test_evaluate_command_prints_one_json_line_per_checkpoint(cnn_run, roll_corpus, tmp_path, monkeypatch, capsys):
    rc = C.main(["evaluate", str(cnn_run / "best"), str(cnn_run / "last"), "--data", str(roll_corpus),
                 "--max-pairs", "8", "--threads", "1"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 2 and all(0 < x["pairs"] <= 8 for x in lines)
    # the engine's name stands for its shipped checkpoint; a missing one or another engine's is a clear error
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    assert C.main(["evaluate", "cnn", "--data", str(roll_corpus)]) == 2
    assert "no cnn checkpoint" in capsys.readouterr().err
    shutil.copytree(cnn_run / "best", tmp_path / "cnn")
    from model import vae_nn

    assert vae_nn.main(["evaluate", str(tmp_path / "cnn"), "--data", str(roll_corpus)]) == 2
    assert "'cnn' checkpoint, not 'vae-nn'" in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        C.CNNEngine()


def test_cli_generates(cnn_run, tmp_path, monkeypatch, capsys):
    from model import engine as E
    from model.generate import main

    root = tmp_path / "ck"
    shutil.copytree(cnn_run / "best", root / "cnn")
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", root)
    monkeypatch.setattr(E, "_INSTANCES", {})
    rc = main(["--engine", "cnn", "--instruments", "piano,bass", "--bars", "5", "--variants", "2", "--seed", "4",
               "--out", str(tmp_path / "out")])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["engine"] == "cnn" and line["bars"] == [5, 5] and len(line["files"]) == 2
    assert main(["--engine", "cnn", "--noise-sd", "0.5", "--out", str(tmp_path / "out")]) == 2
    assert "no noise_sd option" in capsys.readouterr().err


def test_prompt_window_is_the_last_window_with_notes():
    from tokenizer import Score, make_notes

    notes = make_notes(np.array([0, 4 * V.STEPS_PER_BAR]), np.array([8, 8]), 10, 0, np.array([60, 64]))
    w = RW.prompt_window(Score(notes, length=16 * V.STEPS_PER_BAR))  # 16 bars, the last 11 silent
    assert w[0, :, 64].any() and not w[0, :, 60].any()
    with pytest.raises(ValueError, match="no notes"):
        RW.prompt_window(Score(make_notes(np.array([0]), np.array([8]), 10, 0, np.array([60]))[:0], length=32))


def test_start_windows_have_the_requested_tracks():
    """Starts are drawn from the stored windows in which every requested track plays (else the most)."""
    w = np.zeros((6, RW.N_TRACKS, RW.WINDOW, RW.PITCHES), bool)
    w[:, 0, 0, 60] = True  # piano everywhere
    w[[1, 4], 4, 0, 36] = True  # drums only in starts 1 and 4
    w[[4], 2, 0, 40] = True  # bass only in start 4
    packed = torch.from_numpy(np.packbits(w, axis=-1))

    def picks(**kw):
        req = GenerationRequest(**{"groups": ("piano",), "variants": 4, "seed": 0, **kw}).validate()
        starts, idx = RW.start_windows(req, packed)
        assert np.array_equal(starts, w[idx])
        return set(idx)

    assert picks(drums=True) <= {1, 4} and picks(drums=True, seed=1) <= {1, 4}
    assert picks(groups=("piano", "bass"), drums=True) == {4}
    assert picks(groups=("piano", "bass", "strings"), drums=True) == {4}  # no start has strings: the closest
    assert len(picks(drums=False, variants=6)) == 6  # piano alone: every start qualifies
