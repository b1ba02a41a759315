"""The recurrent engines' training tasks (gru, lstm: next-token cross-entropy on windows of derived
melody / chord token streams; multi-rnn: next-frame cross-entropy on the corpus' pianoroll windows) and
their held-out evaluation against a unigram baseline.

The token streams are derived from the corpus once per corpus build (`training.data.derived`): the
melody part of every piece (`tokenizer.melody`), as BOS + its tokens, concatenated per split.  The
chord8 scheme's chord vocabulary comes from the training split and is stored in the checkpoint config.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from model.recurrent import PRESETS, FrameRNNConfig, GRUEngine, LSTMEngine, MultiRNNEngine, RNNLMConfig, build_model
from tokenizer import melody as M
from tokenizer.codec import stream_pieces
from tokenizer.pianoroll import N_TRACKS, TRACKS

from ..data import SPLITS, FixedWindows, RandomWindows, derived, load_tokens
from .base import TrainTask, sum_metrics

ROLL_SAMPLE = 4000  # training windows sampled for the per-track statistics of the pianoroll


# ---- losses -------------------------------------------------------------------------------------
def token_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token cross-entropy on windows (B, T+1); BOS/PAD targets are not scored."""
    inp, tgt = batch[:, :-1], batch[:, 1:]
    logits = model(inp)  # (B, T, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), tgt, reduction="none")  # (B, T)
    m = (tgt > M.BOS).float()
    loss = (nll * m).sum() / m.sum().clamp_min(1)
    with torch.no_grad():
        correct = ((logits.argmax(-1) == tgt).float() * m).sum()
    return loss, {"nll": (nll.detach() * m).sum(), "correct": correct, "count": m.sum()}


def frame_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Windows (B, 5, T+1, 128) of 0/1 cells.  For every (frame, instrument) that plays, the
    cross-entropy of the instrument's softmax against its active pitches (uniform over them);
    accuracy = the most likely pitch is one that plays.  Silent (frame, instrument) pairs are not
    scored: the per-instrument softmax has no 'nothing' outcome."""
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
    """Loss, accuracy and perplexity (and the frame model's loss per instrument) from summed metrics."""
    n = max(sums["count"], 1.0)
    out = {"loss": sums["nll"] / n, "accuracy": sums["correct"] / n, "ppl": math.exp(min(sums["nll"] / n, 50.0))}
    for name in TRACKS:
        if f"count_{name}" in sums:
            out[f"loss_{name}"] = sums[f"nll_{name}"] / max(sums[f"count_{name}"], 1.0)
    return out


class Unigram(nn.Module):
    """A baseline that ignores its input: the same log-probabilities (tokens (V,) or frames (5, 128))
    at every position of a (B, T, ...) input."""

    def __init__(self, logp: torch.Tensor):
        super().__init__()
        self.logp = logp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logp.expand(*x.shape[:2], *self.logp.shape)


# ---- token streams (gru, lstm) --------------------------------------------------------------------
def corpus_parts(tokens: np.ndarray):
    """The melody part (notes) of each piece of a flat corpus token stream that has one."""
    for _, notes in stream_pieces(tokens):
        part = M.melody_part(notes)
        if len(part):
            yield part


def concat_pieces(pieces) -> np.ndarray:
    """BOS + each piece's tokens, concatenated (uint16)."""
    arrs = [a for p in pieces for a in (np.asarray([M.BOS], np.int64), np.asarray(p, np.int64))]
    return np.concatenate(arrs).astype(np.uint16) if arrs else np.zeros(0, np.uint16)


def derived_streams(data: str | Path, cfg: RNNLMConfig, splits=SPLITS, chords: list | None = None
                    ) -> tuple[RNNLMConfig, dict[str, np.ndarray]]:
    """Token streams per split for the config's scheme, built once per corpus build.  Returns the config
    with the data's vocabulary filled in (chord8: the training split's `max_chords` most frequent chords,
    or `chords` as given, e.g. a checkpoint's own, so it can be measured on a rebuilt corpus)."""
    chord8 = cfg.scheme == "chord8"

    def build(folder: Path) -> None:
        parts = {s: list(corpus_parts(load_tokens(data, s))) for s in SPLITS}
        vocab = (chords if chords is not None else M.chord_vocabulary(parts["train"], cfg.max_chords)) if chord8 else []
        encode = partial(M.chord8_tokens, chords=M.chord_index(vocab)) if chord8 else M.melody_tokens
        for s, ps in parts.items():
            np.save(folder / f"{s}.npy", concat_pieces(encode(p) for p in ps))
        if chord8:
            (folder / "chords.json").write_text(json.dumps(vocab))

    params = {"max_chords": cfg.max_chords} if chord8 else {}
    if chord8 and chords is not None:
        params["chords"] = hashlib.blake2b(json.dumps(chords).encode(), digest_size=8).hexdigest()
    folder = derived(data, f"rnn-{cfg.scheme}", params, build)
    streams = {s: np.load(folder / f"{s}.npy", mmap_mode="r") for s in splits}
    if chord8:
        vocab = json.loads((folder / "chords.json").read_text())
        cfg = replace(cfg, chords=vocab, vocab_size=M.CHORD_VOCAB_BASE + len(vocab))
    return cfg, streams


# ---- pianoroll windows (multi-rnn) ----------------------------------------------------------------
def load_packed_rolls(data: str | Path, split: str) -> np.ndarray:
    """The corpus' packed pianoroll windows of a split: (N, 5, 32, 16) packbits of (N, 5, 32, 128), a memmap."""
    path = Path(data) / f"{split}.pianoroll.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the corpus with `python -m training.corpus build`")
    return np.load(path, mmap_mode="r")


