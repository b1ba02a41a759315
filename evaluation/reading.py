"""What a part edit loses when the model reads only some of the song's other parts (`model.sampling.plan.
read_groups`): the bits a note of a real part, predicted with every other part read against only the parts a read
budget picks, on held-out game songs of several parts the shipped model never trained on.

    python -m evaluation.reading [--songs 8] [--per-bar 16 24 40] [--orders foundation busiest]

For each song (the realdev and realtest songs of Freedoom and openmsx with at least 4 parts) the target is its
busiest pitched part, the part a regenerate would write.  Each condition encodes the target with the parts it
reads (notes of the others left out) and reads the stream through the int8 decoder as an edit reads
(`model.sampling.decode.Window`: a window that slides).  The figure is the target part's negative log-likelihood
given the parts read, as the edit's sampler chooses (`choices`): each token's probability among the tokens open
to it there (a shift up to the next note read; the target's pitches or the next note read), the read notes'
own durvels forced; summed over the song and divided by the target's notes.  Printed per song and condition:
the parts read, their notes a 4/4 bar, the bits a target note, and the tokens read per second; then the mean
over songs of each condition.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from model.sampling.decode import Window
from model.sampling.plan import read_groups
from tokenizer import vocab as V


def songs(count: int, min_parts: int = 4) -> list[tuple[str, object]]:
    """(name, Score) of held-out Freedoom and openmsx songs with at least `min_parts` parts."""
    from tokenizer import load_midi
    from training.corpus.doom import lump_bytes, lump_to_midi
    from training.corpus.pieces import REAL_SPLITS, split_of
    from training.corpus.sources import iter_freedoom, iter_openmsx

    out = []
    for item in [*iter_freedoom(), *iter_openmsx()]:
        if split_of(item["group"], item["source"]) not in REAL_SPLITS:
            continue
        data = lump_to_midi(lump_bytes(item["path"], item["lump"])) if "lump" in item else item["path"]
        score = load_midi(data)
        if len(score.groups) >= min_parts:
            out.append((item["id"], score))
    return out[:count]


def token_nll(decoder, prefix: torch.Tensor, body: np.ndarray, allowed: list, chunk: int = 256) -> np.ndarray:
    """Each body token's negative log-likelihood (nats) among the tokens `allowed[i]` (a LongTensor of token ids,
    or None: forced, 0 nats), the body read `chunk` tokens a call through a `Window` that slides as an edit's does."""
    buf = torch.tensor(body, dtype=torch.long)[None]
    window = Window(decoder, prefix, buf)
    nll = np.zeros(len(body))

    def score(logits: torch.Tensor, first: int) -> None:
        for row, i in enumerate(range(first, first + logits.shape[0])):
            if allowed[i] is not None:
                lg = logits[row, allowed[i]].float()
                nll[i] = float(torch.logsumexp(lg, 0) - logits[row, int(body[i])].float())

    score(window.prefill(0), 0)
    read = 0
    while read < len(body) - 1:
        room = window.ctx - decoder.pos
        if room <= 0:
            window.slide(read)
            continue
        end = min(len(body) - 1, read + min(chunk, room))
        score(decoder(buf[:, read:end], every=True)[0], read + 1)
        read = end
    return nll


