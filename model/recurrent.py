"""The recurrent engines (seeds 001 and 004): `gru`, `lstm` and `multi-rnn`, sharing one module.

- `gru` (seed 001, MusicGenDL baseline): one part as a sequence of eighth-note steps; each step is a
  note or chord token (the pitches starting there), HOLD (the previous chord sounds on) or REST.
  Embedding 96, one GRU layer, a linear layer over the vocabulary; multinomial sampling with
  temperature.  The chord vocabulary is the training data's most frequent chords (stored in the
  checkpoint); an unseen chord keeps its highest pitches that form a known chord.
- `lstm` (seed 004): the melody (the top voice of one part) as (pitch or REST, duration) token pairs
  on the 1/32-note grid; LSTM with hidden size 256, training windows of 32 tokens, Adam; temperature,
  tempo and length controls; notes shorter than 1/16 are removed from the output.
- `multi-rnn` (seed 001): 5 x 128 pianoroll frames (piano, guitar, bass, strings, drums; 2 frames
  per beat) flattened to 640; the RNN predicts the next frame from the previous 32.  As in the seed,
  a softmax runs over each instrument's 128 pitches separately and every frame samples a fixed
  number of notes per instrument (without replacement).  The seed found the result sounds random;
  this engine is a faithful reproduction, not a fix.

`RNNLM` is the one token model (cell type and token scheme from its config); `FrameRNN` the frame
model.  Both generate over a sliding window of the last `seq_len` steps (the training length).
Training goes through the shared loop (training/train.py) via `TRAIN_TASKS`; the derived token
streams are built once from the corpus and cached under <corpus>/derived/.

    python -m model.recurrent evaluate gru --data data/corpus --split test    # held-out figures
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from tokenizer import Score, make_notes
from tokenizer import vocab as V
from tokenizer.codec import decode_notes, parse_prefix
from tokenizer.pianoroll import GROUP_TO_TRACK, N_TRACKS, TRACKS, pianoroll_to_score
from tokenizer.score import cut_at

from . import checkpoint as ckpt
from .engine import Engine, GenerationRequest, register
from .sampling import SamplingParams, apply_temperature, sample_token

log = logging.getLogger(__name__)

DEFAULT_VELOCITY = V.velocity_level(100)

# ---- token schemes ----------------------------------------------------------------------------
PAD, BOS = 0, 1

# chord8 (gru, seed 001): one token per eighth-note step
CHORD_GRID = V.STEPS_PER_QUARTER // 2  # 4 steps = an eighth note
HOLD, REST8 = 2, 3
CHORD_OFFSET = 4  # single notes 4..131 (pitch p -> 4 + p), then multi-note chords

# melody (lstm, seed 004): (PITCH | REST, DUR) pairs on the 1/32 grid
MEL_REST = 2
MEL_PITCH_OFFSET = 3  # 3..130
MEL_MAX_DUR = V.STEPS_PER_BAR  # durations and rests 1..32 steps (longer: clamped to one bar)
MEL_DUR_OFFSET = MEL_PITCH_OFFSET + 128  # 131..162: duration 1..32
MEL_VOCAB = MEL_DUR_OFFSET + MEL_MAX_DUR


def melody_part(notes: np.ndarray, min_notes: int = 8) -> np.ndarray:
    """The notes of one part: the pitched group with the highest mean pitch (the melody), among
    groups with at least `min_notes` notes.  Empty if there is none."""
    pitched = notes[notes["group"] != V.DRUM_GROUP]
    best, best_mean = None, -1.0
    for g in np.unique(pitched["group"]):
        p = pitched["pitch"][pitched["group"] == g]
        if len(p) >= min_notes and p.mean() > best_mean:
            best, best_mean = g, float(p.mean())
    return pitched[pitched["group"] == best] if best is not None else pitched[:0]


def skyline(notes: np.ndarray) -> np.ndarray:
    """Monophonic top voice: the highest pitch at each onset, each note cut at the next onset."""
    if not len(notes):
        return notes
    n = notes[np.lexsort((-notes["pitch"].astype(np.int64), notes["onset"]))]
    n = n[np.r_[True, n["onset"][1:] != n["onset"][:-1]]].copy()
    nxt = np.r_[n["onset"][1:], np.iinfo(np.int32).max]
    n["duration"] = np.minimum(n["duration"], nxt - n["onset"])
    return n


def chord_events(part: np.ndarray, max_notes: int = 4) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Part notes -> (per-eighth-step base tokens HOLD/REST (T,), [(step, chord pitches), ...]).

    Onsets snap to the nearest eighth; a chord keeps its `max_notes` highest pitches."""
    on = np.rint(part["onset"] / CHORD_GRID).astype(np.int64)
    end = np.maximum(on + 1, np.rint((part["onset"] + part["duration"]) / CHORD_GRID).astype(np.int64))
    start = int(on.min())
    on, end = on - start, end - start
    T = int(end.max())
    cover = np.zeros(T + 1, np.int64)
    np.add.at(cover, on, 1)
    np.add.at(cover, end, -1)
    base = np.where(np.cumsum(cover)[:T] > 0, HOLD, REST8)  # (T,)
    order = np.lexsort((part["pitch"], on))
    on_s, pitch_s = on[order], part["pitch"][order].astype(np.int64)
    cuts = np.flatnonzero(np.diff(on_s)) + 1
    events = []
    for steps, pitches in zip(np.split(on_s, cuts), np.split(pitch_s, cuts)):
        ch = tuple(sorted(set(pitches.tolist())))[-max_notes:]
        events.append((int(steps[0]), ch))
    return base, events


