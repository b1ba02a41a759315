"""The soft pulls on top of the grammar's masks, one function each, and `constrain`, which applies them.

A rule takes the grammar's state, the (B, V) logits and the grammar's mask and returns new logits; it leaves
them alone where it does not apply.  `constrain` applies SOFT_RULES in order, then the mask:
- onto the next kept note: at slot 0 the model's mass on shifts at or past a kept note goes to the shift that
  lands on it;
- the kept note's mass: at slot 2 on a kept note's onset, the mass of the notes a new part may not play there
  goes to the kept note;
- the skip: where no note of a kept (not generated) part is due, the model's wish for one becomes a rest
  triple worth a tenth of it (SKIP_LOGIT);
- the chord bias: `chord_bias` on the chord tones of the bar's chord (and the pull to the song's pitch
  classes, `model.sampling.pitch`);
- the density pull: an added or regenerated part is pulled towards a density (`Plan.density`: the corpus
  median of its group, tokenizer.harmony.PART_DENSITY, or the original part's; see DENSITY_RATE), onto the
  song's rhythmic grid.  A causal model gives little probability to a part it has not heard, so without the
  pull it played about the one note a bar it is forced to.
"""

from __future__ import annotations

import torch

from tokenizer import vocab as V

from .grammar import Grammar

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


