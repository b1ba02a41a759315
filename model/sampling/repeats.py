"""A part written over a song repeats where the song repeats (`Plan.follow_repeats`: add and regenerate part).

The song is cut into units: its bars, or for bars shorter than half a 4/4 bar (POP909's 1/4 and 2/4) runs of
bars together as long as about one 4/4 bar (`unit_bars`).  A unit whose pitched kept notes are exactly those of
an earlier unit (the same pitches at the same places in it; `repeat_map`) at least two units before is a repeat
of the first unit that has them.  Once decoding has passed a source unit, every variant's new notes in it are copied into its
repeats as kept notes (forced in at their places), and no new note may go into a repeat: the new part plays
there what it played the first time, and a repeat costs the decoder no decision.  Two units apart, not one,
so that the copies are made while their unit still lies ahead (a shift never leaves a bar without the new part,
`Grammar._shift_mask`, so it does not jump a unit).  `evaluation.edits` measures how closely an added part's
bar-to-bar similarity follows the song's.
"""

from __future__ import annotations

import numpy as np
import torch

from tokenizer import vocab as V

from .plan import Plan

MIN_GAP_UNITS = 2  # a repeat lies at least this many units after its source


def unit_bars(bar_steps: int) -> int:
    """Bars a unit holds: 1, or for bars shorter than half a 4/4 bar as many as make about one."""
    return max(1, round(V.STEPS_PER_BAR / bar_steps)) if 2 * bar_steps < V.STEPS_PER_BAR else 1


def repeat_map(kept: np.ndarray, unit: int, units: int) -> dict[int, list[int]]:
    """{source unit: the units that repeat it}: units whose pitched kept notes (onset in the unit, group, pitch;
    durations, velocities and drums aside: a drum fill does not end a repeat) are an earlier unit's, at least
    MIN_GAP_UNITS after the first unit that has them."""
    first: dict[bytes, int] = {}
    targets: dict[int, list[int]] = {}
    pitched = kept[kept["group"] != V.DRUM_GROUP]
    onset = pitched["onset"].astype(np.int64)
    bounds = np.searchsorted(onset // unit, np.arange(units + 1))
    for u in range(units):
        lo, hi = bounds[u], bounds[u + 1]
        if lo == hi:
            continue
        key = np.stack([onset[lo:hi] - u * unit, pitched["group"][lo:hi], pitched["pitch"][lo:hi]]).tobytes()
        if key not in first:
            first[key] = u
        elif u - first[key] >= MIN_GAP_UNITS:
            targets.setdefault(first[key], []).append(u)
    return targets


def plan_repeats(plan: Plan) -> tuple[int, dict[int, list[int]]]:
    """(steps a unit holds, {source unit: its repeats}) of `plan` (no repeats unless it follows them); the
    decoder copies into them (`Repeats`), and the request budget counts no decisions there
    (`studio.budget.estimate`)."""
    unit = unit_bars(plan.bar_steps) * plan.bar_steps
    if not plan.follow_repeats or not len(plan.kept):
        return unit, {}
    return unit, repeat_map(plan.kept_notes(), unit, max(1, -(-plan.new_end // unit)))


class Repeats:
    """Per variant: the new notes placed so far (host lists) and which units are repeats being copied."""

    def __init__(self, plan: Plan, batch: int, device: torch.device):
        self.unit, self.targets = plan_repeats(plan)
        units = max(1, -(-plan.new_end // self.unit))
        self.new_end = plan.new_end
        self.copied = torch.zeros(batch, units, dtype=torch.bool, device=device)  # units filled by copies
        self.notes: list[list[tuple[int, int, int]]] = [[] for _ in range(batch)]  # (onset, key, durvel) a row
        self.last = units - 1

    def copied_at(self, time: torch.Tensor) -> torch.Tensor:
        """Whether each time of `time` (B,) or (B, N) lies in a unit being copied, per row."""
        units = (time // self.unit).clamp(0, self.last)
        return self.copied.gather(1, units if units.dim() == 2 else units[:, None]).view(time.shape)

    def record(self, new: torch.Tensor, time: torch.Tensor, key: torch.Tensor, durvel: torch.Tensor) -> None:
        """The new notes of this pitch slot, per row where `new`."""
        for row, (is_new, t, k, d) in enumerate(zip(new.tolist(), time.tolist(), key.tolist(), durvel.tolist())):
            if is_new:
                self.notes[row].append((t, k, d))

    def passed(self, before: torch.Tensor, after: torch.Tensor) -> list[tuple[int, list[tuple[int, int, int]]]]:
        """After a shift from `before` to `after` (B,): per row that left source units behind, the copies of
        their new notes into the repeats (onsets still ahead), as (row, [(onset, key, durvel)]); the repeats
        are marked copied."""
        out = []
        for row, (a, b) in enumerate(zip((before // self.unit).tolist(), (after // self.unit).tolist())):
            copies = []
            for source in range(a, b):
                for target in self.targets.get(source, ()):
                    self.copied[row, target] = True
                    lo, move = source * self.unit, (target - source) * self.unit
                    copies += [(t + move, k, d) for t, k, d in self.notes[row]
                               if lo <= t < lo + self.unit and int(after[row]) <= t + move < self.new_end]
            if copies:
                out.append((row, copies))
        return out