def chord_index(chords: list) -> dict[tuple[int, ...], int]:
    """Token of every chord: single notes first (always present), then the vocabulary's chords."""
    idx = {(p,): CHORD_OFFSET + p for p in range(128)}
    for i, ch in enumerate(chords):
        idx[tuple(ch)] = CHORD_OFFSET + 128 + i
    return idx


def chord_token(ch: tuple[int, ...], index: dict) -> int:
    """A known chord's token; an unknown one keeps its highest pitches that form a known chord."""
    for k in range(len(ch), 0, -1):
        t = index.get(ch[-k:])
        if t is not None:
            return t
    raise KeyError(ch)


def chord8_tokens(base: np.ndarray, events, index: dict) -> np.ndarray:
    toks = base.copy()
    for step, ch in events:
        toks[step] = chord_token(ch, index)
    return toks


def chord8_decode(tokens, chords: list) -> np.ndarray:
    """Tokens (no BOS) -> notes (group 0, velocity default): a chord sounds until the next chord or REST."""
    inv = {v: k for k, v in chord_index(chords).items()}
    rows, cur, since = [], None, 0
    toks = [int(t) for t in tokens]
    for i, t in enumerate(toks + [REST8]):
        if t == HOLD and i < len(toks):
            continue
        if cur is not None:
            rows += [(since * CHORD_GRID, (i - since) * CHORD_GRID, p) for p in cur]
        cur, since = (inv.get(t), i) if t in inv else (None, i)
    return _notes(rows)


def melody_tokens(part: np.ndarray) -> np.ndarray:
    """Part notes -> its skyline as (PITCH|REST, DUR) pairs; time starts at the first note."""
    n = skyline(part)
    on = n["onset"].astype(np.int64)
    dur = np.clip(n["duration"].astype(np.int64), 1, MEL_MAX_DUR)
    prev_end = np.r_[on[0], (on + dur)[:-1]]  # time as the decoder counts it
    gap = np.clip(on - prev_end, 0, MEL_MAX_DUR)
    out = np.stack([np.full_like(on, MEL_REST), MEL_DUR_OFFSET + gap - 1,
                    MEL_PITCH_OFFSET + n["pitch"].astype(np.int64), MEL_DUR_OFFSET + dur - 1], 1)
    keep = np.stack([gap > 0, gap > 0, np.ones_like(gap, bool), np.ones_like(gap, bool)], 1)
    return out[keep]


def melody_decode(tokens) -> np.ndarray:
    """(PITCH|REST, DUR) pairs -> notes; pairs that do not fit the scheme are skipped."""
    rows, t = [], 0
    toks = [int(x) for x in tokens]
    for a, d in zip(toks[0::2], toks[1::2]):
        if not MEL_DUR_OFFSET <= d < MEL_VOCAB:
            continue
        dur = d - MEL_DUR_OFFSET + 1
        if MEL_PITCH_OFFSET <= a < MEL_DUR_OFFSET:
            rows.append((t, dur, a - MEL_PITCH_OFFSET))
        if a == MEL_REST or MEL_PITCH_OFFSET <= a < MEL_DUR_OFFSET:
            t += dur
    return _notes(rows)