def choices(body: np.ndarray, target: int, length: int) -> list:
    """For each token of `body` (note triples of the target part and of the parts read), what an edit that
    writes group `target`'s part between the others' notes chooses among: at a shift, 0 up to the next other
    note (or MAX_SHIFT); at a target note's durvel, every durvel; at a pitch, the target's pitches and, where the
    next other note starts now, that note; the others' durvels and every rest triple's are forced (None)."""
    shifts = body[0::3] - V.SHIFT_OFFSET
    keys = body[2::3] - V.GROUPPITCH_OFFSET
    onset = np.cumsum(shifts)
    rest = body[2::3] == V.GROUPPITCH_REST
    mine = (keys >= target * 128) & (keys < (target + 1) * 128)
    other = ~mine & ~rest
    # for triple j: the onset and token of the first other note at or after it
    idx = np.where(other, np.arange(len(keys)), len(keys))
    nxt = np.minimum.accumulate(idx[::-1])[::-1]
    pitches = torch.arange(V.GROUPPITCH_OFFSET + target * 128, V.GROUPPITCH_OFFSET + (target + 1) * 128)
    durvels = torch.arange(V.DURVEL_OFFSET, V.DURVEL_REST)
    out: list = []
    before = 0
    for j in range(len(keys)):
        k = nxt[j]
        gap = (int(onset[k]) if k < len(keys) else length) - before
        out.append(torch.arange(V.SHIFT_OFFSET, V.SHIFT_OFFSET + min(max(gap, 0), V.MAX_SHIFT) + 1))
        out.append(durvels if mine[j] else None)
        if rest[j]:
            out.append(None)
        else:
            here = k < len(keys) and onset[k] == onset[j]
            out.append(torch.cat([pitches, torch.tensor([int(body[3 * k + 2])])]) if here else pitches)
        before = int(onset[j])
    return out


def target_bits(decoder, notes: np.ndarray, target: int, length: int, style: str | None) -> tuple[float, int, float]:
    """(bits a note of group `target`'s notes given the others in `notes`, as an edit that writes that part
    chooses: `choices`), tokens read, seconds."""
    from tokenizer import control_prefix, encode_notes

    body = encode_notes(notes)
    groups = sorted({int(g) for g in notes["group"]} - {V.DRUM_GROUP})
    prefix = torch.tensor(control_prefix(groups, bool((notes["group"] == V.DRUM_GROUP).any()), style))[None]
    t = time.perf_counter()
    nll = token_nll(decoder, prefix, body, choices(body, target, length))
    seconds = time.perf_counter() - t
    n_target = int((notes["group"] == target).sum())
    return float(nll.sum() / n_target / math.log(2)), len(body), seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.reading", description=__doc__.split("\n\n")[0])
    p.add_argument("--songs", type=int, default=8)
    p.add_argument("--per-bar", type=float, nargs="+", default=[16.0, 24.0, 40.0],
                   help="read budgets: notes a 4/4 bar of the other parts")
    p.add_argument("--orders", nargs="+", default=["foundation", "busiest"], help="read_groups' orders")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from model.engine import get_engine

    decoder = get_engine("transformer").decoder
    conditions = [("every part", None, None)] + [(f"{o} {b:g}/bar", b, o) for b in args.per_bar for o in args.orders]
    bits: dict[str, list[float]] = {c[0]: [] for c in conditions}
    for name, song in songs(args.songs):
        notes = song.notes
        pitched = notes[notes["group"] != V.DRUM_GROUP]
        groups, counts = np.unique(pitched["group"], return_counts=True)
        target = int(groups[np.argmax(counts)])
        others = notes[notes["group"] != target]
        bar4 = song.span_steps / V.STEPS_PER_BAR
        print(f"{name}: {song.bars} bars, {len(notes):,} notes, parts {', '.join(V.GROUPS[g] for g in song.groups)}; "
              f"target {V.GROUPS[target]} ({int(counts.max()):,} notes); the others {len(others) / bar4:.1f} notes a "
              f"4/4 bar", flush=True)
        for label, per_bar, order in conditions:
            read = set(np.unique(others["group"]).tolist()) if per_bar is None else \
                read_groups(others, song.span_steps, per_bar, order)
            stream = notes[np.isin(notes["group"], sorted(read | {target}))]
            b, tokens, secs = target_bits(decoder, stream, target, song.span_steps, "game")
            bits[label].append(b)
            print(f"  {label:>20}: reads {', '.join(V.GROUPS[g] for g in sorted(read))} "
                  f"({(len(stream) - counts.max()) / bar4:.1f} notes a 4/4 bar): {b:.3f} bits a {V.GROUPS[target]} "
                  f"note; {tokens:,} tokens in {secs:.1f} s ({tokens / secs:.0f} a second)", flush=True)
    print(f"mean over {len(bits['every part'])} songs, bits a note of the busiest pitched part given the parts read:")
    for label, values in bits.items():
        print(f"  {label:>20}: {np.mean(values):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
