"""What the pianoroll window engines `cnn` and `vae-nn` (MusicGenDL) share at inference.

Both see music as consecutive 4-bar windows of 5 tracks (piano, guitar, bass, strings, drums) x 32
steps x 128 pitches at 2 steps per beat (tokenizer/pianoroll.py), and both generate window by window
from a start window: the prompt's last window (an uploaded MIDI) or, without one, a window drawn
(seeded) from a small start set stored in the checkpoint, so the page needs no corpus.  Here: the
convolution towers both networks use, `WindowEngine` (start windows, the rollout loop, the requested
tracks, writing the Scores), and the helpers behind it.  A key and chords (`lock_shifts`) shift the cell
logits of each new window before it is thresholded: out-of-key rows of the pitched tracks never play, the
bass rows keep to their bar's chord tones, the other pitched tracks' chord tones get the chord pull; the
drum track is exempt; where the model's best pitch at a step is forbidden the step still plays, on the best
allowed pitch (`locked_logits`).  The locked window is what the next step sees.  Their training is in
training/tasks/.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn

from tokenizer import Score
from tokenizer import vocab as V
from tokenizer.pianoroll import (  # noqa: F401  (the window geometry, re-exported for the engines)
    BARS_PER_WINDOW,
    CELL,
    DRUM_TRACK,
    GROUP_TO_TRACK,
    N_TRACKS,
    PITCHES,
    STEPS_PER_BEAT,
    TRACK_TO_GROUP,
    TRACKS,
    WINDOW,
    join_windows,
    pianoroll_to_score,
    score_to_pianoroll,
    unpack_windows,
)
from tokenizer.score import cut_at

from .engine import Engine, GenerationRequest
from .sampling.pitch import PitchLock

HARMONY = TRACKS[1:]  # the tracks that follow the piano: guitar, bass, strings, drums
PACKED_WINDOW = (N_TRACKS, WINDOW, PITCHES // 8)  # a window as stored in a checkpoint (packed bits)


# ---- layers ------------------------------------------------------------------------------------------
def conv_tower(ch: list) -> nn.Sequential:
    """(B, 1, 32, 128) -> (B, ch[2] * 4 * 8): strides (2,2), (2,4), (2,2)."""
    c1, c2, c3 = ch
    return nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1), nn.ReLU(),  # (c1, 16, 64)
        nn.Conv2d(c1, c2, 4, (2, 4), (1, 0)), nn.ReLU(),  # (c2, 8, 16)
        nn.Conv2d(c2, c3, 4, 2, 1), nn.ReLU(),  # (c3, 4, 8)
        nn.Flatten(),
    )


def deconv_tower(ch: list) -> nn.Sequential:
    """(B, ch[2] * 4 * 8) -> logits (B, 1, 32, 128)."""
    c1, c2, c3 = ch
    return nn.Sequential(
        nn.Unflatten(1, (c3, 4, 8)),
        nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(),  # (c2, 8, 16)
        nn.ConvTranspose2d(c2, c1, 4, (2, 4), (1, 0)), nn.ReLU(),  # (c1, 16, 64)
        nn.ConvTranspose2d(c1, 1, 4, 2, 1),  # (1, 32, 128)
    )


def flat_size(ch: list) -> int:
    return ch[2] * 4 * 8


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Three dense layers with ReLUs between them."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


# ---- generation scaffolding ------------------------------------------------------------------------------
def variant_generator(seed: int, v: int) -> torch.Generator:
    """Variant v's own random stream for request seed `seed`."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(v)]).generate_state(1)[0]))


def output_groups(req: GenerationRequest) -> dict[int, int]:
    """track -> the group it is written as: the first requested group folding into it; drums iff asked."""
    out: dict[int, int] = {}
    for g in req.group_ids:
        out.setdefault(GROUP_TO_TRACK[g], g)
    if req.drums:
        out[GROUP_TO_TRACK[V.DRUM_GROUP]] = V.DRUM_GROUP
    return out


