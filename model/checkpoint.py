"""Checkpoints for every engine: safetensors weights + a JSON config, never pickles.

A checkpoint is a folder:
    config.json        {"engine": ..., "model": {config dataclass}, "meta": {training, metrics}}
    model.safetensors  weights: fp32, fp16, int8 with per-output-channel scales (a 2-D weight W is
                       stored as W.int8 (int8) and W.scale (fp32, one per row)), or b-bit codes in
                       groups (W.q4 / W.q5 / W.q6: the codes packed densely; W.scale and W.zero: fp16,
                       one per group of inputs of a row; w = code * scale + zero).  A checkpoint may
                       mix them per tensor (dtype "mixed", chosen by training/quantize.py).
Writes are atomic (temp files, then rename), so a killed job never leaves half a checkpoint.
Sources: a local folder, or a Hugging Face Hub repo id ("owner/name", downloaded once into the cache).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INT8_SUFFIX, SCALE_SUFFIX = ".int8", ".scale"
ZERO_SUFFIX = ".zero"
GROUPED_KEY = re.compile(r"\.q(\d)$")  # W.q4, W.q5, W.q6: grouped codes of that many bits
INT4_GROUP = 32  # inputs per group of `--dtype int4` (each group has its own fp16 scale and zero)
DTYPES = ("fp32", "fp16", "int8", "int4")  # and "mixed" (per tensor), written by training/quantize.py
QUANT_MIN_NUMEL = 4096  # smaller matrices (and all vectors) stay fp16
# Shipped checkpoints; MIDI_BANGERS_CHECKPOINTS points every engine at another root (tests, a Hub cache).
CHECKPOINT_ROOT = Path(os.environ.get("MIDI_BANGERS_CHECKPOINTS")
                       or Path(__file__).resolve().parent.parent / "checkpoints")


class Config:
    """Base of every model config dataclass: rebuilt from the JSON a checkpoint stores (unknown keys,
    e.g. from a newer version, are ignored)."""

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row (output channel) int8: w ~= q * scale[:, None]."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (rows,)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def grouped_params(g: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16 (scale, zero) for groups g (..., group): the range of each group clipped to whichever of a few
    shrink factors gives the least squared error of w ~= code * scale + zero, code in 0..2**bits - 1."""
    top = 2 ** bits - 1
    lo, hi = g.amin(-1), g.amax(-1)
    mid = (lo + hi) / 2
    best_err = torch.full(lo.shape, float("inf"))
    best_scale, best_zero = lo.half(), lo.half()
    for shrink in (1.0, 0.95, 0.9, 0.85, 0.8, 0.75):
        scale = ((hi - lo) * shrink / top).clamp_min(1e-8).half()
        zero = (mid + (lo - mid) * shrink).half()
        err = ((grouped_codes(g, scale, zero, bits) * scale.float()[..., None] + zero.float()[..., None] - g) ** 2).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale, best_zero = torch.where(better, scale, best_scale), torch.where(better, zero, best_zero)
    return best_scale, best_zero