def sample_rolls(packed: np.ndarray, n: int = ROLL_SAMPLE) -> np.ndarray:
    """Up to `n` evenly spaced windows, unpacked: (n, 5, 32, 128) uint8."""
    idx = np.linspace(0, len(packed) - 1, min(len(packed), n)).astype(np.int64)
    return np.unpackbits(np.asarray(packed[idx]), axis=-1, count=128)


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


def notes_per_frame(packed: np.ndarray) -> list[int]:
    """Per track: the mean number of sounding pitches in frames where the track plays (rounded, >= 1)."""
    per = sample_rolls(packed).sum(-1)  # (n, 5, 32)
    out = []
    for t in range(N_TRACKS):
        v = per[:, t][per[:, t] > 0]
        out.append(max(1, int(round(float(v.mean())))) if len(v) else 1)
    return out


# ---- training tasks -------------------------------------------------------------------------------
def preset(engine: str, name: str) -> RNNLMConfig | FrameRNNConfig:
    if name not in PRESETS[engine]:
        raise ValueError(f"unknown preset {name!r} for {engine}; choose from {', '.join(PRESETS[engine])}")
    return PRESETS[engine][name]


def token_task(engine: str):
    """gru / lstm: random windows of seq_len + 1 tokens of the derived training stream."""

    def task(args) -> TrainTask:
        cfg = preset(engine, args.preset)
        if args.context:
            cfg = replace(cfg, seq_len=args.context)
        cfg, streams = derived_streams(args.data, cfg, splits=("train", "validation"))
        return TrainTask(
            engine=engine, config=cfg, build=build_model, loss=token_loss, summarize=summarize,
            train_set=RandomWindows(streams["train"], cfg.seq_len + 1, seed=args.seed),
            val_set=FixedWindows(streams["validation"], cfg.seq_len + 1, max_windows=args.val_windows),
        )
    return task


def frame_task(args) -> TrainTask:
    """multi-rnn: the corpus' 32-frame pianoroll windows; notes per frame measured on the training split."""
    if args.context:
        raise ValueError("--context does not apply to multi-rnn: it trains on the corpus' 32-frame pianoroll windows")
    train = load_packed_rolls(args.data, "train")
    cfg = replace(preset("multi-rnn", args.preset), notes_per_frame=notes_per_frame(train))
    return TrainTask(
        engine="multi-rnn", config=cfg, build=build_model, loss=frame_loss, summarize=summarize,
        train_set=PackedRolls(train),
        val_set=PackedRolls(load_packed_rolls(args.data, "validation"), max_windows=args.val_windows),
    )


TASKS = {"gru": token_task("gru"), "lstm": token_task("lstm"), "multi-rnn": frame_task}
ENGINES = {"gru": GRUEngine, "lstm": LSTMEngine, "multi-rnn": MultiRNNEngine}


# ---- held-out evaluation --------------------------------------------------------------------------
def evaluate_checkpoint(engine: str, source, data, split: str = "test", max_items: int | None = None,
                        batch: int = 64) -> dict:
    """Loss and accuracy on non-overlapping windows of a split (at most `max_items`), with a unigram
    baseline (the training data's token / per-instrument pitch frequencies) for comparison."""
    eng = ENGINES[engine](source)
    cfg = eng.cfg
    t0 = time.perf_counter()
    if engine == "multi-rnn":
        ds = PackedRolls(load_packed_rolls(data, split), max_windows=max_items)
        loss_fn = frame_loss
        counts = sample_rolls(load_packed_rolls(data, "train")).sum((0, 2)).astype(np.float64)  # (5, 128)
        freq = (counts + 1) / (counts + 1).sum(-1, keepdims=True)
    else:
        # the checkpoint's own chord vocabulary: a rebuilt corpus may rank its chords differently
        _, streams = derived_streams(data, cfg, splits=("train", split),
                                     chords=cfg.chords if cfg.scheme == "chord8" else None)
        ds = FixedWindows(streams[split], cfg.seq_len + 1, max_windows=max_items)
        loss_fn = token_loss
        counts = np.bincount(np.asarray(streams["train"]), minlength=cfg.vocab_size).astype(np.float64) + 1
        freq = counts / counts.sum()
    base = Unigram(torch.tensor(np.log(freq), dtype=torch.float32))
    sums = sum_metrics(loss_fn, eng.model, DataLoader(ds, batch_size=batch))
    ub = summarize(sum_metrics(loss_fn, base, DataLoader(ds, batch_size=batch)))
    out = summarize(sums)
    out.update({"engine": engine, "checkpoint": str(source), "dtype": eng.config.get("dtype"), "split": split,
                "windows": len(ds), "scored": int(sums["count"]), "unigram_loss": ub["loss"],
                "unigram_accuracy": ub["accuracy"], "seconds": round(time.perf_counter() - t0, 1)})
    if engine == "multi-rnn":
        out["uniform_loss"] = math.log(128)
    return out


__all__ = ["token_loss", "frame_loss", "summarize", "Unigram", "corpus_parts", "derived_streams", "PackedRolls",
           "load_packed_rolls", "notes_per_frame", "TASKS", "evaluate_checkpoint"]
