"""How well a piece loops: the model's loss on the seam (its first bar played again after its last) against its
loss inside the piece (each bar given the bars before it), for plain generation and for loop mode.

    python -m evaluation.loops --bars 8 --seeds 0 1 2 --threads 1 [--window 4] [--candidates 8]

For each instrument set x seed (one variant each) the transformer decodes the piece once (`sample_scores`,
as `TransformerEngine` does); loop mode is `model.sampling.loop.make_loops` on that same piece, so the two
differ only in the last bar (a paired comparison).  Each piece is scored by one forward of the full network
(fp32) over [control prefix with the variant's style, the piece, its first bar again] (cut from the left at a
note to fit the context): "seam" is the loss on the first bar's tokens after the last bar, "inside" on the
tokens of bars 2..N, "last bar" on bar N's (loop mode trades some of it for the seam).  Figures in bits per
token and per note (the triples of real notes; rest triples count as tokens), pooled over the pieces.
Loop mode picks its last bar by the model's score of the first bar after it (with a window of the bars before),
so its seam figure is what it optimizes: the inside and last-bar figures are the check that it does not buy the
seam with an unlikely last bar.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from model.sampling.loop import LOOP_CANDIDATES, SCORE_WINDOW_BARS
from tokenizer import control_prefix, encode_notes
from tokenizer import vocab as V

SETS = ((("piano", "bass"), True), (("guitar", "bass"), True), (("strings", "piano"), False),
        (("lead", "piano", "bass"), True))
LN2 = math.log(2)


def token_bars(body: np.ndarray, start: int, bar_steps: int) -> np.ndarray:
    """The bar (0-based) of each token of note triples `body` encoded from `start` (a triple's bar: its onset's)."""
    shifts = body[0::3] - V.SHIFT_OFFSET
    bars = (start + np.cumsum(shifts)) // bar_steps
    return np.repeat(bars, 3)


@torch.inference_mode()
def piece_losses(model, prefix: list[int], piece) -> dict[str, tuple[float, int, int]]:
    """{"seam" | "inside" | "last": (bits summed, tokens, real notes)} of one piece (see the module docstring)."""
    from model.sampling.loop import first_bar_after

    notes, bar, limit = piece.notes, piece.bar_steps, piece.span_steps
    body = encode_notes(notes)
    last = int(notes["onset"].max())
    first = encode_notes(first_bar_after(notes, bar, limit), start_step=last)
    bars = np.concatenate([token_bars(body, 0, bar), np.full(len(first), -1)])  # -1: the seam
    tokens = np.concatenate([body, first])
    room = (model.max_seq_len - len(prefix)) // 3 * 3
    cut = max(0, len(tokens) - room)
    tokens, bars = tokens[cut:], bars[cut:]
    x = torch.tensor(np.concatenate([prefix, tokens]), dtype=torch.long)[None]
    logp = torch.log_softmax(model(x).float(), -1)[0, :-1].gather(-1, x[0, 1:, None])[:, 0].numpy()
    bits = -logp[len(prefix) - 1:] / LN2  # one per body token
    real = np.repeat(tokens[2::3] != V.GROUPPITCH_REST, 3) / 3  # a third of a note per token of a real triple
    n_bars = piece.bars
    out = {}
    for name, sel in (("seam", bars == -1), ("inside", (bars >= 1) & (bars < n_bars)), ("last", bars == n_bars - 1)):
        out[name] = (float(bits[sel].sum()), int(sel.sum()), int(round(real[sel].sum())))
    return out


def run(args) -> dict:
    from model.engine import get_engine
    from model.request import GenerationRequest
    from model.sampling.decode import sample_scores
    from model.sampling.filters import SamplingParams
    from model.sampling.loop import make_loops, variant_styles
    from model.sampling.plan import plan_request

    engine = get_engine("transformer", args.checkpoint)
    totals = {mode: {k: [0.0, 0, 0] for k in ("seam", "inside", "last")} for mode in ("plain", "loop")}
    gaps = {"plain": [], "loop": []}
    better, n_pieces, t0, spent = 0, 0, time.perf_counter(), {"plain": 0.0, "loop": 0.0}
    for groups, drums in SETS[:args.sets]:
        for seed in args.seeds:
            req = GenerationRequest(groups=groups, drums=drums, bars=args.bars, variants=1, seed=seed).validate()
            params = SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed)
            t = time.perf_counter()
            plain, _ = sample_scores(engine.decoder, req, params)
            spent["plain"] += time.perf_counter() - t
            t = time.perf_counter()
            loops, _, gains = make_loops(engine.decoder, engine.model, replace(req, loop=True), params, plain,
                                         k=args.candidates, window_bars=args.window)
            spent["loop"] += time.perf_counter() - t
            style = variant_styles(engine.decoder, req, params)[0]
            plan = plan_request(req)
            prefix = control_prefix([g for g in plan.prefix_groups if g != V.DRUM_GROUP], plan.drums_flag, style)
            seams = {}
            for mode, piece in (("plain", plain[0]), ("loop", loops[0])):
                got = piece_losses(engine.model, prefix, piece)
                for k, (b, t, n) in got.items():
                    acc = totals[mode][k]
                    acc[0] += b
                    acc[1] += t
                    acc[2] += n
                seams[mode] = got["seam"][0] / max(got["seam"][1], 1)
                gaps[mode].append(seams[mode] - got["inside"][0] / max(got["inside"][1], 1))
            better += seams["loop"] < seams["plain"]
            n_pieces += 1
            print(f"{'+'.join(groups)}{' +drums' if drums else ''} seed {seed}: seam bits/token plain "
                  f"{seams['plain']:.3f} loop {seams['loop']:.3f} (gain {gains[0]:.2f} nats)", flush=True)
    return {"totals": totals, "gaps": gaps, "better": better, "pieces": n_pieces,
            "seconds": time.perf_counter() - t0, "spent": spent, "window": args.window, "k": args.candidates}


def report(res: dict) -> str:
    n, spent = max(res["pieces"], 1), res["spent"]
    lines = [f"{res['pieces']} pieces ({res['seconds']:.0f} s); loop mode: {res['k']} candidates, scoring window "
             f"{res['window']} bars; "
             f"per piece: generation {spent['plain'] / n:.1f} s, loop mode's last bar +{spent['loop'] / n:.1f} s",
             f"{'mode':6} {'where':7} {'bits/token':>10} {'bits/note':>10} {'tokens':>7} {'notes':>6}"]
    for mode, parts in res["totals"].items():
        for where, (b, t, n) in parts.items():
            lines.append(f"{mode:6} {where:7} {b / max(t, 1):10.3f} {b / max(n, 1):10.3f} {t:7d} {n:6d}")
    for mode, g in res["gaps"].items():
        lines.append(f"{mode}: seam minus inside, mean over pieces: {np.mean(g):+.3f} bits/token")
    lines.append(f"loop seam below plain seam in {res['better']} of {res['pieces']} pieces")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.loops", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="the transformer's checkpoint (default: the shipped one)")
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sets", type=int, default=len(SETS), help=f"how many of the {len(SETS)} instrument sets")
    p.add_argument("--window", type=int, default=SCORE_WINDOW_BARS,
                   help="bars before the last one loop mode's scoring sees (model.sampling.loop.SCORE_WINDOW_BARS)")
    p.add_argument("--candidates", type=int, default=LOOP_CANDIDATES,
                   help="last bars loop mode samples per piece (model.sampling.loop.LOOP_CANDIDATES)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(report(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
