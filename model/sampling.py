"""Sampling, in one place: logit filters, the 3-token grammar, control masks, editing, and the batched loop.

Grammar: after the control prefix, position mod 3 fixes the token type.
Controls hold by construction:
- slot 2 allows only the requested groups (and drums only if asked);
- every requested group (drums included) that has not played by the forcing point (the second bar,
  or half-way through a 1-bar request) is forced at the next slot 2, so each one is heard;
- a shift that would reach the requested end ends the variant, so the bars are exact (notes that
  would ring past the end are cut at the bar line; the piece lasts exactly N bars);
- END is never sampled (the length control decides), rest triples only after a maximal shift;
- no bar of a generated span is silent: a shift lands at most in the bar after the last one with a new note
  (so an added or regenerated part, whose notes are the new ones, is heard in every bar);
- pitch: every pitched group keeps to its measured register (tokenizer.harmony.REGISTERS) and to the
  key's scale (without a key, to the chords' notes); with chords the bass plays only tones of its bar's
  chord and the other pitched groups get `chord_bias` added to their chord tones' logits; drums are exempt;
- notes within one onset are in the tokenizer's order (group, then pitch, ascending).
Editing is the same grammar with forced notes (`Plan`): the prompt before the edited span is the context,
kept notes inside it are forced in at their places and new notes may only go where the order allows (before
the next kept note; at its onset only if they sort before it), and the notes after it follow unchanged.
Continue = context only; add a part = every prompt note kept, the new part free (and heard in every bar);
regenerate a part = the same without that part; infill = left context, the bars generated, the rest kept.
An added or regenerated part is pulled towards a density (`Plan.density`: the corpus median of its group,
tokenizer.harmony.PART_DENSITY, or the original part's; see DENSITY_RATE), onto the song's rhythmic grid, and
without a key or chords towards the pitch classes the song plays (SONG_PC_PULL): a causal model gives little
probability to a part it has not heard, so without the pull it played about the one note a bar it is forced to.
Every training prefix of the shipped corpus ends with a style token: for a request without a style, a model
that expects one (more probability on style tokens than on shifts after the prefix) picks it per variant, sampled
from its own distribution over style tokens, rather than decode after a prefix it never saw (its first shift
was then noise: a silent first bar or more in 12 of 20 results, docs/runs/silent-bars.log).
All variants run in one batch; a seeded torch.Generator makes a request reproducible.
Beyond the context window the decoder slides: the prefix plus the most recent half window is
re-encoded, aligned to whole notes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from tokenizer import NOTE_DTYPE, Score, control_prefix, decode_notes, encode_notes
from tokenizer import harmony as H
from tokenizer import vocab as V
from tokenizer.score import cut_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


# ---- filters: small pure functions ----------------------------------------------------------
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / max(float(temperature), 1e-6)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = probs.cumsum(-1)
    remove = cum - probs > p  # keep the smallest set whose mass reaches p (always the top token)
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) masked logits -> (B,) tokens.  Filters in order: temperature, top-k, top-p."""
    logits = top_p_filter(top_k_filter(apply_temperature(logits.float(), params.temperature), params.top_k),
                          params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---- grammar masks --------------------------------------------------------------------------
def _range_mask(lo: int, hi: int) -> torch.Tensor:
    m = torch.zeros(V.VOCAB_SIZE, dtype=torch.bool)
    m[lo:hi] = True
    return m


SHIFT_MASK = _range_mask(V.SHIFT_OFFSET, V.SHIFT_OFFSET + V.N_SHIFT)
STYLE_MASK = _range_mask(V.STYLE_OFFSET, V.SHIFT_OFFSET)
DURVEL_MASK = _range_mask(V.DURVEL_OFFSET, V.DURVEL_REST)


def group_mask(groups) -> torch.Tensor:
    m = torch.zeros(V.VOCAB_SIZE, dtype=torch.bool)
    for g in groups:
        lo = V.GROUPPITCH_OFFSET + g * 128
        m[lo:lo + 128] = True
    return m


# ---- what to decode: the plan of a request ------------------------------------------------------
@dataclass
class Plan:
    """A request as one decoding problem.  Time runs in steps of the piece; the stream decodes
    [min_time, new_end): `context` (notes before min_time) is encoded as the prompt, `kept` notes (onsets in
    [min_time, new_end)) are forced in at their places, new notes of `allowed` groups may fill in around
    them, and `tail` (notes at or after new_end) is appended untouched (a causal model cannot use it)."""
    context: np.ndarray
    kept: np.ndarray
    tail: np.ndarray
    allowed: list[int]  # groups new notes may use
    prefix_groups: list[int]
    drums_flag: bool
    played: set[int]  # groups already heard (not forced again)
    min_time: int
    new_end: int
    limit: int  # the piece's length (steps)
    force_at: int
    every_bar: bool  # the new groups must be heard in every bar (add or regenerate a part)
    bar_steps: int
    time_signature: tuple[int, int]
    bpm: float
    # notes a bar the new part is pulled towards: an added part to the corpus median of its group
    # (tokenizer.harmony.PART_DENSITY), a regenerated one to its original's (0: no pull)
    density: float = 0.0


def _split(notes: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    on = notes["onset"]
    return notes[on < lo], notes[(on >= lo) & (on < hi)], notes[on >= hi]


def part_density(notes: np.ndarray, bar_steps: int) -> float:
    """Notes a bar of a part in the bars where it starts a note (0 without notes)."""
    heard = len(np.unique(notes["onset"].astype(np.int64) // bar_steps))
    return len(notes) / heard if heard else 0.0


def plan_request(req) -> Plan:
    """Free generation, a continuation, or an edit of `req.prompt` (add or regenerate a part, infill bars).
    A continuation keeps the prompt's metre and tempo; an edit covers exactly the prompt's bars."""
    allowed = sorted(set(req.group_ids) | ({V.DRUM_GROUP} if req.drums else set()))
    prompt: Score | None = req.prompt
    edit = getattr(req, "edit", None)
    if prompt is None or not len(prompt.notes):
        limit = req.bars * V.STEPS_PER_BAR
        empty = np.zeros(0, NOTE_DTYPE)
        return Plan(empty, empty, empty, allowed, allowed, req.drums, set(), 0, limit, limit,
                    min(V.STEPS_PER_BAR, limit // 2), False, V.STEPS_PER_BAR, (4, 4), req.bpm)
    bar = prompt.bar_steps
    length = prompt.length if prompt.length else prompt.n_bars * bar
    notes = prompt.notes
    common = dict(bar_steps=bar, time_signature=prompt.time_signature, bpm=prompt.bpm)
    if edit in ("add_part", "regenerate_part"):
        g = V.GROUPS.index(req.part)
        kept = notes[notes["group"] != g]
        groups = sorted(set(prompt.groups) | {g})
        density = part_density(notes[notes["group"] == g], bar) if edit == "regenerate_part" else \
            H.PART_DENSITY[req.part] * bar / V.STEPS_PER_BAR  # the corpus median, in this metre's bars
        return Plan(kept[:0], kept, kept[:0], [g], groups, V.DRUM_GROUP in groups, set(), 0, length, length,
                    min(bar, length // 2), True, density=density, **common)
    if edit == "infill":
        first, last = req.infill_bars
        lo, hi = (first - 1) * bar, last * bar
        context, _, tail = _split(notes, lo, hi)
        groups = prompt.groups
        return Plan(context, notes[:0], tail, groups, groups, prompt.has_drums, set(groups), lo, hi, length, hi,
                    False, **common)
    limit = length + req.bars * bar  # continue
    groups = sorted(set(allowed) | set(prompt.groups))
    return Plan(notes, notes[:0], notes[:0], allowed, groups, req.drums or prompt.has_drums, set(prompt.groups),
                length, limit, limit, length + min(bar, req.bars * bar // 2), False, **common)


# an added or regenerated part without a key or chords: its notes of pitch classes the song (the kept
# pitched notes) plays less than SONG_PC_SHARE of the time lose SONG_PC_PULL nats
SONG_PC_SHARE = 0.03
SONG_PC_PULL = 2.5


# ---- key and chord lock ----------------------------------------------------------------------------
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
    tones of the other pitched groups); drums are exempt.  A part added to or regenerated in a song without a
    key or chords is pulled to the song's pitch classes (SONG_PC_PULL)."""
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
    song = plan.kept[plan.kept["group"] != V.DRUM_GROUP]
    if plan.every_bar and key is None and not chords and len(song):  # a part for a song: keep to its notes
        share = np.bincount(song["pitch"].astype(np.int64) % 12, minlength=12) / len(song)
        off = H.pitch_mask(np.flatnonzero(share < SONG_PC_SHARE))
        for g in plan.allowed:
            if g != V.DRUM_GROUP:
                lo = V.GROUPPITCH_OFFSET + g * 128
                bias[:, lo:lo + 128] -= off * SONG_PC_PULL
    return torch.from_numpy(note), torch.from_numpy(bar_masks), torch.from_numpy(bias)


# ---- the grammar ----------------------------------------------------------------------------
_NEVER = 2**40  # the onset of "no kept note left"
SKIP_LOGIT = -2.3  # log 0.1: a skip (the model's mass on kept parts' notes where none is kept) weighs a tenth
# the density pull on an added or regenerated part (Plan.density notes a bar).  `behind`: the notes the part
# lacks of its share of the target so far in the bar, plus DENSITY_LEAD (so a bar's first note is not late).
# At each decision point (slot 0: the shifts that land before the next kept note, where a new note goes;
# slot 2: the new part's notes), when it is behind, the new notes on the song's grid get at least
# DENSITY_RATE * behind of the probability (at most DENSITY_FLOOR_MAX; the model often gives a part it has
# not heard in the song 1e-5, which no fixed bias lifts); when it is ahead, they lose DENSITY_PUSH nats per
# note ahead (at most DENSITY_MAX_PUSH)
DENSITY_LEAD = 1.0
DENSITY_RATE = 0.5
DENSITY_FLOOR_MAX = 0.9
DENSITY_PUSH = 1.5
DENSITY_MAX_PUSH = 6.0


class Grammar:
    """Per-variant decoding state and the masks it implies (see the module docstring)."""

    def __init__(self, batch: int, plan: Plan, start_time: int, max_notes: int = 10**9, bar_notes: int = 10**9,
                 pitch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 device: torch.device | str = "cpu"):
        """All state and masks live on `device` (the decoder's), so sampling never copies logits."""
        self.device = dev = torch.device(device)
        self.plan = plan
        self.allowed = list(plan.allowed)
        self.limit, self.new_end, self.min_time = plan.limit, plan.new_end, plan.min_time
        self.force_at, self.bar_steps, self.max_notes = plan.force_at, plan.bar_steps, max_notes
        self.bar_notes = bar_notes  # new notes a bar may hold
        self.force_after_notes = max(1, max_notes // 2)  # also force once half the note budget is spent
        self.time = torch.full((batch,), start_time, dtype=torch.long, device=dev)
        self.done = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.n_body = 0  # body tokens emitted so far (same for every variant)
        self.last_shift = torch.zeros(batch, dtype=torch.long, device=dev)
        self.last_durvel = torch.zeros(batch, dtype=torch.long, device=dev)
        self.rest = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.played = torch.zeros(batch, V.N_GROUPS, dtype=torch.bool, device=dev)
        self.played[:, sorted(plan.played)] = True
        self.n_new = torch.zeros(batch, dtype=torch.long, device=dev)  # new notes placed
        self.bar_new = torch.zeros(batch, dtype=torch.long, device=dev)  # ... in the current bar
        # the previous real note (order within an onset: group, then pitch) and the bar the new part was heard in
        self.prev_time = torch.full((batch,), -1, dtype=torch.long, device=dev)
        self.prev_key = torch.full((batch,), -1, dtype=torch.long, device=dev)
        self.bar_heard = torch.full((batch,), -1, dtype=torch.long, device=dev)
        if len(plan.context):
            self.prev_time[:] = int(plan.context["onset"][-1])
            self.prev_key[:] = int(plan.context["group"][-1]) * 128 + int(plan.context["pitch"][-1])
        # kept notes, forced in order; a sentinel past the end
        k = plan.kept
        self.k_onset = torch.tensor(list(k["onset"]) + [_NEVER], dtype=torch.long, device=dev)
        self.k_key = torch.tensor(list(k["group"].astype(np.int64) * 128 + k["pitch"]) + [V.N_GROUPS * 128],
                                  dtype=torch.long, device=dev)
        levels = np.searchsorted(np.asarray(V.DURATION_LEVELS), k["duration"])  # durations are on levels
        durvel = V.DURVEL_OFFSET + levels * V.N_VELOCITY + k["velocity"].astype(np.int64)
        self.k_durvel = torch.tensor(list(durvel) + [-1], dtype=torch.long, device=dev)
        self.kidx = torch.zeros(batch, dtype=torch.long, device=dev)
        # notes of the prompt that sound into the window: a new note may not restrike (and so cut) them
        every = np.concatenate([plan.context, plan.kept, plan.tail])
        ends = every["onset"].astype(np.int64) + every["duration"]
        ring = every[(ends > plan.min_time) & (every["onset"] < plan.new_end)]
        self.r_on = torch.tensor(ring["onset"].astype(np.int64), device=dev)
        self.r_end = torch.tensor(ring["onset"].astype(np.int64) + ring["duration"], device=dev)
        self.r_tok = torch.tensor(V.GROUPPITCH_OFFSET + ring["group"].astype(np.int64) * 128 + ring["pitch"],
                                  device=dev)
        note, bar_masks, bias = pitch if pitch is not None else (group_mask(self.allowed), None, None)
        self.note_mask = (note & group_mask(self.allowed)).to(dev)
        self.bar_masks = None if bar_masks is None else bar_masks.to(dev)
        self.bias = None if bias is None or not bias.any() else bias.to(dev)
        self.allowed_t = torch.tensor(self.allowed, dtype=torch.long, device=dev)
        self.group_masks = torch.stack([group_mask([g]) for g in self.allowed]).to(dev)  # (n_allowed, V)
        self.shift_mask = SHIFT_MASK.to(dev)
        self.durvel_mask = DURVEL_MASK.to(dev)
        self.shift_range = torch.arange(V.N_SHIFT, device=dev)
        self.vocab_range = torch.arange(V.VOCAB_SIZE, device=dev)
        self.end_len = torch.full((batch,), -1, dtype=torch.long, device=dev)  # body length when done
        self.fix_durvel = torch.full((batch,), -1, dtype=torch.long, device=dev)  # the triple's durvel, corrected
        # parts kept but not generated: the model's wish for one of their notes where none is kept is a "skip"
        # (GROUPPITCH_REST: the triple becomes a time-only rest triple, nothing new here)
        skip_groups = sorted({int(g) for g in plan.kept["group"]} - set(self.allowed))
        self.skip_mask = group_mask(skip_groups).to(dev) if skip_groups else None
        self.skipped = torch.zeros(batch, dtype=torch.bool, device=dev)  # the last triple was a skip
        self.density = float(plan.density)
        # the song's grid: positions in the bar where kept notes start in at least two bars (every position
        # without kept notes); the density pull draws new notes only onto it
        grid = H.song_grid(plan.kept, plan.bar_steps) if len(plan.kept) else np.ones(plan.bar_steps, bool)
        self.grid = torch.from_numpy(grid).to(dev)

    @property
    def slot(self) -> int:
        return self.n_body % 3

    # ---- derived state ----
    def _missing(self) -> torch.Tensor:
        return ~self.played[:, self.allowed_t]  # (B, n_allowed)

    def _next_kept(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.k_onset[self.kidx], self.k_key[self.kidx], self.k_durvel[self.kidx]

    def density_behind(self) -> torch.Tensor:
        """(B,) how many notes the new part lacks of its density target so far in this bar (plus DENSITY_LEAD;
        negative: ahead); zeros without a target."""
        if self.density <= 0:
            return torch.zeros(self.time.shape, device=self.device)
        into_bar = (self.time % self.bar_steps).float() / self.bar_steps
        return self.density * into_bar + DENSITY_LEAD - self.bar_new.float()

    def new_keys(self) -> torch.Tensor:
        """(B, V) bool: the GROUPPITCH tokens a new note may take at the current time."""
        B = self.time.shape[0]
        m = self.note_mask.expand(B, -1)
        if self.bar_masks is not None:
            m = m & self.bar_masks[(self.time // self.bar_steps) % self.bar_masks.shape[0]]
        missing = self._missing()
        late = (self.time >= self.force_at) | (self.n_body // 3 >= self.force_after_notes)
        forced = m & (missing[:, :, None] & self.group_masks[None]).any(1)  # only the unheard groups
        m = torch.where((late & missing.any(1) & forced.any(1))[:, None], forced, m)
        if len(self.r_tok):  # prompt notes still sounding
            sounding = (self.r_on[None] < self.time[:, None]) & (self.time[:, None] < self.r_end[None])  # (B, R)
            busy = torch.zeros(B, V.VOCAB_SIZE, device=self.device).scatter_add_(
                1, self.r_tok.expand(B, -1), sounding.float()) > 0
            m = m & ~busy
        tok = self.vocab_range[None]
        k_on, k_key, _ = self._next_kept()
        after_prev = (self.prev_time != self.time)[:, None] | (tok > V.GROUPPITCH_OFFSET + self.prev_key[:, None])
        before_kept = (k_on != self.time)[:, None] | (tok < V.GROUPPITCH_OFFSET + k_key[:, None])
        window = (self.time >= self.min_time) & (self.time < self.new_end) & (self.n_new < self.max_notes) \
            & (self.bar_new < self.bar_notes)
        return m & after_prev & before_kept & window[:, None]

    # ---- masks ----
    def constrain(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) logits -> the same with every token the grammar forbids at -inf (plus the chord pull)."""
        mask = self.mask()
        if self.slot == 0 and len(self.k_onset) > 1:
            logits = self._onto_kept(logits)
        if self.slot == 2 and len(self.k_onset) > 1:
            logits = self._kept_note_mass(logits, mask)
        if self.slot == 2 and self.skip_mask is not None:
            other = torch.logsumexp(logits.masked_fill(~self.skip_mask, float("-inf")), 1) + SKIP_LOGIT
            logits = logits.clone()
            logits[:, V.GROUPPITCH_REST] = torch.where(self.rest, logits[:, V.GROUPPITCH_REST], other)
        if self.slot == 2 and self.bias is not None:
            logits = logits + self.bias[(self.time // self.bar_steps) % self.bias.shape[0]]
        if self.density > 0 and self.slot != 1:
            logits = self._pull_density(logits, mask)
        return logits.masked_fill(~mask, float("-inf"))

    def _pull_density(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The density pull (see DENSITY_RATE) on the choices that place a new note: at slot 0 the shifts that
        land before the next kept note, at slot 2 the new part's notes (after the kept notes took their mass,
        so it is not inflated).  A pull raises only those on the song's grid (`self.grid`), to a floor on
        their share of the allowed mass; a push lowers all of them."""
        behind = self.density_behind()
        if self.slot == 0:
            land = self.time[:, None] + self.shift_range[None]
            place = torch.zeros_like(mask)
            place[:, V.SHIFT_OFFSET:V.SHIFT_OFFSET + V.N_SHIFT] = land < self._next_kept()[0][:, None]
            grid = torch.zeros_like(mask)
            grid[:, V.SHIFT_OFFSET:V.SHIFT_OFFSET + V.N_SHIFT] = self.grid[land % self.bar_steps]
        else:
            place = self.note_mask[None].expand_as(mask)
            grid = self.grid[self.time % self.bar_steps][:, None].expand_as(mask)
        place = place & mask
        new, other = place & grid, mask & ~(place & grid)
        masked = logits.masked_fill(~mask, float("-inf"))
        odds = torch.logsumexp(masked.masked_fill(~new, float("-inf")), 1) \
            - torch.logsumexp(masked.masked_fill(~other, float("-inf")), 1)
        floor = (DENSITY_RATE * behind).clamp(0.0, DENSITY_FLOOR_MAX)
        up = (torch.log(floor) - torch.log1p(-floor) - odds).clamp(min=0.0)
        up = torch.where((floor > 0) & torch.isfinite(odds), up, torch.zeros_like(up))
        down = (DENSITY_PUSH * behind).clamp(-DENSITY_MAX_PUSH, 0.0)
        return logits + up[:, None] * new + down[:, None] * place

    def _onto_kept(self, logits: torch.Tensor) -> torch.Tensor:
        """Slot 0 with a kept note within reach: the model's mass on shifts at or past it ("nothing new before
        it") goes to the shift that lands on it, so new notes are placed where the model wants them, not
        wherever the mask leaves room."""
        gap = self._next_kept()[0] - self.time
        lo, hi = V.SHIFT_OFFSET, V.SHIFT_OFFSET + V.N_SHIFT
        shifts = logits[:, lo:hi]
        past = self.shift_range[None] >= gap[:, None]
        total = torch.logsumexp(shifts.masked_fill(~past, float("-inf")), 1, keepdim=True)
        moved = shifts.scatter(1, gap.clamp(0, V.MAX_SHIFT)[:, None], total)
        logits = logits.clone()
        logits[:, lo:hi] = torch.where((gap <= V.MAX_SHIFT)[:, None], moved, shifts)
        return logits

    def _kept_note_mass(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Slot 2 on a kept note's onset: the model's mass on every note a new part may not play here (the
        kept note, the other parts' notes, the new part's notes that sort after it) goes to the kept note."""
        k_on, k_key, _ = self._next_kept()
        at_kept = (k_on == self.time) & ~self.rest
        lo, hi = V.GROUPPITCH_OFFSET, V.GROUPPITCH_REST
        kept_tok = (lo + k_key).clamp(max=hi - 1)[:, None]
        other = ~mask[:, lo:hi] | (self.vocab_range[None, lo:hi] == kept_tok)
        total = torch.logsumexp(logits[:, lo:hi].masked_fill(~other, float("-inf")), 1, keepdim=True)
        moved = logits.scatter(1, kept_tok, total)
        return torch.where(at_kept[:, None], moved, logits)

    def mask(self) -> torch.Tensor:
        """(B, V) bool: which tokens may come next (never none for a variant)."""
        return (self._shift_mask, self._durvel_mask, self._pitch_mask)[self.slot]()

    def _shift_mask(self) -> torch.Tensor:
        B = self.time.shape[0]
        s = self.shift_range[None]  # (1, N_SHIFT)
        t = self.time[:, None] + s  # the onset each shift leads to
        k_on = self._next_kept()[0][:, None]
        gap = k_on - self.time[:, None]
        missing = self._missing().any(1, keepdim=True)
        ok = s <= gap  # never past the next kept note
        ok &= ~((t >= self.new_end) & missing)  # a variant may not end while a requested group is unheard
        lead = (self.min_time - self.time).clamp(min=0).clamp(max=V.MAX_SHIFT)[:, None]
        ok &= s >= lead  # a continuation starts at the prompt's end, not inside it
        new_here = self.new_keys().any(1)
        ok[:, 0] &= (gap[:, 0] == 0) | new_here  # a note at the same onset must sort after the previous one
        ok[:, 0] &= ~self.skipped  # after a skip, time moves on
        budget = self.n_new < self.max_notes
        must = torch.minimum(gap, self.new_end - self.time[:, None]).clamp(0, V.MAX_SHIFT)
        ok = torch.where(budget[:, None], ok, s == must)  # budget spent: to the next kept note or the end
        bar = self.time // self.bar_steps
        stay = ((bar + 1) * self.bar_steps)[:, None] > t
        full = (self.bar_new >= self.bar_notes)[:, None]  # this bar's budget spent: to a kept note or on
        ok &= ~full | ~stay | (s == gap)
        if self.plan.every_bar:  # the new part is heard in every bar: do not leave a bar without it
            want = (self.bar_heard != bar) & (self.time >= self.min_time) & budget
            kept_ok = ok & stay
            ok = torch.where((want & kept_ok.any(1))[:, None], kept_ok, ok)
        # no silent bar: land at most in the bar after the last one with a new note (the span's first bar is
        # always in reach; the end counts as the bar after the span)
        reach = torch.where(self.bar_heard == bar, bar + 1, bar).clamp(min=self.min_time // self.bar_steps)
        near = ok & (t.clamp(max=self.new_end) // self.bar_steps <= reach[:, None])
        ok = torch.where(near.any(1, keepdim=True), near, ok)
        ok = torch.where(ok.any(1, keepdim=True), ok, s == must)  # never nothing
        m = torch.zeros(B, V.VOCAB_SIZE, dtype=torch.bool, device=self.device)
        m[:, V.SHIFT_OFFSET:V.SHIFT_OFFSET + V.N_SHIFT] = ok
        return m

    def _durvel_mask(self) -> torch.Tensor:
        B = self.time.shape[0]
        k_on, _, k_dv = self._next_kept()
        at_kept = k_on == self.time
        # at a kept note's onset the durvel is sampled as for a new note; if slot 2 then picks the kept note,
        # the loop puts the kept note's durvel in its place (`fix_durvel`)
        m = self.durvel_mask.expand(B, -1) & self.new_keys().any(1)[:, None]
        m = m | ((self.vocab_range[None] == k_dv[:, None]) & at_kept[:, None])
        rest_ok = (self.last_shift == V.MAX_SHIFT) & (self.time < k_on)
        m[:, V.DURVEL_REST] = rest_ok
        early = self.time < self.min_time  # still before the prompt's end: a rest triple
        m[early] = False
        m[early, V.DURVEL_REST] = True
        return torch.where(m.any(1, keepdim=True), m, self.durvel_mask.expand(B, -1))

    def _pitch_mask(self) -> torch.Tensor:
        B = self.time.shape[0]
        k_on, k_key, k_dv = self._next_kept()
        m = self.new_keys()
        kept = k_on == self.time
        if self.plan.every_bar:  # half the bar gone without the new part: it goes before the kept note
            bar = self.time // self.bar_steps
            late = (self.bar_heard != bar) & (self.time - bar * self.bar_steps >= self.bar_steps // 2)
            kept &= ~(late & m.any(1))
        m = m | ((self.vocab_range[None] == V.GROUPPITCH_OFFSET + k_key[:, None]) & kept[:, None])
        m = torch.where(m.any(1, keepdim=True), m, self.note_mask.expand(B, -1))
        if self.skip_mask is not None:  # once the new part is heard in this bar, the model may skip
            m[:, V.GROUPPITCH_REST] = (k_on != self.time) & (self.bar_heard == self.time // self.bar_steps)
        m[self.rest] = False
        m[self.rest, V.GROUPPITCH_REST] = True
        return m

    def update(self, tok: torch.Tensor) -> None:
        s = self.slot
        live = ~self.done
        self.fix_durvel[:] = -1
        if s == 0:
            shift = tok - V.SHIFT_OFFSET
            finished = live & (self.time + shift >= self.new_end)
            self.end_len[finished] = self.n_body
            self.done |= finished
            time = torch.where(self.done, self.time, self.time + shift)
            self.bar_new = torch.where(time // self.bar_steps == self.time // self.bar_steps, self.bar_new, 0)
            self.time = time
            self.last_shift = shift
        elif s == 1:
            self.rest = tok == V.DURVEL_REST
            self.last_durvel = tok
        else:
            key = tok - V.GROUPPITCH_OFFSET
            g = (key // 128).clamp(0, V.N_GROUPS - 1)
            real = live & (tok != V.GROUPPITCH_REST)
            self.skipped = live & ~real & ~self.rest
            k_on, k_key, k_dv = self._next_kept()
            kept = real & (k_on == self.time) & (key == k_key)
            new = real & ~kept
            self.fix_durvel = torch.where(kept & (self.last_durvel != k_dv), k_dv, self.fix_durvel)
            self.fix_durvel = torch.where(self.skipped, V.DURVEL_REST, self.fix_durvel)
            self.kidx += kept.long()
            self.n_new += new.long()
            self.bar_new += new.long()
            self.played[real, g[real]] = True
            self.bar_heard = torch.where(new, self.time // self.bar_steps, self.bar_heard)
            self.prev_time = torch.where(real, self.time, self.prev_time)
            self.prev_key = torch.where(real, key, self.prev_key)
        self.n_body += 1


def sample_scores(decoder, req, params: SamplingParams, progress: Callable[[float], None] | None = None,
                  max_notes_per_bar: int = 96) -> tuple[list[Score], int]:
    """Generate req.variants scores with `decoder` (FastDecoder-like: reset(batch), __call__(tokens)->logits,
    .pos, .cfg.max_seq_len).  Returns (scores, number of sampled tokens across the batch)."""
    B = req.variants
    device = getattr(decoder, "device", torch.device("cpu"))
    gen = torch.Generator(device=device).manual_seed(int(req.seed))
    plan = plan_request(req)
    body0 = encode_notes(plan.context)
    start_time = int(plan.context["onset"][-1]) if len(plan.context) else 0
    prefix = control_prefix([g for g in plan.prefix_groups if g != V.DRUM_GROUP], plan.drums_flag, req.style)
    span_bars = max(1, -(-(plan.new_end - plan.min_time) // plan.bar_steps))
    max_notes = max_notes_per_bar * span_bars
    bar_notes = max_notes_per_bar // 3 if plan.every_bar else max_notes_per_bar  # one part: a third
    grammar = Grammar(B, plan, start_time, max_notes=max_notes, bar_notes=bar_notes,
                      pitch=pitch_controls(req, plan), device=device)
    max_body = len(body0) + 3 * (max_notes + len(plan.kept) + plan.limit // V.MAX_SHIFT + 2)
    if len(plan.kept):
        max_body += 3 * (plan.new_end - plan.min_time)  # skips (each moves time on)

    ctx = decoder.cfg.max_seq_len
    prefix_t = torch.tensor(prefix, dtype=torch.long, device=device).expand(B, -1)
    sampled = 0
    if req.style is None:  # a model trained on prefixes that end with a style expects one: it picks it
        decoder.reset(B)
        first = decoder(prefix_t).float()
        probs = torch.softmax(first[0], -1)
        if probs[STYLE_MASK.to(device)].sum() > probs[SHIFT_MASK.to(device)].sum():
            style = sample_token(first.masked_fill(~STYLE_MASK.to(device), float("-inf")), params, gen)
            prefix_t = torch.cat([prefix_t, style[:, None]], 1)
            sampled += B
    keep = max(3, (ctx - prefix_t.shape[1]) // 2 // 3 * 3)  # body tokens kept when sliding (whole notes)
    body = torch.tensor(body0, dtype=torch.long, device=device).expand(B, -1).clone()  # (B, n)
    buf = torch.zeros(B, max_body + 3, dtype=torch.long, device=device)
    buf[:, : body.shape[1]] = body
    n = body.shape[1]

    def prefill(n_body: int) -> torch.Tensor:
        kept = n_body if prefix_t.shape[1] + n_body <= ctx - 1 else min(n_body, keep)
        kept -= (3 - (n_body - kept) % 3) % 3  # the window's body starts at a note boundary
        window = torch.cat([prefix_t, buf[:, n_body - kept:n_body]], 1)
        decoder.reset(B)
        return decoder(window)

    logits = prefill(n)
    span = max(plan.new_end - plan.min_time, 1)
    while not bool(grammar.done.all()) and n < max_body:
        tok = sample_token(grammar.constrain(logits.float()), params, gen)
        grammar.update(tok)
        buf[:, n] = tok
        n += 1
        sampled += B
        if progress is not None and grammar.slot == 0:
            progress(min(1.0, float((grammar.time.min() - plan.min_time).clamp(min=0)) / span))
        if bool(grammar.done.all()):
            break
        fix = grammar.fix_durvel >= 0
        if bool(fix.any()):  # the kept note gets its own durvel, a skip the rest durvel; then both tokens again
            buf[:, n - 2] = torch.where(fix, grammar.fix_durvel, buf[:, n - 2])
            if decoder.pos + 1 > ctx:
                logits = prefill(n)
            else:
                decoder.pos -= 1  # the kept durvel was the last token fed: overwrite it
                logits = decoder(buf[:, n - 2:n])
        elif decoder.pos >= ctx:
            logits = prefill(n)
        else:
            logits = decoder(tok[:, None])

    scores = []
    for b in range(B):
        end = int(grammar.end_len[b]) if grammar.end_len[b] >= 0 else (n - len(body0)) // 3 * 3
        cont = buf[b, len(body0): len(body0) + end].cpu().numpy()
        notes, _ = decode_notes(cont, start_step=start_time)
        notes = cut_at(np.concatenate([plan.context, notes, plan.tail]), plan.limit)
        scores.append(Score(notes, bpm=plan.bpm, time_signature=plan.time_signature, style=req.style,
                            length=plan.limit))
    if progress is not None:
        progress(1.0)
    return scores, sampled
