"""The transformer's batched decoding loop: the style pick, the prefill and the slide.

Every training prefix of the shipped corpus ends with a style token: for a request without a style, a model
that expects one (more probability on style tokens than on shifts after the prefix) picks it per variant, sampled
from its own distribution over style tokens, rather than decode after a prefix it never saw (its first shift
was then noise: a silent first bar or more in 12 of 20 results, docs/runs/silent-bars.log).
All variants run in one batch; a seeded torch.Generator makes a request reproducible.
Beyond the context window the decoder slides: the prefix and the most recent half window, aligned to whole notes,
stay in its cache, moved down (nothing is re-encoded).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from tokenizer import Score, control_prefix, decode_notes, encode_notes
from tokenizer import vocab as V
from tokenizer.score import cut_at

from .filters import SamplingParams, sample_token
from .grammar import SHIFT_MASK, STYLE_MASK, Grammar
from .pitch import pitch_controls
from .plan import Plan, plan_request
from .rules import constrain


def pick_style(decoder, prefix: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> torch.Tensor:
    """(B, P) control prefix without a style -> the same with a style token per variant appended, sampled from
    the model's distribution over style tokens, when it expects one (more probability on style tokens than on
    shifts); else the prefix unchanged."""
    device = prefix.device
    decoder.reset(prefix.shape[0])
    first = decoder(prefix).float()
    probs = torch.softmax(first[0], -1)
    if probs[STYLE_MASK.to(device)].sum() > probs[SHIFT_MASK.to(device)].sum():
        style = sample_token(first.masked_fill(~STYLE_MASK.to(device), float("-inf")), params, gen)
        return torch.cat([prefix, style[:, None]], 1)
    return prefix


class Window:
    """The decoder's view of the streams: the control prefix plus the body tokens in `buf` (B, max body); past
    the context window it slides to the prefix plus the most recent half window, aligned to whole notes (`slide`)."""

    def __init__(self, decoder, prefix: torch.Tensor, buf: torch.Tensor):
        self.decoder, self.prefix, self.buf = decoder, prefix, buf
        self.ctx = getattr(decoder, "window", decoder.cfg.max_seq_len)  # the positions it attends to (`FastDecoder`)
        self.keep = max(3, (self.ctx - prefix.shape[1]) // 2 // 3 * 3)  # body tokens kept when sliding
        self.slot_rows = getattr(decoder, "computes_rows", False)  # forward(tokens, rows=...): `FastDecoder`

    def prefill(self, n_body: int, slot: int | None = None) -> torch.Tensor:
        """Encode the prefix and the body's first `n_body` tokens (the last that fit) afresh; the logits (with
        `slot`, only those of that slot's tokens: `logits`)."""
        kept = n_body if self.prefix.shape[1] + n_body <= self.ctx - 1 else min(n_body, self.keep)
        kept -= (3 - (n_body - kept) % 3) % 3  # the window's body starts at a note boundary
        window = torch.cat([self.prefix, self.buf[:, n_body - kept:n_body]], 1)
        self.decoder.reset(self.buf.shape[0])
        return self.logits(window, slot)

    def logits(self, tokens: torch.Tensor, slot: int | None) -> torch.Tensor:
        """The decoder's logits after `tokens`; with `slot` (the slot the next token is sampled at: the grammar
        allows only that slot's tokens there) the others are -inf, where the decoder can leave them out."""
        if slot is not None and self.slot_rows:
            return self.decoder(tokens, rows=V.SLOT_RANGES[slot])
        return self.decoder(tokens)

    def feed(self, start: int, n: int, slot: int | None = None) -> torch.Tensor:
        """The logits after body tokens `buf[:, start:n]` (at least one), which follow the tokens the decoder has
        read, in one forward call while they fit (with `slot`: `logits`).  Where the window is full it slides
        (`slide`) and reads on."""
        while True:
            room = self.ctx - self.decoder.pos
            if n - start <= room:
                return self.logits(self.buf[:, start:n], slot)
            if room > 0:
                self.decoder(self.buf[:, start:start + room])
                start += room
            self.slide(start)

    def slide(self, n_body: int) -> None:
        """The window is full after `n_body` body tokens: keep the prefix and the most recent `keep` body tokens
        (from a note boundary) in the decoder's cache, moved down (`decoder.drop`), nothing re-encoded.  Each kept
        token keeps the context it was read in: on the shipped model and long real songs this predicted the next
        tokens as well as re-encoding the kept half window did (docs/runs/window-slide.md), at none of its cost
        (a 518-token prefill per 512 tokens read, half the reading of a dense song)."""
        in_cache = self.decoder.pos - self.prefix.shape[1]
        kept = min(self.keep, in_cache)
        kept -= (3 - (n_body - kept) % 3) % 3  # the window's body starts at a note boundary
        self.decoder.drop(self.prefix.shape[1], in_cache - kept)

    def unread(self, count: int) -> None:
        """Forget the last `count` tokens the decoder read (they are rewritten and fed again)."""
        self.decoder.pos -= count


