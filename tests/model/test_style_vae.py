"""The style-conditioned VAE: events, Gumbel-softmax, codebook, training terms, generation, style transfer."""

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
from model import style_vae as S
from model.engine import GenerationRequest
from model.sampling import SamplingParams
from tokenizer import vocab as V

OPENMSX = sorted(glob.glob("/usr/share/games/openttd/baseset/openmsx/*.mid"))
STYLES = ("rock", "latin", "jazz")


@pytest.fixture(scope="module")
def vae_corpus(tmp_path_factory):
    """Real MIDI files laid out like data/corpus (tokens + index rows with a style each)."""
    if len(OPENMSX) < 8:
        pytest.skip("openttd-openmsx is not installed (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("vae_corpus")
    scores = [T.load_midi(f) for f in OPENMSX[:8]]
    for split, part in (("train", range(6)), ("validation", [6]), ("test", [7])):
        toks, rows, off = [], [], 0
        for i in part:
            t = T.encode(scores[i])
            rows.append({"id": f"p{i}", "offset": off, "length": len(t), "style": STYLES[i % 3]})
            toks.append(t)
            off += len(t)
        np.save(d / f"{split}.tokens.npy", np.concatenate(toks).astype(np.uint16))
        (d / f"{split}.index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "stats.json").write_text(json.dumps({"styles": {s: 1 for s in STYLES}}))
    return d


@pytest.fixture(scope="module")
def runs(vae_corpus, tmp_path_factory):
    from training.train import main

    out = {}
    for task in ("style-vae", "style-vae-label"):
        run = tmp_path_factory.mktemp(f"run_{task}")
        rc = main(["--engine", task, "--preset", "tiny", "--data", str(vae_corpus), "--out", str(run),
                   "--steps", "60", "--batch", "16", "--lr", "1e-2", "--eval-every", "30", "--ckpt-every", "30",
                   "--val-windows", "16", "--log-every", "5", "--quiet"])
        assert rc == 0
        out[task] = run
    return out


@pytest.fixture(scope="module")
def engine(runs):
    return S.StyleVAEEngine(runs["style-vae"] / "best")


# ---- events -------------------------------------------------------------------------------------
def test_events_round_trip_notes_by_segment():
    s = T.load_midi(OPENMSX[0]) if OPENMSX else pytest.skip("no MIDI fixtures")
    seg = 2 * V.STEPS_PER_BAR
    notes = s.notes[s.notes["duration"] <= V.STEPS_PER_BAR]  # exact duration levels
    segs = S.notes_to_events(notes, seg)
    back = np.concatenate([S.events_to_notes(e, k * seg) for k, e in enumerate(segs)])
    order = np.lexsort((notes["pitch"], notes["group"], notes["onset"]))
    for f in ("onset", "duration", "group", "pitch"):
        assert np.array_equal(back[f], notes[order][f]), f
    assert all(e[:, 0].sum() < seg for e in segs if len(e))


def test_pack_segment_marks_cut_segments():
    ev = np.tile([[1, 3, 60]], (10, 1))
    p = S.pack_segment(ev, 2, 8)
    assert p.shape == (9, 3) and p[0].tolist() == [2, 8, 1] and p[1:].tolist() == ev[:8].tolist()
    assert S.pack_segment(ev[:4], 0, 8)[0].tolist() == [0, 4, 0]


# ---- the model's pieces -------------------------------------------------------------------------
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
    base = S.build_model(S.StyleVAEConfig(**{**cfg.__dict__, "style_mode": "label"}))
    assert not hasattr(base, "codebook") and base.cfg.z_style == cfg.n_styles


@pytest.mark.parametrize("position", [False, True])
def test_forward_with_and_without_position(position):
    cfg = S.StyleVAEConfig(**{**S.PRESETS["tiny"].__dict__, "position": position})
    m = S.build_model(cfg).eval()
    ev = torch.tensor([[[0, 3, 60], [8, 3, 64], [8, 3, 67]]])
    batch = torch.cat([torch.tensor([[[0, 3, 0]]]), ev], 1)
    assert torch.isfinite(m(batch, sample=False)["loss"])
    same_event_elsewhere = m.embed(ev[:, :1], torch.tensor([[16]]))
    assert torch.equal(m.embed(ev[:, :1]), m.embed(ev[:, :1], torch.tensor([[0]])))
    assert torch.equal(m.embed(ev)[:, 2], m.embed(ev[:, 2:], torch.tensor([[16]]))[:, 0])  # onset = sum of shifts
    assert torch.equal(m.embed(ev[:, :1]), same_event_elsewhere) != position  # only with position does it matter


def test_mu_forcing_penalizes_low_batch_variance():
    assert float(S.mu_forcing(torch.zeros(8, 4), 1.3)) == pytest.approx(1.3)
    spread = torch.randn(512, 4, generator=torch.Generator().manual_seed(0)) * 2  # (1/2) E|mu - mean|^2 ~ 8
    assert float(S.mu_forcing(spread, 1.3)) == 0.0


def test_presets_follow_the_reference():
    full, cpu = S.PRESETS["full"], S.PRESETS["cpu"]
    assert (full.hidden, full.z_content, full.style_dim, full.tau, full.beta, full.beta_mu, full.segment_bars) == \
        (512, 120, 80, 0.02, 1.0, 1.3, 4)
    assert (cpu.z_content, cpu.style_dim, cpu.tau, cpu.beta_mu, cpu.style_mode) == (120, 80, 0.02, 1.3, "codebook")


# ---- training -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["style-vae", "style-vae-label"])
def test_tiny_training_terms_are_finite_and_fall(runs, task):
    rows = list(csv.DictReader((runs[task] / "metrics.csv").open()))
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) >= 10
    for r in train:
        for k in ("loss", "rec_per_event", "kl_per_segment", "style_ce", "mu_var"):
            assert math.isfinite(float(r[k])), (k, r)
    first, last = train[:2], train[-2:]
    mean = lambda rs, k: sum(float(r[k]) for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "rec_per_event") < mean(first, "rec_per_event") - 0.5
    if task == "style-vae":
        assert mean(last, "style_ce") < mean(first, "style_ce")
    conf = json.loads((runs[task] / "best" / "config.json").read_text())
    assert conf["engine"] == "style-vae"
    assert conf["model"]["style_mode"] == ("codebook" if task == "style-vae" else "label")
    assert conf["model"]["styles"] == list(STYLES[:1] + STYLES[1:]) or set(conf["model"]["styles"]) == set(STYLES)


def test_kl_weight_is_annealed(vae_corpus):
    cfg = S.PRESETS["tiny"]
    m = S.build_model(cfg).train()
    segs = S.derived_segments(vae_corpus, cfg, splits=("validation",))["validation"]
    batch = torch.stack([S.Segments(segs)[i] for i in range(4)])
    m(batch)
    assert int(m.train_steps) == 1
    m.eval()
    m(batch)
    assert int(m.train_steps) == 1  # evaluation does not advance the schedule


def test_reconstruction_reports_every_feature(runs, vae_corpus):
    model, _ = S.load_model(runs["style-vae"] / "best")
    segs = S.derived_segments(vae_corpus, model.cfg, splits=("test",))["test"]
    r = S.reconstruction(model, segs)
    assert r["segments"] == len(segs) > 0
    for k in ("acc_shift", "acc_duration", "acc_pitch", "style_acc"):
        assert 0.0 <= r[k] <= 1.0
    assert math.isfinite(r["kl_per_segment"]) and r["kl_per_segment"] >= 0


# ---- generation ---------------------------------------------------------------------------------
def test_engine_generates_the_requested_style_groups_and_bars(engine):
    assert set(engine.styles) == set(STYLES)
    req = GenerationRequest(groups=("bass", "guitar"), drums=True, bars=5, variants=2, seed=3, style="jazz", bpm=96)
    scores = engine.generate(req)
    assert len(scores) == 2 and engine.last_stats["seconds"] > 0
    allowed = {V.GROUPS.index("bass"), V.GROUPS.index("guitar"), V.DRUM_GROUP}
    for s in scores:
        assert s.style == "jazz" and s.length == 5 * V.STEPS_PER_BAR and s.bpm == 96
        assert set(s.groups) <= allowed
        if len(s.notes):
            assert s.end_step <= s.length
            assert T.load_midi(T.to_midi_bytes(s)).notes.size
    no_drums = engine.generate(GenerationRequest(groups=("piano",), drums=False, bars=2, seed=1, style="rock"))
    assert set(no_drums[0].groups) <= {0}


def test_seed_makes_generation_deterministic(engine):
    req = GenerationRequest(groups=("piano",), drums=True, bars=4, variants=2, seed=11, style="rock")
    a, b = engine.generate(req), engine.generate(req)
    c = engine.generate(GenerationRequest(groups=("piano",), drums=True, bars=4, variants=2, seed=12, style="rock"))
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
    assert all(set(np.unique(n["group"]).tolist()) <= {V.GROUPS.index("strings")} for n in notes)


def test_segments_play_on_until_eos_is_allowed(engine):
    """The decoder cannot see its position; EOS waits until the segment is eos_from done, so a chained
    piece has no hole at the end of every segment."""
    m, cfg = engine.model, engine.model.cfg
    gen = torch.Generator().manual_seed(0)
    z_cat = torch.nn.functional.one_hot(torch.arange(32) % cfg.n_styles, cfg.n_styles).float()
    z = torch.cat([torch.randn(32, cfg.z_content, generator=gen), m.style_vector(z_cat)], -1)
    rows = m.decode(z, SamplingParams(1.5, 1.0, 0, 0), torch.ones(S.N_PITCH, dtype=torch.bool), gen)
    eos_at = int(cfg.eos_from * cfg.segment_steps)
    assert 0 < eos_at < cfg.segment_steps
    for r in rows:
        onset = int(r[:, 0].sum())
        assert onset < cfg.segment_steps
        assert len(r) == cfg.max_events or onset >= eos_at, (len(r), onset)


def test_style_transfer_keeps_the_note_count_within_bounds(engine):
    src = T.load_midi(OPENMSX[2]).first_bars(4)
    req = GenerationRequest(groups=tuple(V.PITCHED_GROUPS), drums=True, bars=4, seed=0, style="latin",
                            prompt=src, temperature=0.5)
    out = engine.generate(req)[0]
    assert out.style == "latin" and out.length == 4 * V.STEPS_PER_BAR
    n_in, n_out = len(src.notes), len(out.notes)
    cap = 4 * engine.cfg.max_events // engine.cfg.segment_bars  # a segment holds at most max_events events
    assert min(n_in, cap) / 4 <= n_out <= n_in * 4, (n_in, n_out, cap)
    # the content code of the upload is used: another upload gives another result
    other = engine.generate(GenerationRequest(groups=tuple(V.PITCHED_GROUPS), drums=True, bars=4, seed=0,
                                              style="latin", prompt=T.load_midi(OPENMSX[5]).first_bars(4),
                                              temperature=0.5))[0]
    assert not np.array_equal(out.notes, other.notes)


def test_style_accuracy_uses_the_classifier(engine):
    class Always:
        config = {"styles": list(STYLES)}

        def predict_styles(self, scores):
            return ["rock"] * len(scores)

    r = S.style_accuracy(engine.model, Always(), per_style=2, bars=2, seed=0)
    assert r["pieces"] == 6 and r["per_style"]["rock"] == 1.0 and r["style_accuracy"] == pytest.approx(1 / 3)


def test_missing_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        S.StyleVAEEngine()


def test_cli_generates_with_a_style(runs, tmp_path, monkeypatch, capsys):
    from model import engine as E
    from model.generate import main

    root = tmp_path / "ck"
    shutil.copytree(runs["style-vae"] / "best", root / "style-vae")
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", root)
    monkeypatch.delitem(E._INSTANCES, "style-vae", raising=False)
    try:
        rc = main(["--engine", "style-vae", "--style", "latin", "--instruments", "piano,bass", "--bars", "3",
                   "--seed", "4", "--out", str(tmp_path / "out")])
        assert rc == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["engine"] == "style-vae" and line["bars"] == [3] and line["files"]
        assert main(["--engine", "style-vae", "--style", "nope", "--out", str(tmp_path / "out")]) == 2
        assert "style" in capsys.readouterr().err
    finally:
        E._INSTANCES.pop("style-vae", None)


def test_evaluate_cli_prints_both_measures(runs, vae_corpus, tmp_path, capsys):
    from evaluation.style import StyleClassifier, train_from_corpus

    clf: StyleClassifier = train_from_corpus(vae_corpus, steps=20)
    clf.save(tmp_path / "clf")
    rc = S.main(["evaluate", str(runs["style-vae"] / "best"), str(runs["style-vae-label"] / "best"),
                 "--data", str(vae_corpus), "--classifier", str(tmp_path / "clf"), "--per-style", "2", "--bars", "2",
                 "--temperatures", "1.0", "0.5"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["style_mode"] for x in lines] == ["codebook", "label"]
    for x in lines:
        assert 0 <= x["style_accuracy"] <= 1 and 0 <= x["reconstruction"]["acc_pitch"] <= 1
        assert list(x["style_accuracy_by_temperature"]) == ["1.0", "0.5"]
        assert x["style_accuracy_by_temperature"]["1.0"] == x["style_accuracy"]
        fill = x["segment_fill"]  # the tiny corpus' real segments are all cut at max_events: no real figure
        assert 0 < fill["generated, own ending"] <= 1 and (math.isnan(fill["real"]) or 0 < fill["real"] <= 1)
        assert 0 < fill["generated, as the engine"] <= 1  # the rule itself: test_segments_play_on_until_eos...


def test_segment_fill():
    seg = S.pack_segment(np.array([[0, 3, 60], [8, 3, 62], [7, 3, 64]]), 0, 8)  # last onset 15 of 32
    cut = S.pack_segment(np.tile([[1, 3, 60]], (10, 1)), 0, 8)  # cut segments do not count
    assert S.segment_fill(np.stack([seg, cut]), 32) == pytest.approx(16 / 32)