def _notes(rows) -> np.ndarray:
    a = np.asarray(rows, np.int64).reshape(-1, 3)
    return make_notes(a[:, 0], a[:, 1], DEFAULT_VELOCITY, 0, a[:, 2])


def remove_short_notes(notes: np.ndarray, min_steps: int) -> np.ndarray:
    """Drop notes shorter than `min_steps` (seed 004: shorter than 1/16 = 2 steps); timing is kept."""
    return notes[notes["duration"] >= min_steps]


# ---- configs ----------------------------------------------------------------------------------
@dataclass
class RNNLMConfig:
    cell: str = "gru"  # gru | lstm
    scheme: str = "chord8"  # chord8 (seed 001) | melody (seed 004)
    vocab_size: int = CHORD_OFFSET + 128
    embed_dim: int = 96  # seed 001: embedding 96
    hidden: int = 256  # seed 004: 256 (reduced from 512)
    layers: int = 1  # seed 001: a single GRU layer
    dropout: float = 0.0
    seq_len: int = 32  # seed 004: sequence length 32
    max_chords: int = 1000  # chord8: multi-note chords kept in the vocabulary
    chords: list = field(default_factory=list)  # chord8: the vocabulary's chords (from the data)
    min_note_steps: int = 0  # notes shorter than this are removed from the output (lstm: 2 = 1/16)

    @classmethod
    def from_dict(cls, d: dict) -> "RNNLMConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class FrameRNNConfig:
    cell: str = "gru"
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    seq_len: int = 32  # seed 001: the next frame from the previous 32
    steps_per_beat: int = 2  # the corpus pianoroll resolution
    notes_per_frame: list = field(default_factory=lambda: [2, 3, 1, 2, 2])  # per track; set from the data

    @classmethod
    def from_dict(cls, d: dict) -> "FrameRNNConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, dict[str, object]] = {
    "gru": {
        "tiny": RNNLMConfig(cell="gru", scheme="chord8", embed_dim=16, hidden=32, seq_len=16, max_chords=50),
        "cpu": RNNLMConfig(cell="gru", scheme="chord8", embed_dim=96, hidden=256, layers=1, seq_len=32),
    },
    "lstm": {
        "tiny": RNNLMConfig(cell="lstm", scheme="melody", vocab_size=MEL_VOCAB, embed_dim=16, hidden=32,
                            seq_len=16, min_note_steps=2),
        "cpu": RNNLMConfig(cell="lstm", scheme="melody", vocab_size=MEL_VOCAB, embed_dim=96, hidden=256,
                           layers=2, seq_len=32, min_note_steps=2),
    },
    "multi-rnn": {
        "tiny": FrameRNNConfig(hidden=32, seq_len=32),
        "cpu": FrameRNNConfig(hidden=256, layers=1, seq_len=32),
    },
}


# ---- models -----------------------------------------------------------------------------------
def make_rnn(cell: str, n_in: int, hidden: int, layers: int, dropout: float) -> nn.Module:
    cls = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
    return cls(n_in, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)


class RNNLM(nn.Module):
    """Embedding -> GRU/LSTM -> linear over the vocabulary."""

    def __init__(self, cfg: RNNLMConfig):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.rnn = make_rnn(cfg.cell, cfg.embed_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, V)."""
        h, _ = self.rnn(self.emb(x))  # (B, T, hidden)
        return self.head(h)


class FrameRNN(nn.Module):
    """640-d multi-hot frames -> GRU/LSTM -> 640 logits, read as 5 softmaxes over 128 pitches."""

    def __init__(self, cfg: FrameRNNConfig):
        super().__init__()
        self.cfg = cfg
        self.rnn = make_rnn(cfg.cell, N_TRACKS * 128, cfg.hidden, cfg.layers, cfg.dropout)
        self.head = nn.Linear(cfg.hidden, N_TRACKS * 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """frames (B, T, 5, 128) -> logits (B, T, 5, 128)."""
        B, T = x.shape[:2]
        h, _ = self.rnn(x.reshape(B, T, -1).float())  # (B, T, hidden)
        return self.head(h).view(B, T, N_TRACKS, 128)


def build_model(cfg) -> nn.Module:
    return FrameRNN(cfg) if isinstance(cfg, FrameRNNConfig) else RNNLM(cfg)


# ---- losses for the shared training loop ---------------------------------------------------------
def token_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token cross-entropy on windows (B, T+1); BOS/PAD targets are not scored."""
    inp, tgt = batch[:, :-1], batch[:, 1:]
    logits = model(inp)  # (B, T, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), tgt, reduction="none")  # (B, T)
    m = (tgt > BOS).float()
    loss = (nll * m).sum() / m.sum().clamp_min(1)
    with torch.no_grad():
        correct = ((logits.argmax(-1) == tgt).float() * m).sum()
    return loss, {"nll": (nll.detach() * m).sum(), "correct": correct, "count": m.sum()}


