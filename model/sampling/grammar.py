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
from .repeats import Repeats


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
_END_KEY = V.N_GROUPS * 128  # ... and its key


def _one_hot(token: int) -> torch.Tensor:
    m = torch.zeros(V.VOCAB_SIZE, dtype=torch.bool)
    m[token] = True
    return m


class Grammar:
    """Per-variant decoding state and the masks it implies (see the module docstring).

    What a request cannot need is settled once, here, not per token: without kept notes there is no next kept
    note to stop at or force in, without a skip mask no skip, before the prompt's end no rest triple unless
    decoding starts before it.  Values a note's slots share are computed once a note (`new_keys` at the
    durvel's slot serves the pitch's; the next kept note and the unheard groups change only with a note)."""

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
        self.has_kept = len(k) > 0
        levels = np.searchsorted(np.asarray(V.DURATION_LEVELS), k["duration"])  # durations are on levels
        durvel = V.DURVEL_OFFSET + levels * V.N_VELOCITY + k["velocity"].astype(np.int64)
        # (B, K + 1) per variant (repeats add their copies to a variant's own), in order, then the sentinel
        rows = lambda values, end: torch.tensor(list(values) + [end], dtype=torch.long, device=dev).repeat(batch, 1)  # noqa: E731
        self.k_onset = rows(k["onset"], _NEVER)
        self.k_key = rows(k["group"].astype(np.int64) * 128 + k["pitch"], _END_KEY)
        self.k_durvel = rows(durvel, -1)
        self.kidx = torch.zeros(batch, dtype=torch.long, device=dev)
        self.repeats = Repeats(plan, batch, dev)
        if not self.repeats.targets:  # nothing to copy: no per-note bookkeeping
            self.repeats = None
        # notes of the prompt that sound into the window: a new note may not restrike (and so cut) them
        ring = plan.sounding()
        self.r_on = torch.tensor(ring["onset"].astype(np.int64), device=dev)
        self.r_end = torch.tensor(ring["onset"].astype(np.int64) + ring["duration"], device=dev)
        self.r_tok = torch.tensor(V.GROUPPITCH_OFFSET + ring["group"].astype(np.int64) * 128 + ring["pitch"],
                                  device=dev)
        note, bar_masks, bias = pitch if pitch is not None else (group_mask(self.allowed), None, None)
        self.note_mask = (note & group_mask(self.allowed)).to(dev)
        self.bar_masks = None if bar_masks is None else bar_masks.to(dev)
        self.bias = None if bias is None or not bias.any() else bias.to(dev)
        self.allowed_t = torch.tensor(self.allowed, dtype=torch.long, device=dev)
        self.lowest_new_key = min(self.allowed, default=V.N_GROUPS) * 128  # no new note's key is below it
        # each token's index in `allowed` (its group's), len(allowed) for tokens of no allowed group
        tok_allowed = torch.full((V.VOCAB_SIZE,), len(self.allowed), dtype=torch.long)
        for j, g in enumerate(self.allowed):
            tok_allowed[V.GROUPPITCH_OFFSET + g * 128:V.GROUPPITCH_OFFSET + (g + 1) * 128] = j
        self.tok_allowed = tok_allowed.to(dev)
        self.group_range = torch.arange(V.N_GROUPS, device=dev)
        self.shift_mask = SHIFT_MASK.to(dev)
        self.durvel_mask = DURVEL_MASK.to(dev)
        self.durvel_rest_only = _one_hot(V.DURVEL_REST).to(dev)
        self.pitch_rest_only = _one_hot(V.GROUPPITCH_REST).to(dev)
        self.shift_range = torch.arange(V.N_SHIFT, device=dev)
        self.vocab_range = torch.arange(V.VOCAB_SIZE, device=dev)
        self.key_range = self.vocab_range - V.GROUPPITCH_OFFSET  # each token as a GROUPPITCH key
        self.end_len = torch.full((batch,), -1, dtype=torch.long, device=dev)  # body length when done
        self.fix_durvel = torch.full((batch,), -1, dtype=torch.long, device=dev)  # the triple's durvel, corrected
        # parts kept but not generated: the model's wish for one of their notes where none is kept is a "skip"
        # (GROUPPITCH_REST: the triple becomes a time-only rest triple, nothing new here)
        skip_groups = sorted({int(g) for g in plan.kept["group"]} - set(self.allowed))
        self.skip_mask = group_mask(skip_groups).to(dev) if skip_groups else None
        self.skipped = torch.zeros(batch, dtype=torch.bool, device=dev)  # the last triple was a skip
        self.can_fix = self.has_kept or self.skip_mask is not None  # a triple's durvel may be corrected
        self.before_start = plan.min_time > start_time  # decoding starts inside the prompt (rest triples first)
        self.density = float(plan.density)
        # the song's grid: positions in the bar where kept notes start in at least two bars (every position
        # without kept notes); the density pull draws new notes only onto it
        song = plan.kept_notes()
        grid = H.song_grid(song, plan.bar_steps) if len(song) else np.ones(plan.bar_steps, bool)
        self.grid = torch.from_numpy(grid).to(dev)
        self._kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # next_kept, until a note
        self._missing: tuple[torch.Tensor, torch.Tensor] | None = None  # missing_groups, until a note
        self._keys: torch.Tensor | None = None  # new_keys, until the state it reads changes
        self._now: torch.Tensor | None = None  # _keys_now, until time moves
        self.rule_cache: dict = {}  # rules.constrain: the soft rules that can apply here, per rule set and slot

    @property
    def slot(self) -> int:
        return self.n_body % 3

    # ---- derived state ----
    def missing_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """((B,) any requested group unheard, (B, V) the tokens of the unheard groups); changes with a note."""
        if self._missing is None:
            missing = ~self.played[:, self.allowed_t]  # (B, n_allowed)
            per_token = torch.cat([missing, missing.new_zeros(missing.shape[0], 1)], 1)[:, self.tok_allowed]
            self._missing = missing.any(1), per_token
        return self._missing

    def next_kept(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per variant, the next kept note's (onset, group * 128 + pitch, durvel token); past the last one a
        sentinel that never comes."""
        if self._kept is None:
            at = self.kidx[:, None]
            self._kept = tuple(a.gather(1, at)[:, 0] for a in (self.k_onset, self.k_key, self.k_durvel))
        return self._kept

    def _add_kept(self, row: int, notes: list[tuple[int, int, int]]) -> None:
        """Put (onset, key, durvel token) notes, all ahead of the variant's time, among row `row`'s kept notes."""
        width = self.k_onset.shape[1]
        have = int((self.k_onset[row] < _NEVER).sum())
        onset, key, durvel = (torch.cat([a[row, :have], torch.tensor(col, dtype=torch.long, device=self.device)])
                              for a, col in zip((self.k_onset, self.k_key, self.k_durvel), zip(*notes)))
        order = torch.from_numpy(np.lexsort((key.cpu().numpy(), onset.cpu().numpy()))).to(self.device)
        size = len(order) + 1
        if size > width:  # room for them: every row gets more sentinel columns
            pad = lambda a, end: torch.cat([a, a.new_full((a.shape[0], size - width), end)], 1)  # noqa: E731
            self.k_onset, self.k_key = pad(self.k_onset, _NEVER), pad(self.k_key, _END_KEY)
            self.k_durvel = pad(self.k_durvel, -1)
        for a, values, end in ((self.k_onset, onset, _NEVER), (self.k_key, key, _END_KEY), (self.k_durvel, durvel, -1)):
            a[row] = end
            a[row, :len(order)] = values[order]
        self._kept = self._keys = None

    def new_keys(self) -> torch.Tensor:
        """(B, V) bool: the GROUPPITCH tokens a new note may take at the current time (the same at a note's
        durvel and pitch slots: computed once for both)."""
        if self._keys is None:
            self._keys = self._new_keys()
        return self._keys

    def _keys_now(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """((1 or B, V) the notes new notes may take at the current time by pitch (the bar's chord), (B, V) those
        no prompt note still sounding blocks (None: no prompt note sounds into the window)); change with time
        only."""
        if self._now is None:
            m, free = self.note_mask[None], None
            if self.bar_masks is not None:
                m = m & self.bar_masks[(self.time // self.bar_steps) % self.bar_masks.shape[0]]
            if len(self.r_tok):  # prompt notes still sounding
                B = self.time.shape[0]
                sounding = (self.r_on[None] < self.time[:, None]) & (self.time[:, None] < self.r_end[None])  # (B, R)
                free = torch.zeros(B, V.VOCAB_SIZE, device=self.device).scatter_add_(
                    1, self.r_tok.expand(B, -1), sounding.float()) == 0
            self._now = m, free
        return self._now

    def _new_keys(self) -> torch.Tensor:
        m, free = self._keys_now()
        missing, missing_tokens = self.missing_groups()
        forced = m & missing_tokens  # only the unheard groups
        force = missing & forced.any(1)
        if self.n_body // 3 < self.force_after_notes:  # else late everywhere
            force &= self.time >= self.force_at
        m = torch.where(force[:, None], forced, m)
        if free is not None:  # no restrike of a prompt note still sounding (after the forcing, which ignores it)
            m = m & free
        ok = (self.prev_time != self.time)[:, None] | (self.key_range > self.prev_key[:, None])  # after the previous
        if self.has_kept:  # before the next kept note
            k_on, k_key, _ = self.next_kept()
            ok &= (k_on != self.time)[:, None] | (self.key_range < k_key[:, None])
        window = (self.time >= self.min_time) & (self.time < self.new_end) & (self.n_new < self.max_notes) \
            & (self.bar_new < self.bar_notes)
        if self.repeats is not None:  # a repeat plays its copies only
            window &= ~self.repeats.copied_at(self.time)
        return m & ok & window[:, None]

    def kept_next(self) -> torch.Tensor | None:
        """Each variant's next token where it is the next kept note's and `mask` would allow nothing else, known
        without working out the mask: at the kept note's own onset, the shift 0 onto it, and its durvel and pitch
        where no new note may sort before it (its key at or below the new parts' lowest); else None (`mask`
        decides).  A kept token it answers costs no mask: in a part edit, most shifts onto a kept note and the
        durvels and pitches of the song's parts below the new one."""
        if not self.has_kept or bool(self.done.any()):
            return None
        k_on, k_key, k_dv = self.next_kept()
        here = k_on == self.time
        slot = self.slot
        if slot == 0:
            return torch.full_like(k_on, V.SHIFT_OFFSET) if bool(here.all()) else None
        alone = here & (k_key <= self.lowest_new_key) & (self.time >= self.min_time)  # (before it: rest triples)
        if slot == 1:
            return k_dv if bool(alone.all()) else None
        alone &= self.last_durvel == k_dv
        return V.GROUPPITCH_OFFSET + k_key if bool(alone.all()) else None

    # ---- masks ----
    def mask(self) -> torch.Tensor:
        """(B, V) bool: which tokens may come next (never none for a variant)."""
        return (self._shift_mask, self._durvel_mask, self._pitch_mask)[self.slot]()

    def _shift_mask(self) -> torch.Tensor:
        B = self.time.shape[0]
        s = self.shift_range[None]  # (1, N_SHIFT)
        time = self.time[:, None]
        t = time + s  # the onset each shift leads to
        missing = self.missing_groups()[0][:, None]
        ok = ~((t >= self.new_end) & missing)  # a variant may not end while a requested group is unheard
        new_here = self.new_keys().any(1)
        if self.has_kept:
            gap = self.next_kept()[0][:, None] - time
            ok &= s <= gap  # never past the next kept note
            if self.repeats is not None:  # into a repeat only onto its next kept note (or to the end)
                ok &= ~self.repeats.copied_at(t) | (s == gap) | (t >= self.new_end)
            ok[:, 0] &= (gap[:, 0] == 0) | new_here  # a note at the same onset must sort after the previous one
            must = torch.minimum(gap, self.new_end - time).clamp(0, V.MAX_SHIFT)
        else:  # no kept note: the gap is endless
            ok[:, 0] &= new_here
            must = (self.new_end - time).clamp(0, V.MAX_SHIFT)
        if self.before_start:  # a continuation starts at the prompt's end, not inside it
            ok &= s >= (self.min_time - time).clamp(min=0).clamp(max=V.MAX_SHIFT)
        if self.skip_mask is not None:
            ok[:, 0] &= ~self.skipped  # after a skip, time moves on
        budget = self.n_new < self.max_notes
        ok = torch.where(budget[:, None], ok, s == must)  # budget spent: to the next kept note or the end
        bar = self.time // self.bar_steps
        stay = ((bar + 1) * self.bar_steps)[:, None] > t
        full_here = (self.bar_new >= self.bar_notes)[:, None] & stay  # this bar's budget spent: to a kept note or on
        ok &= (~full_here | (s == gap)) if self.has_kept else ~full_here
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
        # at a kept note's onset the durvel is sampled as for a new note; if slot 2 then picks the kept note,
        # the loop puts the kept note's durvel in its place (`fix_durvel`)
        m = self.durvel_mask[None] & self.new_keys().any(1)[:, None]
        rest_ok = self.last_shift == V.MAX_SHIFT
        if self.has_kept:
            k_on, _, k_dv = self.next_kept()
            m |= (self.vocab_range[None] == k_dv[:, None]) & (k_on == self.time)[:, None]
            rest_ok &= self.time < k_on
        m[:, V.DURVEL_REST] = rest_ok
        if self.before_start:  # still before the prompt's end: a rest triple
            m = torch.where((self.time < self.min_time)[:, None], self.durvel_rest_only[None], m)
        return torch.where(m.any(1, keepdim=True), m, self.durvel_mask[None])

    def _pitch_mask(self) -> torch.Tensor:
        m = self.new_keys()
        if self.has_kept:
            k_on, k_key, _ = self.next_kept()
            kept = k_on == self.time
            if self.plan.every_bar:  # half the bar gone without the new part: it goes before the kept note
                bar = self.time // self.bar_steps
                late = (self.bar_heard != bar) & (self.time - bar * self.bar_steps >= self.bar_steps // 2)
                kept &= ~(late & m.any(1))
            m = m | ((self.key_range[None] == k_key[:, None]) & kept[:, None])
        m = torch.where(m.any(1, keepdim=True), m, self.note_mask[None])
        if self.skip_mask is not None:  # once the new part is heard in this bar, the model may skip
            m[:, V.GROUPPITCH_REST] = (self.next_kept()[0] != self.time) & (self.bar_heard == self.time // self.bar_steps)
        return torch.where(self.rest[:, None], self.pitch_rest_only[None], m)

    def update(self, tok: torch.Tensor) -> None:
        s = self.slot
        live = ~self.done
        if self.can_fix:
            self.fix_durvel = torch.full_like(self.fix_durvel, -1)
        if s == 0:
            shift = tok - V.SHIFT_OFFSET
            finished = live & (self.time + shift >= self.new_end)
            self.end_len = torch.where(finished, self.n_body, self.end_len)
            self.done = self.done | finished
            time = torch.where(self.done, self.time, self.time + shift)
            self.bar_new = torch.where(time // self.bar_steps == self.time // self.bar_steps, self.bar_new, 0)
            if self.repeats is not None:
                for row, copies in self.repeats.passed(self.time, time):
                    self._add_kept(row, copies)
            self.time = time
            self.last_shift = shift
            self._keys = self._now = None
        elif s == 1:
            self.rest = tok == V.DURVEL_REST
            self.last_durvel = tok
        else:
            self._update_note(tok, live)
        self.n_body += 1

    def _update_note(self, tok: torch.Tensor, live: torch.Tensor) -> None:
        """The pitch slot's update: a kept note (its durvel corrected), a skip, or a new note."""
        key = tok - V.GROUPPITCH_OFFSET
        g = (key // 128).clamp(0, V.N_GROUPS - 1)
        real = live & (tok != V.GROUPPITCH_REST)
        new = real
        if self.skip_mask is not None:
            self.skipped = live & ~real & ~self.rest
        if self.has_kept:
            k_on, k_key, k_dv = self.next_kept()
            kept = real & (k_on == self.time) & (key == k_key)
            new = real & ~kept
            self.fix_durvel = torch.where(kept & (self.last_durvel != k_dv), k_dv, self.fix_durvel)
            self.kidx = self.kidx + kept.long()
            self._kept = None
        if self.skip_mask is not None:
            self.fix_durvel = torch.where(self.skipped, V.DURVEL_REST, self.fix_durvel)
        self.n_new = self.n_new + new.long()
        self.bar_new = self.bar_new + new.long()
        self.played = self.played | (real[:, None] & (g[:, None] == self.group_range[None]))
        heard = real & (self.tok_allowed[tok] < len(self.allowed))  # new, or copied into a repeat
        self.bar_heard = torch.where(heard, self.time // self.bar_steps, self.bar_heard)
        if self.repeats is not None:
            self.repeats.record(new, self.time, key, self.last_durvel)
        self.prev_time = torch.where(real, self.time, self.prev_time)
        self.prev_key = torch.where(real, key, self.prev_key)
        self._keys = self._missing = None
