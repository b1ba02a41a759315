"""The cnn engine (MelodyCNN + conditional harmony CNNs) and the window-engine scaffolding it shares with
vae-nn (model/rollwindows.py): shapes, checkpoints, generation through a tiny untrained checkpoint, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint as ckpt
from model import cnn as C
from model import rollwindows as RW
from model.engine import GenerationRequest, get_engine
from tokenizer import Score, make_notes
from tokenizer import vocab as V
from tokenizer.pianoroll import pack_windows, pianoroll_to_score

ROOT = Path(__file__).resolve().parents[2]


def random_windows(n: int, seed: int = 0, density: float = 0.03) -> np.ndarray:
    """n windows (n, 5, 32, 128) bool with every track playing in each."""
    return np.random.default_rng(seed).random((n, RW.N_TRACKS, RW.WINDOW, RW.PITCHES)) < density


def window_prompt(window: np.ndarray) -> Score:
    """A (5, 32, 128) window as a 4-bar prompt."""
    return Score(pianoroll_to_score(window, RW.STEPS_PER_BEAT).notes, length=RW.BARS_PER_WINDOW * V.STEPS_PER_BAR)


def set_thresholds(model, probs: torch.Tensor, share: float = 0.05) -> None:
    """Thresholds at which about `share` of each track's cells play (an untrained network's outputs are all
    close to 0.5)."""
    model.thresholds.copy_(torch.stack([torch.quantile(probs[:, k].flatten(), 1 - share) for k in range(RW.N_TRACKS)]))


def save_tiny(directory: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = C.PRESETS["tiny"]
    model = C.CNNModel(cfg).eval()
    starts = random_windows(cfg.n_start, seed)
    model.start_windows.copy_(torch.from_numpy(pack_windows(starts)))
    x = torch.from_numpy(starts).float()
    with torch.no_grad():
        set_thresholds(model, torch.sigmoid(model(x, x[:, 0])))
    return ckpt.save_checkpoint(directory, model.state_dict(), {"engine": "cnn", "model": asdict(cfg), "meta": {}})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("cnn_tiny") / "ckpt")


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return C.CNNEngine(tiny_dir)


def test_shapes():
    m = C.CNNModel(C.PRESETS["tiny"])
    x = (torch.rand(3, 5, 32, 128) < 0.05).float()
    assert m.melody(x[:, 0]).shape == (3, 32, 128)
    assert m.harmony["bass"](x[:, 0], x[:, 2]).shape == (3, 32, 128)
    assert m(x, x[:, 0]).shape == (3, 5, 32, 128)
    nxt = m.step(x.bool())
    assert nxt.shape == (3, 5, 32, 128) and nxt.dtype == torch.bool


def test_cpu_preset_has_musicgendl_layers_and_fits_the_budget():
    m = C.CNNModel(C.PRESETS["cpu"])
    kinds = [sum(isinstance(mod, k) for mod in m.melody.modules()) for k in
             (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)]
    assert kinds == [3, 3, 3]
    assert list(m.harmony) == ["guitar", "bass", "strings", "drums"]
    assert sum(p.numel() for p in m.parameters()) * 2 < 7e6  # fp16 bytes


def test_shipped_checkpoint_generates_windows():
    eng = get_engine("cnn")
    out = eng.generate(GenerationRequest(groups=("piano", "bass"), drums=True, bars=8, variants=2, seed=3))
    assert [s.length for s in out] == [8 * V.STEPS_PER_BAR] * 2 and all(len(s.notes) for s in out)
    assert eng.speed()[1] == "windows" and eng.last_stats["windows"] == 2 * 2
    assert "seed 0" not in eng.description.lower() and "MusicGenDL" in eng.description


def test_a_given_checkpoint_is_used(tiny_dir, tmp_path):
    req = GenerationRequest(groups=("piano", "guitar"), drums=True, bars=4, variants=2, seed=1)
    mine, shipped = get_engine("cnn", tiny_dir), get_engine("cnn")
    assert mine.source == str(tiny_dir) and mine.cfg.channels == C.PRESETS["tiny"].channels
    assert mine.model.melody.conv[0].weight.shape != shipped.model.melody.conv[0].weight.shape
    assert not all(np.array_equal(a.notes, b.notes) for a, b in zip(mine.generate(req), shipped.generate(req)))
    other = C.CNNEngine(save_tiny(tmp_path / "other", seed=1))  # same shapes, other weights: other music
    assert not torch.equal(other.model.melody.conv[0].weight, mine.model.melody.conv[0].weight)
    with pytest.raises(FileNotFoundError):
        get_engine("cnn", tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        C.CNNEngine(tmp_path / "missing")


def test_missing_shipped_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "CHECKPOINT_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="no cnn checkpoint"):
        C.CNNEngine()


def test_fp16_checkpoint_keeps_the_start_windows(tiny_dir, tmp_path):
    dst = ckpt.convert(tiny_dir, tmp_path / "cnn16", "fp16")
    state, _ = ckpt.load_checkpoint(dst)
    ref, _ = ckpt.load_checkpoint(tiny_dir)
    assert state["start_windows"].dtype == torch.uint8 and torch.equal(state["start_windows"], ref["start_windows"])
    assert torch.allclose(state["thresholds"], ref["thresholds"], atol=1e-3)
    assert C.CNNEngine(dst).generate(GenerationRequest(bars=2))[0].length == 2 * V.STEPS_PER_BAR


def test_seeded_generation_is_deterministic_and_exact(engine):
    req = GenerationRequest(groups=("piano", "bass"), drums=False, bars=6, variants=3, seed=11)
    a, b = engine.generate(req), engine.generate(req)
    for x, y in zip(a, b):
        assert np.array_equal(x.notes, y.notes)
    for s in a:
        assert s.length == 6 * V.STEPS_PER_BAR and len(s.notes)
        assert set(s.groups) <= {V.GROUPS.index("piano"), V.GROUPS.index("bass")}
        assert (s.notes["onset"] + s.notes["duration"]).max(initial=0) <= s.length
    assert engine.last_stats["windows"] == 3 * 2
    assert len(set(engine.last_stats["starts"])) == 3  # variants start from different stored windows


def test_only_requested_instruments_and_drums_iff_asked(engine):
    out = engine.generate(GenerationRequest(groups=("guitar",), drums=True, bars=4, variants=2, seed=1))
    for s in out:
        assert set(s.groups) == {V.GROUPS.index("guitar"), V.DRUM_GROUP}
    out = engine.generate(GenerationRequest(groups=("organ",), drums=False, bars=4, seed=1))
    assert set(out[0].groups) == {V.GROUPS.index("organ")}  # organ folds into the piano track


def test_prompt_is_continued_and_variants_are_equal(engine):
    w = np.zeros((5, 32, 128), bool)
    w[0, ::4, 60] = True
    w[2, ::8, 36] = True
    prompt = window_prompt(w)
    out = engine.generate(GenerationRequest(groups=("piano", "bass"), drums=False, bars=4, variants=2, seed=0,
                                            prompt=prompt))
    assert out[0].length == prompt.length + 4 * V.STEPS_PER_BAR
    assert np.array_equal(out[0].notes[out[0].notes["onset"] < prompt.length], prompt.notes)
    assert np.array_equal(out[0].notes, out[1].notes)  # deterministic given the start
    assert engine.last_stats["starts"] == [-1, -1]


def test_rollout_steps_window_by_window(engine):
    start = random_windows(2, seed=5)
    rolls = RW.rollout(start, 3, engine.model.step)
    assert rolls.shape == (2, 3, 5, 32, 128) and rolls.dtype == bool
    assert np.array_equal(rolls[:, 1], engine.model.step(torch.from_numpy(rolls[:, 0])).numpy())
    seen = []
    RW.rollout(start, 4, engine.model.step, progress=seen.append)
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_cli_generates(tiny_dir, tmp_path, monkeypatch, capsys):
    from model import engine as E
    from model.generate import main

    root = tmp_path / "ck"
    shutil.copytree(tiny_dir, root / "cnn")
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
    notes = make_notes(np.array([0, 4 * V.STEPS_PER_BAR]), np.array([8, 8]), 5, 0, np.array([60, 64]))
    w = RW.prompt_window(Score(notes, length=16 * V.STEPS_PER_BAR))  # 16 bars, the last 11 silent
    assert w[0, :, 64].any() and not w[0, :, 60].any()
    with pytest.raises(ValueError, match="no notes"):
        RW.prompt_window(Score(make_notes(np.array([0]), np.array([8]), 5, 0, np.array([60]))[:0], length=32))


def test_start_windows_have_the_requested_tracks():
    """Starts are drawn from the stored windows in which every requested track plays (else the most)."""
    w = np.zeros((6, RW.N_TRACKS, RW.WINDOW, RW.PITCHES), bool)
    w[:, 0, 0, 60] = True  # piano everywhere
    w[[1, 4], 4, 0, 36] = True  # drums only in starts 1 and 4
    w[[4], 2, 0, 40] = True  # bass only in start 4
    packed = torch.from_numpy(pack_windows(w))

    def picks(**kw):
        req = GenerationRequest(**{"groups": ("piano",), "variants": 4, "seed": 0, **kw}).validate()
        starts, idx = RW.start_windows(req, packed)
        assert np.array_equal(starts, w[idx])
        return set(idx)

    assert picks(drums=True) <= {1, 4} and picks(drums=True, seed=1) <= {1, 4}
    assert picks(groups=("piano", "bass"), drums=True) == {4}
    assert picks(groups=("piano", "bass", "strings"), drums=True) == {4}  # no start has strings: the closest
    assert len(picks(drums=False, variants=6)) == 6  # piano alone: every start qualifies


def test_the_window_engines_import_no_training_or_evaluation_code():
    code = ("import sys, model.cnn, model.vae_nn, model.rollwindows; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'evaluation')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