def onto_next_kept(g: Grammar, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Slot 0 with a kept note within reach: the model's mass on shifts at or past it ("nothing new before
    it") goes to the shift that lands on it, so new notes are placed where the model wants them, not
    wherever the mask leaves room."""
    if g.slot != 0 or not g.has_kept:
        return logits
    gap = g.next_kept()[0] - g.time
    lo, hi = V.SHIFT_OFFSET, V.SHIFT_OFFSET + V.N_SHIFT
    shifts = logits[:, lo:hi]
    past = g.shift_range[None] >= gap[:, None]
    total = torch.logsumexp(shifts.masked_fill(~past, float("-inf")), 1, keepdim=True)
    moved = shifts.scatter(1, gap.clamp(0, V.MAX_SHIFT)[:, None], total)
    logits = logits.clone()
    logits[:, lo:hi] = torch.where((gap <= V.MAX_SHIFT)[:, None], moved, shifts)
    return logits


def kept_note_mass(g: Grammar, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Slot 2 on a kept note's onset: the model's mass on every note a new part may not play here (the
    kept note, the other parts' notes, the new part's notes that sort after it) goes to the kept note."""
    if g.slot != 2 or not g.has_kept:
        return logits
    k_on, k_key, _ = g.next_kept()
    at_kept = (k_on == g.time) & ~g.rest
    lo, hi = V.GROUPPITCH_OFFSET, V.GROUPPITCH_REST
    kept_tok = (lo + k_key).clamp(max=hi - 1)[:, None]
    other = ~mask[:, lo:hi] | (g.vocab_range[None, lo:hi] == kept_tok)
    total = torch.logsumexp(logits[:, lo:hi].masked_fill(~other, float("-inf")), 1, keepdim=True)
    moved = logits.scatter(1, kept_tok, total)
    return torch.where(at_kept[:, None], moved, logits)


def skip_kept_parts(g: Grammar, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Slot 2 with parts kept but not generated: the model's mass on their notes, less SKIP_LOGIT, becomes the
    skip's (GROUPPITCH_REST: the triple turns into a rest triple, nothing new here)."""
    if g.slot != 2 or g.skip_mask is None:
        return logits
    other = torch.logsumexp(logits.masked_fill(~g.skip_mask, float("-inf")), 1) + SKIP_LOGIT
    logits = logits.clone()
    logits[:, V.GROUPPITCH_REST] = torch.where(g.rest, logits[:, V.GROUPPITCH_REST], other)
    return logits


def chord_bias(g: Grammar, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Slot 2: the pitch biases of the bar's chord (`pitch_controls`) added to the notes' logits."""
    if g.slot != 2 or g.bias is None:
        return logits
    return logits + g.bias[(g.time // g.bar_steps) % g.bias.shape[0]]


def density_behind(g: Grammar) -> torch.Tensor:
    """(B,) how many notes the new part lacks of its density target so far in this bar (plus DENSITY_LEAD;
    negative: ahead); zeros without a target."""
    if g.density <= 0:
        return torch.zeros(g.time.shape, device=g.device)
    into_bar = (g.time % g.bar_steps).float() / g.bar_steps
    return g.density * into_bar + DENSITY_LEAD - g.bar_new.float()


def density_pull(g: Grammar, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The density pull (see DENSITY_RATE) on the choices that place a new note: at slot 0 the shifts that
    land before the next kept note, at slot 2 the new part's notes (after the kept notes took their mass,
    so it is not inflated).  A pull raises only those on the song's grid (`g.grid`), to a floor on their
    share of the allowed mass; a push lowers all of them.  Only with a density target."""
    if g.density <= 0 or g.slot == 1:
        return logits
    behind = density_behind(g)
    if g.slot == 0:
        land = g.time[:, None] + g.shift_range[None]
        place = torch.zeros_like(mask)
        place[:, V.SHIFT_OFFSET:V.SHIFT_OFFSET + V.N_SHIFT] = land < g.next_kept()[0][:, None]
        grid = torch.zeros_like(mask)
        grid[:, V.SHIFT_OFFSET:V.SHIFT_OFFSET + V.N_SHIFT] = g.grid[land % g.bar_steps]
    else:
        place = g.note_mask[None].expand_as(mask)
        grid = g.grid[g.time % g.bar_steps][:, None].expand_as(mask)
    place = place & mask
    new = place & grid
    other = mask & ~new
    # both sets lie inside the mask: their logits as they are, the rest -inf
    odds = torch.logsumexp(torch.where(new, logits, float("-inf")), 1) \
        - torch.logsumexp(torch.where(other, logits, float("-inf")), 1)
    floor = (DENSITY_RATE * behind).clamp(0.0, DENSITY_FLOOR_MAX)
    up = (torch.log(floor) - torch.log1p(-floor) - odds).clamp(min=0.0)
    up = torch.where((floor > 0) & torch.isfinite(odds), up, torch.zeros_like(up))
    down = (DENSITY_PUSH * behind).clamp(-DENSITY_MAX_PUSH, 0.0)
    return logits + up[:, None] * new + down[:, None] * place


SOFT_RULES = (onto_next_kept, kept_note_mass, skip_kept_parts, chord_bias, density_pull)

# where each rule can apply, from what a request fixes (the rules' own first lines check the same, per call)
APPLIES = {
    onto_next_kept: lambda g, slot: slot == 0 and g.has_kept,
    kept_note_mass: lambda g, slot: slot == 2 and g.has_kept,
    skip_kept_parts: lambda g, slot: slot == 2 and g.skip_mask is not None,
    chord_bias: lambda g, slot: slot == 2 and g.bias is not None,
    density_pull: lambda g, slot: slot != 1 and g.density > 0,
}


def active_rules(g: Grammar, rules=SOFT_RULES) -> tuple[tuple, tuple, tuple]:
    """Per slot, the rules of `rules` (in order) that can apply to `g`'s request; a rule not in APPLIES always
    runs."""
    return tuple(tuple(r for r in rules if r not in APPLIES or APPLIES[r](g, slot)) for slot in range(3))


def constrain(g: Grammar, logits: torch.Tensor, rules=SOFT_RULES, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> the same with the soft rules applied in order and every token the grammar forbids
    at -inf (`mask`: the grammar's mask here, when the caller has it already).  Which rules can apply is worked
    out once per grammar and rule set."""
    rules = tuple(rules)
    active = g.rule_cache.get(rules)
    if active is None:
        active = g.rule_cache[rules] = active_rules(g, rules)
    if mask is None:
        mask = g.mask()
    for rule in active[g.slot]:
        logits = rule(g, logits, mask)
    return logits.masked_fill(~mask, float("-inf"))
