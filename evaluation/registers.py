"""Per-group statistics of a corpus split: each group's register (pitch percentiles) and its density
(notes per bar in the bars where it plays).  tokenizer/harmony.py keeps the measured tables
(`REGISTERS`, `PART_DENSITY`) with the command that printed them:

    python -m evaluation.registers --data data/corpus --split train [--pieces N]

Prints one table (per group: pieces, notes, register, notes per bar quartiles) and the two Python literals.
Every piece of the split is decoded (16k train pieces take a few seconds); `--pieces N` measures a random
N of them instead (fixed seed).

Definitions:
- register: the 1st and 99th percentile (`tokenizer.harmony.PERCENTILES`) of the group's pitches, all
  notes of the split pooled (floor / ceil);
- density: per piece that uses the group, its notes divided by the bars in which it starts a note, in
  notes per 4/4 bar (32 steps: a 6/8 bar of 24 steps counts 3/4 of one); the table gives the quartiles over
  pieces and `PART_DENSITY` the median.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from tokenizer import harmony as H
from tokenizer import vocab as V

STEPS_4_4 = V.STEPS_PER_BAR


def bar_steps_of(time_signature) -> int:
    num, den = time_signature
    return max(1, int(num) * V.STEPS_PER_QUARTER * 4 // int(den))


def part_densities(notes: np.ndarray, bar_steps: int) -> dict[int, float]:
    """{group: notes per 4/4 bar over the bars in which the group starts a note} for one piece."""
    out = {}
    bars = notes["onset"].astype(np.int64) // bar_steps
    for g in np.unique(notes["group"]):
        sel = notes["group"] == g
        heard = len(np.unique(bars[sel]))
        out[int(g)] = float(sel.sum()) / (heard * bar_steps / STEPS_4_4)
    return out


def measure(data, split: str = "train", pieces: int | None = None, seed: int = 0) -> dict:
    """{"pieces": n, "groups": {name: {"pieces", "notes", "register": (lo, hi) or None,
    "density": (q25, median, q75)}}} over the split (or a random `pieces` of it)."""
    from tokenizer.codec import piece_notes
    from training.data import load_split, piece_tokens

    toks, rows = load_split(data, split)
    if pieces is not None and pieces < len(rows):
        pick = np.random.default_rng(seed).choice(len(rows), pieces, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    pitches: dict[int, list[np.ndarray]] = {g: [] for g in range(V.N_GROUPS)}
    dens: dict[int, list[float]] = {g: [] for g in range(V.N_GROUPS)}
    used = 0
    for r in rows:
        notes = piece_notes(piece_tokens(toks, r))
        if notes is None or not len(notes):
            continue
        used += 1
        for g, d in part_densities(notes, bar_steps_of(r.get("time_signature", (4, 4)))).items():
            dens[g].append(d)
            pitches[g].append(notes["pitch"][notes["group"] == g].astype(np.int64))
    out = {}
    for g in range(V.N_GROUPS):
        p = np.concatenate(pitches[g]) if pitches[g] else np.zeros(0, np.int64)
        reg = None
        if g != V.DRUM_GROUP and len(p) >= H.MIN_REGISTER_NOTES:
            lo, hi = np.percentile(p, H.PERCENTILES)
            reg = (int(np.floor(lo)), int(np.ceil(hi)))
        d = np.asarray(dens[g])
        q = tuple(round(float(x), 1) for x in np.percentile(d, (25, 50, 75))) if len(d) else None
        out[V.GROUPS[g]] = {"pieces": len(d), "notes": int(len(p)), "register": reg, "density": q}
    return {"pieces": used, "split": split, "groups": out}


def render(stats: dict, command: str) -> str:
    L = [f"# {command}", f"# {stats['pieces']} pieces of the {stats['split']} split; register = pitch percentiles "
         f"{H.PERCENTILES}; density = notes per 4/4 bar in the bars where the group plays (quartiles over pieces)",
         f"{'group':10s} {'pieces':>7s} {'notes':>9s}  {'register':>10s}  {'density q25 / median / q75':>28s}"]
    for name, s in stats["groups"].items():
        reg = "—" if s["register"] is None else f"{s['register'][0]}-{s['register'][1]}"
        den = "—" if s["density"] is None else " / ".join(f"{x:.1f}" for x in s["density"])
        L.append(f"{name:10s} {s['pieces']:7d} {s['notes']:9d}  {reg:>10s}  {den:>28s}")
    L.append("REGISTERS: dict[str, tuple[int, int]] = {")
    L += [f"    {name!r}: {tuple(s['register'])}," for name, s in stats["groups"].items() if s["register"]]
    L.append("}")
    L.append("PART_DENSITY: dict[str, float] = {  # median notes per 4/4 bar where the group plays")
    L += [f"    {name!r}: {s['density'][1]}," for name, s in stats["groups"].items() if s["density"]]
    L.append("}")
    return "\n".join(L)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m evaluation.registers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/corpus")
    ap.add_argument("--split", default="train")
    ap.add_argument("--pieces", type=int, default=None, help="a random N pieces of the split (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        stats = measure(args.data, args.split, args.pieces, args.seed)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(stats, "python -m evaluation.registers " + " ".join(argv)))
    print(f"# {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
