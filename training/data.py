"""Datasets over the corpus shards (training.corpus writes them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def load_tokens(corpus_dir: str | Path, split: str) -> np.ndarray:
    path = Path(corpus_dir) / f"{split}.tokens.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the corpus with `python -m training.corpus build --out "
                                f"{corpus_dir}`")
    return np.load(path, mmap_mode="r")


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
