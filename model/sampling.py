"""Sampling, in one place: logit filters, the 3-token grammar, control masks, and the batched loop.

Grammar: after the control prefix, position mod 3 fixes the token type.
Controls hold by construction:
- slot 2 allows only the requested groups (and drums only if asked);
- every requested group (drums included) that has not played by the forcing point (the second bar,
  or half-way through a 1-bar request) is forced at the next slot 2, so each one is heard;
- a shift that would reach the requested end ends the variant, so the bars are exact (notes that
  would ring past the end are cut at the bar line; the piece lasts exactly N bars);
- END is never sampled (the length control decides), rest triples only after a maximal shift.
All variants run in one batch; a seeded torch.Generator makes a request reproducible.
Beyond the context window the decoder slides: the prefix plus the most recent half window is
re-encoded, aligned to whole notes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from tokenizer import Score, control_prefix, decode_notes, encode_notes
from tokenizer import vocab as V
from tokenizer.score import cut_at

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


# ---- filters: small pure functions ----------------------------------------------------------
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / max(float(temperature), 1e-6)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = probs.cumsum(-1)
    remove = cum - probs > p  # keep the smallest set whose mass reaches p (always the top token)
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) masked logits -> (B,) tokens.  Filters in order: temperature, top-k, top-p."""
    logits = top_p_filter(top_k_filter(apply_temperature(logits.float(), params.temperature), params.top_k),
                          params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---- grammar masks --------------------------------------------------------------------------
def _range_mask(lo: int, hi: int) -> torch.Tensor:
    m = torch.zeros(V.VOCAB_SIZE, dtype=torch.bool)
    m[lo:hi] = True
    return m


SHIFT_MASK = _range_mask(V.SHIFT_OFFSET, V.SHIFT_OFFSET + V.N_SHIFT)
DURVEL_MASK = _range_mask(V.DURVEL_OFFSET, V.DURVEL_REST)


def group_mask(groups) -> torch.Tensor:
    m = torch.zeros(V.VOCAB_SIZE, dtype=torch.bool)
    for g in groups:
        lo = V.GROUPPITCH_OFFSET + g * 128
        m[lo:lo + 128] = True
    return m


class Grammar:
    """Per-variant decoding state and the masks it implies."""

    def __init__(self, batch: int, allowed_groups: list[int], limit: int, start_time: int, force_at: int,
                 already_played: set[int] = frozenset(), max_notes: int = 10**9, min_time: int = 0,
                 device: torch.device | str = "cpu"):
        """All state and masks live on `device` (the decoder's), so sampling never copies logits."""
        self.device = torch.device(device)
        self.allowed = list(allowed_groups)
        self.limit = limit
        self.force_at = force_at
        self.min_time = min_time  # a continuation starts at the prompt's end, not inside it
        self.force_after_notes = max(1, max_notes // 2)  # also force once half the note budget is spent
        dev = self.device
        self.time = torch.full((batch,), start_time, dtype=torch.long, device=dev)
        self.done = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.n_body = 0  # body tokens emitted so far (same for every variant)
        self.last_shift = torch.zeros(batch, dtype=torch.long, device=dev)
        self.rest = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.played = torch.zeros(batch, V.N_GROUPS, dtype=torch.bool, device=dev)
        for g in already_played:
            self.played[:, g] = True
        self.allowed_t = torch.tensor(self.allowed, dtype=torch.long, device=dev)
        self.group_masks = torch.stack([group_mask([g]) for g in self.allowed]).to(dev)  # (n_allowed, V)
        self.allowed_mask = group_mask(self.allowed).to(dev)
        self.shift_mask = SHIFT_MASK.to(dev)
        self.durvel_mask = DURVEL_MASK.to(dev)
        self.shift_range = torch.arange(V.N_SHIFT, device=dev)
        self.end_len = torch.full((batch,), -1, dtype=torch.long, device=dev)  # body length when done

    @property
    def slot(self) -> int:
        return self.n_body % 3

    def mask(self) -> torch.Tensor:
        """(B, V) bool: which tokens may come next."""
        B = self.time.shape[0]
        s = self.slot
        missing = ~self.played[:, self.allowed_t]  # (B, n_allowed)
        if s == 0:
            m = self.shift_mask.expand(B, -1).clone()
            # a variant may not end while a requested group is still unheard
            ending = (self.time[:, None] + self.shift_range[None]) >= self.limit  # (B, N_SHIFT)
            block = ending & missing.any(1, keepdim=True)
            gap = (self.min_time - self.time).clamp(min=0)  # (B,)
            early = self.shift_range[None] < gap.clamp(max=V.MAX_SHIFT)[:, None]
            m[:, V.SHIFT_OFFSET:V.SHIFT_OFFSET + V.N_SHIFT] &= ~(block | early)
            return m
        if s == 1:
            m = self.durvel_mask.expand(B, -1).clone()
            m[:, V.DURVEL_REST] = self.last_shift == V.MAX_SHIFT
            m[self.time < self.min_time] = False  # still before the prompt's end: a rest triple
            m[self.time < self.min_time, V.DURVEL_REST] = True
            return m
        m = self.allowed_mask.expand(B, -1).clone()
        late = (self.time >= self.force_at) | (self.n_body // 3 >= self.force_after_notes)
        force = late & missing.any(1) & ~self.rest  # (B,): only the unheard groups may play
        forced = (missing[:, :, None] & self.group_masks[None]).any(1)  # (B, V)
        m = torch.where(force[:, None], forced, m)
        m[self.rest] = False
        m[self.rest, V.GROUPPITCH_REST] = True
        return m

    def update(self, tok: torch.Tensor) -> None:
        s = self.slot
        live = ~self.done
        if s == 0:
            shift = tok - V.SHIFT_OFFSET
            finished = live & (self.time + shift >= self.limit)
            self.end_len[finished] = self.n_body
            self.done |= finished
            self.time = torch.where(self.done, self.time, self.time + shift)
            self.last_shift = shift
        elif s == 1:
            self.rest = tok == V.DURVEL_REST
        else:
            g = ((tok - V.GROUPPITCH_OFFSET) // 128).clamp(0, V.N_GROUPS - 1)
            real = live & (tok != V.GROUPPITCH_REST)
            self.played[real, g[real]] = True
        self.n_body += 1


def sample_scores(decoder, req, params: SamplingParams, progress: Callable[[float], None] | None = None,
                  max_notes_per_bar: int = 96) -> tuple[list[Score], int]:
    """Generate req.variants scores with `decoder` (FastDecoder-like: reset(batch), __call__(tokens)->logits,
    .pos, .cfg.max_seq_len).  Returns (scores, number of sampled tokens across the batch)."""
    B = req.variants
    device = getattr(decoder, "device", torch.device("cpu"))
    gen = torch.Generator(device=device).manual_seed(int(req.seed))
    prompt: Score | None = req.prompt
    allowed = sorted(set(req.group_ids) | ({V.DRUM_GROUP} if req.drums else set()))
    if prompt is not None and len(prompt.notes):
        prompt_notes = prompt.notes
        bar_steps, time_sig = prompt.bar_steps, prompt.time_signature
        offset = prompt.length if prompt.length else prompt.n_bars * bar_steps
        body0 = encode_notes(prompt_notes)
        start_time = int(prompt_notes["onset"][-1])
        prefix_groups = sorted(set(allowed) | set(prompt.groups))
        drums_flag = req.drums or prompt.has_drums
        played = set(prompt.groups)
    else:
        bar_steps, time_sig = V.STEPS_PER_BAR, (4, 4)
        prompt_notes, offset, body0, start_time = None, 0, np.zeros(0, np.int64), 0
        prefix_groups, drums_flag, played = allowed, req.drums, set()
    prefix = control_prefix([g for g in prefix_groups if g != V.DRUM_GROUP], drums_flag, req.style)
    limit = offset + req.bars * bar_steps
    force_at = offset + min(bar_steps, req.bars * bar_steps // 2)
    max_notes = max_notes_per_bar * req.bars
    grammar = Grammar(B, allowed, limit, start_time, force_at, already_played=played, max_notes=max_notes,
                      min_time=offset, device=device)
    max_body = len(body0) + 3 * max_notes

    ctx = decoder.cfg.max_seq_len
    keep = max(3, (ctx - len(prefix)) // 2 // 3 * 3)  # body tokens kept when sliding (whole notes)
    prefix_t = torch.tensor(prefix, dtype=torch.long, device=device)
    body = torch.tensor(body0, dtype=torch.long, device=device).expand(B, -1).clone()  # (B, n)
    buf = torch.zeros(B, max_body + 3, dtype=torch.long, device=device)
    buf[:, : body.shape[1]] = body
    n = body.shape[1]

    def prefill(n_body: int) -> torch.Tensor:
        kept = n_body if len(prefix) + n_body <= ctx - 1 else min(n_body, keep)
        kept -= (3 - (n_body - kept) % 3) % 3  # the window's body starts at a note boundary
        window = torch.cat([prefix_t.expand(B, -1), buf[:, n_body - kept:n_body]], 1)
        decoder.reset(B)
        return decoder(window)

    logits = prefill(n)
    grammar.n_body = 0  # the grammar counts from the first sampled token; prompt is whole notes
    sampled = 0
    while not bool(grammar.done.all()) and n < max_body:
        mask = grammar.mask()
        tok = sample_token(logits.float().masked_fill(~mask, float("-inf")), params, gen)
        grammar.update(tok)
        buf[:, n] = tok
        n += 1
        sampled += B
        if progress is not None and grammar.slot == 0:
            progress(min(1.0, float((grammar.time.min() - offset).clamp(min=0)) / max(limit - offset, 1)))
        if bool(grammar.done.all()):
            break
        if decoder.pos >= ctx:
            logits = prefill(n)
        else:
            logits = decoder(tok[:, None])

    scores = []
    for b in range(B):
        end = int(grammar.end_len[b]) if grammar.end_len[b] >= 0 else (n - len(body0)) // 3 * 3
        cont = buf[b, len(body0): len(body0) + end].cpu().numpy()
        notes, _ = decode_notes(cont, start_step=start_time)
        if prompt_notes is not None:
            notes = np.concatenate([prompt_notes, notes])
        notes = cut_at(notes, limit)
        scores.append(Score(notes, bpm=req.bpm, time_signature=time_sig, style=req.style, length=limit))
    if progress is not None:
        progress(1.0)
    return scores, sampled
