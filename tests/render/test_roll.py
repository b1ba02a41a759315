"""The live piano roll's data (render.roll.roll_data); its gr.HTML component is tested in tests/page/test_roll.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from render.pianoroll import GROUP_COLORS
from render.roll import GM_DRUMS, roll_data
from tokenizer import Score, load_midi, make_notes
from tokenizer import vocab as V

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "midi").glob("*.mid"))
Q = V.STEPS_PER_QUARTER


def waltz() -> Score:
    """Two bars of 3/4 at 90 BPM: a piano and a bass note, a kick, a snare and a hi-hat."""
    piano, bass = V.GROUPS.index("piano"), V.GROUPS.index("bass")
    rows = [  # onset, duration, velocity level, group, pitch
        (0, Q, 7, piano, 67), (Q, 2 * Q, 3, piano, 72), (0, 3 * Q, 5, bass, 40),
        (0, 4, 6, V.DRUM_GROUP, 36), (Q, 4, 6, V.DRUM_GROUP, 38), (2 * Q, 4, 2, V.DRUM_GROUP, 42),
        (3 * Q, 4, 6, V.DRUM_GROUP, 36),
    ]
    return Score(make_notes(*zip(*rows)), bpm=90, time_signature=(3, 4), length=6 * Q)


def part(data: dict, name: str) -> dict:
    return next(p for p in data["parts"] if p["name"] == name)


def test_seconds_bars_and_beats_at_90_bpm_in_3_4():
    d = roll_data(waltz())
    beat = 60 / 90  # a quarter note at 90 BPM
    assert d["step_seconds"] == pytest.approx(beat / Q)
    assert d["beat_seconds"] == pytest.approx(beat)
    assert d["bar_seconds"] == pytest.approx(3 * beat)
    assert d["n_bars"] == 2 and d["time_signature"] == [3, 4]
    assert d["seconds"] == pytest.approx(6 * beat, abs=1e-4)
    assert d["bars"] == pytest.approx([0, 3 * beat, 6 * beat], abs=1e-4)
    assert d["beats"] == pytest.approx([beat, 2 * beat, 4 * beat, 5 * beat], abs=1e-4)
    start, dur, pitch, vel = part(d, "piano")["notes"][1]
    assert (start, dur, pitch, vel) == (pytest.approx(beat, abs=1e-4), pytest.approx(2 * beat, abs=1e-4), 72,
                                        V.level_velocity(3))
    # the audio, when longer (its ring-out), stretches the time axis; a shorter one does not shrink it
    assert roll_data(waltz(), audio_seconds=4.5)["seconds"] == pytest.approx(4.5)
    assert roll_data(waltz(), audio_seconds=1.0)["seconds"] == pytest.approx(6 * beat, abs=1e-4)


def test_parts_named_coloured_and_drums_on_their_own_lane():
    d = roll_data(waltz())
    assert [p["name"] for p in d["parts"]] == ["piano", "bass", "drums"]  # group order, drums last, as the PNG
    for p in d["parts"]:
        assert p["color"] == GROUP_COLORS[p["name"]]
        assert p["drums"] == (p["name"] == "drums")
        assert p["count"] == len(p["notes"])
    assert d["pitch_range"][0] <= 40 and d["pitch_range"][1] >= 72  # pitched parts only: drum keys left out
    assert [r["key"] for r in d["drum_rows"]] == [36, 38, 42]
    assert [r["name"] for r in d["drum_rows"]] == [GM_DRUMS[36], GM_DRUMS[38], GM_DRUMS[42]]
    drums = part(d, "drums")["notes"]
    assert [n[2] for n in drums] == [0, 1, 2, 0]  # rows of the drum lane, not MIDI keys
    assert [n[1] for n in drums] == pytest.approx([2 * d["step_seconds"]] * 4, abs=1e-4)  # hits: 1/16 note
    json.dumps(d)  # plain JSON types throughout


def test_empty_score_gives_an_empty_valid_roll():
    d = roll_data(Score())
    assert d["parts"] == [] and d["drum_rows"] == [] and d["pitch_range"] is None
    assert d["n_bars"] == 1 and d["seconds"] == pytest.approx(2.0)  # one 4/4 bar at 120 BPM
    assert len(d["bars"]) == 2 and len(d["beats"]) == 3
    json.loads(json.dumps(d))
    drums_only = roll_data(Score(make_notes([0], [2], [4], [V.DRUM_GROUP], [42]), length=2 * V.STEPS_PER_BAR))
    assert drums_only["pitch_range"] is None and drums_only["n_bars"] == 2
    assert [p["name"] for p in drums_only["parts"]] == ["drums"]


@pytest.mark.parametrize("path", FIXTURES[:3], ids=lambda p: p.stem)
def test_real_midi(path):
    score = load_midi(path)
    d = roll_data(score)
    json.dumps(d)
    assert sum(p["count"] for p in d["parts"]) == len(score.notes)
    assert [p["name"] for p in d["parts"]] == [V.GROUPS[g] for g in score.groups]
    step = 60 / score.bpm / Q
    assert d["seconds"] >= score.end_step * step - 1e-3
    assert d["bars"][-1] == pytest.approx(d["n_bars"] * score.bar_steps * step, abs=1e-3)
    pitched = score.notes[score.notes["group"] != V.DRUM_GROUP]
    for p in d["parts"]:
        notes = np.asarray(p["notes"], dtype=float).reshape(-1, 4)
        assert (notes[:, 0] >= 0).all() and (notes[:, 0] + notes[:, 1] <= d["seconds"] + 1e-3).all()
        if p["drums"]:
            assert set(notes[:, 2].astype(int)) <= set(range(len(d["drum_rows"])))
        else:
            assert d["pitch_range"][0] <= notes[:, 2].min() and notes[:, 2].max() <= d["pitch_range"][1]
    if len(pitched):
        assert d["pitch_range"][0] <= pitched["pitch"].min() and pitched["pitch"].max() <= d["pitch_range"][1]
