"""Compact storage for transformer checkpoints: mixed precision, optionally with GPTQ.

The plan (measured, README "Storage"): attention is the most sensitive part, so its matrices keep 6
bits in groups of 64 inputs; the feed-forward matrices take 5 bits in groups of 64; the token
embedding and the output layer stay int8 (per row); each group has an fp16 scale and zero.  With
`--gptq` each grouped matrix is quantized column by column (Frantar et al. 2022): every column's
rounding error is spread over the columns not yet quantized, weighted by the inverse Hessian of the
layer's inputs on calibration windows of the corpus's train split, so the layer's outputs stay close.

    python -m training.quantize runs/full/best runs/full-mixed                     # round to nearest
    python -m training.quantize runs/full/best runs/full-gptq --gptq --data data/corpus --windows 64
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from model import checkpoint as ckpt
from model.transformer import TransformerEngine

from .data import FixedWindows, load_tokens

log = logging.getLogger(__name__)

# weight-name fragment -> (bits, group) or "int8"; the first that matches wins, the rest stay fp16
PLAN: tuple[tuple[str, tuple[int, int] | str], ...] = (
    ("to_logits", "int8"), ("token_emb", "int8"),
    ("to_q", (6, 64)), ("to_k", (6, 64)), ("to_v", (6, 64)), ("to_out", (6, 64)),
    (".ff.", (5, 64)),
)


def storage_plan(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, int] | str]:
    plan = {}
    for k, v in state.items():
        if v.ndim != 2 or v.numel() < ckpt.QUANT_MIN_NUMEL:
            continue
        how = next((h for frag, h in PLAN if frag in k), "fp16")
        if isinstance(how, tuple) and v.shape[1] % how[1]:
            how = "int8"
        plan[k] = how
    return plan


@torch.no_grad()
def input_hessians(model: nn.Module, batches, only: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """2 X^T X / n for the inputs X of the Linear layers of `model` named in `only` (one forward pass
    per batch)."""
    hs: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and name in only:
            def hook(m, inp, out, name=name):
                x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                hs[name] = hs.get(name, 0) + 2 * x.T @ x
                counts[name] = counts.get(name, 0) + len(x)
            hooks.append(mod.register_forward_hook(hook))
    try:
        for b in batches:
            model(b)
    finally:
        for h in hooks:
            h.remove()
    return {k: (v / counts[k]).float() for k, v in hs.items()}


def gptq(w: torch.Tensor, h: torch.Tensor, bits: int, group: int, block: int = 128,
         damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ of one weight (rows, cols) given the Hessian of its inputs (cols, cols).
    Returns (the quantized weight as floats, scale, zero) with scale and zero (rows, cols / group)."""
    w = w.detach().float().clone()
    rows, cols = w.shape
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.diag(h).mean() * torch.eye(cols)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    scale = torch.zeros(rows, cols // group, dtype=torch.float16)
    zero = torch.zeros_like(scale)
    top = 2 ** bits - 1
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros(rows, i2 - i1), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % group == 0:  # this group's range, from the columns as updated so far
                gi = col // group
                sg, zg = ckpt.grouped_params(w1[:, i:i + group][:, None, :], bits)  # (rows, 1) each
                scale[:, gi], zero[:, gi] = sg[:, 0], zg[:, 0]
                s, z = scale[:, gi].float(), zero[:, gi].float()
            qc = ((w1[:, i] - z) / s).round().clamp(0, top) * s + z
            q[:, col] = qc
            e = (w1[:, i] - qc) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q, scale, zero


def quantize_checkpoint(src, dst, data=None, windows: int = 64, context: int = 512, batch: int = 8,
                        force: bool = False) -> dict:
    """Store `src` in `dst` with the mixed plan; with `data`, GPTQ on its train split's windows."""
    if Path(dst).exists() and not force:
        raise ValueError(f"{dst} exists; pass --force to overwrite it")
    t0 = time.perf_counter()
    eng = TransformerEngine(src, quantize=False)
    state = {k: v.clone() for k, v in eng.model.state_dict().items()}
    plan = storage_plan(state)
    params, how = {}, "round to nearest"
    if data is not None:
        ds = FixedWindows(load_tokens(data, "train"), context + 1, max_windows=windows)
        batches = [torch.stack([ds[j][:-1] for j in range(i, min(i + batch, len(ds)))])
                   for i in range(0, len(ds), batch)]
        grouped = tuple(k[: -len(".weight")] for k, h in plan.items() if isinstance(h, tuple))
        for name, h in input_hessians(eng.model, batches, only=grouped).items():
            key = name + ".weight"
            bits, group = plan[key]
            state[key], s, z = gptq(state[key], h, bits, group)
            params[key] = (s, z)
            log.info("GPTQ %s %s", key, tuple(s.shape))
        how = f"GPTQ on {len(ds)} train windows of {context + 1} tokens from {data}"
    config = {k: v for k, v in eng.config.items() if k != "dtype"}
    config["meta"] = {**config.get("meta", {}), "storage": {
        "plan": {frag: list(h) if isinstance(h, tuple) else h for frag, h in PLAN}, "method": how,
        "source": str(src)}}
    ckpt.save_checkpoint(dst, state, config, dtype="mixed", plan=plan, params=params)
    return {"checkpoint": str(dst), "bytes": ckpt.folder_bytes(dst), "method": how,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a transformer checkpoint (e.g. a run's best/)")
    p.add_argument("dst", help="a new folder (under runs/; shipped checkpoints are replaced by `python -m "
                               "model.checkpoint convert --replace-shipped` once measured)")
    p.add_argument("--gptq", action="store_true", help="GPTQ instead of rounding to nearest")
    p.add_argument("--data", default="data/corpus", help="with --gptq: the corpus whose train split calibrates")
    p.add_argument("--windows", type=int, default=64, help="with --gptq: calibration windows")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--force", action="store_true", help="overwrite DST")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if ckpt.is_shipped(args.dst):
            raise ValueError(f"{args.dst} is a shipped checkpoint: quantize into runs/, measure, then convert")
        result = quantize_checkpoint(args.src, args.dst, args.data if args.gptq else None, args.windows,
                                     args.context, force=args.force)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
