"""Fixtures for the evaluation tests: the real corpus (data/corpus) and a tiny transformer checkpoint
trained on it for a few steps (the real training loop), as the root MIDI_BANGERS_CHECKPOINTS points at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus(real_corpus) -> Path:
    """The real corpus (tests/conftest.py): the report and the style classifier need many styles."""
    return real_corpus


@pytest.fixture(scope="session")
def tiny_checkpoint_root(corpus, tmp_path_factory) -> Path:
    from training.train import main

    out = tmp_path_factory.mktemp("eval_tiny_run")
    rc = main(["--preset", "tiny", "--data", str(corpus), "--out", str(out), "--steps", "20", "--batch", "8",
               "--eval-every", "20", "--ckpt-every", "20", "--val-windows", "2", "--quiet"])
    assert rc == 0
    root = tmp_path_factory.mktemp("eval_ckroot")
    shutil.copytree(out / "best", root / "transformer", ignore=shutil.ignore_patterns("optimizer*"))
    return root
