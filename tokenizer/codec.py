"""`encode` / `decode`: a Score <-> its 3-token sequence (an inverse pair)."""

from __future__ import annotations

import numpy as np

from . import vocab as V
from .score import MAX_STEPS, NOTE_DTYPE, Score


def control_prefix(groups, drums: bool, style: str | None = None) -> list[int]:
    """START, DRUMS_ON/OFF, one GROUP token per pitched group (ascending), optional STYLE."""
    toks = [V.START, V.DRUMS_ON if drums else V.DRUMS_OFF]
    toks += [V.group_token(g) for g in sorted(set(int(g) for g in groups)) if g != V.DRUM_GROUP]
    if style is not None:
        toks.append(V.style_token(style))
    return toks


def encode_notes(notes: np.ndarray, start_step: int = 0) -> np.ndarray:
    """Note triples only (no prefix, no END); notes must be normalized.  Time starts at start_step."""
    n = len(notes)
    onsets = notes["onset"].astype(np.int64)
    gaps = np.diff(onsets, prepend=start_step)
    if n and gaps.min() < 0:
        raise ValueError("notes must be sorted and start at or after start_step")
    n_rest = np.where(gaps > V.MAX_SHIFT, (gaps - 1) // V.MAX_SHIFT, 0)  # rest triples before each note
    shifts = gaps - n_rest * V.MAX_SHIFT
    if not n_rest.any():
        out = np.empty((n, 3), np.int64)
        out[:, 0] = V.SHIFT_OFFSET + shifts
        levels = np.searchsorted(np.asarray(V.DURATION_LEVELS), notes["duration"])
        out[:, 1] = V.DURVEL_OFFSET + levels * V.N_VELOCITY + notes["velocity"]
        out[:, 2] = V.GROUPPITCH_OFFSET + notes["group"].astype(np.int64) * 128 + notes["pitch"]
        return out.reshape(-1)
    toks: list[int] = []
    rest = [V.SHIFT_OFFSET + V.MAX_SHIFT, V.DURVEL_REST, V.GROUPPITCH_REST]
    for note, r, s in zip(notes, n_rest, shifts):
        toks += rest * int(r)
        toks += [V.shift_token(int(s)), V.durvel_token(int(note["duration"]), int(note["velocity"])),
                 V.grouppitch_token(int(note["group"]), int(note["pitch"]))]
    return np.asarray(toks, np.int64)


def encode(score: Score, style: str | None = "auto", end: bool = True) -> np.ndarray:
    """Prefix + note triples (+ END).  style="auto" uses the score's own style label."""
    style = score.style if style == "auto" else style
    prefix = control_prefix(score.groups, score.has_drums, style)
    body = encode_notes(score.notes)
    parts = [np.asarray(prefix, np.int64), body]
    if end:
        parts.append(np.asarray([V.END], np.int64))
    return np.concatenate(parts)


def parse_prefix(tokens) -> tuple[list[int], bool, str | None, int]:
    """(groups, drums, style, index of the first note token)."""
    groups, drums, style, i = [], False, None, 0
    toks = list(map(int, tokens))
    while i < len(toks) and V.token_slot(toks[i]) < 0 and toks[i] != V.END:
        t = toks[i]
        if t == V.DRUMS_ON:
            drums = True
        elif V.GROUP_OFFSET <= t < V.STYLE_OFFSET:
            groups.append(t - V.GROUP_OFFSET)
        elif V.STYLE_OFFSET <= t < V.SHIFT_OFFSET:
            style = V.STYLES[t - V.STYLE_OFFSET]
        i += 1
    return groups, drums, style, i


def decode_notes(tokens, start_step: int = 0) -> tuple[np.ndarray, int]:
    """Note triples -> notes; stops at END or PAD; ignores a trailing incomplete triple.

    Returns (notes, time of the last onset).  Raises ValueError on a token in the wrong slot or a note
    at or past MAX_STEPS (onsets are summed in 64 bits and checked before they are stored in 32).
    """
    toks = np.asarray(tokens, np.int64)
    stop = np.flatnonzero((toks == V.END) | (toks == V.PAD))
    if len(stop):
        toks = toks[: stop[0]]
    toks = toks[: len(toks) // 3 * 3].reshape(-1, 3)
    for slot, (lo, hi) in enumerate(V.SLOT_RANGES):
        bad = (toks[:, slot] < lo) | (toks[:, slot] >= hi)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(f"token {int(toks[j, slot])} ({V.describe(int(toks[j, slot]))}) cannot stand "
                             f"in slot {V.SLOT_NAMES[slot]} of note {j}")
    time = start_step + np.cumsum(toks[:, 0] - V.SHIFT_OFFSET)
    real = (toks[:, 1] != V.DURVEL_REST) & (toks[:, 2] != V.GROUPPITCH_REST)
    onsets = time[real]
    if len(onsets) and (onsets.min() < 0 or onsets.max() >= MAX_STEPS):
        bad = int(onsets.max() if onsets.max() >= MAX_STEPS else onsets.min())
        raise ValueError(f"the tokens place a note at step {bad:,}, outside 0..{MAX_STEPS - 1:,}")
    notes = np.zeros(int(real.sum()), NOTE_DTYPE)
    dv = toks[real, 1] - V.DURVEL_OFFSET
    gp = toks[real, 2] - V.GROUPPITCH_OFFSET
    notes["onset"] = onsets
    notes["duration"] = np.asarray(V.DURATION_LEVELS)[dv // V.N_VELOCITY]
    notes["velocity"] = dv % V.N_VELOCITY
    notes["group"], notes["pitch"] = gp // 128, gp % 128
    last = int(time[-1]) if len(time) else start_step
    return notes, last


def decode(tokens, bpm: float = 120.0, time_signature=(4, 4)) -> Score:
    groups, drums, style, i = parse_prefix(tokens)
    notes, _ = decode_notes(np.asarray(tokens, np.int64)[i:])
    return Score(notes, bpm=bpm, time_signature=tuple(time_signature), style=style)


def piece_notes(tokens) -> np.ndarray | None:
    """One piece of a corpus token stream (START, controls, note triples, END) -> its notes, or None if it
    does not decode.  The one converter the engines' derived data share."""
    piece = np.asarray(tokens, np.int64)
    _, _, _, i = parse_prefix(piece[:64])
    try:
        notes, _ = decode_notes(piece[i:])
    except ValueError:
        return None
    return notes


def stream_pieces(tokens, limit: int | None = None):
    """Yield (index, notes) for each piece of a flat corpus token stream (pieces start at START) that
    decodes, at most the first `limit` pieces."""
    toks = np.asarray(tokens)
    bounds = np.r_[np.flatnonzero(toks == V.START), len(toks)]
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if limit is not None and k >= limit:
            break
        notes = piece_notes(toks[a:b])
        if notes is not None:
            yield k, notes

