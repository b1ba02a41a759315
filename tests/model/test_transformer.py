import warnings

import numpy as np
import pytest
import torch
from x_transformers import AutoregressiveWrapper

import tokenizer as T
from model import transformer as MT
from model.engine import GenerationRequest
from model.sampling.filters import top_k_filter, top_p_filter
from model.transformer import PRESETS, FastDecoder, TransformerEngine, build_model
from tests.conftest import HAS_SHIPPED, MIDI_FIXTURES
from tokenizer import vocab as V


def test_fast_decoder_matches_stock_logits(tiny_engine):
    model = tiny_engine.model
    x = torch.randint(V.SHIFT_OFFSET, V.VOCAB_SIZE, (2, 40))
    ref = model(x)  # (2, 40, V), no cache
    dec = tiny_engine.decoder
    dec.reset(2)
    out = [dec(x[:, :25])]
    for i in range(25, 40):
        out.append(dec(x[:, i:i + 1]))
    assert torch.allclose(out[0], ref[:, 24], atol=1e-4)
    assert torch.allclose(torch.stack(out[1:], 1), ref[:, 25:], atol=1e-4)


@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
def test_logits_of_one_slot_only(tiny_engine, quantize):
    """`rows`: the logits of a slot's tokens as the whole output layer gives them (to rounding), the rest -inf,
    after one token and after several."""
    dec = FastDecoder.from_model(tiny_engine.cfg, tiny_engine.model).eval()
    dec = dec.quantize() if quantize else dec
    x = torch.randint(V.SHIFT_OFFSET, V.VOCAB_SIZE, (2, 30))
    for lo, hi in V.SLOT_RANGES:
        for a, b in ((0, 20), (20, 21), (21, 30)):
            dec.reset(2)
            if a:
                dec(x[:, :a])
            full = dec(x[:, a:b])
            dec.pos = a
            part = dec(x[:, a:b], rows=(lo, hi))
            assert torch.allclose(part[:, lo:hi], full[:, lo:hi], atol=1e-5)
            assert torch.isneginf(part[:, :lo]).all() and torch.isneginf(part[:, hi:]).all()


def test_greedy_fast_path_equals_stock_generate(tiny_engine):
    prompt = torch.tensor([T.control_prefix([0, 4], True)])
    wrapper = AutoregressiveWrapper(tiny_engine.model).eval()
    with torch.inference_mode():
        stock = wrapper.generate(prompt, 40, temperature=0.0, cache_kv=True)[0]
    dec = tiny_engine.decoder
    dec.reset(1)
    logits, toks = dec(prompt), []
    for _ in range(40):
        t = logits.argmax(-1)
        toks.append(int(t))
        logits = dec(t[:, None])
    assert toks == stock.tolist()


# The int8 decoder (int8 weights per output row, bf16 activations and KV cache) against the fp32 one, over a
# prefill of 32 positions (the dequantized bf16 matmul), 12 single steps (the int8 kernel) and a 4-token chunk
# at position 44 (the kernel, attention with a mask): per position the total variation distance between the
# two next-token distributions (max and mean) and the largest logit difference.  Measured on the shipped
# checkpoint (two fixture songs): TV max 0.022, mean 0.0056, logits within 0.19 of a range of +-20; the
# replaced torch.ao dynamic path was 3.4 times further off (TV max 0.076, mean 0.018; docs/runs/engine-speed.md).
INT8_TV_MAX, INT8_TV_MEAN, INT8_LOGIT_MAX = 0.06, 0.015, 0.5
# FBGEMM's kernels (`Kernels.fbgemm`, what pick_kernels picks on an AVX2-only CPU) round the activations too, to 7
# bits with one scale a call: on the shipped checkpoint TV max 0.067, mean 0.016, logits within 0.53, as far off
# as the torch.ao path was; its mean NLL on 16,000 tokens of held-out real songs is int8's and fp32's to 0.003
# (`python -m bench.generate --nll-songs 4`, docs/runs/bench-generate-epyc.log).
FBGEMM_TV_MAX, FBGEMM_TV_MEAN, FBGEMM_LOGIT_MAX = 0.09, 0.022, 0.75


def within_limits(kernels: MT.Kernels, tv_max: float, tv_mean: float, logit: float) -> bool:
    if kernels.fbgemm:
        return tv_max < FBGEMM_TV_MAX and tv_mean < FBGEMM_TV_MEAN and logit < FBGEMM_LOGIT_MAX
    return tv_max < INT8_TV_MAX and tv_mean < INT8_TV_MEAN and logit < INT8_LOGIT_MAX


