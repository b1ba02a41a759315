"""Seamless loops (GenerationRequest.loop, model.sampling.loop) with the tiny transformer: exactly N bars, the
controls held, the bars before the last as without the loop, the chosen last bar the best-scoring candidate
(scores made again here, one sequence at a time), the field's validation, the refusal of other engines, the CLI."""

import json

import numpy as np
import pytest
import torch

import tokenizer as T
from model.engine import Engine
from model.generate import main as generate_main
from model.request import GenerationRequest, RequestError
from model.sampling.decode import sample_scores
from model.sampling.filters import SamplingParams
from model.sampling.loop import LOOP_CANDIDATES, candidate_bars, choose, make_loops, variant_styles
from tests.conftest import MIDI_FIXTURES
from tokenizer import harmony as H
from tokenizer import vocab as V

pytestmark = pytest.mark.usefixtures("one_thread")
FIELDS = ["onset", "group", "pitch", "velocity", "duration"]


def rows(notes) -> list[tuple]:
    return sorted(map(tuple, np.stack([notes[f].astype(np.int64) for f in FIELDS], 1).tolist()))


def params_of(req) -> SamplingParams:
    return SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed)


@pytest.mark.parametrize("seed", range(4))
def test_a_loop_has_exactly_n_bars_and_holds_the_controls(tiny_engine, seed):
    fields = dict(groups=("piano", "bass"), drums=seed % 2 == 0, bars=3, variants=2, seed=seed, key="D minor")
    loops = tiny_engine.generate(GenerationRequest(**fields, loop=True))
    plain = tiny_engine.generate(GenerationRequest(**fields))
    assert len(tiny_engine.last_stats) and len(loops) == 2
    want = {V.GROUPS.index("piano"), V.GROUPS.index("bass")} | ({V.DRUM_GROUP} if fields["drums"] else set())
    for s, p in zip(loops, plain):
        assert s.bars == 3 and s.length == 3 * s.bar_steps
        assert (s.notes["onset"] < s.length).all() and (s.notes["onset"] + s.notes["duration"] <= s.length).all()
        assert set(s.groups) == want
        assert H.in_key_share(s.notes, H.parse_key("D minor")) == 1.0
        last = 2 * s.bar_steps  # the bars before the last are the plain piece's, note for note
        assert rows(s.notes[s.notes["onset"] < last]) == rows(p.notes[p.notes["onset"] < last])
        assert len(np.unique(s.notes["onset"] // s.bar_steps)) == 3  # no silent bar


def independent_logprob(model, prefix: list[int], piece: T.Score) -> float:
    """log p(the piece's first bar | the prefix, the piece), one sequence, built from a Score and T.encode."""
    bar, limit = piece.bar_steps, piece.span_steps
    first = piece.notes[piece.notes["onset"] < (int(piece.notes["onset"].min()) // bar + 1) * bar].copy()
    first["onset"] += limit
    both = T.Score(np.concatenate([piece.notes, first]), length=limit + bar)
    body = T.encode(both, style=None, end=False)[len(T.control_prefix(both.groups, both.has_drums)):]
    n_first = len(T.encode_notes(first, start_step=int(piece.notes["onset"].max())))
    kept = min(n_first, (model.max_seq_len - len(prefix)) // 2 // 3 * 3)  # a long first bar: its opening
    body, n_first = body[:len(body) - (n_first - kept)], kept
    room = (model.max_seq_len - len(prefix)) // 3 * 3
    x = torch.tensor(np.concatenate([prefix, body[max(0, len(body) - room):]]))[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(x).float(), -1)[0, :-1].gather(-1, x[0, 1:, None])[:, 0]
    return float(logp[-n_first:].sum())


@pytest.mark.parametrize("seed", range(3))
def test_the_chosen_last_bar_is_the_best_scoring_candidate(tiny_engine, seed):
    req = GenerationRequest(groups=("piano",), drums=True, bars=2, variants=2, seed=seed, loop=True).validate()
    params = params_of(req)
    plain, _ = sample_scores(tiny_engine.decoder, req, params)
    loops, sampled, gains = make_loops(tiny_engine.decoder, tiny_engine.model, req, params, plain)
    styles = variant_styles(tiny_engine.decoder, req, params)
    assert sampled > 0 and len(gains) == 2 and all(g >= 0 for g in gains)
    for b, piece in enumerate(plain):
        fresh, _ = candidate_bars(tiny_engine.decoder, req, piece, styles[b], (seed * 1_000_003 + b + 1) % 2**32,
                                  LOOP_CANDIDATES)
        candidates = [piece, *fresh]
        assert len(candidates) == LOOP_CANDIDATES + 1 and all(c.bars == 2 for c in candidates)
        prefix = T.control_prefix(sorted(g for g in piece.groups), piece.has_drums, styles[b])
        mine = torch.tensor([independent_logprob(tiny_engine.model, prefix, c) for c in candidates])
        batched = choose(tiny_engine.model, req, candidates, styles[b])
        assert torch.allclose(batched, mine, atol=1e-3)
        best = candidates[int(torch.argmax(mine))]
        assert rows(loops[b].notes) == rows(best.notes)
        assert gains[b] == pytest.approx(float(mine.max() - mine[0]), abs=1e-3)


def test_variant_styles_are_the_samplers(tiny_engine):
    req = GenerationRequest(groups=("piano",), drums=False, bars=1, variants=3, seed=5).validate()
    styles = variant_styles(tiny_engine.decoder, req, params_of(req))
    assert len(styles) == 3 and all(s is None or s in V.STYLES for s in styles)
    assert variant_styles(tiny_engine.decoder, GenerationRequest(style="rock", variants=2).validate(),
                          params_of(req)) == ["rock", "rock"]


@pytest.mark.parametrize("value", ["yes", 1, 0, None, [True]])
def test_the_loop_field_must_be_a_boolean(value):
    with pytest.raises(RequestError, match="^Seamless loop must be on or off"):
        GenerationRequest(loop=value).validate()
    assert GenerationRequest(loop=True).validate().loop is True


def test_a_loop_is_a_new_piece_and_other_engines_refuse_it():
    song = T.load_midi(MIDI_FIXTURES[0]).first_bars(2)
    with pytest.raises(RequestError, match="^Seamless loop: a loop is a new piece"):
        GenerationRequest(loop=True, prompt=song).validate()

    class Plain(Engine):
        name = "plain"
        controls = frozenset({"groups", "drums", "bars"})

    eng = object.__new__(Plain)
    with pytest.raises(RequestError, match="^Seamless loop: engine plain cannot make seamless loops"):
        eng.restrict(GenerationRequest(loop=True))
    assert eng.restrict(GenerationRequest(loop=False)).loop is False


def test_cli_loop(env_checkpoints, tmp_path, capsys):
    args = ["--instruments", "piano,bass", "--bars", "2", "--variants", "2", "--seed", "4", "--out", str(tmp_path)]
    assert generate_main(args + ["--loop"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bars"] == [2, 2] and out["loop"] is True
    for f in out["files"]:
        s = T.load_midi(f)
        assert s.n_bars <= 2 and len(s.notes)
    assert generate_main(args + ["--loop", "--engine", "cnn"]) == 2
    assert "Seamless loop: engine cnn cannot make seamless loops" in capsys.readouterr().err
    assert generate_main(args + ["--loop", "--prompt", str(MIDI_FIXTURES[0])]) == 2
    assert "Seamless loop: a loop is a new piece" in capsys.readouterr().err


def test_more_candidates_than_a_batch(tiny_engine):
    req = GenerationRequest(groups=("piano",), drums=False, bars=2, variants=1, seed=2, loop=True).validate()
    piece = sample_scores(tiny_engine.decoder, req, params_of(req))[0][0]
    many, sampled = candidate_bars(tiny_engine.decoder, req, piece, None, 7, 11)
    assert len(many) == 11 and sampled > 0 and all(c.bars == 2 for c in many)
    head = candidate_bars(tiny_engine.decoder, req, piece, None, 7, 8)[0]
    assert [rows(c.notes) for c in many[:8]] == [rows(c.notes) for c in head]  # the first batch is the same
    first = piece.notes[piece.notes["onset"] < piece.bar_steps]
    assert all(rows(c.notes[c.notes["onset"] < piece.bar_steps]) == rows(first) for c in many)
