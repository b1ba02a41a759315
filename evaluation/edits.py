"""How well an added or regenerated part fits its song, beside real parts of the corpus.

    python -m evaluation.edits --prompts tests/fixtures/midi --bars 8 --seeds 0 1 --variants 4 \
        --data data/corpus --real-pieces 400 --threads 1
    python -m evaluation.edits --prompts SONGS --bars 0 ...     # whole songs (and whole real pieces)

For every prompt song (its first --bars bars): "add" adds a part the song lacks (the first of ADD_ORDER it
does not have) and "regenerate" writes its busiest pitched part anew, each over the seeds x variants.
Per result the figures of `model.adherence` (`tokenizer.harmony.part_fit` against the rest of the song):
notes per 4/4 bar where the part plays (beside the corpus median of its group, `PART_DENSITY`), the share
of bars it is heard in, of its pitched notes in the song's scale and in its local scale (4 bars either side),
of its onsets on the song's grid, and whether it repeats where the song repeats (the correlation of the two
bar-by-bar self-similarities).
The yardstick: the same figures of real parts, (a) each part of --real-pieces random test pieces of the
corpus against the rest of its piece (first --bars bars), (b) the regenerated part's original in the song.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tokenizer import harmony as H
from tokenizer import vocab as V

ADD_ORDER = ("bass", "guitar", "piano", "strings", "lead")
FIGURES = ("notes_per_bar", "heard_in_bars", "in_song_scale", "on_song_grid", "in_local_scale", "repeats_with_song")


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _median(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def edits_for(score) -> list[tuple[str, str]]:
    """[(edit, part)] for one prompt: each edit that writes one part (`Edit.new_part`: add one, regenerate one),
    with the first part it accepts for this song of its pitched parts, busiest first, then ADD_ORDER: an added
    part is the first ADD_ORDER part the song lacks, a regenerated one its busiest pitched part."""
    from model.edits import EDITS
    from model.request import GenerationRequest, RequestError

    counts = {k: v for k, v in score.notes_per_group().items() if k != "drums"}
    candidates = [*sorted(counts, key=counts.get, reverse=True), *ADD_ORDER]
    out = []
    for edit in EDITS.values():
        if not edit.new_part:
            continue
        for part in candidates:
            try:
                edit.check(GenerationRequest(prompt=score, part=part))
            except RequestError:
                continue
            out.append((edit.name, part))
            break
    return out


def real_parts(data, pieces: int, bars: int, seed: int = 0, split: str = "test") -> dict[str, dict]:
    """Per group: the part_fit figures of real parts (each part of random test pieces against the rest of
    its piece, first `bars` bars): notes per bar median, the others means, and n."""
    from evaluation.report import real_excerpts

    acc: dict[str, dict[str, list]] = {}
    for _, s in real_excerpts(data, split, pieces, seed):
        n_bars = min(bars, s.n_bars) if bars > 0 else s.n_bars
        for g in s.groups:
            others = s.notes[s.notes["group"] != g]
            if not len(others):
                continue
            fit = H.part_fit(s.notes[s.notes["group"] == g], others, s.bar_steps, n_bars)
            for k in FIGURES:
                acc.setdefault(V.GROUPS[g], {}).setdefault(k, []).append(fit[k])
    return {g: {"n": len(d["notes_per_bar"]), "notes_per_bar": _median(d["notes_per_bar"]),
                **{k: _mean(d[k]) for k in FIGURES[1:]}} for g, d in acc.items()}


def measure(engine, prompts, bars: int, seeds, variants: int, **request) -> list[dict]:
    """One row per (prompt, edit, part): the mean figures over seeds x variants, each result's notes per bar,
    and for a regenerated part its original's figures."""
    from model.adherence import adherence
    from model.request import GenerationRequest
    from tokenizer import load_midi

    rows = []
    for path in prompts:
        whole = load_midi(path)
        song = whole.first_bars(bars if bars > 0 else whole.bars)
        for edit, part in edits_for(song):
            figs, t = [], time.perf_counter()
            for seed in seeds:
                req = GenerationRequest(prompt=song, edit=edit, part=part, variants=variants, seed=seed,
                                        **request).validate()
                g = V.GROUPS.index(part)
                for s in engine.generate(req):
                    fit = H.part_fit(s.notes[s.notes["group"] == g], s.notes[s.notes["group"] != g], s.bar_steps,
                                     s.bars)
                    figs.append({**adherence(req, s), "part_in_local_scale": fit["in_local_scale"],
                                 "part_repeats_with_song": fit["repeats_with_song"]})
            row = {"song": Path(path).stem, "edit": edit, "part": part, "results": len(figs),
                   "target": figs[0]["part_density_target"], "corpus": H.PART_DENSITY[part],
                   "seconds": time.perf_counter() - t,
                   "each_notes_per_bar": [f["part_notes_per_bar"] for f in figs]}
            for k, a in zip(FIGURES, ("part_notes_per_bar", "part_heard_in_bars", "part_in_song_scale",
                                      "part_on_song_grid", "part_in_local_scale", "part_repeats_with_song")):
                row[k] = (_median if k == "notes_per_bar" else _mean)([f[a] for f in figs])
            if g in song.groups:  # the part was the song's: its original's figures
                n = song.notes
                row["original"] = H.part_fit(n[n["group"] == g], n[n["group"] != g], song.bar_steps, song.bars)
            rows.append(row)
    return rows


def _f(v, fmt=".2f") -> str:
    return "—" if v is None else format(v, fmt)