def int8_against_fp32(engine, kernels: MT.Kernels | None = None) -> tuple[float, float, float]:
    songs = [torch.tensor(T.encode(T.load_midi(f))[:48].astype(np.int64)) for f in MIDI_FIXTURES[:2]]
    x = torch.stack(songs)
    out = []
    for dec in (FastDecoder.from_model(engine.cfg, engine.model).eval(),
                FastDecoder.from_model(engine.cfg, engine.model).eval().quantize(kernels)):
        dec.reset(2)
        steps = [dec(x[:, :32])] + [dec(x[:, i:i + 1]) for i in range(32, 44)] + [dec(x[:, 44:48])]
        out.append(torch.stack(steps, 1))
    tv = 0.5 * (out[0].softmax(-1) - out[1].softmax(-1)).abs().sum(-1)
    return float(tv.max()), float(tv.mean()), float((out[0] - out[1]).abs().max())


HAS_FBGEMM = "fbgemm" in torch.backends.quantized.supported_engines


@pytest.mark.parametrize("kernels", [MT.Kernels(4, torch.bfloat16, torch.bfloat16),  # a CPU with native bf16
                                     MT.Kernels(8, torch.float32, torch.float32),  # an AVX2-only CPU
                                     MT.Kernels(1, torch.float32, torch.bfloat16),
                                     pytest.param(MT.Kernels(8, torch.float32, torch.float32, fbgemm=True),
                                                  marks=pytest.mark.skipif(not HAS_FBGEMM, reason="no FBGEMM"))],
                         ids=["bf16", "fp32", "mixed", "fbgemm"])
def test_int8_decoder_close_to_fp32(tiny_engine, kernels):
    """Whichever kernels `pick_kernels` finds fastest on the machine, the int8 form stays as close to fp32."""
    tv_max, tv_mean, logit = int8_against_fp32(tiny_engine, kernels)
    assert within_limits(kernels, tv_max, tv_mean, logit), (tv_max, tv_mean, logit)


def test_pick_kernels_measures_this_cpu(monkeypatch):
    """The measured choice is one of the forms the decoder runs, and the decoder then uses it."""
    monkeypatch.setattr(MT, "_PICKED", None)
    k = MT.pick_kernels(dim=64, heads=2, dim_head=32, positions=64, candidates=(1, 2, 4), repeats=2)
    assert k.int8_rows in (1, 2, 4)
    assert k.dense in (torch.bfloat16, torch.float32) and k.cache in (torch.bfloat16, torch.float32)
    assert MT.pick_kernels() is k  # once per process
    dec = FastDecoder.from_model(PRESETS["tiny"], build_model(PRESETS["tiny"])).eval().quantize()
    dec.reset(1)
    assert dec.kernels is k and dec.k_cache.dtype == k.cache and dec.ff1[0].int8_rows == k.int8_rows
    if k.fbgemm:  # FBGEMM for every row count: no dequantized copy
        assert dec.ff1[0].packed is not None and dec.ff1[0].dense is None and k.cache == torch.float32
    else:
        assert dec.ff1[0].packed is None and dec.ff1[0].dense.dtype == k.dense


@pytest.mark.skipif(not HAS_SHIPPED, reason="no shipped checkpoint")
def test_int8_decoder_close_to_fp32_on_the_shipped_checkpoint():
    tv_max, tv_mean, logit = int8_against_fp32(TransformerEngine(quantize=False))
    assert within_limits(MT.pick_kernels(), tv_max, tv_mean, logit), (tv_max, tv_mean, logit)


def test_int8_is_the_cpu_default_and_calls_no_deprecated_api(tiny_run):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        eng = TransformerEngine(tiny_run / "best", device="cpu")
        assert eng.decoder.int8 and eng.decoder.quantize() is eng.decoder  # quantizing twice changes nothing
        scores = eng.generate(GenerationRequest(groups=("piano",), drums=True, bars=1, variants=2, seed=2))
    assert eng.decoder.k_cache.dtype == MT.pick_kernels().cache and len(scores) == 2


def test_decoding_keeps_at_most_its_window_in_view(tiny_engine, monkeypatch):
    """On a CPU the engine's decoder keeps at most CPU_WINDOW positions in view (its context when shorter), and
    decoding slides there: a long piece never holds more positions, and it still decodes to its end."""
    dec = tiny_engine.decoder
    assert dec.window == min(MT.CPU_WINDOW, tiny_engine.cfg.max_seq_len)
    monkeypatch.setattr(dec, "window", 48)
    held = []
    forward = type(dec).forward
    monkeypatch.setattr(type(dec), "forward", lambda self, tokens, **kw: (
        held.append(self.pos + tokens.shape[1]), forward(self, tokens, **kw))[1])
    (s,) = tiny_engine.generate(GenerationRequest(groups=("piano", "bass"), drums=True, bars=4, variants=1, seed=3))
    assert max(held) <= 48 and len(held) > 48 // 3 and s.length == 4 * V.STEPS_PER_BAR


