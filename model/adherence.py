"""How well one result keeps its request's editing controls: the figures the CLI prints per result and the
evaluation report can tabulate (pure functions over notes, built on tokenizer.harmony).

    figures = adherence(request, score)
    # {"new_notes": 212, "in_key": 1.0, "chord_tones_on_strong_beats": 0.81, "bass_on_chord_tones": 1.0,
    #  "parts_per_bar": [["bass", "piano"], ...], "prompt_notes_kept": 1.0, "part_heard_in_bars": 1.0}
"""

from __future__ import annotations

import numpy as np

from tokenizer import Score
from tokenizer import harmony as H
from tokenizer import vocab as V

from .sampling import plan_request

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
    if not len(plan.kept) or not len(n):
        return n
    old = {tuple(r) for r in _rows(plan.kept).tolist()}
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
    if request.prompt is not None:
        kept = np.concatenate([plan.context, plan.kept, plan.tail])
        out["prompt_notes_kept"] = H.kept_share(kept, score.notes)
    if request.edit in ("add_part", "regenerate_part"):
        g = V.GROUPS.index(request.part)
        heard = [V.GROUPS[g] in parts for parts in H.parts_per_bar(new, bar, last, first)]
        out["part_heard_in_bars"] = float(np.mean(heard)) if heard else None
    return out