def render(rows: list[dict], real: dict[str, dict] | None) -> str:
    L = ["notes/bar: median over results of the part's notes per 4/4 bar where it plays; target: what the sampler "
         "pulls it towards (added: the corpus median of the group; regenerated: its original's); corpus: the corpus "
         "median; ratio: notes/bar / corpus; heard, scale, grid: means of the share of bars it is heard in, of its "
         "pitched notes in the song's scale, of its onsets on the song's grid, of its pitched notes in the song's local "
         "scale (local); repeats: the correlation of its bar-by-bar self-similarity with the song's",
         f"{'song':24s} {'edit':10s} {'part':8s} {'notes/bar':>9s} {'target':>6s} {'corpus':>6s} {'ratio':>5s} "
         f"{'heard':>5s} {'scale':>5s} {'grid':>5s} {'local':>5s} {'rep.':>5s}  original (notes/bar heard scale grid "
         "local repeats)  per result notes/bar"]
    for r in rows:
        o = r.get("original")
        orig = "" if not o else " ".join(_f(o[k]) for k in FIGURES)
        ratio = r["notes_per_bar"] / r["corpus"] if r["notes_per_bar"] is not None else None
        each = " ".join(_f(x, ".1f") for x in r["each_notes_per_bar"])
        L.append(f"{r['song'][:24]:24s} {r['edit'][:10]:10s} {r['part']:8s} {_f(r['notes_per_bar']):>9s} "
                 f"{r['target']:6.1f} {r['corpus']:6.1f} {_f(ratio):>5s} {_f(r['heard_in_bars']):>5s} "
                 f"{_f(r['in_song_scale']):>5s} "
                 f"{_f(r['on_song_grid']):>5s} {_f(r['in_local_scale']):>5s} {_f(r['repeats_with_song']):>5s}  "
                 f"{orig:36s}  {each}")
    L.append("")
    for edit in sorted({r["edit"] for r in rows}):
        rs = [r for r in rows if r["edit"] == edit]
        ratios = [x / r["corpus"] for r in rs for x in r["each_notes_per_bar"] if x is not None]
        to_target = [x / r["target"] for r in rs for x in r["each_notes_per_bar"] if x is not None]
        L.append(f"{edit}: {sum(r['results'] for r in rs)} results; notes per bar / corpus median of the group: "
                 f"median {_f(_median(ratios))}, results at >= 0.5x {_f(np.mean([x >= 0.5 for x in ratios]))}; "
                 f"/ target: median {_f(_median(to_target))}, results within 0.5x-2x "
                 f"{_f(np.mean([0.5 <= x <= 2 for x in to_target]))}; "
                 f"heard in bars {_f(_mean(r['heard_in_bars'] for r in rs))}, in song scale "
                 f"{_f(_mean(r['in_song_scale'] for r in rs))}, on song grid "
                 f"{_f(_mean(r['on_song_grid'] for r in rs))}, in local scale "
                 f"{_f(_mean(r['in_local_scale'] for r in rs))}, repeats with the song "
                 f"{_f(_mean(r['repeats_with_song'] for r in rs))}")
    orig = [r["original"] for r in rows if r.get("original")]
    if orig:
        L.append(f"originals of the regenerated parts ({len(orig)}): in song scale "
                 f"{_f(_mean(o['in_song_scale'] for o in orig))}, on song grid "
                 f"{_f(_mean(o['on_song_grid'] for o in orig))}, "
                 f"heard in bars {_f(_mean(o['heard_in_bars'] for o in orig))}, in local scale "
                 f"{_f(_mean(o['in_local_scale'] for o in orig))}, repeats with the song "
                 f"{_f(_mean(o['repeats_with_song'] for o in orig))}")
    if real:
        L += ["", "real parts of the corpus (its test split, first bars or whole pieces), per group: notes/bar median, "
              "heard, in song scale, on song grid, in local scale, repeats with the song (means), n"]
        for g in V.GROUPS:
            if g in real:
                d = real[g]
                L.append(f"  {g:10s} {_f(d['notes_per_bar']):>6s} {_f(d['heard_in_bars']):>5s} "
                         f"{_f(d['in_song_scale']):>5s} {_f(d['on_song_grid']):>5s} {_f(d['in_local_scale']):>5s} "
                         f"{_f(d['repeats_with_song']):>5s}  n={d['n']}")
        groups = [g for g in real if g != "drums"]
        L.append(f"  all pitched parts: in song scale {_f(_mean(real[g]['in_song_scale'] for g in groups))}, on song "
                 f"grid {_f(_mean(real[g]['on_song_grid'] for g in groups))}, in local scale "
                 f"{_f(_mean(real[g]['in_local_scale'] for g in groups))}, repeats with the song "
                 f"{_f(_mean(real[g]['repeats_with_song'] for g in groups))} (mean over groups)")
    return "\n".join(L)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m evaluation.edits", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="transformer")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--prompts", nargs="+", default=["tests/fixtures/midi"], help="MIDI files or folders")
    ap.add_argument("--bars", type=int, default=8, help="the songs' first bars (0: whole songs and pieces)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--data", default="data/corpus", help="the corpus for the real parts ('' for none)")
    ap.add_argument("--real-pieces", type=int, default=400)
    ap.add_argument("--real-split", default="test", help="the corpus split of the real parts (realtest: the held-out "
                                                         "real songs of `training.corpus build`)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    from model.engine import get_engine

    if args.threads:
        torch.set_num_threads(args.threads)
    files = []
    for p in map(Path, args.prompts):
        files += sorted(p.glob("*.mid")) if p.is_dir() else [p]
    t = time.perf_counter()
    real = real_parts(args.data, args.real_pieces, args.bars, split=args.real_split) if args.data else None
    engine = get_engine(args.engine, args.checkpoint)
    rows = measure(engine, files, args.bars, args.seeds, args.variants, temperature=args.temperature,
                   top_p=args.top_p)
    print(f"# python -m evaluation.edits {' '.join(argv)}")
    print(render(rows, real))
    print(f"# {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
