"""The 3-token note vocabulary, defined once as named offsets.

Every note is exactly three tokens:

    slot 0  SHIFT      steps since the previous note's onset, 0..MAX_SHIFT (1 step = 1/32 note)
    slot 1  DURVEL     duration level * N_VELOCITY + velocity level
    slot 2  GROUPPITCH group * 128 + pitch (group 11 = drums, pitch = GM drum key)

A control prefix opens every sequence: START, DRUMS_ON or DRUMS_OFF, one GROUP token per pitched
group present (ascending), optionally one STYLE token.  END closes it (it takes a slot-0 position).

Policies (documented here, tested in tests/tokenizer):
- Gaps longer than MAX_SHIFT: written as "rest triples" (MAX_SHIFT, DURVEL_REST, GROUPPITCH_REST)
  that only advance time, followed by the note with the remaining shift.  Round trips are exact.
- Durations: quantized to DURATION_LEVELS (exact step by step up to 32 steps = 1 bar, coarser
  above, up to 512 steps = 16 bars).  Longer notes are shortened to 16 bars during normalization
  (a note is never dropped).
- Simultaneous notes: ordered by group, then pitch (ascending); the first carries the shift.
- Overlapping same-pitch notes in one group: the earlier note is cut at the later onset (as a
  DAW plays one channel); exact duplicates (same onset) keep the longest and loudest.

Run `python -m tokenizer.vocab` to print the layout.
"""

from __future__ import annotations

import bisect

# ---- time grid -------------------------------------------------------------------------------
STEPS_PER_QUARTER = 8  # 1/32-note grid
STEPS_PER_BAR = 4 * STEPS_PER_QUARTER  # generation works in 4/4

MAX_SHIFT = 128  # 4 bars
N_SHIFT = MAX_SHIFT + 1

# Duration levels in steps: exact to one bar, then 2, 4, 8, 16-step resolution up to 16 bars.
DURATION_LEVELS: tuple[int, ...] = (
    tuple(range(1, 33))
    + tuple(range(34, 65, 2))
    + tuple(range(68, 129, 4))
    + tuple(range(136, 257, 8))
    + tuple(range(272, 513, 16))
)
N_DURATION = len(DURATION_LEVELS)
MAX_DURATION = DURATION_LEVELS[-1]

VELOCITY_STEP = 15
N_VELOCITY = 8  # levels 1..8 -> velocities 15..120

# ---- instrument groups -----------------------------------------------------------------------
GROUPS: tuple[str, ...] = (
    "piano", "chromatic", "organ", "guitar", "bass", "strings",
    "brass", "reed", "pipe", "lead", "pad", "drums",
)
N_GROUPS = len(GROUPS)
DRUM_GROUP = GROUPS.index("drums")
PITCHED_GROUPS = GROUPS[:DRUM_GROUP]
N_PITCHED = len(PITCHED_GROUPS)

