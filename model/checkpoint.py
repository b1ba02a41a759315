"""Checkpoints for every engine: safetensors weights + a JSON config, never pickles.

A checkpoint is a folder:
    config.json        {"engine": ..., "model": {config dataclass}, "meta": {training, metrics}}
    model.safetensors  weights: fp32, fp16, or int8 with per-output-channel scales
                       (a 2-D weight W is stored as W.int8 (int8) and W.scale (fp32, one per row)).
Writes are atomic (temp files, then rename), so a killed job never leaves half a checkpoint.
Sources: a local folder, or a Hugging Face Hub repo id ("owner/name", downloaded once into the cache).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INT8_SUFFIX, SCALE_SUFFIX = ".int8", ".scale"
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


def encode_state(state: dict[str, torch.Tensor], dtype: str = "fp32") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if not v.is_floating_point():
            out[k] = v
        elif dtype == "int8" and v.ndim == 2 and v.numel() >= 4096:
            q, s = quantize_int8(v)
            out[k + INT8_SUFFIX], out[k + SCALE_SUFFIX] = q, s
        elif dtype in ("fp16", "int8"):
            out[k] = v.half()
        else:
            out[k] = v.float()
    return out


def decode_state(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in stored.items():
        if k.endswith(SCALE_SUFFIX):
            continue
        if k.endswith(INT8_SUFFIX):
            base = k[: -len(INT8_SUFFIX)]
            out[base] = v.float() * stored[base + SCALE_SUFFIX].float()[:, None]
        else:
            out[k] = v.float() if v.is_floating_point() else v
    return out


def save_checkpoint(directory: str | os.PathLike, state: dict[str, torch.Tensor], config: dict,
                    dtype: str = "fp32") -> Path:
    """Write weights + config atomically into `directory` (replaced as a whole)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    try:
        save_file(encode_state(state, dtype), str(tmp / WEIGHTS_NAME), metadata={"dtype": dtype})
        (tmp / CONFIG_NAME).write_text(json.dumps({**config, "dtype": dtype}, indent=2, sort_keys=True))
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
    c = sub.add_parser("convert", help="store a checkpoint as fp32, fp16 or int8 (per-channel scales)")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--dtype", choices=("fp32", "fp16", "int8"), default="int8")
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
