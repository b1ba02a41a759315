"""How well one result keeps its request's editing controls: the figures the CLI prints per result and the
evaluation report can tabulate (pure functions over notes, built on tokenizer.harmony).

    figures = adherence(request, score)
    # {"new_notes": 212, "in_key": 1.0, "chord_tones_on_strong_beats": 0.81, "bass_on_chord_tones": 1.0,
    #  "parts_per_bar": [["bass", "piano"], ...], "requested_parts_heard": 0.96, "silent_bars": 0,
    #  "prompt_notes_kept": 1.0, "part_heard_in_bars": 1.0, "part_notes_per_bar": 3.1,
    #  "part_density_target": 2.9, "part_in_song_scale": 0.97, "part_on_song_grid": 1.0}

`requested_parts_heard`: the share of (bar, requested part) pairs of the generated span in which the part
starts a new note (drums count where asked); `silent_bars`: bars of the span without a new note.  For an
added or regenerated part, `tokenizer.harmony.part_fit` against the rest of the song: its notes per 4/4 bar
where it plays (beside `part_density_target`, what the sampler pulls it towards: for an added part the corpus
median of its group, `PART_DENSITY`, for a regenerated one its original's), the share of its pitched notes in
the song's scale and of its onsets on the song's grid.
"""

from __future__ import annotations

import numpy as np

from tokenizer import Score
from tokenizer import harmony as H
from tokenizer import vocab as V

from .sampling.plan import plan_request

_FIELDS = ("onset", "group", "pitch")


def _rows(notes: np.ndarray, fields=_FIELDS) -> np.ndarray:
    if not len(notes):
        return np.zeros((0, len(fields)), np.int64)
    return np.stack([notes[f].astype(np.int64) for f in fields], 1)


def new_notes(plan, score: Score) -> np.ndarray:
    """The notes of `score` the engine placed (`plan`: the request's `plan_request`): in the generated span,
    and not a note it had to keep (a regenerated part's or an infilled bar's notes are all new, even where
    they equal the original)."""
    n = score.notes
    n = n[(n["onset"] >= plan.min_time) & (n["onset"] < plan.new_end)]
    kept = plan.kept_notes()
    if not len(kept) or not len(n):
        return n
    old = {tuple(r) for r in _rows(kept).tolist()}
    return n[np.array([tuple(r) not in old for r in _rows(n).tolist()], bool)]


def adherence(request, score: Score) -> dict:
    """Figures for one result of a validated request (only those its controls make meaningful)."""
    plan = plan_request(request)
    new = new_notes(plan, score)
    bar, num = score.bar_steps, score.time_signature[0]
    out: dict = {"new_notes": int(len(new))}
    key, chords = request.parsed_key, request.parsed_chords
    if key is not None:
        out["in_key"] = H.in_key_share(new, key)
    if chords:
        out["chord_tones_on_strong_beats"] = H.chord_tone_share(new, chords, bar, num)
        out["bass_on_chord_tones"] = H.chord_tone_share(new, chords, bar, num, groups=[V.GROUPS.index("bass")],
                                                        strong_only=False)
    first, last = plan.min_time // bar, -(-plan.new_end // bar)
    out["parts_per_bar"] = H.parts_per_bar(score.notes, bar, last, first)
    heard_new = H.parts_per_bar(new, bar, last, first)
    wanted = [V.GROUPS[g] for g in plan.allowed]
    out["requested_parts_heard"] = float(np.mean([w in parts for parts in heard_new for w in wanted])) \
        if heard_new and wanted else None
    out["silent_bars"] = sum(not parts for parts in heard_new)
    if request.prompt is not None:
        out["prompt_notes_kept"] = H.kept_share(plan.song_notes(), score.notes)
    edit = request.edit_kind
    if edit is not None and edit.new_part:
        g = V.GROUPS.index(request.part)
        heard = [V.GROUPS[g] in parts for parts in heard_new]
        out["part_heard_in_bars"] = float(np.mean(heard)) if heard else None
        fit = H.part_fit(new, score.notes[score.notes["group"] != g], bar, last, first)
        out["part_notes_per_bar"] = fit["notes_per_bar"]
        out["part_density_target"] = plan.density * V.STEPS_PER_BAR / bar  # per 4/4 bar, as notes_per_bar
        out["part_in_song_scale"] = fit["in_song_scale"]
        out["part_on_song_grid"] = fit["on_song_grid"]
    return out

