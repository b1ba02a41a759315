"""The style-conditioned VAE's training ("style-vae" and the label baseline "style-vae-label") through the one
training loop, its loss terms, segment data, and held-out figures through the one evaluate command."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model import style_vae as S
from tests.conftest import train_tiny
from tokenizer import vocab as V
from tokenizer.codec import piece_notes
from tokenizer.events import HEADER, notes_to_events, pack_segment, unpack_segment
from training.data import load_split, piece_tokens
from training.tasks import style_vae as TS

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory):
    return {task: train_tiny(task, tiny_corpus, tmp_path_factory.mktemp(f"run_{task}"), 60, 30, 16)
            for task in ("style-vae", "style-vae-label")}


def tiny_cfg(**changes):
    return replace(S.PRESETS["tiny"], styles=["game", "rock"], **changes)


# ---- training -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["style-vae", "style-vae-label"])
def test_tiny_training_terms_are_finite_and_fall(runs, task):
    rows = list(csv.DictReader((runs[task] / "metrics.csv").open()))
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) >= 10 and any(r["split"] == "validation" for r in rows)
    for r in train:
        for k in ("loss", "rec_per_event", "kl_per_segment", "style_ce", "mu_var"):
            assert math.isfinite(float(r[k])), (k, r)
    first, last = train[:2], train[-2:]
    mean = lambda rs, k: sum(float(r[k]) for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "rec_per_event") < mean(first, "rec_per_event") - 0.5
    if task == "style-vae":
        assert mean(last, "style_ce") < mean(first, "style_ce")
    conf = json.loads((runs[task] / "best" / "config.json").read_text())
    assert conf["engine"] == "style-vae"  # both are style-vae checkpoints
    assert conf["model"]["style_mode"] == ("codebook" if task == "style-vae" else "label")
    assert conf["model"]["styles"] == TS.corpus_styles(runs[task].parent)  # no stats styles: all of them
    assert S.StyleVAEEngine(runs[task] / "best").model.train_steps == conf["meta"]["train"]["step"]  # KL schedule


def test_kl_weight_is_annealed_in_training_only(tiny_corpus):
    cfg = tiny_cfg(kl_anneal_steps=4)
    m = S.build_model(cfg).train()
    batch = torch.stack([TS.Segments(TS.segments(tiny_corpus, cfg, "validation"))[i] for i in range(4)])
    losses = []
    for _ in range(6):
        torch.manual_seed(0)
        losses.append(TS.vae_loss(m, batch)[0].item())
    assert int(m.train_steps) == 6
    assert losses[0] < losses[1] < losses[2] < losses[3] == losses[4] == losses[5]  # beta: 1/4 .. 1, then 1
    m.eval()
    TS.vae_loss(m, batch)
    assert int(m.train_steps) == 6  # evaluation does not advance the schedule


def test_a_label_task_has_no_style_loss(tiny_corpus):
    cfg = tiny_cfg(style_mode="label")
    m = S.build_model(cfg).eval()
    batch = torch.stack([TS.Segments(TS.segments(tiny_corpus, cfg, "validation"))[i] for i in range(4)])
    with torch.no_grad():
        loss, sums = TS.vae_loss(m, batch, sample=False)
        mu = m(batch, sample=False)["mu"]
    sums = {k: float(v) for k, v in sums.items()}
    rec = sums["nll_shift"] + sums["nll_duration"] + sums["nll_pitch"]
    # beta is 0 before any training step, and the baseline has no style term
    assert float(loss) == pytest.approx(rec / 4 + float(TS.mu_forcing(mu, cfg.beta_mu)), rel=1e-5)
    assert TS.summarize(sums)["loss"] == pytest.approx((rec + sums["kl"]) / sums["count"], rel=1e-5)


def test_mu_forcing_penalizes_low_batch_variance():
    assert float(TS.mu_forcing(torch.zeros(8, 4), 1.3)) == pytest.approx(1.3)
    spread = torch.randn(512, 4, generator=torch.Generator().manual_seed(0)) * 2  # (1/2) E|mu - mean|^2 ~ 8
    assert float(TS.mu_forcing(spread, 1.3)) == 0.0


def test_an_unknown_preset_is_refused(tiny_corpus):
    args = Namespace(preset="huge", data=str(tiny_corpus), seed=0, val_windows=8)
    with pytest.raises(ValueError, match="preset"):
        TS.TASKS["style-vae"](args)


# ---- data -----------------------------------------------------------------------------------------
def test_segments_are_the_pieces_events_built_once(tiny_corpus):
    cfg = tiny_cfg()
    packed = TS.segments(tiny_corpus, cfg, "test")
    toks, rows = load_split(tiny_corpus, "test")
    want = []
    for r in rows:
        notes = piece_notes(piece_tokens(toks, r))
        want += [pack_segment(e, cfg.styles.index(r["style"]), cfg.max_events)
                 for e in notes_to_events(notes, cfg.segment_steps) if len(e)]
    assert packed.dtype == np.int16 and np.array_equal(packed, np.stack(want))
    assert {unpack_segment(p)[0] for p in packed} == {0, 1}  # both styles' pieces
    again = TS.segments(tiny_corpus, cfg, "test")
    assert again.filename == packed.filename  # the cached build is reused
    other = TS.segments(tiny_corpus, replace(cfg, styles=["rock"]), "test")  # other params, another build
    assert other.filename != packed.filename and len(other) < len(packed)


def test_transposition_moves_pitched_notes_only_and_stays_in_range(tiny_corpus):
    cfg = tiny_cfg(max_events=128)
    packed = TS.segments(tiny_corpus, cfg, "train")
    plain, moved = TS.Segments(packed), TS.Segments(packed, transpose=5, seed=1)
    shifted = 0
    for i in range(0, len(packed), max(1, len(packed) // 40)):
        a, b = plain[i].numpy(), moved[i].numpy()
        n = a[0, 1]
        ev_a, ev_b = a[HEADER:HEADER + n], b[HEADER:HEADER + n]
        drums = ev_a[:, 2] // 128 == V.DRUM_GROUP
        assert np.array_equal(ev_a[drums], ev_b[drums]) and np.array_equal(ev_a[:, :2], ev_b[:, :2])
        d = np.unique(ev_b[~drums, 2] - ev_a[~drums, 2])
        assert len(d) <= 1 and (len(d) == 0 or -5 <= d[0] <= 6)
        assert (ev_b[~drums, 2] // 128 == ev_a[~drums, 2] // 128).all()  # pitches stay in the group's range
        shifted += bool(len(d) and d[0])
        assert np.array_equal(b, moved[i].numpy())  # reproducible within an epoch
    assert shifted > 0


def test_segment_fill():
    seg = pack_segment(np.array([[0, 3, 60], [8, 3, 62], [7, 3, 64]]), 0, 8)  # last onset 15 of 32
    cut = pack_segment(np.tile([[1, 3, 60]], (10, 1)), 0, 8)  # cut segments do not count
    assert TS.segment_fill(np.stack([seg, cut]), 32) == pytest.approx(16 / 32)
    assert math.isnan(TS.segment_fill(np.stack([cut]), 32))


# ---- held-out figures -----------------------------------------------------------------------------
def test_reconstruction_reports_every_feature(runs, tiny_corpus):
    model = S.StyleVAEEngine(runs["style-vae"] / "best").model
    segs = TS.segments(tiny_corpus, model.cfg, "test")
    r = TS.reconstruction(model, segs)
    assert r["segments"] == len(segs) > 0
    for k in ("acc_shift", "acc_duration", "acc_pitch", "style_acc", "accuracy"):
        assert 0.0 <= r[k] <= 1.0
    assert math.isfinite(r["kl_per_segment"]) and r["kl_per_segment"] >= 0 and r["rec_per_event"] > 0
    assert TS.reconstruction(model, segs, batch=3, max_items=5)["segments"] == 5


def test_evaluate_command_reports_reconstruction_and_fill(runs, tiny_corpus):
    cmd = [sys.executable, "-m", "training.evaluate", "--data", str(tiny_corpus), "--split", "test",
           "--max-items", "6", str(runs["style-vae"] / "best"), str(runs["style-vae-label"] / "best")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [x["engine"] for x in rows] == ["style-vae", "style-vae"]
    assert [x["style_mode"] for x in rows] == ["codebook", "label"]
    for x in rows:
        assert x["segments"] == 6 and x["split"] == "test" and x["step"] in (30, 60)
        assert 0 < x["acc_shift"] <= 1 and 0 <= x["acc_pitch"] <= 1 and x["rec_per_event"] > 0
        assert 0 < x["segment_fill_own_ending"] <= 1 and 0 < x["segment_fill_as_engine"] <= 1
        assert math.isnan(x["segment_fill_real"]) or 0 < x["segment_fill_real"] <= 1
    assert "style_acc" in rows[0] and "style_acc" not in rows[1]  # the baseline's encoder never learns styles
    assert "accuracy" in r.stdout.splitlines()[-3]  # the shared table


def test_evaluating_a_codebook_checkpoint_as_the_baseline_is_refused(runs, tiny_corpus):
    with pytest.raises(ValueError, match="label"):
        TS.evaluate_checkpoint("style-vae-label", runs["style-vae"] / "best", tiny_corpus, max_items=2)
    r = TS.evaluate_checkpoint("style-vae-label", runs["style-vae-label"] / "best", tiny_corpus, max_items=2)
    assert r["engine"] == "style-vae-label" and r["segments"] == 2
