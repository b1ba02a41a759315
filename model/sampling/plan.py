"""What to decode: a request as one decoding problem (`Plan`).

Editing is the same grammar with forced notes: the prompt before the edited span is the context, kept notes
inside it are forced in at their places and new notes may only go where the order allows (before the next
kept note; at its onset only if they sort before it), and the notes after it follow unchanged.  Free
generation has no prompt; every edit of a prompt builds its own plan (`model.edits`: `Edit.plan`): continue =
context only; add a part = every prompt note kept, the new part free (and heard in every bar); regenerate a
part = the same without that part; infill = left context, the bars generated, the rest kept.  A plan also
says which soft rules the edit turns on (a new part heard in every bar, its density target, the pull to the
song's pitch classes, a smaller note budget a bar).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tokenizer import NOTE_DTYPE, Score
from tokenizer import vocab as V


def _no_notes() -> np.ndarray:
    return np.zeros(0, NOTE_DTYPE)


@dataclass(kw_only=True)
class Plan:
    """A request as one decoding problem.  Time runs in steps of the piece; the stream decodes
    [min_time, new_end): `context` (notes before min_time) is encoded as the prompt, `kept` notes (onsets in
    [min_time, new_end)) are forced in at their places, new notes of `allowed` groups may fill in around
    them, and `tail` (notes at or after new_end) is appended untouched (a causal model cannot use it)."""
    allowed: list[int]  # groups new notes may use
    prefix_groups: list[int]  # the control prefix's groups
    drums_flag: bool  # the control prefix's drums switch
    new_end: int
    limit: int  # the piece's length (steps)
    force_at: int  # from here an unheard requested group is forced at the next note
    context: np.ndarray = field(default_factory=_no_notes)
    kept: np.ndarray = field(default_factory=_no_notes)
    tail: np.ndarray = field(default_factory=_no_notes)
    # notes in the span kept untouched that the decoder does not read (a dense song's parts past the read budget,
    # `read_groups`): merged back into every result
    aside: np.ndarray = field(default_factory=_no_notes)
    played: set[int] = field(default_factory=set)  # groups already heard (not forced again)
    min_time: int = 0
    bar_steps: int = V.STEPS_PER_BAR
    time_signature: tuple[int, int] = (4, 4)
    bpm: float = 120.0
    # the soft rules an edit turns on (an added or regenerated part: all four)
    every_bar: bool = False  # the new groups must be heard in every bar
    # notes a bar the new part is pulled towards: an added part to the corpus median of its group
    # (tokenizer.harmony.PART_DENSITY), a regenerated one to its original's (0: no pull)
    density: float = 0.0
    song_pitch_pull: bool = False  # without a key or chords, new notes keep to the pitch classes the kept play
    bar_note_divisor: int = 1  # a bar may hold this fraction of the per-bar note budget (one new part: 3)
    follow_repeats: bool = False  # the new part repeats where the song repeats (`model.sampling.repeats`)

    @classmethod
    def of_song(cls, song: Score, **fields) -> "Plan":
        """A plan in `song`'s metre and tempo (`fields`: the rest, by name)."""
        return cls(bar_steps=song.bar_steps, time_signature=song.time_signature, bpm=song.bpm, **fields)

    def kept_notes(self) -> np.ndarray:
        """Every note in the span the edit keeps, read (`kept`) or not (`aside`), in the song's order: what the
        song's repeats, pitch classes and grid are measured on."""
        if not len(self.aside):
            return self.kept
        notes = np.concatenate([self.kept, self.aside])
        return notes[np.lexsort((notes["pitch"], notes["group"], notes["onset"]))]

    def song_notes(self) -> np.ndarray:
        """Every note of the prompt (context, kept, aside and tail), not in order."""
        return np.concatenate([self.context, self.kept, self.aside, self.tail])

    def sounding(self) -> np.ndarray:
        """The prompt's notes (context, kept and tail) that sound into the decoded span [min_time, new_end): a new
        note may not restrike them, and each costs the grammar a little every step.  The parts aside are left out:
        no new note can be theirs (they are not the edited part)."""
        every = np.concatenate([self.context, self.kept, self.tail])
        ends = every["onset"].astype(np.int64) + every["duration"]
        return every[(ends > self.min_time) & (every["onset"] < self.new_end)]

    @property
    def span_bars(self) -> int:
        """Bars of the generated span [min_time, new_end) (at least 1)."""
        return max(1, -(-(self.new_end - self.min_time) // self.bar_steps))


def split_notes(notes: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onsets before lo, in [lo, hi), at or after hi)."""
    on = notes["onset"]
    return notes[on < lo], notes[(on >= lo) & (on < hi)], notes[on >= hi]


def part_density(notes: np.ndarray, bar_steps: int) -> float:
    """Notes a bar of a part in the bars where it starts a note (0 without notes)."""
    heard = len(np.unique(notes["onset"].astype(np.int64) // bar_steps))
    return len(notes) / heard if heard else 0.0


# A part edit reads the other parts of the song as kept notes: on a CPU each costs reading time (about 1.5 ms a
# token on one AVX2 core, 3 tokens a note) and a decision where a new note may come before it.  A song with more
# than READ_NOTES_PER_BAR notes a 4/4 bar in those parts on average (a dense 16-part arrangement: 300) has the
# model read only some of them, the busiest first; the rest are kept untouched and merged back (`Plan.aside`).
# Measured with `python -m evaluation.reading` (docs/runs/reading.md): where the model knows a song's style well
# (two openmsx songs, 1.0 and 1.4 bits a note of the part given every other part), reading only the parts within
# 32 notes a bar cost up to 0.9 bits a note, within 16 up to 2.7; so the budget spares every real song measured
# but one (43 notes a bar) and only a dense arrangement's edit reads less.
READ_NOTES_PER_BAR = 40.0
FOUNDATION = (V.DRUM_GROUP, V.GROUPS.index("bass"))  # the song's beat and its harmony's roots


def read_groups(kept: np.ndarray, length: int, per_bar: float | None = None, order: str = "busiest") -> set[int]:
    """The groups of `kept` (the other parts of a part edit, over `length` steps) the model reads: all of them
    while they hold at most `per_bar` (default READ_NOTES_PER_BAR) notes a 4/4 bar on average; else, in `order`,
    each part that still fits that many (the first one always): "busiest", most notes first (the default: on
    real songs it cost fewer bits than the other order); "foundation", drums and bass first, then the other parts,
    fewest notes first."""
    groups, counts = np.unique(kept["group"].astype(np.int64), return_counts=True)
    per_bar = READ_NOTES_PER_BAR if per_bar is None else per_bar
    budget = per_bar * max(length, 1) / V.STEPS_PER_BAR
    if counts.sum() <= budget:
        return set(groups.tolist())
    if order == "foundation":
        ranked = sorted(zip(groups.tolist(), counts.tolist()), key=lambda gc: (gc[0] not in FOUNDATION, gc[1]))
    elif order == "busiest":
        ranked = sorted(zip(groups.tolist(), counts.tolist()), key=lambda gc: -gc[1])
    else:
        raise ValueError(f"unknown order {order!r}")
    chosen, total = set(), 0
    for g, c in ranked:
        if not chosen or total + c <= budget:
            chosen.add(g)
            total += c
    return chosen


def requested_groups(req) -> list[int]:
    """The request's group ids, with drums when asked."""
    return sorted(set(req.group_ids) | ({V.DRUM_GROUP} if req.drums else set()))


def free_plan(req) -> Plan:
    """Generation without a prompt: req.bars bars of 4/4 at req.bpm."""
    allowed = requested_groups(req)
    limit = req.bars * V.STEPS_PER_BAR
    return Plan(allowed=allowed, prefix_groups=allowed, drums_flag=req.drums, new_end=limit, limit=limit,
                force_at=min(V.STEPS_PER_BAR, limit // 2), bpm=req.bpm)


def plan_request(req) -> Plan:
    """Free generation, or the edit a request makes of `req.prompt` (`req.edit_kind`: its `edit`, or a
    continuation), as that edit plans it."""
    prompt: Score | None = req.prompt
    if prompt is None or not len(prompt.notes):
        return free_plan(req)
    return req.edit_kind.plan(req)
