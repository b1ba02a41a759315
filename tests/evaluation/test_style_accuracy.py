"""Style accuracy of the style-conditioned VAE's generated pieces (python -m evaluation.style_accuracy)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pytest
import torch

from evaluation import style_accuracy as SA
from evaluation.style import train_from_corpus
from model import checkpoint as ckpt
from model import style_vae as S

STYLES = ["game", "rock"]  # the tiny corpus' styles


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A codebook and a label checkpoint with seeded random weights (what is measured, not how well)."""
    root = tmp_path_factory.mktemp("style_vae_ck")
    out = []
    for mode in ("codebook", "label"):
        cfg = replace(S.PRESETS["tiny"], styles=STYLES, style_mode=mode)
        torch.manual_seed(0)
        model = S.build_model(cfg)
        out.append(ckpt.save_checkpoint(root / mode, model.state_dict(),
                                        {"engine": "style-vae", "model": asdict(cfg), "meta": {"train": {"step": 7}}}))
    return out


@pytest.fixture(scope="module")
def classifier(tiny_corpus, tmp_path_factory):
    return train_from_corpus(tiny_corpus, steps=20).save(tmp_path_factory.mktemp("clf") / "clf")


class Always:
    """A classifier that hears rock in everything."""

    config = {"styles": ["rock", "jazz"]}

    def predict_styles(self, scores):
        return ["rock"] * len(scores)


def test_style_accuracy_counts_what_the_classifier_names(checkpoints):
    model = S.StyleVAEEngine(checkpoints[0]).model
    r = SA.style_accuracy(model, Always(), per_style=3, bars=2, seed=0)
    assert r["pieces"] == 3 and r["per_style"] == {"rock": 1.0}  # "game" is unknown to the classifier: skipped
    assert r["style_accuracy"] == 1.0


def test_the_command_prints_held_out_figures_and_style_accuracy(checkpoints, classifier, tiny_corpus, capsys):
    rc = SA.main([str(c) for c in checkpoints] + ["--data", str(tiny_corpus), "--classifier", str(classifier),
                                                  "--max-items", "4", "--per-style", "2", "--bars", "2",
                                                  "--temperatures", "1.0", "0.5"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["style_mode"] for x in lines] == ["codebook", "label"]
    for x in lines:
        assert x["segments"] == 4 and x["step"] == 7 and 0 <= x["acc_pitch"] <= 1
        assert x["pieces"] == 4 and set(x["per_style"]) == set(STYLES) and x["chance"] == 0.5
        assert 0 <= x["style_accuracy"] <= 1
        assert list(x["style_accuracy_by_temperature"]) == ["1.0", "0.5"]
        assert x["style_accuracy_by_temperature"]["1.0"] == x["style_accuracy"]
        assert 0 < x["segment_fill_own_ending"] <= 1 and 0 < x["segment_fill_as_engine"] <= 1
        assert math.isnan(x["segment_fill_real"]) or 0 < x["segment_fill_real"] <= 1


def test_the_command_refuses_a_missing_checkpoint(classifier, tiny_corpus, tmp_path, capsys):
    rc = SA.main([str(tmp_path / "nothing"), "--data", str(tiny_corpus), "--classifier", str(classifier)])
    assert rc == 2 and "nothing" in capsys.readouterr().err
