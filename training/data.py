"""Corpus readers and datasets over the corpus shards (training.corpus writes them)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


def load_tokens(corpus_dir: str | Path, split: str) -> np.ndarray:
    path = Path(corpus_dir) / f"{split}.tokens.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the corpus with `python -m training.corpus build --out "
                                f"{corpus_dir}`")
    return np.load(path, mmap_mode="r")


# ---- derived data (per-engine views of the corpus), cached once per corpus build ------------------------
def corpus_build_id(corpus_dir: str | Path) -> str:
    """Identifies one build of the corpus: a rebuilt corpus (new stats.json, other shards) gets another id."""
    d = Path(corpus_dir)
    h = hashlib.blake2b(digest_size=8)
    stats = d / "stats.json"
    h.update(stats.read_bytes() if stats.exists() else b"no stats")
    for s in SPLITS:
        f = d / f"{s}.tokens.npy"
        if not f.exists():
            raise FileNotFoundError(f"{f} not found: build the corpus with `python -m training.corpus build --out "
                                    f"{corpus_dir}`")
        st = f.stat()
        h.update(f"{s}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def derived(corpus_dir: str | Path, name: str, params: dict, build: Callable[[Path], None]) -> Path:
    """The folder of derived data `name` (e.g. "rollpairs") for `params`, built by `build(folder)` once per
    corpus build and reused after that.  A rebuilt corpus or other params give a fresh build; the folder
    appears atomically, so two processes never see half of one."""
    corpus_dir = Path(corpus_dir)
    want = {"name": name, "corpus": corpus_build_id(corpus_dir), "params": params}
    key = hashlib.blake2b(json.dumps(want, sort_keys=True).encode(), digest_size=6).hexdigest()
    root = corpus_dir / "derived"
    d = root / f"{name}-{key}"
    if (d / "meta.json").exists():
        return d
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{name}-*"):  # an earlier corpus build's or params' data
        if old.is_dir() and not old.name.startswith(".") and json.loads(
                (old / "meta.json").read_text() if (old / "meta.json").exists() else "{}").get("corpus") != want["corpus"]:
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        t0 = time.time()
        build(tmp)
        (tmp / "meta.json").write_text(json.dumps({**want, "seconds": round(time.time() - t0, 1)}))
        try:
            os.replace(tmp, d)
        except OSError:  # another process finished first
            if not (d / "meta.json").exists():
                raise
        log.info("built %s in %.1fs", d, time.time() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


# ---- readers ----------------------------------------------------------------------
def load_split(out, split: str) -> tuple[np.ndarray, list[dict]]:
    """(token stream as a read-only uint16 memmap, index rows)."""
    out = Path(out)
    toks = np.load(out / f"{split}.tokens.npy", mmap_mode="r")
    with open(out / f"{split}.index.jsonl") as f:
        index = [json.loads(line) for line in f if line.strip()]
    return toks, index


def load_pianoroll(out, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(bool windows (N, 5, 32, 128), piece row per window).  Unpacks into memory."""
    out = Path(out)
    packed = np.load(out / f"{split}.pianoroll.npy", mmap_mode="r" if mmap else None)
    rows = np.load(out / f"{split}.pianoroll_index.npy")
    roll = np.unpackbits(np.asarray(packed), axis=-1, count=128).astype(bool)
    return roll, rows


def piece_tokens(toks: np.ndarray, row: dict) -> np.ndarray:
    return np.asarray(toks[row["offset"]:row["offset"] + row["length"]], np.int64)


class RandomWindows(Dataset):
    """Windows of `length` tokens (context + 1) at random offsets of a flat token stream.

    Item i of epoch e starts at a position drawn from a hash of (seed, epoch, i), so the data is
    random, reproducible, resumable, and shardable with DistributedSampler."""

    def __init__(self, tokens: np.ndarray, length: int, seed: int = 0, windows_per_epoch: int | None = None):
        if len(tokens) <= length:
            raise ValueError(f"the token stream ({len(tokens)} tokens) is shorter than one window ({length})")
        self.tokens, self.length, self.seed, self.epoch = tokens, length, seed, 0
        self.n = windows_per_epoch or max(1, len(tokens) // length)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        h = hashlib.blake2b(f"{self.seed}:{self.epoch}:{i}".encode(), digest_size=8).digest()
        start = int.from_bytes(h, "little") % (len(self.tokens) - self.length)
        return torch.from_numpy(np.asarray(self.tokens[start:start + self.length], dtype=np.int64))


class FixedWindows(Dataset):
    """Non-overlapping windows covering a stream (for validation and test), optionally capped."""

    def __init__(self, tokens: np.ndarray, length: int, max_windows: int | None = None):
        n = (len(tokens) - 1) // (length - 1)
        self.starts = np.arange(n) * (length - 1)
        if max_windows and n > max_windows:
            self.starts = self.starts[np.linspace(0, n - 1, max_windows).astype(int)]
        self.tokens, self.length = tokens, length

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = int(self.starts[i])
        return torch.from_numpy(np.asarray(self.tokens[s:s + self.length], dtype=np.int64))