def frame_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Windows (B, 5, T+1, 128) of 0/1 cells.  For every (frame, instrument) that plays, the
    cross-entropy of the instrument's softmax against its active pitches (uniform over them);
    accuracy = the most likely pitch is one that plays.  Silent (frame, instrument) pairs are not
    scored: the seed's per-instrument softmax has no 'nothing' outcome."""
    x = batch.permute(0, 2, 1, 3).float()  # (B, T+1, 5, 128)
    inp, tgt = x[:, :-1], x[:, 1:]
    logits = model(inp)  # (B, T, 5, 128)
    logp = F.log_softmax(logits.float(), -1)
    n_on = tgt.sum(-1)  # (B, T, 5)
    active = (n_on > 0).float()
    nll = -(logp * tgt).sum(-1) / n_on.clamp_min(1)  # (B, T, 5)
    loss = (nll * active).sum() / active.sum().clamp_min(1)
    with torch.no_grad():
        hit = tgt.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1) * active
        sums = {"nll": (nll.detach() * active).sum(), "correct": hit.sum(), "count": active.sum()}
        for i, name in enumerate(TRACKS):
            sums[f"nll_{name}"] = (nll.detach()[..., i] * active[..., i]).sum()
            sums[f"count_{name}"] = active[..., i].sum()
    return loss, sums


def summarize(sums: dict[str, float]) -> dict[str, float]:
    n = max(sums["count"], 1.0)
    out = {"loss": sums["nll"] / n, "accuracy": sums["correct"] / n,
           "ppl": math.exp(min(sums["nll"] / n, 50.0))}
    for name in TRACKS:
        if f"count_{name}" in sums:
            out[f"loss_{name}"] = sums[f"nll_{name}"] / max(sums[f"count_{name}"], 1.0)
    return out


# ---- datasets ------------------------------------------------------------------------------------
DERIVED_VERSION = "1"


def corpus_parts(tokens: np.ndarray, limit: int | None = None):
    """Yield the melody part (notes) of each piece in a flat corpus token stream (pieces start at START)."""
    starts = np.flatnonzero(np.asarray(tokens) == V.START)
    bounds = np.r_[starts, len(tokens)]
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if limit is not None and k >= limit:
            break
        piece = np.asarray(tokens[a:b], np.int64)
        _, _, _, i = parse_prefix(piece[:64])
        try:
            notes, _ = decode_notes(piece[i:])
        except ValueError:
            continue
        part = melody_part(notes)
        if len(part):
            yield part


def _derived_dir(data: str | Path, cfg: RNNLMConfig) -> Path:
    tag = f"{cfg.scheme}-v{DERIVED_VERSION}" + (f"-c{cfg.max_chords}" if cfg.scheme == "chord8" else "")
    return Path(data) / "derived" / tag


def _stamp(data: Path) -> dict:
    return {s: os.path.getsize(data / f"{s}.tokens.npy") for s in ("train", "validation", "test")
            if (data / f"{s}.tokens.npy").exists()}


