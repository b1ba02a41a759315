"""The main engine: an x-transformers decoder over the 3-token note vocabulary.

Training uses the stock x-transformers `TransformerWrapper` + `Decoder` (attn_flash=True: PyTorch
SDPA, which runs FlashAttention kernels on CUDA).  Generation uses `FastDecoder`, a lean incremental
forward over the same weights with a static KV cache (fewer Python operations per token, optional
int8 dynamic quantization); `tests/model` checks that both give the same logits.
"""

from __future__ import annotations

import logging
import warnings
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
class FastDecoder(nn.Module):
    """Incremental forward over TransformerWrapper weights with a static KV cache.

    cache k, v: (depth, B, heads, max_seq_len, dim_head), preallocated per batch size.
    """

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

    @classmethod
    def from_model(cls, cfg: TransformerConfig, model: TransformerWrapper) -> "FastDecoder":
        offset = float(getattr(model.attn_layers.final_norm, "unit_offset", False))
        return cls(cfg, model.state_dict(), norm_offset=offset)

    def quantize(self) -> "FastDecoder":
        """int8 dynamic quantization of the Linear layers (CPU)."""
        with warnings.catch_warnings():  # torch marks the quantized tensor API deprecated; it still runs
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(self, {nn.Linear}, dtype=torch.qint8)

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
        """Empty the KV cache for `batch` streams (kept in the weights' dtype and device)."""
        c = self.cfg
        shape = (c.depth, batch, c.heads, c.max_seq_len, c.dim_head)
        w = self.emb.weight
        if self.k_cache is None or self.k_cache.shape != shape or self.k_cache.dtype != w.dtype \
                or self.k_cache.device != w.device:
            self.k_cache = torch.zeros(shape, device=w.device, dtype=w.dtype)
            self.v_cache = torch.zeros(shape, device=w.device, dtype=w.dtype)
        self.pos = 0

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) appended at the cache position; returns logits of the last position (B, V)."""
        c = self.cfg
        B, T = tokens.shape
        start = self.pos
        if start + T > c.max_seq_len:
            raise ValueError("KV cache is full; slide the window first")
        x = self.emb(tokens.to(self.device))  # (B, T, D)
        end = start + T
        cos, sin = self.cos[start:end], self.sin[start:end]  # (T, 1, 1, Dh)
        for i in range(c.depth):
            h = F.layer_norm(x, (c.dim,)) * self.g1[i]
            y = self.qkv[i](h).view(B, T, 5, c.heads, c.dim_head)  # q, k, v, rot(q), rot(k)
            qk = y[:, :, :2] * cos + y[:, :, 3:] * sin  # rotary: (B, T, 2, H, Dh)
            q, k = qk.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh)
            v = y[:, :, 2].transpose(1, 2)
            self.k_cache[i, :, :, start:end] = k
            self.v_cache[i, :, :, start:end] = v
            kk, vv = self.k_cache[i, :, :, :end], self.v_cache[i, :, :, :end]
            if T == 1:  # one query: two batched matmuls (in a quick CPU check, faster than SDPA's kernel)
                a = torch.softmax((q @ kk.transpose(-1, -2)) * self.scale, dim=-1) @ vv
            elif start == 0:
                a = F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            else:
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(start)
                a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
            x = x + self.out[i](a.transpose(1, 2).reshape(B, T, -1))
            h = F.layer_norm(x, (c.dim,)) * self.g2[i]
            x = x + self.ff2[i](F.gelu(self.ff1[i](h)))
        self.pos = end
        x = F.layer_norm(x[:, -1], (c.dim,)) * self.gf
        return self.to_logits(x)


# ---- the engine -----------------------------------------------------------------------------
@register
class TransformerEngine(Engine):
    name = "transformer"
    description = ("12-layer autoregressive transformer over a 3-token note scheme (onset shift, duration and "
                   "velocity, instrument and pitch); instrument and drum controls always hold "
                   "(grammar-constrained decoding).")
    controls = frozenset({"groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed",
                          "bpm", "style", "prompt", "key", "chords", "edit"})
    styles = V.STYLES
    config_class = TransformerConfig
    build = staticmethod(build_model)

    def __init__(self, source: str | Path | None = None, quantize: bool | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """On CUDA (used when available) the decoder runs in bf16; on the CPU in fp32 with int8 dynamic
        quantization of its matmuls (`quantize`, default on for the CPU)."""
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.quantize = (self.device.type == "cpu" and self.dtype == torch.float32) if quantize is None else quantize
        super().__init__(source)

    def load(self, state: dict, config: dict) -> None:
        super().load(state, config)
        dec = FastDecoder.from_model(self.cfg, self.model).eval()
        if self.quantize:
            self.decoder = dec.quantize()
        else:
            self.decoder = dec.to(self.device, self.dtype)

    def _generate(self, req: GenerationRequest, progress: Callable[[float], None] | None) -> tuple[list[Score], dict]:
        params = SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed)
        scores, n_tokens = sample_scores(self.decoder, req, params, progress=progress)
        return scores, {"count": n_tokens}


__all__ = ["TransformerConfig", "PRESETS", "build_model", "FastDecoder", "TransformerEngine"]
