"""The main engine: an x-transformers decoder over the 3-token note vocabulary.

Training uses the stock x-transformers `TransformerWrapper` + `Decoder` (attn_flash=True: PyTorch
SDPA, which runs FlashAttention kernels on CUDA).  Generation uses `FastDecoder`, a lean incremental
forward over the same weights with a static KV cache (fewer Python operations per token, optional
int8 weights: `FastDecoder.quantize`); `tests/model` checks that both give the same logits, and the int8 form's
distance from fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from x_transformers import Decoder as XDecoder
from x_transformers import TransformerWrapper

from tokenizer import Score
from tokenizer import vocab as V

from . import checkpoint as ckpt
from .engine import Engine, GenerationRequest, register
from .sampling.decode import sample_scores
from .sampling.filters import SamplingParams
from .sampling.loop import make_loops

log = logging.getLogger(__name__)


@dataclass
class TransformerConfig(ckpt.Config):
    vocab_size: int = V.VOCAB_SIZE
    dim: int = 512  # reference: 512
    depth: int = 12  # reference: 12 layers
    heads: int = 10  # reference: 10 heads
    dim_head: int = 64
    max_seq_len: int = 1024  # reference trained 512 (+1); longer is better
    dropout: float = 0.0

    def n_params(self) -> int:
        inner = self.heads * self.dim_head
        per_layer = 4 * self.dim * inner + 8 * self.dim * self.dim + 5 * self.dim + 2 * self.dim
        return self.depth * per_layer + 2 * self.vocab_size * self.dim + self.dim


PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(dim=64, depth=2, heads=2, dim_head=64, max_seq_len=96),
    "cpu": TransformerConfig(dim=256, depth=12, heads=4, dim_head=64, max_seq_len=512),
    "full": TransformerConfig(dim=512, depth=12, heads=10, dim_head=64, max_seq_len=1024),
}


def build_model(cfg: TransformerConfig) -> TransformerWrapper:
    return TransformerWrapper(
        num_tokens=cfg.vocab_size,
        max_seq_len=cfg.max_seq_len,
        use_abs_pos_emb=False,  # rotary: relative positions, so sliding windows stay in distribution
        attn_layers=XDecoder(
            dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, attn_dim_head=cfg.dim_head,
            attn_flash=True, rotary_pos_emb=True, attn_dropout=cfg.dropout, ff_dropout=cfg.dropout,
        ),
    )


# ---- fast incremental decoder ---------------------------------------------------------------
@dataclass
class Kernels:
    """How the int8 form computes (`FastDecoder.quantize` takes what `pick_kernels` measures on this CPU; the
    defaults are the choice that was fixed before it, right for a CPU with bf16 units).

    int8_rows: up to this many rows the int8 kernel, more a matmul of the dequantized weights.
    `torch._weight_int8pack_mm` reads the weights once per row, so its time grows with the rows; a dense matmul
    costs about the same from 1 to 16 rows.
    dense: the dequantized weights' dtype. bf16 where the CPU multiplies bf16 natively (AMX on the Xeon: the
    crossover was 4 rows there), fp32 where it does not (an AVX2-only EPYC: 8-16 int8 rows, then fp32; its bf16
    matmul cost 3 times the fp32 one at 24 rows).
    cache: the KV cache's and attention's dtype. bf16 reads half the bytes; without native bf16, SDPA on a bf16
    cache cost 7 times the fp32 one (434 us against 63 us for one query over 500 positions on the EPYC).
    fbgemm: instead of both, FBGEMM's int8 x int8 kernels for every row count (`torch.ops.quantized.
    linear_dynamic`: each call quantizes its fp32 rows to 7-bit unsigned integers with one scale, multiplies with
    the int8 weights in int32 and scales back), activations fp32.  On the AVX2-only EPYC a 512 x 2048 layer took
    48 us for one row against 85 us (`_weight_int8pack_mm`) and half the fp32 matmul's time from 8 to 512 rows
    (one-off micro-timings);
    its rounding is coarser (the activations' scale), measured on real songs by `python -m bench.generate`."""
    int8_rows: int = 4
    dense: torch.dtype = torch.bfloat16
    cache: torch.dtype = torch.bfloat16
    fbgemm: bool = False

    @property
    def act(self) -> torch.dtype:
        """The dtype of the activations into the matmuls."""
        return torch.float32 if self.fbgemm else torch.bfloat16


_PICKED: Kernels | None = None  # pick_kernels' measurement, once per process
# The row counts whose times `pick_kernels` sums to choose FBGEMM: a decoding step (one token), a run of a few
# kept tokens, a long run.  It once required FBGEMM to win at one row and at the most rows; at one row the two
# were within 15% of each other on the AVX2-only EPYC (36-41 us against 42 us), so one process in six picked the
# other kernels there.  That one decoded D_ROMERO's first 100 bars + brass in 39.7 s against 32.4 s, into other
# notes (the kernels round differently): a seed's music depended on the load at start-up.  Summed over these,
# FBGEMM takes about half the other kernels' time on the EPYC.
DECODING_ROWS = (1, 4, 32)


def int8_matmul(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                dense: torch.Tensor | None, int8_rows: int, packed=None) -> torch.Tensor:
    """x (rows, in) bf16 @ the int8 `weight` (out, in) with its per-row bf16 `scale`, + `bias`: bf16 (rows, out);
    more than `int8_rows` rows (a run of kept notes, a prefill) go through `dense`, the dequantized weight.  With
    `packed` (FBGEMM's prepacked weight and bias, `Kernels.fbgemm`): x fp32, every row count through FBGEMM, fp32
    out."""
    if packed is not None:
        return torch.ops.quantized.linear_dynamic(x, packed, True)
    if x.shape[0] <= int8_rows:
        y = torch._weight_int8pack_mm(x, weight, scale)
    else:
        y = F.linear(x.to(dense.dtype), dense).to(torch.bfloat16)
    return y if bias is None else y + bias


def pick_kernels(dim: int = 512, heads: int = 10, dim_head: int = 64, positions: int = 512,
                 candidates=(1, 2, 4, 8, 16, 32), repeats: int = 5) -> Kernels:
    """Once per process: measure this CPU (best of `repeats`) on the shipped model's shapes, a `dim` x 4 `dim`
    feed-forward layer and one query's attention over `positions`: the dense dtype (bf16 or fp32, the faster at
    the most rows), the most rows at which the int8 kernel is still as fast as that dense matmul, the
    attention's dtype (the faster SDPA for one query), and whether FBGEMM (with an fp32 cache) beats that choice
    over `DECODING_ROWS`."""
    import time

    global _PICKED
    if _PICKED is not None:
        return _PICKED

    def best(fn, *args) -> float:
        fn(*args)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
        return min(times)

    with torch.inference_mode():
        lin = nn.Linear(dim, 4 * dim)
        weight, scale = Int8Linear.codes(lin.weight)
        dense = {dt: (weight.float() * scale.float()[:, None]).to(dt) for dt in (torch.bfloat16, torch.float32)}
        x = torch.randn(max(candidates), dim)
        dt = min(dense, key=lambda dt: best(F.linear, x.to(dt), dense[dt]))
        rows = candidates[0]
        for m in candidates:
            if best(torch._weight_int8pack_mm, x[:m].to(torch.bfloat16), weight, scale) > best(F.linear, x[:m].to(dt), dense[dt]):
                break
            rows = m
        qkv = torch.randn(3, 1, heads, positions, dim_head)
        cache = min((torch.bfloat16, torch.float32), key=lambda dt: best(
            F.scaled_dot_product_attention, qkv[0, :, :, :1].to(dt), qkv[1].to(dt), qkv[2].to(dt)))
        picked = Kernels(rows, dt, cache)
        packed = Int8Linear.prepack(weight, scale, lin.bias.detach())
        if packed is not None:  # FBGEMM where it is faster over the row counts of `DECODING_ROWS`, summed
            now = sum(best(int8_matmul, x[:m].to(torch.bfloat16), weight, scale, None, dense[dt], rows)
                      for m in DECODING_ROWS)
            fb = sum(best(int8_matmul, x[:m], weight, scale, None, None, rows, packed) for m in DECODING_ROWS)
            if fb < now:
                picked = Kernels(rows, dt, torch.float32, fbgemm=True)
    _PICKED = picked
    log.info("int8 decoder kernels here: %s", _PICKED)
    return _PICKED


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights, one scale per output row (symmetric: the row's max |w| maps to 127),
    computing as its `Kernels` say (2-D activations, rows contiguous): bf16 activations through
    `torch._weight_int8pack_mm` on a few rows (a decoding step, memory-bound: a quarter of the fp32 weights'
    bytes) and a matmul of the dequantized weights (`dense`, bf16 or fp32) on more (a run of kept notes, a
    prefill), returning bf16; or, with `Kernels.fbgemm`, fp32 activations through FBGEMM (`packed`) on every row
    count, returning fp32."""

    def __init__(self, lin: nn.Linear, rows: int | None = None, kernels: Kernels | None = None):
        """rows: keep only the first `rows` outputs of `lin`; kernels: when to use the int8 kernel, and the dense
        copy's dtype (default: `Kernels()`)."""
        super().__init__()
        kernels = kernels or Kernels()
        self.int8_rows = kernels.int8_rows
        weight, scale = self.codes(lin.weight[:rows])
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().to(torch.bfloat16))
        self.packed = self.prepack(weight, scale, None if lin.bias is None else lin.bias.detach()) \
            if kernels.fbgemm else None
        if kernels.fbgemm and self.packed is None:
            raise RuntimeError("this PyTorch has no FBGEMM kernels (torch.backends.quantized.supported_engines)")
        dense = None if kernels.fbgemm else (weight.float() * scale.float()[:, None]).to(kernels.dense)
        self.register_buffer("dense", dense)

    @staticmethod
    def prepack(weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        """FBGEMM's packed form of the int8 codes with their per-row scales and the fp32 bias (the same numbers
        `_weight_int8pack_mm` reads), or None where this PyTorch has no FBGEMM."""
        if "fbgemm" not in torch.backends.quantized.supported_engines or weight.device.type != "cpu":
            return None
        import warnings

        with warnings.catch_warnings():  # quantized tensors are deprecated in PyTorch, their kernels are not gone
            warnings.simplefilter("ignore")
            q = torch._make_per_channel_quantized_tensor(weight, scale.double(), torch.zeros(len(scale),
                                                         dtype=torch.long), 0)
            return torch.ops.quantized.linear_prepack(q, None if bias is None else bias.float())

    @staticmethod
    def codes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(out, in) weights -> (int8 codes, per-row bf16 scale).  The scale is rounded to bf16 first (the kernel
        takes bf16 scales), the codes are rounded against it."""
        w = w.detach().float()
        scale = (w.abs().amax(1).clamp(min=1e-12) / 127).to(torch.bfloat16)
        return torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_matmul(x, *self.tensors)

    @property
    def tensors(self) -> tuple:
        """(weight, scale, bias, dense, int8_rows, packed): `int8_matmul`'s arguments after x."""
        return self.weight, self.scale, self.bias, self.dense, self.int8_rows, self.packed


class FastDecoder(nn.Module):
    """Incremental forward over TransformerWrapper weights with a static KV cache.

    cache k, v: (depth, B, heads, max_seq_len, dim_head), preallocated per batch size.  `quantize()` turns the
    decoder into its int8 form (the CPU default): int8 weights (`Int8Linear`), bf16 activations into the
    matmuls, a KV cache (bf16, or fp32 on a CPU without native bf16: `Kernels`) read by PyTorch's SDPA kernel;
    the residual stream, layer norms and logits stay fp32.
    """

    computes_rows = True  # forward(tokens, rows=(lo, hi)): the logits of some tokens only (`Window.logits`)

    def __init__(self, cfg: TransformerConfig, state: dict[str, torch.Tensor], norm_offset: float = 0.0):
        """norm_offset: x-transformers' LayerNorm multiplies by (gamma + 1) when unit_offset is on."""
        super().__init__()
        self.cfg = cfg
        D, H, Dh = cfg.dim, cfg.heads, cfg.dim_head
        inner = H * Dh
        self.emb = nn.Embedding(cfg.vocab_size, D)
        self.emb.weight.data.copy_(state["token_emb.emb.weight"])
        self.qkv = nn.ModuleList()
        self.out = nn.ModuleList()
        self.ff1 = nn.ModuleList()
        self.ff2 = nn.ModuleList()
        g1, g2 = [], []
        for i in range(cfg.depth):
            a, f = f"attn_layers.layers.{2 * i}", f"attn_layers.layers.{2 * i + 1}"
            # q, k, v and the rotated-half q, k in one matmul: rope becomes two multiplies and an add
            wq, wk, wv = (state[f"{a}.1.to_{n}.weight"] for n in "qkv")
            qkv = nn.Linear(D, 5 * inner, bias=False)
            qkv.weight.data.copy_(torch.cat([wq, wk, wv, self._rotate_rows(wq, H, Dh), self._rotate_rows(wk, H, Dh)]))
            out = nn.Linear(inner, D, bias=False)
            out.weight.data.copy_(state[f"{a}.1.to_out.weight"])
            ff1 = nn.Linear(D, 4 * D)
            ff1.weight.data.copy_(state[f"{f}.1.ff.0.0.weight"])
            ff1.bias.data.copy_(state[f"{f}.1.ff.0.0.bias"])
            ff2 = nn.Linear(4 * D, D)
            ff2.weight.data.copy_(state[f"{f}.1.ff.2.weight"])
            ff2.bias.data.copy_(state[f"{f}.1.ff.2.bias"])
            self.qkv.append(qkv), self.out.append(out), self.ff1.append(ff1), self.ff2.append(ff2)
            g1.append(state[f"{a}.0.0.gamma"]), g2.append(state[f"{f}.0.0.gamma"])
        self.register_buffer("g1", torch.stack(g1) + norm_offset)  # (depth, D)
        self.register_buffer("g2", torch.stack(g2) + norm_offset)
        self.register_buffer("gf", state["attn_layers.final_norm.gamma"] + norm_offset)
        self.to_logits = nn.Linear(D, cfg.vocab_size, bias=False)
        self.to_logits.weight.data.copy_(state["to_logits.weight"])
        # rotary on the first dim_head // 2 dims of each head, interleaved pairs (x-transformers layout)
        rot = Dh // 2
        inv_freq = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
        t = torch.arange(cfg.max_seq_len).float()
        freqs = torch.repeat_interleave(torch.outer(t, inv_freq), 2, dim=-1)  # (T, rot)
        pad = Dh - rot  # dims past the rotary ones pass through: cos 1, sin 0
        self.register_buffer("cos", torch.cat([freqs.cos(), torch.ones(len(t), pad)], -1)[:, None, None])  # (T,1,1,Dh)
        self.register_buffer("sin", torch.cat([freqs.sin(), torch.zeros(len(t), pad)], -1)[:, None, None])
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None
        self.pos = 0
        self.scale = Dh ** -0.5
        self.int8 = False
        self.kernels: Kernels | None = None  # the int8 form's (`quantize`)
        self.window = cfg.max_seq_len  # the positions decoding keeps in view before the window slides (`Window`)

    @classmethod
    def from_model(cls, cfg: TransformerConfig, model: TransformerWrapper) -> "FastDecoder":
        offset = float(getattr(model.attn_layers.final_norm, "unit_offset", False))
        return cls(cfg, model.state_dict(), norm_offset=offset)

    def quantize(self, kernels: Kernels | None = None) -> "FastDecoder":
        """This decoder with int8 weights (`Int8Linear`) in its layers, bf16 activations into them (fp32 into
        FBGEMM's), computing as
        `kernels` says (default: what `pick_kernels` finds fastest on this CPU; the engine's default there).  The q, k, v matmul drops the rotated-half rows (rope turns the
        bf16 q and k themselves: two fifths fewer weights to read); the output layer keeps fp32 weights (bf16
        logits would round by up to 1/16 nat)."""
        if self.int8:
            return self
        c = self.cfg
        inner = c.heads * c.dim_head
        self.kernels = kernels or (pick_kernels() if self.device.type == "cpu" else Kernels())
        for layers in (self.qkv, self.out, self.ff1, self.ff2):
            for i, lin in enumerate(layers):
                layers[i] = Int8Linear(lin, rows=3 * inner if layers is self.qkv else None, kernels=self.kernels)
        # rotate_half as a gather: dims (2i, 2i + 1) take (-x[2i + 1], x[2i]); the sign goes into sin
        rot = c.dim_head // 2
        perm = torch.arange(c.dim_head)
        perm[0:rot:2], perm[1:rot:2] = torch.arange(1, rot, 2), torch.arange(0, rot, 2)
        sign = torch.ones(c.dim_head)
        sign[0:rot:2] = -1
        self.register_buffer("rot_perm", perm.to(self.cos.device))
        self.register_buffer("cos_act", self.cos.to(self.kernels.act))
        self.register_buffer("sin_act", (self.sin * sign.to(self.sin.device)).to(self.kernels.act))
        self.int8 = True
        self.k_cache = self.v_cache = None
        return self

    @staticmethod
    def _rotate_rows(w: torch.Tensor, heads: int, dim_head: int) -> torch.Tensor:
        """Rows of W such that (W' h) = rotate_half(W h) on each head's rotary dims, 0 elsewhere.
        x-transformers pairs dims (2i, 2i+1): rotate_half gives (-x[2i+1], x[2i])."""
        rot = dim_head // 2
        w = w.view(heads, dim_head, -1)
        out = torch.zeros_like(w)
        out[:, 0:rot:2] = -w[:, 1:rot:2]
        out[:, 1:rot:2] = w[:, 0:rot:2]
        return out.reshape(heads * dim_head, -1)

    @property
    def device(self) -> torch.device:
        return self.emb.weight.device

    def reset(self, batch: int) -> None:
        """Empty the KV cache for `batch` streams (kept in the weights' dtype and device; when int8, in
        `kernels.cache`)."""
        c = self.cfg
        shape = (c.depth, batch, c.heads, c.max_seq_len, c.dim_head)
        w = self.emb.weight
        dtype = self.kernels.cache if self.int8 else w.dtype
        if self.k_cache is None or self.k_cache.shape != shape or self.k_cache.dtype != dtype \
                or self.k_cache.device != w.device:
            self.k_cache = torch.zeros(shape, device=w.device, dtype=dtype)
            self.v_cache = torch.zeros(shape, device=w.device, dtype=dtype)
        # per layer: its linear layers (int8: their tensors), norm gains and cache (plain lists: no module
        # lookups per token)
        linears = [[m.tensors if self.int8 else m for m in layers] for layers in (self.qkv, self.out, self.ff1, self.ff2)]
        self._layers = list(zip(*linears, self.g1, self.g2, self.k_cache.unbind(0), self.v_cache.unbind(0)))
        self._rot_perm = self.rot_perm if self.int8 else None
        self.pos = 0

    @torch.inference_mode()
    def drop(self, start: int, count: int) -> None:
        """Forget the `count` cached positions from `start`: the later ones move down by `count`, their keys turned
        back by as many positions (rotary: the key at position p is R(p) k, and R(-count) R(p) = R(p - count)), so
        reading goes on as if they had been encoded there, each with the context it was read in.  A window that
        slides this way re-encodes nothing."""
        end = self.pos
        if count <= 0 or start + count > end:
            raise ValueError(f"cannot drop positions {start}-{start + count} of {end}")
        rot = self.cfg.dim_head // 2
        cos, sin = self.cos[count].float(), self.sin[count].float()  # (1, 1, Dh): R(count); R(-count) flips sin
        for cache in (self.k_cache, self.v_cache):
            moved = cache[:, :, :, start + count:end].to(torch.float32, copy=True)  # the ranges may overlap
            if cache is self.k_cache:
                half = torch.zeros_like(moved)  # rotate_half on interleaved pairs: (-x[2i + 1], x[2i])
                half[..., 0:rot:2], half[..., 1:rot:2] = -moved[..., 1:rot:2], moved[..., 0:rot:2]
                moved = moved * cos - half * sin
            cache[:, :, :, start:end - count] = moved.to(cache.dtype)
        self.pos = end - count

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, every: bool = False, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """tokens (B, T) appended at the cache position; returns logits of the last position (B, V), or with
        `every` of each position (B, T, V): what a scoring pass reads.  `rows` (lo, hi): only the logits of
        tokens lo..hi-1 are computed, the others are -inf (sampling at a slot whose tokens are those: the output
        layer is the largest matmul of a one-token call)."""
        c = self.cfg
        B, T = tokens.shape
        start = self.pos
        if start + T > c.max_seq_len:
            raise ValueError("KV cache is full; slide the window first")
        x = self.emb(tokens.to(self.device))  # (B, T, D)
        end = start + T
        cos, sin = (self.cos_act, self.sin_act) if self.int8 else (self.cos, self.sin)
        cos, sin = cos[start:end], sin[start:end]  # (T, 1, 1, Dh)
        # several new tokens after cached ones: each sees the cache and the new ones up to itself (one mask for
        # every layer)
        mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(start) if T > 1 and start > 0 else None
        layer = self._layer_int8 if self.int8 else self._layer
        for weights in self._layers:
            x = layer(x, weights, cos, sin, start, end, mask)
        self.pos = end
        x = F.layer_norm(x if every else x[:, -1], (c.dim,)) * self.gf
        if rows is None:
            return self.to_logits(x)
        lo, hi = rows
        logits = torch.full((*x.shape[:-1], c.vocab_size), float("-inf"), device=x.device, dtype=x.dtype)
        logits[..., lo:hi] = F.linear(x, self.to_logits.weight[lo:hi])
        return logits

    def _layer(self, x, weights, cos, sin, start: int, end: int, mask: torch.Tensor | None) -> torch.Tensor:
        """One layer in the weights' dtype: the reference arithmetic (the seeded outputs are written with it)."""
        c = self.cfg
        B, T, _ = x.shape
        qkv, out, ff1, ff2, g1, g2, k_cache, v_cache = weights
        h = F.layer_norm(x, (c.dim,)) * g1
        y = qkv.forward(h).view(B, T, 5, c.heads, c.dim_head)  # q, k, v, rot(q), rot(k)
        qk = y[:, :, :2] * cos + y[:, :, 3:] * sin  # rotary: (B, T, 2, H, Dh)
        q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh)
        v = y[:, :, 2].transpose(1, 2)
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        kk, vv = k_cache[:, :, :end], v_cache[:, :, :end]
        if T == 1:  # one query: two batched matmuls (in a quick CPU check, faster than SDPA's kernel)
            a = torch.softmax((q @ kk.transpose(-1, -2)) * self.scale, dim=-1) @ vv
        else:  # a prefill (mask None: causal) or new tokens after cached ones (`forward`'s mask)
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, is_causal=mask is None)
        x = x + out.forward(a.transpose(1, 2).reshape(B, T, -1))
        h = F.layer_norm(x, (c.dim,)) * g2
        return x + ff2.forward(F.gelu(ff1.forward(h)))

    def _layer_int8(self, x, weights, cos, sin, start: int, end: int, mask: torch.Tensor | None) -> torch.Tensor:
        """One layer of the int8 form on x (B, T, D) kept as (B * T, D) rows: fp32 residual and norms, bf16 into
        the int8 matmuls (fp32 into FBGEMM's), attention (SDPA for every query count) in the cache's dtype (`kernels.cache`)."""
        c = self.cfg
        B, T, D = x.shape
        act = self.kernels.act  # bf16, or fp32 into FBGEMM
        qkv, out, ff1, ff2, g1, g2, k_cache, v_cache = weights
        x = x.view(B * T, D)
        y = int8_matmul(torch.layer_norm(x, (D,), g1).to(act), *qkv).view(B, T, 3, c.heads, c.dim_head)  # q, k, v
        qk = y[:, :, :2]
        q, k = (qk * cos + qk.index_select(-1, self._rot_perm) * sin).permute(2, 0, 3, 1, 4)  # rotary (sin signed)
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = y[:, :, 2].transpose(1, 2)
        kk, vv = k_cache[:, :, :end], v_cache[:, :, :end]
        q = q.to(kk.dtype)
        a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, is_causal=mask is None and T > 1)
        x = x + int8_matmul(a.transpose(1, 2).reshape(B * T, -1).to(act), *out)
        x = x + int8_matmul(F.gelu(int8_matmul(torch.layer_norm(x, (D,), g2).to(act), *ff1)), *ff2)
        return x.view(B, T, D)


# ---- the engine -----------------------------------------------------------------------------
# On a CPU, decoding keeps at most this many positions in view: attention reads the whole KV cache for every token
# (one token's attention over 1,024 fp32 positions cost 0.17 ms a layer on the EPYC, 2.5 times that for a few
# tokens).
# The cost in fit, `python -m bench.slide --windows 1024 768 512 --tokens 5000` (docs/runs/bench-slide-windows.log):
# 2.9819 nats a token against 2.9714 (0.35%) on 3 POP909 realtest songs, an openmsx realdev song and D_ROMERO
# (the last in the training split).
CPU_WINDOW = 512


@register
class TransformerEngine(Engine):
    name = "transformer"
    description = ("12-layer autoregressive transformer over a 3-token note scheme (onset shift, duration and "
                   "velocity, instrument and pitch); instrument and drum controls always hold "
                   "(grammar-constrained decoding).")
    controls = frozenset({"groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed",
                          "bpm", "style", "prompt", "key", "chords", "edit", "loop"})
    styles = V.STYLES
    config_class = TransformerConfig
    build = staticmethod(build_model)

    def __init__(self, source: str | Path | None = None, quantize: bool | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """On CUDA (used when available) the decoder runs in bf16; on the CPU in its int8 form (`quantize`,
        default on for the CPU: int8 weights, bf16 activations, the KV cache as `pick_kernels` finds fastest here, `FastDecoder.quantize`), else fp32."""
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.quantize = (self.device.type == "cpu" and self.dtype == torch.float32) if quantize is None else quantize
        super().__init__(source)

    def load(self, state: dict, config: dict) -> None:
        super().load(state, config)
        dec = FastDecoder.from_model(self.cfg, self.model).eval()
        if self.device.type == "cpu":
            dec.window = min(CPU_WINDOW, self.cfg.max_seq_len)
        if self.quantize:
            self.decoder = dec.quantize()
        else:
            self.decoder = dec.to(self.device, self.dtype)

    def _generate(self, req: GenerationRequest, progress: Callable[[float], None] | None) -> tuple[list[Score], dict]:
        params = SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed)
        scores, n_tokens = sample_scores(self.decoder, req, params, progress=progress)
        if not req.loop:
            return scores, {"count": n_tokens}
        scores, n_loop, gains = make_loops(self.decoder, self.model, req, params, scores)  # model.sampling.loop
        return scores, {"count": n_tokens + n_loop, "loop_seam_gain_nats": gains}


__all__ = ["TransformerConfig", "PRESETS", "build_model", "FastDecoder", "TransformerEngine"]