# GM program (0..127) -> group index.  Every program has exactly one group.
_GM_FAMILY_TO_GROUP = {
    0: "piano",  # 0-7 pianos
    1: "chromatic",  # 8-15 celesta, glockenspiel, music box, vibraphone, marimba, ...
    2: "organ",  # 16-23
    3: "guitar",  # 24-31
    4: "bass",  # 32-39
    5: "strings",  # 40-47 solo strings, harp, timpani
    6: "strings",  # 48-55 ensembles, choir
    7: "brass",  # 56-63
    8: "reed",  # 64-71 saxes, oboe, bassoon, clarinet
    9: "pipe",  # 72-79 flutes, recorder, whistle, ocarina
    10: "lead",  # 80-87 synth leads
    11: "pad",  # 88-95 synth pads
    12: "pad",  # 96-103 synth effects
    13: None,  # 104-111 ethnic: mapped one by one below
    14: "chromatic",  # 112-119 percussive: bells, agogo, steel drums, taiko, melodic tom
    15: "pad",  # 120-127 sound effects
}
_ETHNIC = {
    104: "guitar",  # sitar
    105: "guitar",  # banjo
    106: "guitar",  # shamisen
    107: "guitar",  # koto
    108: "chromatic",  # kalimba
    109: "reed",  # bagpipe
    110: "strings",  # fiddle
    111: "reed",  # shanai
}
GM_PROGRAM_TO_GROUP: tuple[int, ...] = tuple(
    GROUPS.index(_ETHNIC[p] if _GM_FAMILY_TO_GROUP[p // 8] is None else _GM_FAMILY_TO_GROUP[p // 8])
    for p in range(128)
)
# The GM program each group is written with (track name = group name, title-cased).
GROUP_PROGRAM: dict[str, int] = {
    "piano": 0,  # Acoustic Grand Piano
    "chromatic": 11,  # Vibraphone
    "organ": 16,  # Drawbar Organ
    "guitar": 25,  # Acoustic Guitar (steel)
    "bass": 33,  # Electric Bass (finger)
    "strings": 48,  # String Ensemble 1
    "brass": 61,  # Brass Section
    "reed": 65,  # Alto Sax
    "pipe": 73,  # Flute
    "lead": 80,  # Lead 1 (square)
    "pad": 89,  # Pad 2 (warm)
    "drums": 0,  # Standard kit, channel 10 (a score's drum_kit overrides it)
}
DRUM_CHANNEL = 9  # zero-based: MIDI channel 10
# GM drum kits: name -> program of the drum track (channel 10).  General MIDI soundfonts hold them as bank 128
# presets (FluidR3_GM has every one of these); `Score.drum_kit` holds the program, 0..127.
DRUM_KITS: dict[str, int] = {
    "standard": 0,
    "room": 8,
    "power": 16,
    "electronic": 24,
    "tr-808": 25,
    "jazz": 32,
    "brush": 40,
    "orchestra": 48,
}

# ---- styles ----------------------------------------------------------------------------------
STYLES: tuple[str, ...] = (
    "baroque", "renaissance", "classical", "folk", "rock", "pop", "jazz", "swing", "latin",
    "country", "blues", "waltz", "ballad", "funk", "march", "world", "game",
)
N_STYLES = len(STYLES)

# ---- token layout (named offsets) ------------------------------------------------------------
PAD = 0
START = 1
END = 2
DRUMS_OFF = 3
DRUMS_ON = 4
GROUP_OFFSET = 5  # one token per pitched group
STYLE_OFFSET = GROUP_OFFSET + N_PITCHED
SHIFT_OFFSET = STYLE_OFFSET + N_STYLES
DURVEL_OFFSET = SHIFT_OFFSET + N_SHIFT
DURVEL_REST = DURVEL_OFFSET + N_DURATION * N_VELOCITY
GROUPPITCH_OFFSET = DURVEL_REST + 1
GROUPPITCH_REST = GROUPPITCH_OFFSET + N_GROUPS * 128
VOCAB_SIZE = GROUPPITCH_REST + 1

# Token ranges [lo, hi) by slot; the REST tokens close their slot's range.
SLOT_RANGES: tuple[tuple[int, int], ...] = (
    (SHIFT_OFFSET, SHIFT_OFFSET + N_SHIFT),
    (DURVEL_OFFSET, DURVEL_REST + 1),
    (GROUPPITCH_OFFSET, GROUPPITCH_REST + 1),
)
SLOT_NAMES = ("shift", "durvel", "grouppitch")


# ---- small pure converters -------------------------------------------------------------------
def shift_token(steps: int) -> int:
    assert 0 <= steps <= MAX_SHIFT, steps
    return SHIFT_OFFSET + steps


def duration_level(steps: int) -> int:
    """Index of the nearest duration level (ties go to the longer one); >= 1 step."""
    steps = max(1, min(int(steps), MAX_DURATION))
    i = bisect.bisect_left(DURATION_LEVELS, steps)
    if i < N_DURATION and DURATION_LEVELS[i] == steps:
        return i
    lo, hi = DURATION_LEVELS[i - 1], DURATION_LEVELS[i]
    return i if hi - steps <= steps - lo else i - 1


def quantize_duration(steps: int) -> int:
    return DURATION_LEVELS[duration_level(steps)]


def velocity_level(velocity: int) -> int:
    """MIDI velocity 1..127 -> level 0..7 (velocity = (level + 1) * 15)."""
    return min(N_VELOCITY, max(1, round(int(velocity) / VELOCITY_STEP))) - 1


def level_velocity(level: int) -> int:
    return (int(level) + 1) * VELOCITY_STEP


def durvel_token(duration_steps: int, vel_level: int) -> int:
    return DURVEL_OFFSET + duration_level(duration_steps) * N_VELOCITY + int(vel_level)


def grouppitch_token(group: int, pitch: int) -> int:
    assert 0 <= group < N_GROUPS and 0 <= pitch < 128, (group, pitch)
    return GROUPPITCH_OFFSET + group * 128 + pitch


def group_token(group: int) -> int:
    assert 0 <= group < N_PITCHED, group
    return GROUP_OFFSET + group


def style_token(style: str) -> int:
    return STYLE_OFFSET + STYLES.index(style)


def group_index(name: str) -> int:
    """Group index for a user-facing name; raises ValueError listing the valid names."""
    key = name.strip().lower()
    if key not in GROUPS:
        raise ValueError(f"unknown instrument group {name!r}; choose from {', '.join(GROUPS)}")
    return GROUPS.index(key)


def token_slot(token: int) -> int:
    """0, 1, 2 for note slots, -1 for control tokens."""
    for slot, (lo, hi) in enumerate(SLOT_RANGES):
        if lo <= token < hi:
            return slot
    return -1


def describe(token: int) -> str:
    t = int(token)
    names = {PAD: "PAD", START: "START", END: "END", DRUMS_OFF: "DRUMS_OFF", DRUMS_ON: "DRUMS_ON",
             DURVEL_REST: "DURVEL_REST", GROUPPITCH_REST: "GROUPPITCH_REST"}
    if t in names:
        return names[t]
    if GROUP_OFFSET <= t < STYLE_OFFSET:
        return f"GROUP_{GROUPS[t - GROUP_OFFSET]}"
    if STYLE_OFFSET <= t < SHIFT_OFFSET:
        return f"STYLE_{STYLES[t - STYLE_OFFSET]}"
    if SHIFT_OFFSET <= t < DURVEL_OFFSET:
        return f"SHIFT_{t - SHIFT_OFFSET}"
    if DURVEL_OFFSET <= t < DURVEL_REST:
        d, v = divmod(t - DURVEL_OFFSET, N_VELOCITY)
        return f"DUR_{DURATION_LEVELS[d]}_VEL_{level_velocity(v)}"
    if GROUPPITCH_OFFSET <= t < GROUPPITCH_REST:
        g, p = divmod(t - GROUPPITCH_OFFSET, 128)
        return f"{GROUPS[g].upper()}_{p}"
    raise ValueError(f"token {t} is outside the vocabulary (size {VOCAB_SIZE})")


def check() -> None:
    """Assert the layout's consistency (run at import)."""
    assert len(set(GROUPS)) == N_GROUPS == 12 and N_PITCHED == 11
    assert len(GM_PROGRAM_TO_GROUP) == 128 and all(0 <= g < N_PITCHED for g in GM_PROGRAM_TO_GROUP)
    assert set(GROUP_PROGRAM) == set(GROUPS)
    assert DRUM_KITS["standard"] == GROUP_PROGRAM["drums"] == 0
    assert len(set(DRUM_KITS.values())) == len(DRUM_KITS) and all(0 <= p < 128 for p in DRUM_KITS.values())
    for name, prog in GROUP_PROGRAM.items():
        if name != "drums":
            assert GM_PROGRAM_TO_GROUP[prog] == GROUPS.index(name), name
    assert list(DURATION_LEVELS) == sorted(set(DURATION_LEVELS)) and DURATION_LEVELS[0] == 1
    assert all(DURATION_LEVELS[i] == i + 1 for i in range(32))
    bounds = [PAD, START, END, DRUMS_OFF, DRUMS_ON, GROUP_OFFSET, STYLE_OFFSET, SHIFT_OFFSET,
              DURVEL_OFFSET, DURVEL_REST, GROUPPITCH_OFFSET, GROUPPITCH_REST, VOCAB_SIZE]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
    assert GROUP_OFFSET == DRUMS_ON + 1 and SHIFT_OFFSET == STYLE_OFFSET + N_STYLES
    assert DURVEL_OFFSET == SHIFT_OFFSET + N_SHIFT and GROUPPITCH_OFFSET == DURVEL_REST + 1
    assert SLOT_RANGES[0][1] == SLOT_RANGES[1][0] and SLOT_RANGES[1][1] == SLOT_RANGES[2][0]
    assert SLOT_RANGES[2][1] == VOCAB_SIZE
    assert VOCAB_SIZE < 2**16  # token shards are uint16
    for s in (0, 1, 31, 32, 33, 100, 512, 10_000):
        assert quantize_duration(quantize_duration(s)) == quantize_duration(s)
    for v in range(1, 128):
        assert 0 <= velocity_level(v) < N_VELOCITY


check()


def layout() -> str:
    rows = [
        ("PAD", PAD, 1), ("START", START, 1), ("END", END, 1), ("DRUMS_OFF", DRUMS_OFF, 1),
        ("DRUMS_ON", DRUMS_ON, 1), ("GROUP_*", GROUP_OFFSET, N_PITCHED), ("STYLE_*", STYLE_OFFSET, N_STYLES),
        ("SHIFT_0..MAX", SHIFT_OFFSET, N_SHIFT), ("DURVEL", DURVEL_OFFSET, N_DURATION * N_VELOCITY),
        ("DURVEL_REST", DURVEL_REST, 1), ("GROUPPITCH", GROUPPITCH_OFFSET, N_GROUPS * 128),
        ("GROUPPITCH_REST", GROUPPITCH_REST, 1),
    ]
    lines = [f"{'name':<16}{'first':>7}{'count':>7}"]
    lines += [f"{n:<16}{o:>7}{c:>7}" for n, o, c in rows]
    lines.append(f"{'VOCAB_SIZE':<16}{VOCAB_SIZE:>7}")
    lines.append(f"groups: {', '.join(f'{i}={g}' for i, g in enumerate(GROUPS))}")
    lines.append(f"styles: {', '.join(STYLES)}")
    lines.append(f"grid: {STEPS_PER_QUARTER} steps per quarter, max shift {MAX_SHIFT}, "
                 f"{N_DURATION} duration levels up to {MAX_DURATION}, {N_VELOCITY} velocity levels")
    return "\n".join(lines)


if __name__ == "__main__":
    print(layout())