def _forced(grammar: Grammar, gen: torch.Generator) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(each variant's next token when the grammar allows only one for every variant still decoding (a kept
    note's durvel and pitch, a shift onto the next kept note where nothing new may come between), else None;
    the grammar's mask, where it was worked out: `Grammar.kept_next` knows most kept notes without it).
    A forced token still takes its draws from `gen` (as `filters.draw` would), so a seed gives the same music as
    when every token was sampled."""
    tok, mask = grammar.kept_next(), None
    if tok is None:
        mask = grammar.mask()
        if not bool(((mask.sum(1) == 1) | grammar.done).all()):
            return None, mask
        tok = mask.to(torch.uint8).argmax(1)
    torch.empty((len(tok), V.VOCAB_SIZE), device=tok.device).exponential_(1, generator=gen)
    return tok, mask


def _run(grammar: Grammar, window: Window, n: int, max_body: int, params: SamplingParams, gen: torch.Generator,
         progress: Callable[[float], None] | None) -> int:
    """Sample body tokens into `window.buf` from position `n` until every variant is done (or the buffer is
    full); the body length reached.  With kept notes, a token the grammar forces is written without asking the
    decoder, and the run of forced tokens is fed in one forward call before the next sampled token (prefill):
    the kept notes of an edit cost a call per decision, not a call per token.  Host syncs: whether all are done
    only after a shift (nothing else ends a variant), whether a durvel needs fixing only after a pitch where
    the request can need it, and (with kept notes) whether the next token is forced."""
    plan = grammar.plan
    logits = window.prefill(n, grammar.slot)
    fed = n  # buf[:, :fed] has been read by the decoder; `logits` follow it
    span = max(plan.new_end - plan.min_time, 1)
    forcing = grammar.has_kept
    while n < max_body:
        tok, mask = _forced(grammar, gen) if forcing else (None, grammar.mask())
        if tok is None:
            if fed < n:
                logits, fed = window.feed(fed, n, grammar.slot), n
            tok = sample_token(constrain(grammar, logits.float(), mask=mask), params, gen, checked=False)
        slot = grammar.slot
        grammar.update(tok)
        window.buf[:, n] = tok
        n += 1
        if progress is not None and grammar.slot == 0:
            progress(min(1.0, float((grammar.time.min() - plan.min_time).clamp(min=0)) / span))
        if slot == 0 and bool(grammar.done.all()):
            break
        if slot == 2 and grammar.can_fix:
            fix = grammar.fix_durvel >= 0  # the triple's durvel (at n - 2) corrected: the kept note's, or a skip's
            if bool(fix.any()):
                window.buf[:, n - 2] = torch.where(fix, grammar.fix_durvel, window.buf[:, n - 2])
                if fed > n - 2:
                    window.unread(fed - (n - 2))
                    fed = n - 2
        if not forcing:
            logits, fed = window.feed(fed, n, grammar.slot), n
    return n


def _scores(req, plan: Plan, grammar: Grammar, buf: torch.Tensor, n_context: int, n: int,
            start_time: int) -> list[Score]:
    """Each variant's sampled body decoded after the context, with the tail, cut at the piece's end (or where
    the edited song's own last note ends, when that rings past it: an upload keeps its final ring)."""
    scores = []
    song = plan.song_notes()
    ring = int((song["onset"] + song["duration"]).max()) if len(song) else 0
    for b in range(buf.shape[0]):
        end = int(grammar.end_len[b]) if grammar.end_len[b] >= 0 else (n - n_context) // 3 * 3
        cont = buf[b, n_context: n_context + end].cpu().numpy()
        notes, _ = decode_notes(cont, start_step=start_time)
        notes = np.concatenate([plan.context, notes, plan.aside, plan.tail])
        if len(plan.aside):  # the parts not read go back in the song's order
            notes = notes[np.lexsort((notes["pitch"], notes["group"], notes["onset"]))]
        notes = cut_at(notes, max(plan.limit, ring))
        scores.append(Score(notes, bpm=plan.bpm, time_signature=plan.time_signature, style=req.style,
                            length=plan.limit))
    return scores


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
    max_notes = max_notes_per_bar * plan.span_bars
    bar_notes = max_notes_per_bar // plan.bar_note_divisor
    grammar = Grammar(B, plan, start_time, max_notes=max_notes, bar_notes=bar_notes,
                      pitch=pitch_controls(req, plan), device=device)
    max_body = len(body0) + 3 * (max_notes + len(plan.kept) + plan.limit // V.MAX_SHIFT + 2)
    if len(plan.kept):
        max_body += 3 * (plan.new_end - plan.min_time)  # skips (each moves time on)

    prefix_t = torch.tensor(prefix, dtype=torch.long, device=device).expand(B, -1)
    styled = prefix_t
    if req.style is None:  # a model trained on prefixes that end with a style expects one: it picks it
        styled = pick_style(decoder, prefix_t, params, gen)
    body = torch.tensor(body0, dtype=torch.long, device=device).expand(B, -1).clone()  # (B, n)
    buf = torch.zeros(B, max_body + 3, dtype=torch.long, device=device)
    buf[:, : body.shape[1]] = body
    n = _run(grammar, Window(decoder, styled, buf), body.shape[1], max_body, params, gen, progress)
    sampled = (styled.shape[1] - prefix_t.shape[1]) * B + (n - body.shape[1]) * B
    scores = _scores(req, plan, grammar, buf, len(body0), n, start_time)
    if progress is not None:
        progress(1.0)
    return scores, sampled
