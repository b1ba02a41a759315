"""Seeded outputs stay byte-identical: every engine and every edit kind, through the public request, against
MIDI files written before the request path was restructured (tests/fixtures/seeded/).

A change that is meant to alter what an engine writes regenerates them on purpose and says why in its commit:

    MIDI_BANGERS_WRITE_SEEDED=1 .venv/bin/python -m pytest -q tests/model/test_seeded_outputs.py

The transformer decodes in fp32 here (quantize=False): the comparison is of the request path (plan, grammar,
soft rules, sliding), not of an int8 kernel that may round differently on another CPU.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import tokenizer as T
from model.request import GenerationRequest
from tests.conftest import MIDI_FIXTURES

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "seeded"
WRITE = os.environ.get("MIDI_BANGERS_WRITE_SEEDED") == "1"
SONG = next(f for f in MIDI_FIXTURES if f.name.startswith("chemistry_lab"))
WALTZ = next(f for f in MIDI_FIXTURES if f.name.startswith("boogi_marabi"))  # 3/4

pytestmark = pytest.mark.usefixtures("one_thread")


def prompt(path: Path = SONG, bars: int = 3) -> T.Score:
    return T.load_midi(path).first_bars(bars)


# name -> (engine, request fields); each request is validated and restricted as the page and the CLI do
CASES = {
    "transformer-plain": ("transformer", dict(groups=("piano", "bass"), drums=True, bars=2, variants=2, seed=11)),
    "transformer-style-key-chords": ("transformer", dict(groups=("guitar", "bass"), drums=False, bars=2, variants=1,
                                                          seed=12, style="rock", key="D minor", chords="Dm Bb F C",
                                                          temperature=1.2, top_k=40, drum_kit="jazz")),
    "transformer-continue": ("transformer", dict(groups=("piano",), drums=True, bars=1, seed=13,
                                                 prompt=prompt(WALTZ, 2))),
    "transformer-add-part": ("transformer", dict(groups=(), drums=True, bars=1, seed=14, prompt=prompt(),
                                                 edit="add_part", part="strings")),
    "transformer-regenerate-part": ("transformer", dict(groups=(), drums=True, bars=1, seed=15, prompt=prompt(),
                                                        edit="regenerate_part", part="organ")),
    "transformer-infill": ("transformer", dict(groups=(), drums=True, bars=1, seed=16, prompt=prompt(),
                                               edit="infill", infill_bars=(2, 2), key="C major")),
    "style-vae": ("style-vae", dict(groups=("piano",), drums=True, bars=2, variants=2, seed=21, style="rock")),
    "vae-nn": ("vae-nn", dict(groups=("piano", "bass"), drums=True, bars=2, variants=2, seed=22,
                              extra={"noise_sd": 0.5, "alpha": 0.5})),
    "cnn": ("cnn", dict(groups=("piano", "guitar"), drums=True, bars=2, variants=2, seed=23, key="A minor")),
    "gru": ("gru", dict(groups=("piano",), drums=False, bars=2, variants=2, seed=24)),
    "lstm": ("lstm", dict(groups=("piano",), drums=False, bars=2, variants=2, seed=25, chords="C G Am F")),
    "multi-rnn": ("multi-rnn", dict(groups=("piano", "bass"), drums=True, bars=2, variants=2, seed=26)),
}


@pytest.fixture(scope="module")
def engines():
    from model.engine import engine_class
    from model.transformer import TransformerEngine

    made = {}

    def get(name: str):
        if name not in made:
            made[name] = TransformerEngine(quantize=False) if name == "transformer" else engine_class(name)()
        return made[name]

    return get


def midi_bytes(score: T.Score, tmp: Path) -> bytes:
    path = T.write_midi(score, tmp / "out.mid")
    return Path(path).read_bytes()


@pytest.mark.parametrize("case", sorted(CASES))
def test_seeded_output_is_unchanged(case, engines, tmp_path):
    name, fields = CASES[case]
    engine = engines(name)
    req = engine.restrict(GenerationRequest(**fields)).validate()
    scores = engine.generate(req)
    assert len(scores) == req.variants
    for i, score in enumerate(scores, 1):
        data = midi_bytes(score, tmp_path)
        golden = GOLDEN / f"{case}-v{i}.mid"
        if WRITE:
            GOLDEN.mkdir(parents=True, exist_ok=True)
            golden.write_bytes(data)
        assert golden.is_file(), f"no golden {golden.name}: write them with MIDI_BANGERS_WRITE_SEEDED=1"
        want = golden.read_bytes()
        if data != want:  # say how the notes differ, not only that the bytes do
            old = T.load_midi(golden).notes
            raise AssertionError(f"{case} variant {i}: {len(score.notes)} notes, {len(data)} bytes (sha "
                                 f"{hashlib.sha1(data).hexdigest()[:10]}) against the golden's {len(old)} notes, "
                                 f"{len(want)} bytes (sha {hashlib.sha1(want).hexdigest()[:10]})")
        assert len(score.notes), f"{case} variant {i} has no notes"
