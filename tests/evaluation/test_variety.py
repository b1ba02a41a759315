"""evaluation/variety.py: distances, and same-start / different-start variety of stub engines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation import variety as VR
from model import rollwindows as RW
from model.engine import Engine, GenerationRequest
from tokenizer import Score
from tokenizer import vocab as V


def test_distances():
    a = np.zeros((5, 8, 128), bool)
    b = a.copy()
    assert VR.jaccard_distance(a, b) == 0.0 and VR.hamming_distance(a, b) == 0.0
    a[0, 0, 60] = a[0, 1, 60] = True
    b[0, 0, 60] = b[0, 2, 60] = True
    assert VR.jaccard_distance(a, b) == pytest.approx(1 - 1 / 3)
    assert VR.hamming_distance(a, b) == pytest.approx(2 / a.size)
    assert VR.mean_pairwise([a]) == 0.0
    assert VR.mean_pairwise([a, b, a]) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_window_prompt_and_continuation_roll_round_trip():
    w = np.zeros((5, 32, 128), bool)
    w[0, 0:4, 60] = True
    w[4, ::8, 36] = True
    p = VR.window_prompt(w)
    assert p.length == 4 * V.STEPS_PER_BAR
    notes = p.notes.copy()
    notes["onset"] += p.length
    both = Score(np.concatenate([p.notes, notes]), length=2 * p.length)
    assert np.array_equal(VR.continuation_roll(both, p.length, 4), w)


class _Stub(Engine):
    """Writes one fixed note per bar at a pitch from (start, variant): deterministic or noisy."""

    name = "stub"
    controls = frozenset({"groups", "drums", "bars", "variants", "seed", "prompt", "noise_sd"})

    def __init__(self, noisy: bool):
        self.noisy = noisy

    def generate(self, request, progress=None):
        req = request.validate()
        base = int(req.prompt.notes["pitch"].max()) if req.prompt is not None else 60
        out = []
        for v in range(req.variants):
            pitch = base + (v if self.noisy and req.extra.get("noise_sd", 1.0) > 0 else 0)
            w = np.zeros((5, req.bars * 8, 128), bool)
            w[0, ::8, pitch] = True
            roll_notes = RW.pianoroll_to_score(w, 2).notes
            roll_notes["onset"] += req.prompt.length
            out.append(Score(np.concatenate([req.prompt.notes, roll_notes]), length=req.prompt.length + req.bars * 32))
        return out


def _starts(n):
    out = []
    for k in range(n):
        w = np.zeros((5, 32, 128), bool)
        w[0, ::4, 50 + 5 * k] = True
        out.append(w)
    return out


def test_variety_of_a_deterministic_and_a_noisy_engine():
    det = VR.variety(_Stub(noisy=False), _starts(3), variants=3, bars=4)
    assert det["same_start_jaccard"] == 0.0 and det["different_start_jaccard"] == 1.0
    assert det["starts_jaccard"] == 1.0 and det["silent_outputs"] == 0.0
    noisy = VR.variety(_Stub(noisy=True), _starts(2), variants=3, bars=4)
    assert noisy["same_start_jaccard"] == 1.0 and noisy["active_cells_per_bar"] == pytest.approx(1.0)
    quiet = VR.variety(_Stub(noisy=True), _starts(2), variants=3, bars=4, extra={"noise_sd": 0.0})
    assert quiet["same_start_jaccard"] == 0.0 and quiet["noise_sd"] == 0.0


def test_cli(monkeypatch, capsys):
    monkeypatch.setattr(VR, "held_out_starts", lambda data, n, split="test": _starts(n))
    monkeypatch.setattr(VR, "get_engine", lambda name: _Stub(noisy=True))
    assert VR.main(["--engines", "stub", "--starts", "2", "--variants", "2", "--bars", "4",
                    "--noise-sd", "0.5", "0"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["noise_sd"] for x in lines] == [0.5, 0.0]
    assert lines[0]["same_start_jaccard"] > lines[1]["same_start_jaccard"]


def test_request_is_restricted_for_engines_without_drums():
    class NoDrums(_Stub):
        controls = frozenset({"groups", "bars", "variants", "seed", "prompt"})

        def generate(self, request, progress=None):
            assert not request.drums and request.extra == {}
            return super().generate(request, progress)

    VR.variety(NoDrums(noisy=False), _starts(1), variants=1, bars=4, extra={"noise_sd": 1.0})
    assert GenerationRequest().drums
