"""A tiny corpus from real MIDI files and a tiny transformer trained on it for a few steps."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

import tokenizer as T

OPENMSX = sorted(glob.glob("/usr/share/games/openttd/baseset/openmsx/*.mid"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    if len(OPENMSX) < 6:
        pytest.skip("openttd-openmsx is not installed (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("tiny_corpus")
    toks = [T.encode(T.load_midi(f)) for f in OPENMSX[:8]]
    np.save(d / "train.tokens.npy", np.concatenate(toks[:6]).astype(np.uint16))
    np.save(d / "validation.tokens.npy", toks[6].astype(np.uint16))
    np.save(d / "test.tokens.npy", toks[7].astype(np.uint16))
    return d


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus, tmp_path_factory) -> Path:
    from training.train import main

    out = tmp_path_factory.mktemp("tiny_run")
    rc = main(["--preset", "tiny", "--data", str(tiny_corpus), "--out", str(out), "--steps", "60", "--batch", "8",
               "--lr", "3e-3", "--eval-every", "30", "--ckpt-every", "30", "--val-windows", "8", "--log-every", "10",
               "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def tiny_engine(tiny_run):
    from model.transformer import TransformerEngine

    return TransformerEngine(tiny_run / "best", quantize=False)


@pytest.fixture()
def env_checkpoints(tiny_run, tmp_path, monkeypatch):
    """MIDI_BANGERS_CHECKPOINTS root holding the tiny run as the transformer engine's checkpoint."""
    import shutil

    root = tmp_path / "ckroot"
    shutil.copytree(tiny_run / "best", root / "transformer")
    monkeypatch.setenv("MIDI_BANGERS_CHECKPOINTS", str(root))
    return root


__all__ = ["OPENMSX", "os"]


@pytest.fixture(scope="session")
def roll_corpus(tmp_path_factory) -> Path:
    """Token streams of real MIDI files laid out like data/corpus, with a test index (the pianoroll
    window engines vae-nn and cnn rebuild consecutive windows from the tokens)."""
    import json

    if len(OPENMSX) < 8:
        pytest.skip("openttd-openmsx is not installed (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("roll_corpus")
    scores = [T.load_midi(f) for f in OPENMSX[:8]]
    for split, part, names in (("train", scores[:5], OPENMSX[:5]), ("validation", scores[5:6], OPENMSX[5:6]),
                               ("test", scores[6:8], OPENMSX[6:8])):
        toks = [T.encode(s) for s in part]
        np.save(d / f"{split}.tokens.npy", np.concatenate(toks).astype(np.uint16))
        rows, off = [], 0
        for s, t, name in zip(part, toks, names):
            rows.append({"id": f"openmsx:{os.path.basename(name)}", "style": "game", "bars": s.n_bars,
                         "time_signature": [4, 4], "offset": off, "length": len(t)})
            off += len(t)
        (d / f"{split}.index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d
