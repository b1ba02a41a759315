"""The transformer's sampler does less work per token without changing a draw: `draw` is torch.multinomial's one-sample
path without its checks, and the soft rules a request cannot use are left out once per request."""

from __future__ import annotations

import pytest
import torch

import tokenizer as T
from model.request import GenerationRequest
from model.sampling.filters import SamplingParams, draw, sample_token
from model.sampling.grammar import Grammar
from model.sampling.pitch import pitch_controls
from model.sampling.plan import plan_request
from model.sampling.rules import SOFT_RULES, active_rules, constrain
from tests.conftest import MIDI_FIXTURES
from tokenizer import vocab as V


@pytest.mark.parametrize("shape", [(4, V.VOCAB_SIZE), (1, 128), (3, 7)])
def test_draw_is_multinomial(shape):
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(shape, generator=g) * 4
        logits[torch.rand(shape, generator=g) < 0.6] = float("-inf")
        logits[:, 0] = 0.0  # never a row without an allowed token
        probs = torch.softmax(logits, -1)
        a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(torch.multinomial(probs, 1, generator=a).squeeze(-1), draw(probs, b))
        assert torch.equal(a.get_state(), b.get_state())  # the same draws: what follows is the same too


def test_unchecked_sample_token_is_the_checked_one():
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=40)
    for seed in range(10):
        logits = torch.randn(4, V.VOCAB_SIZE, generator=torch.Generator().manual_seed(seed)) * 3
        a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(sample_token(logits, params, a), sample_token(logits, params, b, checked=False))


def _grammar(**fields) -> Grammar:
    req = GenerationRequest(**fields).validate()
    plan = plan_request(req)
    start = int(plan.context["onset"][-1]) if len(plan.context) else 0
    return Grammar(2, plan, start, max_notes=96 * plan.span_bars, pitch=pitch_controls(req, plan))


SONG = T.load_midi(next(f for f in MIDI_FIXTURES if f.name.startswith("chemistry_lab"))).first_bars(3)
REQUESTS = {
    "plain": dict(groups=("piano", "bass"), drums=True, bars=2),
    "chords": dict(groups=("guitar", "bass"), drums=False, bars=2, key="D minor", chords="Dm Bb F C"),
    "add part": dict(groups=(), drums=True, bars=1, prompt=SONG, edit="add_part", part="strings"),
    "infill": dict(groups=(), drums=True, bars=1, prompt=SONG, edit="infill", infill_bars=(2, 2)),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_rules_left_out_for_a_request_change_nothing(name):
    """Each rule active_rules leaves out for a slot returns the logits unchanged there; a plain request runs none."""
    g = _grammar(**REQUESTS[name])
    active = active_rules(g)
    if name == "plain":
        assert active == ((), (), ())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3 * 12):  # a dozen notes, every slot
        logits = torch.randn(2, V.VOCAB_SIZE, generator=gen)
        mask = g.mask()
        for rule in set(SOFT_RULES) - set(active[g.slot]):
            assert torch.equal(rule(g, logits, mask), logits), (name, rule.__name__, g.slot)
        tok = sample_token(constrain(g, logits), SamplingParams(), gen, checked=False)
        assert mask.gather(1, tok[:, None]).all()
        g.update(tok)