def derived_streams(data: str | Path, cfg: RNNLMConfig, splits=("train", "validation", "test"),
                    limit: int | None = None) -> tuple[RNNLMConfig, dict[str, np.ndarray]]:
    """Token streams (BOS + piece tokens, concatenated) per split for the config's scheme, built once
    and cached under <data>/derived/.  Returns the config with the data's vocabulary filled in."""
    from training.data import load_tokens

    data = Path(data)
    d = _derived_dir(data, cfg)
    meta_path = d / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    all_splits = ("train", "validation", "test")
    if meta is None or meta.get("stamp") != _stamp(data) or meta.get("limit") != limit \
            or not all((d / f"{s}.npy").exists() for s in all_splits):
        t0 = time.time()
        d.mkdir(parents=True, exist_ok=True)
        streams: dict[str, np.ndarray] = {}
        chords: list = []
        if cfg.scheme == "chord8":
            per_split = {s: [chord_events(p) for p in corpus_parts(load_tokens(data, s), limit)] for s in all_splits}
            count = Counter(ch for _, ev in per_split["train"] for _, ch in ev if len(ch) > 1)
            chords = [list(ch) for ch, _ in count.most_common(cfg.max_chords)]
            index = chord_index(chords)
            for s, evs in per_split.items():
                streams[s] = _concat(chord8_tokens(b, e, index) for b, e in evs)
        else:
            for s in all_splits:
                streams[s] = _concat(melody_tokens(p) for p in corpus_parts(load_tokens(data, s), limit))
        for s, arr in streams.items():
            np.save(d / f"{s}.npy", arr)
        meta = {"stamp": _stamp(data), "limit": limit, "chords": chords, "scheme": cfg.scheme,
                "tokens": {s: int(len(a)) for s, a in streams.items()}, "seconds": round(time.time() - t0, 1)}
        meta_path.write_text(json.dumps(meta))
        log.info("built %s streams in %.1fs: %s", cfg.scheme, time.time() - t0, meta["tokens"])
    out = {s: np.load(d / f"{s}.npy", mmap_mode="r") for s in splits}
    if cfg.scheme == "chord8":
        cfg = replace(cfg, chords=meta["chords"], vocab_size=CHORD_OFFSET + 128 + len(meta["chords"]))
    return cfg, out


def _concat(parts) -> np.ndarray:
    arrs = []
    for p in parts:
        arrs += [np.asarray([BOS], np.int64), np.asarray(p, np.int64)]
    return np.concatenate(arrs).astype(np.uint16) if arrs else np.zeros(0, np.uint16)


class PackedRolls(Dataset):
    """Pianoroll windows (5, 32, 128) uint8, unpacked per item from the corpus' packed memmap."""

    def __init__(self, packed: np.ndarray, max_windows: int | None = None):
        self.packed = packed
        n = len(packed)
        self.idx = np.arange(n) if not max_windows or n <= max_windows else \
            np.linspace(0, n - 1, max_windows).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:  # order comes from the loader's shuffling
        pass

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.unpackbits(np.asarray(self.packed[self.idx[i]]), axis=-1, count=128))


def load_packed_rolls(data: str | Path, split: str) -> np.ndarray:
    path = Path(data) / f"{split}.pianoroll.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the corpus with `python -m training.corpus build`")
    return np.load(path, mmap_mode="r")  # (N, 5, 32, 16) packbits of (N, 5, 32, 128)


def notes_per_frame(packed: np.ndarray, max_windows: int = 4000) -> list[int]:
    """Per track: the mean number of sounding pitches in frames where the track plays (rounded, >= 1)."""
    idx = np.linspace(0, len(packed) - 1, min(len(packed), max_windows)).astype(np.int64)
    roll = np.unpackbits(np.asarray(packed[idx]), axis=-1, count=128)  # (n, 5, 32, 128)
    per = roll.sum(-1)  # (n, 5, 32)
    out = []
    for t in range(N_TRACKS):
        v = per[:, t][per[:, t] > 0]
        out.append(max(1, int(round(float(v.mean())))) if len(v) else 1)
    return out


# ---- training tasks (training/train.py picks these up) --------------------------------------------
def _preset(engine: str, name: str):
    if name not in PRESETS[engine]:
        raise ValueError(f"unknown preset {name!r} for {engine}; choose from {', '.join(PRESETS[engine])}")
    return PRESETS[engine][name]


def _token_task(engine: str):
    def task(args):
        from training.data import FixedWindows, RandomWindows
        from training.train import TrainTask

        cfg = _preset(engine, args.preset)
        if args.context:
            cfg = replace(cfg, seq_len=args.context)
        cfg, streams = derived_streams(args.data, cfg, splits=("train", "validation"))
        return TrainTask(
            engine=engine, config=cfg, build=build_model, loss=token_loss, summarize=summarize,
            train_set=RandomWindows(streams["train"], cfg.seq_len + 1, seed=args.seed),
            val_set=FixedWindows(streams["validation"], cfg.seq_len + 1, max_windows=args.val_windows),
        )
    return task


