"""Pitch: the key and chord lock every engine applies, and the transformer's pitch masks for new notes.

Every pitched group keeps to the key's scale (without a key, to the chords' notes); with chords the bass plays
only tones of its bar's chord and the other pitched groups get `chord_bias` added to their chord tones'
logits; drums are exempt.  The transformer's grammar also keeps every pitched group to its measured register
(tokenizer.harmony.REGISTERS), and an added or regenerated part without a key or chords is pulled towards
the pitch classes the song plays (SONG_PC_PULL).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tokenizer import harmony as H
from tokenizer import vocab as V

from .plan import Plan

# an added or regenerated part without a key or chords: its notes of pitch classes the song (the kept
# pitched notes) plays less than SONG_PC_SHARE of the time lose SONG_PC_PULL nats
SONG_PC_SHARE = 0.03
SONG_PC_PULL = 2.5

LOCK_NEG = float("-inf")
BASS = V.GROUPS.index("bass")

@dataclass(frozen=True)
class PitchLock:
    """A request's key and chords, the one rule every engine applies: every pitched group keeps to the key's
    scale (without a key, to the chords' notes); with chords the bass plays only tones of its bar's chord,
    and the other pitched groups get `bias` (the request's chord_bias) added to their chord tones' logits.
    Drums are exempt.  One chord a bar from bar 1 of the piece, repeating.

    The transformer's grammar builds its masks from `table` (`pitch_controls`, plus its registers); the
    other engines add `shift(group, onsets)` (0, -inf or +bias per pitch) to their pitch logits before
    sampling (gru, lstm, multi-rnn, style-vae) or thresholding (cnn, vae-nn)."""

    scale: np.ndarray  # (128,) bool: the pitches every pitched group may play
    tones: np.ndarray  # (C, 128) bool: each chord's tones (C = 0 without chords)
    bias: float
    bar_steps: int = V.STEPS_PER_BAR

    @classmethod
    def of(cls, req, bar_steps: int = V.STEPS_PER_BAR) -> "PitchLock | None":
        """The lock of a validated request; None when it has neither key nor chords."""
        key, chords = req.parsed_key, req.parsed_chords
        if key is None and not chords:
            return None
        pcs = key.pitch_classes if key is not None else frozenset().union(*(c.tones for c in chords))
        tones = np.stack([H.pitch_mask(c.tones) for c in chords]) if chords else np.zeros((0, 128), bool)
        return cls(H.pitch_mask(pcs), tones, float(req.chord_bias), bar_steps)

    def table(self, group: int) -> torch.Tensor:
        """(max(1, C), 128) float32: the logit shift of `group`'s pitches under each chord (row 0 without
        chords): -inf off the scale (the bass with chords: off its chord's tones too), +bias on chord tones
        (the other pitched groups), else 0; drums all 0."""
        rows = max(1, len(self.tones))
        out = np.zeros((rows, 128), np.float32)
        if group == V.DRUM_GROUP:
            return torch.from_numpy(out)
        allowed = np.broadcast_to(self.scale, (rows, 128)).copy()
        if len(self.tones) and group == BASS:
            allowed &= self.tones
        elif len(self.tones):
            out += self.tones * np.float32(self.bias)
        out[~allowed] = LOCK_NEG
        return torch.from_numpy(out)

    def chord_of(self, onsets) -> torch.Tensor:
        """Index into `table(group)` rows of the chord sounding at each onset (steps from the piece's start)."""
        on = torch.as_tensor(onsets, dtype=torch.long)
        return (on // self.bar_steps) % max(1, len(self.tones))

    def shift(self, group: int, onsets) -> torch.Tensor:
        """(*onsets.shape, 128) float32: `table(group)` at each onset's chord."""
        return self.table(group)[self.chord_of(onsets)]


def lock_notes(logits: torch.Tensor, shift: torch.Tensor, is_note: torch.Tensor) -> torch.Tensor:
    """(..., V) logits with a lock's shift (..., V) on the tokens that start notes (`is_note` (V,) bool): the
    model keeps its odds of starting a note against holding or resting, the lock picks among the allowed notes
    (their mass is renormalized to what every note had): the lock decides pitches, not how much is played,
    as in the transformer, whose pitch comes after the note is placed."""
    shifted = logits + shift
    before = torch.logsumexp(logits.masked_fill(~is_note, LOCK_NEG), -1, keepdim=True)
    after = torch.logsumexp(shifted.masked_fill(~is_note, LOCK_NEG), -1, keepdim=True)
    gain = before - after
    gain = torch.where(torch.isfinite(gain), gain, torch.zeros_like(gain))
    return torch.where(is_note, shifted + gain, logits)


def pitch_controls(req, plan: Plan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(note mask (V,), per-chord bar masks (C, V), per-chord biases (C, V)) for new notes.

    Every pitched group keeps to its measured register; the key and chords are `PitchLock`'s rule (the key's
    scale, or without a key the chords' notes; the bass on its bar's chord tones, `chord_bias` on the chord
    tones of the other pitched groups); drums are exempt.  Where the plan asks for it (`Plan.song_pitch_pull`:
    a part added to or regenerated in a song) and there is no key and no chords, new notes are pulled to the
    song's pitch classes (SONG_PC_PULL)."""
    key, chords = req.parsed_key, req.parsed_chords
    lock = PitchLock.of(req)
    note = np.zeros(V.VOCAB_SIZE, bool)
    for g in plan.allowed:
        lo = V.GROUPPITCH_OFFSET + g * 128
        note[lo:lo + 128] = H.register_mask(g) & (lock.scale if lock is not None and g != V.DRUM_GROUP else True)
    bar_masks = np.ones((max(1, len(chords)), V.VOCAB_SIZE), bool)
    bias = np.zeros((max(1, len(chords)), V.VOCAB_SIZE), np.float32)
    if lock is not None:
        for g in range(V.N_PITCHED):
            lo = V.GROUPPITCH_OFFSET + g * 128
            table = lock.table(g).numpy()  # (C or 1, 128): -inf off the lock, +bias on pulled chord tones
            bar_masks[:, lo:lo + 128] = np.isfinite(table)
            bias[:, lo:lo + 128] = np.where(np.isfinite(table), table, 0.0)
    song = plan.kept_notes()
    song = song[song["group"] != V.DRUM_GROUP]
    if plan.song_pitch_pull and key is None and not chords and len(song):  # a part for a song: keep to its notes
        share = np.bincount(song["pitch"].astype(np.int64) % 12, minlength=12) / len(song)
        off = H.pitch_mask(np.flatnonzero(share < SONG_PC_SHARE))
        for g in plan.allowed:
            if g != V.DRUM_GROUP:
                lo = V.GROUPPITCH_OFFSET + g * 128
                bias[:, lo:lo + 128] -= off * SONG_PC_PULL
    return torch.from_numpy(note), torch.from_numpy(bar_masks), torch.from_numpy(bias)
