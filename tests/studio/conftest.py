"""Fixtures of the studio tests: a Studio over its own output folder, and one after a first generation."""

from __future__ import annotations

import pytest

from studio import OutputStore, Studio
from studio.runner import LocalRunner
from studio.worker import InferenceWorker

FIRST = {"groups": ["piano", "bass"], "drums": True, "bars": 2, "variants": 2, "seed": "11", "drum_kit": "tr-808"}


@pytest.fixture
def make_studio(checkpoint_root, tmp_path):
    """make_studio(**kwargs): a Studio with its outputs under tmp_path (OutputStore kwargs: keep, ...)."""
    def make(folder: str = "out", uploads=None, runner=None, **store) -> Studio:
        return Studio(OutputStore(tmp_path / folder, **store), uploads=uploads, runner=runner or LocalRunner())
    return make


@pytest.fixture(scope="module")
def first(checkpoint_root, tmp_path_factory):
    """(studio, session) after one generation of two 2-bar variants (piano, bass, drums; tr-808 kit).  Its studio
    generates on a worker of its own with one torch thread, whatever else the process runs (the page's server in
    these tests): the sampled notes depend on the thread count (attention for one query rounds differently with
    1 and 2 threads, README's session replay), and a
    session's replay on the CLI (`--threads 1`) must give the same MIDI."""
    worker = InferenceWorker(threads=1, name="test-first")
    studio = Studio(OutputStore(tmp_path_factory.mktemp("loop") / "out", keep=100), runner=LocalRunner(worker))
    studio.generate(FIRST, session="first")
    yield studio, "first"
    worker.close()
