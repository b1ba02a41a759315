from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import shutil  # noqa: E402

from tokenizer import Score, make_notes  # noqa: E402
from tokenizer import vocab as V  # noqa: E402

# a real render needs FluidSynth (synthesis) and ffmpeg (decoding the result back)
needs_synth = pytest.mark.skipif(shutil.which("fluidsynth") is None or shutil.which("ffmpeg") is None,
                                 reason="fluidsynth and ffmpeg are needed for a real render")


def make_small_score(bpm: float = 120.0) -> Score:
    """Two bars: a piano C major chord per beat, a bass line and a kick/snare/hat pattern."""
    on, dur, vel, grp, pit = [], [], [], [], []
    for beat in range(8):
        t = beat * V.STEPS_PER_QUARTER
        for p in (60, 64, 67):
            on.append(t), dur.append(6), vel.append(5), grp.append(V.GROUPS.index("piano")), pit.append(p)
        on.append(t), dur.append(8), vel.append(6), grp.append(V.GROUPS.index("bass")), pit.append(36)
        on.append(t), dur.append(2), vel.append(6), grp.append(V.DRUM_GROUP), pit.append(36 if beat % 2 == 0 else 38)
        on.append(t + 4), dur.append(2), vel.append(4), grp.append(V.DRUM_GROUP), pit.append(42)
    return Score(make_notes(on, dur, vel, grp, pit), bpm=bpm, length=2 * V.STEPS_PER_BAR)



@pytest.fixture
def small_score():
    """A builder: small_score(bpm=120) -> a 2-bar Score with piano, bass and drums."""
    return make_small_score