def _frame_task(args):
    from training.train import TrainTask

    cfg = _preset("multi-rnn", args.preset)
    train = load_packed_rolls(args.data, "train")
    cfg = replace(cfg, notes_per_frame=notes_per_frame(train))
    return TrainTask(
        engine="multi-rnn", config=cfg, build=build_model, loss=frame_loss, summarize=summarize,
        train_set=PackedRolls(train), val_set=PackedRolls(load_packed_rolls(args.data, "validation"),
                                                          max_windows=args.val_windows),
    )


TRAIN_TASKS: dict[str, Callable] = {"gru": _token_task("gru"), "lstm": _token_task("lstm"), "multi-rnn": _frame_task}


# ---- held-out evaluation -------------------------------------------------------------------------
def load_model(source: str | Path, engine: str | tuple[str, ...] = tuple(PRESETS)
               ) -> tuple[nn.Module, object, dict]:
    state, config = ckpt.load_checkpoint(source, engine=engine)
    engine = config.get("engine")
    cls = FrameRNNConfig if engine == "multi-rnn" else RNNLMConfig
    cfg = cls.from_dict(config["model"])
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.eval(), cfg, config


@torch.no_grad()
def evaluate_checkpoint(source: str | Path, data: str | Path, split: str = "test", batch: int = 64,
                        max_windows: int | None = None) -> dict:
    """Loss and accuracy on non-overlapping windows of a split, with a unigram baseline
    (the training data's token / per-instrument pitch frequencies) for comparison."""
    from torch.utils.data import DataLoader

    from training.data import FixedWindows

    model, cfg, config = load_model(source)
    engine = config["engine"]
    t0 = time.perf_counter()
    if engine == "multi-rnn":
        ds = PackedRolls(load_packed_rolls(data, split), max_windows=max_windows)
        loss_fn = frame_loss
        train = load_packed_rolls(data, "train")
        idx = np.linspace(0, len(train) - 1, min(len(train), 4000)).astype(np.int64)
        counts = np.unpackbits(np.asarray(train[idx]), axis=-1, count=128).sum((0, 2)).astype(np.float64)  # (5, 128)
        freq = (counts + 1) / (counts + 1).sum(-1, keepdims=True)
        base = UnigramFrames(torch.tensor(np.log(freq), dtype=torch.float32))
    else:
        data_cfg, streams = derived_streams(data, cfg, splits=("train", split))
        if data_cfg.chords != cfg.chords:
            raise ValueError(f"{source} was trained with another chord vocabulary than {data} gives")
        ds = FixedWindows(streams[split], cfg.seq_len + 1, max_windows=max_windows)
        loss_fn = token_loss
        counts = np.bincount(np.asarray(streams["train"]), minlength=cfg.vocab_size).astype(np.float64) + 1
        base = UnigramTokens(torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32))
    sums: dict[str, float] = {}
    bsums: dict[str, float] = {}
    for b in DataLoader(ds, batch_size=batch):
        for fn_model, acc in ((model, sums), (base, bsums)):
            _, s = loss_fn(fn_model, b.long() if engine != "multi-rnn" else b)
            for k, v in s.items():
                acc[k] = acc.get(k, 0.0) + float(v)
    out = summarize(sums)
    ub = summarize(bsums)
    out.update({"engine": engine, "checkpoint": str(source), "split": split, "windows": len(ds),
                "scored": int(sums["count"]), "unigram_loss": ub["loss"], "unigram_accuracy": ub["accuracy"],
                "seconds": round(time.perf_counter() - t0, 1)})
    if engine == "multi-rnn":
        out["uniform_loss"] = math.log(128)
    return out


class UnigramTokens(nn.Module):
    def __init__(self, logp: torch.Tensor):
        super().__init__()
        self.logp = logp

    def forward(self, x):
        return self.logp.expand(*x.shape, -1)


class UnigramFrames(nn.Module):
    def __init__(self, logp: torch.Tensor):  # (5, 128)
        super().__init__()
        self.logp = logp

    def forward(self, x):
        return self.logp.expand(*x.shape[:2], -1, -1)


