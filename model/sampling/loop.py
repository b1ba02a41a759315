"""Seamless loops (`GenerationRequest.loop`, the transformer's): N bars whose last bar leads back into the first.

    scores, sampled = make_loops(decoder, model, req, params, scores)   # scores: sample_scores' N-bar pieces

A causal model writes the last bar without seeing the first, so the seam is chosen afterwards.  Per variant,
LOOP_CANDIDATES new last bars are sampled in one batch (BATCH at a time: the infill of the last bar, `model.edits.Infill`: the
bars before it as context, the request's key and chords, the variant's own style), and the last bar kept is the
one, of those and the original, under which the model gives the highest log-probability to the piece's first
bar played after it: one batched forward of the full network (`model`, the TransformerWrapper: every position's
logits) over [control prefix, the bars before the last that fit (SCORE_WINDOW_BARS), the candidate last bar,
the first bar], summing the log-probabilities of the first bar's tokens (`seam_logprobs`).  The other bars stay
note for note and the piece keeps exactly N bars (a note of the last bar still ringing at the end is cut at
the bar line, as in every piece).  Reranking by the model's own score rather than constraining the sampler:
the grammar's masks cannot say what "leads back" means, the model's probability of the first bar can.
`evaluation.loops` measures the seam against the bars inside the loop (docs/runs/loops.md: over 12 8-bar
pieces of the shipped model, seam 0.984 -> 0.944 bits/token, inside 0.68; the last bars chosen are likelier
than the originals, not less).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from tokenizer import Score, control_prefix, encode_notes
from tokenizer import vocab as V

from .decode import pick_style, sample_scores
from .filters import SamplingParams
from .plan import plan_request

LOOP_CANDIDATES = 8  # new last bars sampled per variant (the original is scored beside them)
SCORE_WINDOW_BARS = 4  # bars before the last one the scoring forward sees (fewer where the context is full)
BATCH = 8  # candidates sampled in one batch (a request's variants: model.request.MAX_VARIANTS)


def variant_styles(decoder, req, params: SamplingParams) -> list[str | None]:
    """The style each variant of `req` was decoded with: req.style, or the style `sample_scores` picked (its
    first draw from the request's seeded generator, made again here the same way)."""
    if req.style is not None:
        return [req.style] * req.variants
    plan = plan_request(req)
    device = getattr(decoder, "device", torch.device("cpu"))
    prefix = control_prefix([g for g in plan.prefix_groups if g != V.DRUM_GROUP], plan.drums_flag, None)
    prefix_t = torch.tensor(prefix, dtype=torch.long, device=device).expand(req.variants, -1)
    gen = torch.Generator(device=device).manual_seed(int(req.seed))
    styled = pick_style(decoder, prefix_t, params, gen)
    if styled.shape[1] == prefix_t.shape[1]:
        return [None] * req.variants
    return [V.STYLES[int(t) - V.STYLE_OFFSET] for t in styled[:, -1].tolist()]


def first_bar_after(notes: np.ndarray, bar_steps: int, limit: int) -> np.ndarray:
    """The piece's first bar with notes (the first bar; later only if it is silent, the silence included) moved
    to `limit`: what is heard when the loop starts again."""
    if not len(notes):
        return notes
    end = (int(notes["onset"].min()) // bar_steps + 1) * bar_steps
    first = notes[notes["onset"] < end].copy()
    first["onset"] += limit
    return first


def first_room(n_prefix: int, ctx: int) -> int:
    """The most tokens of the first bar scored: half the context after the prefix (the rest is the bars before
    it; a first bar longer than that, only in a small model, is scored by its opening)."""
    return (ctx - n_prefix) // 2 // 3 * 3


def seam_sequence(prefix: list[int], piece: Score, window_bars: int, ctx: int) -> tuple[np.ndarray, int]:
    """([control prefix, the last window_bars + 1 bars of `piece`, its first bar again (`first_room`)] as tokens,
    the number of the first bar's tokens at the end), cut from the left at a note boundary to fit `ctx` tokens."""
    notes, bar, limit = piece.notes, piece.bar_steps, piece.span_steps
    start = max(0, limit - (window_bars + 1) * bar)
    body = encode_notes(notes[notes["onset"] >= start], start_step=start)
    last = int(notes["onset"].max()) if len(notes) else start
    first = encode_notes(first_bar_after(notes, bar, limit), start_step=max(last, start))
    first = first[:first_room(len(prefix), ctx)]
    room = (ctx - len(prefix) - len(first)) // 3 * 3
    body = body[max(0, len(body) - room):]
    return np.concatenate([np.asarray(prefix, np.int64), body, first]), len(first)


@torch.inference_mode()
def seam_logprobs(model, sequences: list[tuple[np.ndarray, int]]) -> torch.Tensor:
    """(K,) natural-log probabilities, one batched forward of `model` (tokens (B, T) -> logits (B, T, V)): of
    each sequence's last n tokens given the tokens before them.  Rows are padded on the right (causal: the
    padding changes nothing before it)."""
    length = max(len(s) for s, _ in sequences)
    device = next(model.parameters()).device
    x = torch.full((len(sequences), length), V.PAD, dtype=torch.long)
    for i, (s, _) in enumerate(sequences):
        x[i, :len(s)] = torch.from_numpy(s)
    x = x.to(device)
    logp = torch.log_softmax(model(x).float(), -1)[:, :-1].gather(-1, x[:, 1:, None])[..., 0]  # (B, T - 1)
    out = []
    for i, (s, n) in enumerate(sequences):
        out.append(logp[i, len(s) - 1 - n:len(s) - 1].sum())
    return torch.stack(out).cpu()


def candidate_bars(decoder, req, piece: Score, style: str | None, seed: int, k: int) -> tuple[list[Score], int]:
    """`k` versions of `piece` with its last bar sampled anew (batches of up to BATCH: the infill of the last bar,
    with `req`'s sampling, key and chords and the variant's style; batch j seeded seed + j); and the tokens
    sampled."""
    n, out, sampled = piece.bars, [], 0
    for j, start in enumerate(range(0, k, BATCH)):
        s = (seed + j) % 2**32
        infill = replace(req, prompt=piece, edit="infill", infill_bars=(n, n), variants=min(BATCH, k - start),
                         seed=s, style=style, loop=False).validate()
        params = SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=s)
        scores, count = sample_scores(decoder, infill, params)
        out += scores
        sampled += count
    return out, sampled


def choose(model, req, candidates: list[Score], style: str | None, window_bars: int = SCORE_WINDOW_BARS) -> torch.Tensor:
    """(K,) the log-probability (nats) of each candidate piece's first bar played after it (`seam_sequence`)."""
    plan = plan_request(replace(req, loop=False))
    prefix = control_prefix([g for g in plan.prefix_groups if g != V.DRUM_GROUP], plan.drums_flag, style)
    ctx = model.max_seq_len
    return seam_logprobs(model, [seam_sequence(prefix, c, window_bars, ctx) for c in candidates])


def make_loops(decoder, model, req, params: SamplingParams, scores: list[Score], k: int = LOOP_CANDIDATES,
               window_bars: int = SCORE_WINDOW_BARS) -> tuple[list[Score], int, list[float]]:
    """The variants `scores` (N bars each, from `sample_scores(decoder, req, params)`) as loops: each with the
    last bar, of its own and `k` sampled, whose first bar after it the model finds likeliest.  Returns (the
    loops, the tokens sampled for the candidates, per variant the log-probability gained over its own last bar)."""
    styles = variant_styles(decoder, req, params)
    out, sampled, gains = [], 0, []
    for b, piece in enumerate(scores):
        if not len(piece.notes):
            out.append(piece)
            gains.append(0.0)
            continue
        seed = (int(req.seed) * 1_000_003 + b + 1) % (2**32)
        fresh, n = candidate_bars(decoder, req, piece, styles[b], seed, k)
        sampled += n
        candidates = [piece, *fresh]
        logp = choose(model, req, candidates, styles[b], window_bars)
        best = int(torch.argmax(logp))  # the first of equals: the original on a tie
        out.append(replace(candidates[best], style=piece.style))
        gains.append(float(logp[best] - logp[0]))
    return out, sampled, gains
