"""Logit filters every engine samples with: temperature, top-k, top-p, then one multinomial draw.

    tok = sample_token(logits, SamplingParams(temperature=0.9, top_p=0.95), generator)

`draw` is `torch.multinomial(probs, 1)` without its input checks (two host syncs and four reductions): the same
exponential draws from the generator and the same pick, for callers whose rows are valid by construction (the
transformer's grammar never leaves a row without an allowed token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


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


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) probabilities -> (B,) tokens: what `torch.multinomial(probs, 1)` computes for one sample (argmax of
    probs / q, q ~ Exp(1) drawn from `generator`), the same draws and the same result, without its checks."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(-1)


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None,
                 checked: bool = True) -> torch.Tensor:
    """(B, V) masked logits -> (B,) tokens.  Filters in order: temperature, top-k, top-p.  checked=False: the
    rows are known to be valid (`draw`)."""
    logits = logits.float()
    if params.temperature != 1.0:  # dividing by 1 changes nothing
        logits = apply_temperature(logits, params.temperature)
    probs = torch.softmax(top_p_filter(top_k_filter(logits, params.top_k), params.top_p), dim=-1)
    if checked:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return draw(probs, generator)
