"""Training and held-out evaluation of the cnn engine on the tiny corpus, and what it shares with vae-nn
(training/tasks/rollwindows.py): window pairs cached per corpus build, start sets, thresholds, metrics."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model import checkpoint as ckpt
from model.cnn import CNNEngine
from model.engine import GenerationRequest
from tokenizer.pianoroll import N_TRACKS, TRACKS, unpack_windows
from training.tasks import evaluate_checkpoint, train_task
from training.tasks import rollwindows as RW


def args(data, **kw):
    return SimpleNamespace(**{"preset": "tiny", "data": str(data), "seed": 0, "val_windows": 8, **kw})


@pytest.fixture(scope="module")
def cnn_run(tiny_corpus, tmp_path_factory):
    from training.train import main

    run = tmp_path_factory.mktemp("run_cnn")
    rc = main(["--engine", "cnn", "--preset", "tiny", "--data", str(tiny_corpus), "--out", str(run), "--steps", "30",
               "--batch", "8", "--lr", "3e-3", "--eval-every", "15", "--ckpt-every", "15", "--val-windows", "16",
               "--log-every", "5", "--threads", "1", "--quiet"])
    assert rc == 0
    return run


def test_tiny_training_loss_falls(cnn_run):
    rows = list(csv.DictReader((cnn_run / "metrics.csv").open()))
    train = [r for r in rows if r["split"] == "train"]
    assert float(train[-1]["loss"]) < float(train[0]["loss"])
    assert [r["step"] for r in rows if r["split"] == "validation"] == ["15", "30"]


def test_checkpoint_carries_start_windows_and_calibrated_thresholds(cnn_run, tiny_corpus):
    state, config = ckpt.load_checkpoint(cnn_run / "best", engine="cnn")
    windows, pairs = RW.window_pairs(tiny_corpus, config["model"]["windows_per_piece"])["train"]
    assert torch.equal(state["start_windows"], torch.from_numpy(RW.start_set(windows, pairs, 4)))
    assert config["model"]["n_start"] == 4
    assert not torch.allclose(state["thresholds"], torch.full((5,), 0.5))  # calibrated on validation
    out = CNNEngine(cnn_run / "best").generate(GenerationRequest(groups=("piano", "bass"), bars=4, variants=2))
    assert [s.length for s in out] == [4 * 32] * 2


def test_evaluate_checkpoint(cnn_run, tiny_corpus):
    out = evaluate_checkpoint("cnn", cnn_run / "best", tiny_corpus, "test", max_items=8, batch=4)
    assert out["engine"] == "cnn" and out["split"] == "test" and out["pairs"] == 8 and out["loss"] > 0
    for name in TRACKS:
        assert 0.0 <= out[f"next_f1_{name}"] <= 1.0 and 0.0 <= out[f"repeat_f1_{name}"] <= 1.0
        assert out[f"density_bce_{name}"] >= 0 and out[f"next_bce_{name}"] > 0
    assert 0 <= out["frame_hit_rate"] <= 1 and len(out["thresholds"]) == 5 and out["seconds"] >= 0


def test_the_evaluate_command(cnn_run, tiny_corpus, tmp_path, monkeypatch, capsys):
    from training.evaluate import main

    rc = main([str(cnn_run / "best"), str(cnn_run / "last"), "--data", str(tiny_corpus), "--max-items", "4",
               "--threads", "1"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["engine"] for x in lines] == ["cnn", "cnn"] and all(x["pairs"] == 4 for x in lines)
    # the engine's name stands for its shipped checkpoint; a missing one or another engine's is a clear error
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    assert main(["cnn", "--data", str(tiny_corpus)]) == 2
    assert "no cnn checkpoint" in capsys.readouterr().err
    assert main(["--engine", "vae-nn", str(cnn_run / "best"), "--data", str(tiny_corpus)]) == 2
    assert "'cnn' checkpoint, not 'vae-nn'" in capsys.readouterr().err


def test_window_pairs_are_consecutive_and_never_silent(tiny_corpus):
    for _split, (windows, pairs) in RW.window_pairs(tiny_corpus, 8).items():
        assert len(pairs) and np.array_equal(pairs[:, 1], pairs[:, 0] + 1)
        w = unpack_windows(windows[pairs.flatten()])
        assert w.reshape(len(w), -1).any(1).all()
    few = RW.window_pairs(tiny_corpus, 8, limit=2)["train"][0]
    assert len(few) <= 2 * 8 < len(RW.window_pairs(tiny_corpus, 8)["train"][0])


def test_window_pairs_are_cached_per_corpus_build(tiny_corpus, tmp_path):
    data = shutil.copytree(tiny_corpus, tmp_path / "corpus", ignore=shutil.ignore_patterns("derived"))
    first = RW.window_pairs(data, 4)["test"][0].filename
    assert RW.window_pairs(data, 4)["test"][0].filename == first  # reused
    assert RW.window_pairs(data, 8)["test"][0].filename != first  # other params: another build
    st = os.stat(data / "test.tokens.npy")
    os.utime(data / "test.tokens.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a rebuilt corpus
    rebuilt = RW.window_pairs(data, 4)["test"][0].filename
    assert rebuilt != first and not os.path.exists(first)  # the stale build is gone


def test_a_piece_limit_and_a_bad_preset(tiny_corpus):
    full, few = train_task("cnn", args(tiny_corpus)), train_task("cnn", args(tiny_corpus, piece_limit=2))
    assert 0 < len(few.train_set) < len(full.train_set)
    assert few.train_set[0].shape == (2, N_TRACKS, 32, 128)
    with pytest.raises(ValueError, match="unknown preset 'huge' for cnn"):
        train_task("cnn", args(tiny_corpus, preset="huge"))


def test_start_set_windows_have_the_piano_and_another_track(tiny_corpus):
    starts = unpack_windows(RW.start_set(*RW.window_pairs(tiny_corpus, 8)["train"], 6))
    on = starts.any(axis=(2, 3))  # (n, 5)
    assert len(starts) == 6 and on[:, 0].all() and (on.sum(1) >= 2).all()


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


def test_cell_f1_and_the_density_baseline():
    pred = torch.zeros(1, 5, 32, 128, dtype=torch.bool)
    target = pred.clone()
    pred[0, 0, 0, :4] = True
    target[0, 0, 0, 2:6] = True
    s = RW.f1_sums(pred, target)
    assert RW.f1(float(s["tp"][0]), float(s["pp"][0]), float(s["ap"][0])) == 0.5
    assert RW.f1(0, 0, 0) == 1.0  # nothing to find, nothing found
    assert RW.density_bce(50, 100) == pytest.approx(math.log(2))
