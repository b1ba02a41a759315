"""Corpus readers and datasets over the corpus shards (training.corpus writes them), and the on-the-fly
augmentation of the transformer's training windows (Augment: transposition, velocity, instrument-group
remapping, dropped parts), seeded so that a window is a function of (seed, epoch, index)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from tokenizer import NOTE_DTYPE, decode_notes, encode_notes
from tokenizer import vocab as V
from tokenizer.harmony import REGISTERS

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
REAL_SPLITS = ("realdev", "realtest")  # held-out real songs (POP909, freedoom, openmsx), never trained on


def load_tokens(corpus_dir: str | Path, split: str) -> np.ndarray:
    """A split's flat token stream as a read-only uint16 memmap; FileNotFoundError says how to build it."""
    path = Path(corpus_dir) / f"{split}.tokens.npy"
    if not path.exists():
        hint = " with its real-songs sources (openmsx, freedoom, pop909)" if split in REAL_SPLITS else ""
        raise FileNotFoundError(f"{path} not found: build the corpus{hint} with `python -m training.corpus build "
                                f"--out {corpus_dir}`")
    return np.load(path, mmap_mode="r")


# ---- derived data (per-engine views of the corpus), cached once per corpus build ------------------------
def corpus_build_id(corpus_dir: str | Path) -> str:
    """Identifies one build of the corpus: a rebuilt corpus (new stats.json, other shards) gets another id."""
    d = Path(corpus_dir)
    h = hashlib.blake2b(digest_size=8)
    stats = d / "stats.json"
    h.update(stats.read_bytes() if stats.exists() else b"no stats")
    for s in SPLITS + REAL_SPLITS:
        f = d / f"{s}.tokens.npy"
        if not f.exists():
            if s in REAL_SPLITS:  # corpora built before the real-songs splits have none
                continue
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
    random, reproducible, resumable, and shardable with DistributedSampler.  With `augment` (an Augment
    with some kinds on), the window from there is augmented with a generator seeded by the same triple."""

    def __init__(self, tokens: np.ndarray, length: int, seed: int = 0, windows_per_epoch: int | None = None,
                 augment: Augment | None = None):
        if len(tokens) <= length:
            raise ValueError(f"the token stream ({len(tokens)} tokens) is shorter than one window ({length})")
        self.tokens, self.length, self.seed, self.epoch = tokens, length, seed, 0
        self.augment = augment if augment is not None and augment.kinds else None
        self.n = windows_per_epoch or max(1, len(tokens) // length)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        h = hashlib.blake2b(f"{self.seed}:{self.epoch}:{i}".encode(), digest_size=8).digest()
        start = int.from_bytes(h, "little") % (len(self.tokens) - self.length)
        if self.augment is not None:
            a = hashlib.blake2b(f"augment:{self.seed}:{self.epoch}:{i}".encode(), digest_size=8).digest()
            return torch.from_numpy(self.augment.window(self.tokens, start, self.length, int.from_bytes(a, "little")))
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


# ---- augmentation of training windows ---------------------------------------------------------------
AUGMENTATIONS = ("transpose", "velocity", "remap", "drop")
# Families of pitched groups that can stand in for one another: instruments that comp chords and play
# figures; melodic voices; sustained backgrounds.  Bass keeps its own role; drums are never remapped.
REMAP_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("piano", "chromatic", "organ", "guitar"),
    ("reed", "pipe", "brass", "lead"),
    ("strings", "pad"),
)
_SLOT = np.asarray([V.token_slot(t) for t in range(V.VOCAB_SIZE)], np.int8)
_REG_LO = np.asarray([REGISTERS[g][0] for g in V.PITCHED_GROUPS])
_REG_HI = np.asarray([REGISTERS[g][1] for g in V.PITCHED_GROUPS])


def window_parts(tokens: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """A token span -> its parts in order: ("ctrl", control tokens) and ("notes", the run's note triples
    decoded to notes, onsets from the run's start).  The span is first aligned to the first control or
    note-shift token; a trailing incomplete triple is left out.  ValueError for tokens out of order."""
    toks = np.asarray(tokens, np.int64)
    slot = _SLOT[toks]
    ok = np.flatnonzero(slot <= 0)
    if not len(ok):
        return []
    toks, slot = toks[ok[0]:], slot[ok[0]:]
    ctrl = slot < 0
    cuts = np.flatnonzero(np.diff(ctrl.astype(np.int8))) + 1
    parts = []
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(toks)]):
        if ctrl[a]:
            parts.append(("ctrl", toks[a:b]))
        else:
            run = toks[a:a + (b - a) // 3 * 3]
            if len(run):
                parts.append(("notes", decode_notes(run)[0]))
    return parts


def join_parts(parts: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """The inverse of window_parts: control tokens as they are, each run's notes encoded from its start."""
    out = [p if kind == "ctrl" else encode_notes(p) for kind, p in parts]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def _span(tokens: np.ndarray, start: int, n: int) -> np.ndarray:
    """n tokens of a stream from `start` (int64), going on from the stream's start past its end."""
    if start + n <= len(tokens):
        return np.asarray(tokens[start:start + n], np.int64)
    return np.asarray(tokens[np.arange(start, start + n) % len(tokens)], np.int64)


@dataclass(frozen=True)
class Augment:
    """On-the-fly augmentation of token windows; `kinds` says which are on (AUGMENTATIONS):

    - transpose: every pitched note of the window by one interval, drawn from -max_transpose..+max_transpose
      among those that keep each group present inside its register (tokenizer.harmony.REGISTERS), or no
      further outside than it already was; drums untouched
    - velocity: the window's velocities scaled by one factor from velocity_scale, then each note's level
      moved one step up or down with probability velocity_jitter (levels kept in 0..7)
    - remap: each family of compatible groups (REMAP_FAMILIES) permuted with probability remap_p; the
      control prefix's group tokens follow, and simultaneous notes are put back in token order
    - drop: each part present (a pitched group or the drums) left out with probability drop_p, one part
      always kept; its group token (or DRUMS_ON -> DRUMS_OFF) goes from the prefix, time is kept
    A window stays a valid token sequence: controls, then whole note triples in order."""

    kinds: frozenset = frozenset()
    max_transpose: int = 5
    velocity_scale: tuple[float, float] = (0.75, 1.25)
    velocity_jitter: float = 0.25
    remap_p: float = 0.5
    drop_p: float = 0.15

    @classmethod
    def parse(cls, text: str | None) -> "Augment":
        """"transpose,velocity,remap,drop" (any of them; "" or "none": none) -> an Augment; ValueError
        naming an unknown kind."""
        names = {n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "none"}
        bad = sorted(names - set(AUGMENTATIONS))
        if bad:
            raise ValueError(f"unknown augmentation {', '.join(bad)}: choose from {', '.join(AUGMENTATIONS)}")
        return cls(kinds=frozenset(names))

    def window(self, tokens: np.ndarray, start: int, length: int, seed: int) -> np.ndarray:
        """`length` augmented tokens from `start` of a token stream (int64), the random choices drawn from
        `seed`; the window begins at the first control or whole note from `start`.  Reads a longer span
        when dropped parts leave too few tokens (past the stream's end it goes on from its start, one
        piece's END then the first piece's START), and at last keeps every part."""
        span = 2 * length
        for _ in range(4):
            out = self.apply(_span(tokens, start, span), np.random.default_rng(seed))
            if len(out) >= length:
                return out[:length]
            span *= 2
        out = replace(self, kinds=self.kinds - {"drop"}).apply(_span(tokens, start, 2 * length + 8), np.random.default_rng(seed))
        return out[:length] if len(out) >= length else _span(tokens, start, length)

    def apply(self, raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The augmented tokens of a whole span (its length may change: dropped notes, re-spelled rests)."""
        parts = window_parts(raw)
        runs = [p for kind, p in parts if kind == "notes"]
        notes = np.concatenate(runs) if runs else np.zeros(0, NOTE_DTYPE)
        ctrls = [p for kind, p in parts if kind == "ctrl"]
        ctrl = np.concatenate(ctrls) if ctrls else np.zeros(0, np.int64)
        present = set(np.unique(notes["group"]).tolist()) | {int(t) - V.GROUP_OFFSET for t in ctrl
                                                              if V.GROUP_OFFSET <= t < V.STYLE_OFFSET}
        if V.DRUMS_ON in ctrl:
            present.add(V.DRUM_GROUP)
        mapping = np.arange(V.N_GROUPS)
        dropped: set[int] = set()
        if "drop" in self.kinds:
            dropped = self._drop(sorted(present), set(np.unique(notes["group"]).tolist()), rng)
        if "remap" in self.kinds:
            mapping = self._remap(rng)
        shift = self._transpose(notes, mapping, dropped, rng) if "transpose" in self.kinds else 0
        scale = rng.uniform(*self.velocity_scale) if "velocity" in self.kinds else 1.0
        out = []
        for kind, p in parts:
            if kind == "ctrl":
                out.append(("ctrl", self._controls(p, mapping, dropped)))
                continue
            n = p[~np.isin(p["group"], list(dropped))] if dropped else p.copy()
            pitched = n["group"] != V.DRUM_GROUP
            n["group"] = mapping[n["group"]]
            n["pitch"][pitched] += shift
            if "velocity" in self.kinds:
                level = np.rint((n["velocity"] + 1.0) * scale) - 1
                jitter = rng.random(len(n)) < self.velocity_jitter
                level += jitter * rng.choice((-1, 1), len(n))
                n["velocity"] = np.clip(level, 0, V.N_VELOCITY - 1)
            out.append(("notes", n[np.lexsort((n["pitch"], n["group"], n["onset"]))]))
        return join_parts(out)

    def _drop(self, present: list[int], sounding: set[int], rng: np.random.Generator) -> set[int]:
        """The parts to leave out: each with probability drop_p, always keeping one part that sounds."""
        if not sounding:
            return set()
        keep = int(rng.choice(sorted(sounding)))
        return {g for g in present if g != keep and rng.random() < self.drop_p}

    def _remap(self, rng: np.random.Generator) -> np.ndarray:
        """A permutation of the groups: within each family with probability remap_p, else identity."""
        mapping = np.arange(V.N_GROUPS)
        for family in REMAP_FAMILIES:
            idx = np.asarray([V.GROUPS.index(g) for g in family])
            if rng.random() < self.remap_p:
                mapping[idx] = rng.permutation(idx)
        return mapping

    def _transpose(self, notes: np.ndarray, mapping: np.ndarray, dropped: set[int], rng: np.random.Generator) -> int:
        """An interval that keeps each (remapped) pitched group inside its register, or no further out."""
        lo, hi = -self.max_transpose, self.max_transpose
        pitched = notes[(notes["group"] != V.DRUM_GROUP) & ~np.isin(notes["group"], list(dropped))]
        for g in np.unique(pitched["group"]):
            p = pitched["pitch"][pitched["group"] == g].astype(int)
            target = mapping[g]
            lo = max(lo, min(0, _REG_LO[target] - p.min()), -p.min())
            hi = min(hi, max(0, _REG_HI[target] - p.max()), 127 - p.max())
        return int(rng.integers(lo, hi + 1)) if hi >= lo else 0

    @staticmethod
    def _controls(ctrl: np.ndarray, mapping: np.ndarray, dropped: set[int]) -> np.ndarray:
        """Control tokens with the groups remapped (each run of group tokens ascending), dropped groups'
        tokens removed and DRUMS_ON turned into DRUMS_OFF when the drums are dropped."""
        out = []
        for t in ctrl.tolist():
            if V.GROUP_OFFSET <= t < V.STYLE_OFFSET:
                g = t - V.GROUP_OFFSET
                if g not in dropped:
                    out.append(V.GROUP_OFFSET + int(mapping[g]))
                continue
            out.append(V.DRUMS_OFF if t == V.DRUMS_ON and V.DRUM_GROUP in dropped else t)
        out = np.asarray(out, np.int64)
        is_group = (out >= V.GROUP_OFFSET) & (out < V.STYLE_OFFSET)
        if is_group.any():  # group tokens form one block per prefix: sort within each block
            edges = np.flatnonzero(np.diff(np.r_[0, is_group.astype(np.int8), 0]))
            for a, b in zip(edges[::2], edges[1::2]):
                out[a:b] = np.sort(out[a:b])
        return out