@pytest.mark.parametrize("seed", range(12))
def test_controls_always_hold(tiny_engine, seed):
    rng = np.random.default_rng(seed)
    groups = tuple(rng.choice(V.PITCHED_GROUPS, size=int(rng.integers(1, 4)), replace=False))
    drums = bool(seed % 2)
    bars = int(rng.integers(1, 5))
    req = GenerationRequest(groups=groups, drums=drums, bars=bars, variants=2, seed=seed, temperature=1.5)
    for s in tiny_engine.generate(req):
        played = {V.GROUPS[g] for g in s.groups}
        assert played <= set(groups) | ({"drums"} if drums else set())
        assert ("drums" in played) == drums
        assert played >= set(groups)  # every requested group is heard
        assert s.length == bars * V.STEPS_PER_BAR
        if len(s.notes):
            assert (s.notes["onset"] < s.length).all()
            assert (s.notes["onset"] + s.notes["duration"] <= s.length).all()
        back = T.load_midi(T.to_midi_bytes(s))
        assert np.array_equal(back.notes, s.notes)


def test_same_request_same_midi(tiny_engine):
    req = GenerationRequest(groups=("piano", "bass"), drums=True, bars=4, variants=3, seed=42)
    a = [T.to_midi_bytes(s) for s in tiny_engine.generate(req)]
    b = [T.to_midi_bytes(s) for s in tiny_engine.generate(req)]
    assert a == b
    c = [T.to_midi_bytes(s) for s in tiny_engine.generate(GenerationRequest(groups=("piano", "bass"), drums=True,
                                                                            bars=4, variants=3, seed=43))]
    assert a != c


def test_continuation_keeps_prompt(tiny_engine):
    prompt = T.load_midi(MIDI_FIXTURES[0]).first_bars(2)
    req = GenerationRequest(groups=("piano",), drums=True, bars=3, variants=2, seed=1, prompt=prompt)
    for s in tiny_engine.generate(req):
        head = s.notes[s.notes["onset"] < prompt.length]
        assert np.array_equal(head, prompt.notes)
        tail = s.notes[s.notes["onset"] >= prompt.length]
        assert set(np.unique(tail["group"])) <= {V.GROUPS.index("piano"), V.DRUM_GROUP}
        assert s.length == prompt.length + 3 * prompt.bar_steps and s.time_signature == prompt.time_signature


def test_generation_beyond_context_slides(tiny_engine):
    # the tiny context is 96 tokens (32 notes); 16 dense bars need far more
    req = GenerationRequest(groups=("piano", "bass"), drums=True, bars=16, variants=1, seed=5, temperature=0.7)
    (s,) = tiny_engine.generate(req)
    assert tiny_engine.last_stats["tokens"] > tiny_engine.cfg.max_seq_len
    assert s.length == 16 * V.STEPS_PER_BAR


def test_invalid_requests_are_refused():
    for bad in (dict(bars=0), dict(bars=65), dict(variants=9), dict(temperature=3.0), dict(groups=("kazoo",)),
                dict(groups=(), drums=False), dict(bpm=10), dict(top_p=0.0), dict(style="polka")):
        with pytest.raises(ValueError):
            GenerationRequest(**bad).validate()


def test_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(top_k_filter(logits, 2)[0, 2:]).all() and not torch.isinf(top_k_filter(logits, 2)[0, :2]).any()
    kept = ~torch.isinf(top_p_filter(logits, 0.5))
    assert kept.tolist() == [[True, True, False, False]] or kept.tolist() == [[True, False, False, False]]
    assert (~torch.isinf(top_p_filter(logits, 1.0))).all()


def test_bf16_decoder_on_the_cpu_matches_fp32(tiny_engine):
    """The decoder runs in any dtype: its KV cache follows the weights (a bf16 decoder used to fail with
    "Expected query, key, and value to have the same dtype")."""
    dec16 = FastDecoder.from_model(tiny_engine.cfg, tiny_engine.model).to(torch.bfloat16).eval()
    dec32 = FastDecoder.from_model(tiny_engine.cfg, tiny_engine.model).eval()
    x = torch.randint(V.SHIFT_OFFSET, V.VOCAB_SIZE, (2, 30))
    for dec in (dec16, dec32):
        dec.reset(2)
    a, b = dec16(x[:, :20]), dec32(x[:, :20])
    assert dec16.k_cache.dtype == torch.bfloat16 and a.dtype == torch.bfloat16
    assert torch.allclose(a.float().softmax(-1), b.softmax(-1), atol=0.05)
    assert torch.allclose(dec16(x[:, 20:21]).float().softmax(-1), dec32(x[:, 20:21]).softmax(-1), atol=0.05)


