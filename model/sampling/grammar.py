"""The 3-token grammar: per-variant decoding state, the hard masks it implies, and its update per token.

After the control prefix, position mod 3 fixes the token type.  Controls hold by construction:
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
Editing (`Plan`) forces kept notes in at their places: a new note goes only before the next kept note (at its
onset only if it sorts before it), and a new note may not restrike a prompt note that is still sounding.
The soft pulls on top of these masks are `model.sampling.rules`.
"""

from __future__ import annotations

import numpy as np
import torch

from tokenizer import harmony as H
from tokenizer import vocab as V

from .plan import Plan


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


_NEVER = 2**40  # the onset of "no kept note left"


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

    def next_kept(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per variant, the next kept note's (onset, group * 128 + pitch, durvel token); past the last one a
        sentinel that never comes."""
        return self.k_onset[self.kidx], self.k_key[self.kidx], self.k_durvel[self.kidx]

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
        k_on, k_key, _ = self.next_kept()
        after_prev = (self.prev_time != self.time)[:, None] | (tok > V.GROUPPITCH_OFFSET + self.prev_key[:, None])
        before_kept = (k_on != self.time)[:, None] | (tok < V.GROUPPITCH_OFFSET + k_key[:, None])
        window = (self.time >= self.min_time) & (self.time < self.new_end) & (self.n_new < self.max_notes) \
            & (self.bar_new < self.bar_notes)
        return m & after_prev & before_kept & window[:, None]


    # ---- masks ----
    def mask(self) -> torch.Tensor:
        """(B, V) bool: which tokens may come next (never none for a variant)."""
        return (self._shift_mask, self._durvel_mask, self._pitch_mask)[self.slot]()

    def _shift_mask(self) -> torch.Tensor:
        B = self.time.shape[0]
        s = self.shift_range[None]  # (1, N_SHIFT)
        t = self.time[:, None] + s  # the onset each shift leads to
        k_on = self.next_kept()[0][:, None]
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
        k_on, _, k_dv = self.next_kept()
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
        k_on, k_key, k_dv = self.next_kept()
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
            k_on, k_key, k_dv = self.next_kept()
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

