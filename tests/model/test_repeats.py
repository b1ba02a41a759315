"""A part written over a song repeats where the song repeats (model.sampling.repeats): which units are repeats,
and, through the public request with the tiny transformer over several seeds, that an added or regenerated
part plays in each repeat what it played in its source, every kept note coming back exactly."""

import numpy as np
import pytest

import tokenizer as T
from model.request import GenerationRequest
from model.sampling.repeats import MIN_GAP_UNITS, repeat_map, unit_bars
from tests.conftest import MIDI_FIXTURES
from tokenizer import vocab as V

pytestmark = pytest.mark.usefixtures("one_thread")
PIANO, STRINGS = V.GROUPS.index("piano"), V.GROUPS.index("strings")


def test_a_unit_is_a_bar_or_about_one_4_4_bar_of_short_bars():
    q = V.STEPS_PER_QUARTER
    assert unit_bars(4 * q) == 1 and unit_bars(3 * q) == 1 and unit_bars(6 * q // 2) == 1
    assert unit_bars(2 * q) == 1  # 2/4 is half a 4/4 bar: still a unit of its own
    assert unit_bars(q) == 4 and unit_bars(q * 3 // 2) == 3


def test_repeats_are_units_with_the_same_pitched_notes_two_or_more_units_after_their_source():
    unit = V.STEPS_PER_BAR
    rows = []

    def put(u, notes):  # (offset, group, pitch, velocity, duration) in unit u
        rows.extend((u * unit + o, g, p, v, d) for o, g, p, v, d in notes)

    a = [(0, PIANO, 60, 5, 8), (8, PIANO, 64, 5, 8), (16, STRINGS, 67, 4, 16)]
    drums = [(0, V.DRUM_GROUP, 36, 6, 2)]
    put(0, a + drums)
    put(1, a)  # the same one unit later: too close to be copied into
    put(2, [(0, PIANO, 62, 5, 8)])
    put(3, [(o, g, p, 7, 4) for o, g, p, _, _ in a])  # other velocities and durations: a repeat of unit 0
    put(4, a + [(4, V.DRUM_GROUP, 38, 6, 2)])  # a drum fill: still a repeat of unit 0
    put(5, a[:2] + [(16, STRINGS, 65, 4, 16)])  # one pitch differs: not a repeat
    put(6, [(0, PIANO, 62, 5, 8)])  # unit 2 again, four units later
    put(7, drums)  # drums only: nothing pitched to repeat
    put(9, drums)
    on, g, p, v, d = zip(*rows)
    kept = T.make_notes(on, d, v, g, p)
    kept = kept[np.lexsort((kept["pitch"], kept["group"], kept["onset"]))]
    assert repeat_map(kept, unit, 10) == {0: [3, 4], 2: [6]}
    assert MIN_GAP_UNITS == 2


def looped_song(times: int = 4) -> T.Score:
    """Two bars of a real song played `times` times over."""
    two = T.load_midi(MIDI_FIXTURES[0]).first_bars(2)
    span = 2 * two.bar_steps
    notes = np.concatenate([two.notes.copy() for _ in range(times)])
    notes["onset"] += np.repeat(np.arange(times) * span, len(two.notes)).astype(notes["onset"].dtype)
    return T.Score(notes, two.bpm, two.time_signature, length=times * span, drum_kit=two.drum_kit)


def bar_notes(notes, bar: int, steps: int) -> list[tuple]:
    part = notes[(notes["onset"] >= bar * steps) & (notes["onset"] < (bar + 1) * steps)]
    return sorted(zip((part["onset"] - bar * steps).tolist(), part["pitch"].tolist(), part["velocity"].tolist()))


@pytest.mark.parametrize("edit", ["add_part", "regenerate_part"])
@pytest.mark.parametrize("seed", range(4))
def test_a_part_plays_in_each_repeat_what_it_played_in_its_source(tiny_engine, edit, seed):
    song = looped_song()
    present = [V.GROUPS[g] for g in song.groups if g != V.DRUM_GROUP]
    part = next(p for p in ("brass", "lead", "reed") if p not in present) if edit == "add_part" else present[0]
    g = V.GROUPS.index(part)
    other = song.notes[song.notes["group"] != g]
    targets = repeat_map(other, song.bar_steps * unit_bars(song.bar_steps), song.bars)
    assert targets and all(t - s >= MIN_GAP_UNITS for s, ts in targets.items() for t in ts)
    req = GenerationRequest(groups=(), drums=song.has_drums, bars=1, variants=2, seed=seed, prompt=song, edit=edit,
                            part=part)
    for result in tiny_engine.generate(req):
        new = result.notes[result.notes["group"] == g]
        kept = result.notes[result.notes["group"] != g]
        assert np.array_equal(kept, other)  # every other note back exactly
        for source, repeats in targets.items():
            for target in repeats:
                assert bar_notes(new, target, song.bar_steps) == bar_notes(new, source, song.bar_steps)
        assert len(np.unique(new["onset"] // song.bar_steps)) == song.bars  # heard in every bar