def test_engine_generates_with_a_bf16_decoder(tiny_run):
    eng = TransformerEngine(tiny_run / "best", device="cpu", dtype=torch.bfloat16, quantize=False)
    req = GenerationRequest(groups=("piano", "bass"), drums=True, bars=2, variants=2, seed=3)
    scores = eng.generate(req)
    assert len(scores) == 2 and all(s.length == 2 * V.STEPS_PER_BAR for s in scores)
    assert all({"piano", "bass", "drums"} >= set(s.notes_per_group()) for s in scores)


def test_build_model_shapes():
    m = build_model(PRESETS["tiny"])
    x = torch.randint(0, V.VOCAB_SIZE, (3, 17))
    assert m(x).shape == (3, 17, V.VOCAB_SIZE)


def test_a_request_without_a_style_lets_the_model_pick_one():
    """Every training prefix of the corpus ends with a style token: without a requested style, a model that
    expects one after the prefix (more probability on style tokens than on shifts) is asked for it first (sampled
    among the style tokens) and the body is decoded after it; a model that expects a shift is not."""
    from types import SimpleNamespace

    from model.sampling.decode import sample_scores
    from model.sampling.filters import SamplingParams
    from model.sampling.grammar import STYLE_MASK

    class Fake:
        """Flat logits, except after the bare prefix: `first` tokens get +10."""
        cfg, device = SimpleNamespace(max_seq_len=1024), torch.device("cpu")

        def __init__(self, first):
            self.first, self.windows, self.pos = first, [], 0

        def reset(self, batch):
            self.pos = 0

        def __call__(self, tokens):
            if tokens.shape[1] > 1:
                self.windows.append(tokens.clone())
            out = torch.zeros(tokens.shape[0], V.VOCAB_SIZE)
            if self.pos == 0 and len(self.windows) == 1:
                out[:, self.first] = 10.0
            self.pos += tokens.shape[1]
            return out

    shifts = torch.arange(V.SHIFT_OFFSET, V.SHIFT_OFFSET + V.N_SHIFT)
    for style, first, picks in ((None, STYLE_MASK, True), (None, shifts, False), ("rock", STYLE_MASK, False)):
        fake = Fake(first)
        req = GenerationRequest(groups=("piano",), drums=True, bars=1, variants=3, seed=1, style=style).validate()
        scores, _ = sample_scores(fake, req, SamplingParams(seed=1))
        prefix = torch.tensor(T.control_prefix([0], True, style))
        assert (fake.windows[0] == prefix).all()  # the prefix as asked
        if picks:
            picked = fake.windows[1][:, len(prefix)]
            assert (fake.windows[1][:, :len(prefix)] == prefix).all()
            assert ((V.STYLE_OFFSET <= picked) & (picked < V.SHIFT_OFFSET)).all()  # the model's pick
        else:
            assert all((w == prefix).all() for w in fake.windows)  # decoded right after the prefix
        assert all(s.style == style and s.length == V.STEPS_PER_BAR for s in scores)  # the pick is not the result's


@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
def test_drop_moves_the_cache_as_if_encoded_there(tiny_engine, quantize):
    """A slide drops cached positions and turns the later keys back by as many positions: the first layer's keys
    and values (which read no context) are then those of encoding the kept tokens at their new places, and reading
    goes on from there."""
    def decoder():  # int8 kernels that round each row on its own (FBGEMM's scale is the whole call's)
        d = FastDecoder.from_model(tiny_engine.cfg, tiny_engine.model).eval()
        return d.quantize(MT.Kernels(8, torch.float32, torch.float32)) if quantize else d
    x = torch.randint(V.SHIFT_OFFSET, V.VOCAB_SIZE, (2, 60))
    slid, fresh = decoder(), decoder()
    slid.reset(2)
    slid(x[:, :50])
    slid.drop(4, 30)  # keep the 4-token "prefix" and the last 16 tokens
    assert slid.pos == 20
    fresh.reset(2)
    fresh(torch.cat([x[:, :4], x[:, 34:50]], 1))
    tol = 2e-2 if quantize else 1e-4

    def same_first_layer(n: int) -> None:
        for cache in ("k_cache", "v_cache"):
            a, b = getattr(slid, cache)[0, :, :, :n].float(), getattr(fresh, cache)[0, :, :, :n].float()
            assert torch.allclose(a, b, atol=tol), (cache, float((a - b).abs().max()))
    same_first_layer(20)
    slid.drop(6, 4)  # the kept positions overlap the ones they move into
    fresh.reset(2)
    fresh(torch.cat([x[:, :4], x[:, 34:36], x[:, 40:50]], 1))
    assert slid.pos == 16
    same_first_layer(16)
    assert torch.isfinite(slid(x[:, 50:52]).float()).all() and slid.pos == 18
    with pytest.raises(ValueError):
        slid.drop(10, 30)  # past what is cached
