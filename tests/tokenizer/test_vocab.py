"""Vocabulary consistency and the GM program -> group mapping."""

import pytest

from tokenizer import vocab as V


def test_check_passes():
    V.check()


def test_every_token_describes():
    names = [V.describe(t) for t in range(V.VOCAB_SIZE)]
    assert len(set(names)) == V.VOCAB_SIZE  # distinct names
    for bad in (-1, V.VOCAB_SIZE, V.VOCAB_SIZE + 100):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            V.describe(bad)


def test_slot_ranges_partition_the_note_tokens():
    lo, hi = V.SLOT_RANGES[0][0], V.SLOT_RANGES[-1][1]
    assert lo == V.SHIFT_OFFSET and hi == V.VOCAB_SIZE
    for (_, a_hi), (b_lo, _) in zip(V.SLOT_RANGES, V.SLOT_RANGES[1:], strict=False):
        assert a_hi == b_lo
    for t in range(V.VOCAB_SIZE):
        slot = V.token_slot(t)
        assert (slot >= 0) == (t >= V.SHIFT_OFFSET)
        if slot >= 0:
            a, b = V.SLOT_RANGES[slot]
            assert a <= t < b
    sizes = [b - a for a, b in V.SLOT_RANGES]
    assert sizes == [V.N_SHIFT, V.N_DURATION * V.N_VELOCITY + 1, V.N_GROUPS * 128 + 1]


def test_every_gm_program_maps_to_a_pitched_group():
    assert len(V.GM_PROGRAM_TO_GROUP) == 128
    for p in range(128):
        g = V.GM_PROGRAM_TO_GROUP[p]
        assert 0 <= g < V.N_PITCHED and V.GROUPS[g] != "drums"
    assert set(V.GM_PROGRAM_TO_GROUP) == set(range(V.N_PITCHED))  # every pitched group is reachable


def test_group_programs_map_back():
    for name in V.PITCHED_GROUPS:
        assert V.GM_PROGRAM_TO_GROUP[V.GROUP_PROGRAM[name]] == V.GROUPS.index(name), name


def test_reed_renders_as_a_saxophone_not_a_clarinet():
    assert 64 <= V.GROUP_PROGRAM["reed"] <= 67
    assert V.GROUP_PROGRAM["reed"] != 71


@pytest.mark.parametrize("program,group", [
    (0, "piano"), (11, "chromatic"), (19, "organ"), (25, "guitar"), (33, "bass"), (40, "strings"),
    (52, "strings"), (56, "brass"), (65, "reed"), (71, "reed"), (73, "pipe"), (81, "lead"), (89, "pad"),
    (104, "guitar"), (109, "reed"), (110, "strings"), (114, "chromatic"), (127, "pad"),
])
def test_known_programs(program, group):
    assert V.GROUPS[V.GM_PROGRAM_TO_GROUP[program]] == group


def test_converters_and_layout():
    for d in V.DURATION_LEVELS:
        assert V.quantize_duration(d) == d
    assert V.duration_level(0) == 0 and V.quantize_duration(10_000) == V.MAX_DURATION
    assert V.group_index(" Bass ") == V.GROUPS.index("bass")
    with pytest.raises(ValueError, match="choose from"):
        V.group_index("kazoo")
    text = V.layout()
    assert f"{V.VOCAB_SIZE}" in text and "GROUPPITCH_REST" in text