def grouped_codes(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes 0..2**bits - 1 (as float) of groups g (..., group) for per-group scale and zero (...)."""
    return ((g - zero.float()[..., None]) / scale.float()[..., None]).round().clamp(0, 2 ** bits - 1)


def pack_codes(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (any shape, uint8 < 2**bits) -> packed densely (1-D uint8): every 8 codes become `bits`
    bytes (code j of a block in bits j*bits .. j*bits + bits - 1, little-endian); the last block is
    padded with zeros."""
    c = q.numpy().astype(np.uint64).reshape(-1)
    c = np.concatenate([c, np.zeros(-len(c) % 8, np.uint64)]).reshape(-1, 8)
    v = np.zeros(len(c), np.uint64)
    for j in range(8):
        v |= c[:, j] << np.uint64(j * bits)
    return torch.from_numpy(v.view(np.uint8).reshape(-1, 8)[:, :bits].reshape(-1).copy())


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The inverse of pack_codes: the first n codes (1-D uint8)."""
    blocks = np.zeros((packed.numel() // bits, 8), np.uint8)
    blocks[:, :bits] = packed.numpy().reshape(-1, bits)
    v = blocks.view(np.uint64).reshape(-1)
    mask = np.uint64(2 ** bits - 1)
    out = np.stack([(v >> np.uint64(j * bits)) & mask for j in range(8)], 1).reshape(-1)[:n]
    return torch.from_numpy(out.astype(np.uint8))


def quantize_grouped(w: torch.Tensor, bits: int, group: int, params: tuple | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric `bits`-bit codes in groups of `group` inputs per row.  `params`: (scale, zero) chosen
    elsewhere (e.g. by GPTQ in training/quantize.py); by default `grouped_params`.  Returns (packed codes,
    1-D uint8; scale (rows, cols / group) fp16; zero, the same)."""
    w = w.detach().float()
    rows, cols = w.shape
    g = w.reshape(rows, cols // group, group)
    scale, zero = params if params is not None else grouped_params(g, bits)
    q = grouped_codes(g, scale, zero, bits).to(torch.uint8)
    return pack_codes(q, bits), scale.half().contiguous(), zero.half().contiguous()


def dequantize_grouped(packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    rows, groups = scale.shape
    n = packed.numel() // bits * 8  # codes, padded to whole blocks of 8
    q = unpack_codes(packed, bits, n - n % (rows * groups)).float().reshape(rows, groups, -1)
    return (q * scale.float()[..., None] + zero.float()[..., None]).reshape(rows, -1)


def default_plan(state: dict[str, torch.Tensor], dtype: str) -> dict[str, tuple[int, int] | str]:
    """How each tensor is stored for `dtype`: (bits, group) for grouped codes, "int8", "fp16" or "fp32"."""
    plan: dict[str, tuple[int, int] | str] = {}
    for k, v in state.items():
        quantizable = v.is_floating_point() and v.ndim == 2 and v.numel() >= QUANT_MIN_NUMEL
        if dtype == "int4" and quantizable and v.shape[1] % INT4_GROUP == 0:
            plan[k] = (4, INT4_GROUP)
        elif dtype in ("int8", "int4") and quantizable:
            plan[k] = "int8"
        else:
            plan[k] = "fp32" if dtype == "fp32" else "fp16"
    return plan


def encode_state(state: dict[str, torch.Tensor], dtype: str = "fp32", plan: dict | None = None,
                 params: dict[str, tuple] | None = None) -> dict[str, torch.Tensor]:
    """Tensors as stored.  `plan` (default: `default_plan` for `dtype`; names it lacks are fp16) says per
    tensor: (bits, group) for grouped codes, "int8", "fp16" or "fp32"; `params` may give the (scale, zero)
    of grouped tensors, chosen elsewhere (GPTQ)."""
    plan = {**default_plan(state, dtype), **(plan or {})}
    out = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        how = plan[k]
        if not v.is_floating_point():
            out[k] = v
        elif isinstance(how, (tuple, list)):
            bits, group = how
            out[f"{k}.q{bits}"], out[k + SCALE_SUFFIX], out[k + ZERO_SUFFIX] = quantize_grouped(
                v, bits, group, (params or {}).get(k))
        elif how == "int8":
            q, s = quantize_int8(v)
            out[k + INT8_SUFFIX], out[k + SCALE_SUFFIX] = q, s
        elif how == "fp16":
            out[k] = v.half()
        else:
            out[k] = v.float()
    return out


def decode_state(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in stored.items():
        grouped = GROUPED_KEY.search(k)
        if k.endswith((SCALE_SUFFIX, ZERO_SUFFIX)):
            continue
        if grouped:
            base = k[: grouped.start()]
            out[base] = dequantize_grouped(v, stored[base + SCALE_SUFFIX], stored[base + ZERO_SUFFIX],
                                           int(grouped.group(1)))
        elif k.endswith(INT8_SUFFIX):
            base = k[: -len(INT8_SUFFIX)]
            out[base] = v.float() * stored[base + SCALE_SUFFIX].float()[:, None]
        else:
            out[k] = v.float() if v.is_floating_point() else v
    return out


def save_checkpoint(directory: str | os.PathLike, state: dict[str, torch.Tensor], config: dict,
                    dtype: str = "fp32", plan: dict | None = None, params: dict[str, tuple] | None = None) -> Path:
    """Write weights + config atomically into `directory` (replaced as a whole)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    try:
        save_file(encode_state(state, dtype, plan, params), str(tmp / WEIGHTS_NAME), metadata={"dtype": dtype})
        (tmp / CONFIG_NAME).write_text(json.dumps({**config, "dtype": dtype}, indent=2, sort_keys=True))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be read by others
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def resolve(source: str | os.PathLike) -> Path:
    """A local checkpoint folder, or a Hub repo id downloaded once into the Hugging Face cache."""
    p = Path(source)
    if p.is_dir():
        return p
    s = str(source)
    if s.count("/") == 1 and not s.startswith((".", "/")) and not p.exists():
        from huggingface_hub import snapshot_download

        log.info("downloading checkpoint %s from the Hugging Face Hub", s)
        return Path(snapshot_download(repo_id=s, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "*.md", "*.csv"]))
    raise FileNotFoundError(f"no checkpoint folder at {s}")


def shipped(name: str, source: str | os.PathLike | None = None) -> str | os.PathLike:
    """`source` as given, or else engine `name`'s shipped checkpoint folder (a clear error if it is missing)."""
    if source is not None:
        return source
    path = CHECKPOINT_ROOT / name
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"no {name} checkpoint at {path}: train one with `python -m training.train "
                                f"--engine {name}` and convert it with `python -m model.checkpoint convert`")
    return path


def load_checkpoint(source: str | os.PathLike,
                    engine: str | tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights (decoded to fp32) and config; with `engine`, a checkpoint of another engine is a ValueError."""
    d = resolve(source)
    config = json.loads((d / CONFIG_NAME).read_text())
    want = (engine,) if isinstance(engine, str) else engine
    if want is not None and config.get("engine") not in want:
        raise ValueError(f"{source} holds a {config.get('engine')!r} checkpoint, not "
                         f"{' or '.join(repr(w) for w in want)}")
    return decode_state(load_file(str(d / WEIGHTS_NAME))), config


def is_shipped(path: str | os.PathLike) -> bool:
    """Is `path` a folder under the shipped checkpoints root?"""
    try:
        Path(path).resolve().relative_to(CHECKPOINT_ROOT.resolve())
    except ValueError:
        return False
    return True


def convert(src: str | os.PathLike, dst: str | os.PathLike, dtype: str, replace_shipped: bool = False,
            force: bool = False) -> Path:
    """Re-store a checkpoint in another dtype (e.g. a training run's best/ as int8 for shipping).
    An existing `dst` is replaced only with `force`, and a shipped checkpoint only with `replace_shipped`."""
    if Path(dst).exists():
        if is_shipped(dst) and not replace_shipped:
            raise ValueError(f"{dst} is a shipped checkpoint; pass --replace-shipped to overwrite it (only with a "
                             "model measured better on the test split), or write to runs/ instead")
        if not is_shipped(dst) and not force:
            raise ValueError(f"{dst} already exists; pass --force to overwrite it, or choose another folder")
    state, config = load_checkpoint(src)
    config = {k: v for k, v in config.items() if k != "dtype"}
    return save_checkpoint(dst, state, config, dtype=dtype)


def folder_bytes(directory: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())


def main(argv=None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m model.checkpoint")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="store a checkpoint as fp32, fp16, int8 (per-channel scales) or int4 "
                                       f"(groups of {INT4_GROUP} with fp16 scale and zero; the rest int8)")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--dtype", choices=DTYPES, default="int4")
    c.add_argument("--force", action="store_true", help="overwrite an existing destination folder")
    c.add_argument("--replace-shipped", action="store_true",
                   help="allow overwriting a shipped checkpoint under checkpoints/")
    args = p.parse_args(argv)
    try:
        out = convert(args.src, args.dst, args.dtype, replace_shipped=args.replace_shipped, force=args.force)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": str(out), "dtype": args.dtype, "bytes": folder_bytes(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