# ---- generation ----------------------------------------------------------------------------------
class _RecurrentEngine(Engine):
    """Loads the engine's checkpoint (shipped, or a folder / Hub repo id); one generation at a time."""

    def __init__(self, source: str | Path | None = None):
        source = ckpt.shipped(self.name, source)
        self.model, self.cfg, config = load_model(source, engine=self.name)
        self.meta = config.get("meta", {})
        self.source = str(source)
        self.last_stats: dict = {}
        self._lock = threading.Lock()


class TokenRNNEngine(_RecurrentEngine):
    """gru / lstm: one pitched part, written as the first requested instrument group."""

    controls = frozenset({"groups", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm"})
    styles = ()


    def _mask(self, n: int) -> torch.Tensor:
        """(V,) bool: tokens allowed at the n-th sampled position."""
        m = torch.zeros(self.cfg.vocab_size, dtype=torch.bool)
        if self.cfg.scheme == "melody":
            if n % 2 == 0:
                m[MEL_REST:MEL_DUR_OFFSET] = True
            else:
                m[MEL_DUR_OFFSET:MEL_VOCAB] = True
        else:
            m[HOLD:] = True
        return m

    @torch.no_grad()
    def sample_tokens(self, n_variants: int, limit: int, params: SamplingParams,
                      progress: Callable[[float], None] | None = None) -> list[list[int]]:
        """Sample until every variant covers `limit` steps (1/32 notes).  Sliding window of seq_len."""
        gen = torch.Generator().manual_seed(int(params.seed))
        B, L = n_variants, self.cfg.seq_len
        seq = torch.full((B, 1), BOS, dtype=torch.long)
        t = torch.zeros(B, dtype=torch.long)  # time covered, in steps
        melody = self.cfg.scheme == "melody"
        n = 0
        while bool((t < limit).any()):
            logits = self.model(seq[:, -L:])[:, -1].float()  # (B, V)
            tok = sample_token(logits.masked_fill(~self._mask(n), float("-inf")), params, gen)
            seq = torch.cat([seq, tok[:, None]], 1)
            if melody:
                if n % 2 == 1:
                    t += tok - MEL_DUR_OFFSET + 1
            else:
                t += CHORD_GRID
            n += 1
            if progress is not None:
                progress(min(1.0, float(t.min()) / limit))
        return [row[1:].tolist() for row in seq]

    def generate(self, request: GenerationRequest, progress: Callable[[float], None] | None = None) -> list[Score]:
        req = request.validate()
        if not req.groups:
            raise ValueError(f"the {self.name} engine writes one pitched part: choose an instrument group")
        group = req.group_ids[0]
        limit = req.bars * V.STEPS_PER_BAR
        params = SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed)
        with self._lock:
            t0 = time.perf_counter()
            rows = self.sample_tokens(req.variants, limit, params, progress)
            dt = time.perf_counter() - t0
        scores = []
        for toks in rows:
            notes = melody_decode(toks) if self.cfg.scheme == "melody" else chord8_decode(toks, self.cfg.chords)
            if self.cfg.min_note_steps:
                notes = remove_short_notes(notes, self.cfg.min_note_steps)
            notes["group"] = group
            scores.append(Score(cut_at(notes, limit), bpm=req.bpm, length=limit))
        n_tok = sum(len(r) for r in rows)
        self.last_stats = {"seconds": dt, "tokens": n_tok, "tokens_per_s": n_tok / max(dt, 1e-9)}
        return scores


class GRUEngine(TokenRNNEngine):
    name = "gru"
    description = ("GRU next-note model (seed 001): one part as notes and chords on an eighth-note grid, "
                   "embedding 96, multinomial sampling with temperature.  Writes one part (the first "
                   "instrument chosen); no drums.")


class LSTMEngine(TokenRNNEngine):
    name = "lstm"
    description = ("LSTM melody generator (seed 004): hidden 256, sequence length 32; temperature, tempo and "
                   "length controls; notes shorter than 1/16 removed.  Writes one melody line (the first "
                   "instrument chosen); no drums.")


class MultiRNNEngine(_RecurrentEngine):
    name = "multi-rnn"
    description = ("Multi-instrument RNN (seed 001): 5x128 pianoroll frames flattened to 640, the next frame "
                   "from the previous 32, a fixed number of notes sampled per instrument and frame.  The "
                   "seed found it sounds random; so does this faithful reproduction.  Instruments fold into "
                   "piano, guitar, bass, strings (each written as the first chosen group it covers).")
    controls = frozenset({"groups", "drums", "bars", "variants", "temperature", "seed", "bpm"})
    styles = ()


    @torch.no_grad()
    def sample_frames(self, n_variants: int, n_frames: int, tracks: dict[int, int], temperature: float, seed: int,
                      progress: Callable[[float], None] | None = None) -> torch.Tensor:
        """(B, n_frames, 5, 128) 0/1; `tracks` maps track -> notes per frame (other tracks stay silent).
        Starts from one silent frame; each step sees the last seq_len frames."""
        gen = torch.Generator().manual_seed(int(seed))
        B = n_variants
        frames = torch.zeros(B, 1, N_TRACKS, 128)
        for i in range(n_frames):
            logits = self.model(frames[:, -self.cfg.seq_len:])[:, -1].float()  # (B, 5, 128)
            nxt = torch.zeros(B, N_TRACKS, 128)
            for tr, k in tracks.items():
                probs = torch.softmax(apply_temperature(logits[:, tr], temperature), -1)  # (B, 128)
                idx = torch.multinomial(probs, k, replacement=False, generator=gen)  # (B, k)
                nxt[:, tr].scatter_(-1, idx, 1.0)
            frames = torch.cat([frames, nxt[:, None]], 1)
            if progress is not None:
                progress((i + 1) / n_frames)
        return frames[:, 1:]

    def generate(self, request: GenerationRequest, progress: Callable[[float], None] | None = None) -> list[Score]:
        req = request.validate()
        spb = self.cfg.steps_per_beat
        frames_per_bar = V.STEPS_PER_BAR // (V.STEPS_PER_QUARTER // spb)
        # track -> the first requested group it covers
        out_group: dict[int, int] = {}
        for g in req.group_ids:
            out_group.setdefault(GROUP_TO_TRACK[g], g)
        if req.drums:
            out_group[GROUP_TO_TRACK[V.DRUM_GROUP]] = V.DRUM_GROUP
        counts = dict(enumerate(self.cfg.notes_per_frame))
        extra = req.extra.get("notes_per_frame") or {}
        for name, k in extra.items():
            if name not in TRACKS or not (isinstance(k, int) and 1 <= k <= 16):
                raise ValueError(f"notes_per_frame: {name!r} must be one of {TRACKS} with 1 to 16 notes")
            counts[TRACKS.index(name)] = k
        tracks = {tr: int(counts[tr]) for tr in sorted(out_group)}
        limit = req.bars * V.STEPS_PER_BAR
        with self._lock:
            t0 = time.perf_counter()
            frames = self.sample_frames(req.variants, req.bars * frames_per_bar, tracks, req.temperature, req.seed,
                                        progress)
            dt = time.perf_counter() - t0
        scores = []
        for b in range(req.variants):
            roll = frames[b].permute(1, 0, 2).numpy() > 0  # (5, T, 128)
            notes = pianoroll_to_score(roll, spb, req.bpm).notes
            tr_of = np.asarray(GROUP_TO_TRACK)[notes["group"]]
            notes["group"] = np.asarray([out_group[int(t)] for t in tr_of], np.int8) if len(notes) else notes["group"]
            scores.append(Score(cut_at(notes, limit), bpm=req.bpm, length=limit))
        n_frames = req.variants * req.bars * frames_per_bar
        self.last_stats = {"seconds": dt, "tokens": n_frames, "tokens_per_s": n_frames / max(dt, 1e-9)}
        return scores


register("gru", GRUEngine)
register("lstm", LSTMEngine)
register("multi-rnn", MultiRNNEngine)


def main(argv=None) -> int:
    return ckpt.evaluate_main(argv, "python -m model.recurrent",
                              "held-out loss and accuracy of a gru / lstm / multi-rnn checkpoint", tuple(PRESETS),
                              evaluate_checkpoint, limit="max_windows")


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["RNNLMConfig", "FrameRNNConfig", "PRESETS", "RNNLM", "FrameRNN", "build_model", "token_loss", "frame_loss",
           "summarize", "GRUEngine", "LSTMEngine", "MultiRNNEngine", "TRAIN_TASKS", "evaluate_checkpoint",
           "remove_short_notes", "melody_tokens", "melody_decode", "chord_events", "chord8_tokens", "chord8_decode"]