def prompt_window(prompt: Score) -> np.ndarray:
    """The window a continuation starts from: the last 32 pianoroll steps before the prompt's end
    (for a prompt of 4 bars or less: its first window, silence-padded; if the prompt ends with 4 or
    more silent bars: the 32 steps up to its last note).  (5, 32, 128) bool."""
    end = -(-prompt.span_steps // CELL)
    roll = score_to_pianoroll(prompt, STEPS_PER_BEAT, n_steps=end)  # (5, end, 128)
    active = np.flatnonzero(roll.any((0, 2)))
    if len(active) and active[-1] < end - WINDOW:  # a silent ending: start from the last window with notes
        end = int(active[-1]) + 1
    out = np.zeros((N_TRACKS, WINDOW, PITCHES), bool)
    take = roll[:, max(0, end - WINDOW):end]
    out[:, WINDOW - take.shape[1]:] = take
    if not out.any():
        raise ValueError("the uploaded MIDI has no notes to continue from")
    return out


def start_windows(req: GenerationRequest, packed_starts: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """(B, 5, 32, 128) bool start windows and the start-set index per variant (-1: the prompt).
    Without a prompt, the variants' starts are drawn (seeded) from the start-set windows in which every
    requested track plays (or, if none has them all, as many as any has): the engines mostly carry
    their start forward, so a start without drums would give a piece without drums."""
    B = req.variants
    if req.prompt is not None:
        w = prompt_window(req.prompt)
        return np.repeat(w[None], B, 0), [-1] * B
    n = len(packed_starts)
    if n == 0:
        raise ValueError("this checkpoint has no start windows: upload a MIDI to continue")
    starts = unpack_windows(packed_starts.numpy())  # (n, 5, 32, 128)
    wanted = sorted(output_groups(req))
    plays = starts[:, wanted].any(axis=(2, 3)).sum(1)  # (n,) requested tracks playing in each start
    eligible = np.flatnonzero(plays == plays.max())
    rng = np.random.default_rng([int(req.seed), 17])
    picks = eligible[rng.permutation(len(eligible))[:B] if B <= len(eligible) else rng.integers(0, len(eligible), B)]
    return starts[picks], [int(i) for i in picks]


def windows_to_scores(req: GenerationRequest, rolls: np.ndarray) -> list[Score]:
    """Generated windows (B, n, 5, 32, 128) -> Scores with only the requested instruments, `bars` long,
    after the prompt when there is one."""
    out_group = output_groups(req)
    prompt = req.prompt
    offset = prompt.span_steps if prompt is not None else 0
    limit = req.bars * V.STEPS_PER_BAR
    scores = []
    for b in range(rolls.shape[0]):
        roll = join_windows(rolls[b]).copy()  # (5, T, 128)
        for tr in range(N_TRACKS):
            if tr not in out_group:
                roll[tr] = False
        notes = pianoroll_to_score(roll, STEPS_PER_BEAT, req.bpm).notes
        if len(notes):
            tr_of = np.asarray(GROUP_TO_TRACK)[notes["group"]]
            notes["group"] = np.asarray([out_group[int(t)] for t in tr_of], np.int8)
        notes = cut_at(notes, limit)
        if prompt is not None:
            notes = notes.copy()
            notes["onset"] += offset
            notes = np.concatenate([prompt.notes, notes])
            scores.append(Score(notes, bpm=req.bpm, time_signature=prompt.time_signature, length=offset + limit))
        else:
            scores.append(Score(notes, bpm=req.bpm, length=limit))
    return scores


def n_windows(bars: int) -> int:
    return math.ceil(bars / BARS_PER_WINDOW)


def lock_shifts(req: GenerationRequest, n: int) -> torch.Tensor | None:
    """The request's key and chords (PitchLock) for the n generated windows: (n, 5, 32, 128) float added to
    the cell logits before thresholding (None without key and chords).  Each cell gets its bar's shift:
    -inf on the pitch rows the scale forbids (the bass track: off its bar's chord tones too), +chord_bias
    on chord tones of the other pitched tracks (the chord pull); the drum track is exempt (see
    `locked_logits` for how a shift is applied).
    Bars count from the piece's start (after a prompt, in the prompt's metre)."""
    prompt = req.prompt
    lock = PitchLock.of(req, prompt.bar_steps if prompt is not None else V.STEPS_PER_BAR)
    if lock is None:
        return None
    onsets = (prompt.span_steps if prompt is not None else 0) + torch.arange(n * WINDOW) * CELL
    out = torch.zeros(n * WINDOW, N_TRACKS, PITCHES)
    for tr in range(N_TRACKS):
        if tr != DRUM_TRACK:
            out[:, tr] = lock.shift(TRACK_TO_GROUP[tr], onsets)
    return out.view(n, WINDOW, N_TRACKS, PITCHES).transpose(1, 2).contiguous()


def locked_logits(logits: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Cell logits (..., 128) under a lock shift (..., 128) (`lock_shifts`): the model decides whether a
    track plays at a time step, the lock which pitches.  The shifted logits of a step are moved together so
    that their best equals the model's best: where the model's best pitch is forbidden the step still plays
    (on the best allowed pitch), and the chord pull favours chord tones within a step without raising its
    best (added to the raw logits, the default pull of 2 made cnn play 4 times as many non-bass notes on
    strong beats).  The thresholded analogue of renormalizing a softmax over the allowed pitches."""
    logits = logits.float()
    locked = logits + shift
    best_ok = locked.max(-1, keepdim=True).values
    gap = logits.max(-1, keepdim=True).values - best_ok
    return locked + torch.where(torch.isfinite(best_ok), gap, torch.zeros_like(gap))


def threshold(logits: torch.Tensor, thresholds: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Cell logits (..., 5, 32, 128) -> notes: the cells whose sigmoid (under the lock `shift`, see
    `locked_logits`) is above their track's threshold (`thresholds` (5,))."""
    if shift is not None:
        logits = locked_logits(logits, shift)
    return torch.sigmoid(logits.float()) > thresholds.float()[:, None, None]


Step = Callable[..., torch.Tensor]  # windows t (B, 5, 32, 128) bool [, lock shift (5, 32, 128)] -> windows t+1 bool


@torch.no_grad()
def rollout(start: np.ndarray, n: int, step: Step, progress: Callable[[float], None] | None = None,
            shifts: torch.Tensor | None = None) -> np.ndarray:
    """start (B, 5, 32, 128) bool -> the n windows after it (B, n, 5, 32, 128) bool, each the step of the
    one before (given window i's lock shift `shifts[i]` when there is a lock): the locked window is what
    the next step sees."""
    cur = torch.from_numpy(np.asarray(start, bool))
    out = []
    for i in range(n):
        cur = step(cur) if shifts is None else step(cur, shifts[i])
        out.append(cur)
        if progress is not None:
            progress((i + 1) / n)
    return torch.stack(out, 1).numpy()


class WindowEngine(Engine):
    """Base of the window engines: the network (`self.model`) carries the packed start windows in its
    `start_windows` buffer; a subclass gives `stepper(req)`: the step function for this request (its
    options checked) and the extra figures it reports."""

    unit: ClassVar[str] = "windows"
    controls: ClassVar[frozenset[str]] = frozenset({"groups", "drums", "bars", "variants", "seed", "bpm", "prompt",
                                                    "key", "chords"})

    def groups_written(self, req: GenerationRequest) -> tuple[str, ...]:
        """The groups a (restricted) request's result can hold: per track the first requested group folding
        into it (piano, chromatic, organ -> piano; guitar; bass; the other pitched groups -> strings), drums
        iff asked (an uploaded MIDI's own notes come back as they were)."""
        return tuple(V.GROUPS[g] for g in sorted(output_groups(req).values()))

    def stepper(self, req: GenerationRequest) -> tuple[Step, dict]:
        """(step(windows t, shift=None) -> windows t+1, extra figures); `shift` (5, 32, 128): see
        `lock_shifts`."""
        raise NotImplementedError

    def _generate(self, req: GenerationRequest, progress: Callable[[float], None] | None) -> tuple[list[Score], dict]:
        step, stats = self.stepper(req)
        start, picks = start_windows(req, self.model.start_windows)
        n = n_windows(req.bars)
        rolls = rollout(start, n, step, progress, lock_shifts(req, n))
        return windows_to_scores(req, rolls), {"count": req.variants * n, "starts": picks, **stats}


__all__ = ["TRACKS", "HARMONY", "WINDOW", "PITCHES", "N_TRACKS", "conv_tower", "deconv_tower", "flat_size", "mlp",
           "variant_generator", "output_groups", "prompt_window", "start_windows", "windows_to_scores", "n_windows",
           "lock_shifts", "locked_logits", "threshold", "rollout", "WindowEngine"]
