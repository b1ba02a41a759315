"""The `cnn` engine (seed 001, MusicGenDL): MelodyCNN + conditional harmony CNNs over pianoroll windows.

Windows are 5 tracks (piano, guitar, bass, strings, drums) x 32 steps x 128 pitches at 2 steps per
beat (4 bars of 4/4).  Models, as in the seed:
- `MelodyCNN`: 3 convolutions, 3 dense layers, 3 transposed convolutions; piano window t -> piano
  window t+1 (32x128 in and out).
- `HarmonyCNN` (one per guitar, bass, strings, drums): 3 convolutions on the piano window t+1 and 3 on
  the instrument's own window t, concatenated, 3 dense layers, 3 transposed convolutions -> the
  instrument's window t+1.
All five are trained jointly in one module through the shared loop (training/train.py) with binary
cross-entropy per cell on consecutive window pairs (model/rollwindows.py builds them from the
corpus); the harmony CNNs see the true piano window t+1 (teacher forcing).

Generation: start from the prompt's window (an uploaded MIDI) or, without one, from a window of a
small start set stored in the checkpoint (corpus windows; the app needs no corpus); then window by
window: piano from MelodyCNN, the others from their harmony CNNs given the new piano window, each
thresholded to notes with per-track thresholds stored in the checkpoint (tuned on validation pairs so
the predicted note density matches the data's) and fed back.  The model is deterministic given its
start: variants differ only by their (seeded) start windows; with an uploaded MIDI every variant is
the same.  The seed found the outputs hardly change with the start; evaluation/variety.py measures it.

    python -m model.cnn evaluate cnn --data data/corpus --split test     # held-out BCE and cell F1
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenizer import Score

from . import checkpoint as ckpt
from . import rollwindows as RW
from .engine import Engine, GenerationRequest, register

log = logging.getLogger(__name__)

HARMONY = ("guitar", "bass", "strings", "drums")


@dataclass
class CNNConfig:
    channels: list = field(default_factory=lambda: [16, 32, 32])  # the 3 convolutions' channels
    hidden: int = 128  # the dense layers' width
    n_start: int = 64  # start windows stored in the checkpoint
    windows_per_piece: int = 4  # training pairs: consecutive windows kept per piece
    steps_per_beat: int = RW.STEPS_PER_BEAT
    window: int = RW.WINDOW

    @classmethod
    def from_dict(cls, d: dict) -> "CNNConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, CNNConfig] = {
    "tiny": CNNConfig(channels=[4, 8, 8], hidden=16, n_start=4, windows_per_piece=8),
    "cpu": CNNConfig(channels=[32, 64, 32], hidden=128, n_start=64, windows_per_piece=8),
}


# ---- layers (shared with vae_nn) --------------------------------------------------------------------
def conv_tower(ch: list) -> nn.Sequential:
    """(B, 1, 32, 128) -> (B, ch[2], 4, 8): strides (2,2), (2,4), (2,2)."""
    c1, c2, c3 = ch
    return nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1), nn.ReLU(),  # (c1, 16, 64)
        nn.Conv2d(c1, c2, 4, (2, 4), (1, 0)), nn.ReLU(),  # (c2, 8, 16)
        nn.Conv2d(c2, c3, 4, 2, 1), nn.ReLU(),  # (c3, 4, 8)
        nn.Flatten(),
    )


def deconv_tower(ch: list) -> nn.Sequential:
    """(B, ch[2] * 4 * 8) -> logits (B, 1, 32, 128)."""
    c1, c2, c3 = ch
    return nn.Sequential(
        nn.Unflatten(1, (c3, 4, 8)),
        nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.ReLU(),  # (c2, 8, 16)
        nn.ConvTranspose2d(c2, c1, 4, (2, 4), (1, 0)), nn.ReLU(),  # (c1, 16, 64)
        nn.ConvTranspose2d(c1, 1, 4, 2, 1),  # (1, 32, 128)
    )


def flat_size(ch: list) -> int:
    return ch[2] * 4 * 8


class MelodyCNN(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        f, h = flat_size(cfg.channels), cfg.hidden
        self.conv = conv_tower(cfg.channels)
        self.dense = nn.Sequential(nn.Linear(f, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, f), nn.ReLU())
        self.deconv = deconv_tower(cfg.channels)

    def forward(self, piano: torch.Tensor) -> torch.Tensor:
        """piano window t (B, 32, 128) -> logits of piano window t+1 (B, 32, 128)."""
        return self.deconv(self.dense(self.conv(piano[:, None].float())))[:, 0]


class HarmonyCNN(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        f, h = flat_size(cfg.channels), cfg.hidden
        self.conv_piano = conv_tower(cfg.channels)
        self.conv_own = conv_tower(cfg.channels)
        self.dense = nn.Sequential(nn.Linear(2 * f, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, f),
                                   nn.ReLU())
        self.deconv = deconv_tower(cfg.channels)

    def forward(self, piano_next: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """(piano window t+1, own window t), each (B, 32, 128) -> logits of own window t+1 (B, 32, 128)."""
        z = torch.cat([self.conv_piano(piano_next[:, None].float()), self.conv_own(own[:, None].float())], 1)
        return self.deconv(self.dense(z))[:, 0]


class CNNModel(nn.Module):
    """The five CNNs, plus buffers the engine needs offline: start windows (packed bits) and the
    per-track note thresholds."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        self.melody = MelodyCNN(cfg)
        self.harmony = nn.ModuleDict({name: HarmonyCNN(cfg) for name in HARMONY})
        self.register_buffer("start_windows", torch.zeros(cfg.n_start, RW.N_TRACKS, RW.WINDOW, RW.PITCHES // 8,
                                                          dtype=torch.uint8))
        self.register_buffer("thresholds", torch.full((RW.N_TRACKS,), 0.5))

    def forward(self, x_t: torch.Tensor, piano_next: torch.Tensor) -> torch.Tensor:
        """Windows t (B, 5, 32, 128) and the piano window t+1 (B, 32, 128) -> logits of windows t+1
        (B, 5, 32, 128) (piano from MelodyCNN, the rest given `piano_next`)."""
        out = [self.melody(x_t[:, 0])]
        for k, name in enumerate(HARMONY, start=1):
            out.append(self.harmony[name](piano_next, x_t[:, k]))
        return torch.stack(out, 1)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor) -> torch.Tensor:
        """Generation: windows t (B, 5, 32, 128) bool -> windows t+1 bool."""
        th = self.thresholds.float()
        piano = torch.sigmoid(self.melody(x_t[:, 0]).float()) > th[0]  # (B, 32, 128)
        out = [piano]
        for k, name in enumerate(HARMONY, start=1):
            out.append(torch.sigmoid(self.harmony[name](piano, x_t[:, k]).float()) > th[k])
        return torch.stack(out, 1)


def build_model(cfg: CNNConfig) -> CNNModel:
    return CNNModel(cfg)


# ---- loss for the shared training loop ---------------------------------------------------------------
def frame_hits(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold-free accuracy: in every (track, step) that plays n notes, how many of the n most
    likely pitches play.  Returns (hits, notes) per track (5,)."""
    n = target.sum(-1, keepdim=True)  # (B, 5, 32, 1)
    order = logits.detach().float().argsort(-1, descending=True)
    ranked = target.gather(-1, order)  # (B, 5, 32, 128)
    top = torch.arange(target.shape[-1]) < n
    return (ranked * top).sum((0, 2, 3)), n.sum((0, 2, 3))


def cnn_loss(model: CNNModel, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """batch (B, 2, 5, 32, 128) 0/1 -> mean BCE per cell of windows t+1 (piano from MelodyCNN given
    piano t; the other tracks given their window t and the true piano t+1)."""
    x = batch.float()
    x_t, x_n = x[:, 0], x[:, 1]
    logits = model(x_t, x_n[:, 0])  # (B, 5, 32, 128)
    bce = F.binary_cross_entropy_with_logits(logits.float(), x_n, reduction="none")  # (B, 5, 32, 128)
    loss = bce.mean()
    with torch.no_grad():
        hits, notes = frame_hits(logits, x_n)
        sums = {"bce": bce.detach().sum(), "cells": torch.tensor(float(bce.numel())), "hits": hits.sum(),
                "notes": notes.sum()}
        per = bce.detach().sum((0, 2, 3))
        for k, name in enumerate(RW.TRACKS):
            sums[f"bce_{name}"] = per[k]
            sums[f"hits_{name}"], sums[f"notes_{name}"] = hits[k], notes[k]
    return loss, sums


def summarize(sums: dict[str, float]) -> dict[str, float]:
    cells = max(sums["cells"], 1.0)
    out = {"loss": sums["bce"] / cells, "accuracy": sums["hits"] / max(sums["notes"], 1.0)}
    for name in RW.TRACKS:
        if f"bce_{name}" in sums:
            out[f"bce_{name}"] = sums[f"bce_{name}"] / (cells / RW.N_TRACKS)
            out[f"hits_{name}"] = sums[f"hits_{name}"] / max(sums[f"notes_{name}"], 1.0)
    return out


@torch.no_grad()
def predict_probs(model: CNNModel, batch: torch.Tensor) -> torch.Tensor:
    """Teacher-forced next-window probabilities (B, 5, 32, 128) of pairs (B, 2, 5, 32, 128)."""
    x = batch.float()
    return torch.sigmoid(model(x[:, 0], x[:, 1, 0]).float())


def calibrate(model: CNNModel, val_batch: torch.Tensor) -> None:
    """Set the per-track thresholds so predicted note density on validation pairs matches the data."""
    was = model.training
    model.eval()
    model.thresholds.copy_(RW.density_thresholds(predict_probs(model, val_batch), val_batch[:, 1]))
    model.train(was)


# ---- training task ---------------------------------------------------------------------------------------
def _preset(name: str) -> CNNConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} for cnn; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def _task(args):
    from training.train import TrainTask

    cfg = _preset(args.preset)
    pairs = RW.derived_pairs(args.data, cfg.windows_per_piece, limit=getattr(args, "piece_limit", None))
    starts = torch.from_numpy(RW.start_set(*pairs["train"], cfg.n_start))
    cfg = CNNConfig(**{**cfg.__dict__, "n_start": len(starts)})
    val = RW.WindowPairs(*pairs["validation"], max_pairs=args.val_windows)
    calib = RW.batch_of(val, 256)

    def build(c: CNNConfig) -> CNNModel:
        m = build_model(c)
        m.start_windows.copy_(starts)
        return m

    def state(m: CNNModel) -> dict:
        calibrate(m, calib)
        return m.state_dict()

    return TrainTask(engine="cnn", config=cfg, build=build, loss=cnn_loss, summarize=summarize,
                     train_set=RW.WindowPairs(*pairs["train"]), val_set=val, state_for_checkpoint=state)


TRAIN_TASKS: dict[str, Callable] = {"cnn": _task}


# ---- held-out evaluation --------------------------------------------------------------------------------
def load_model(source) -> tuple[CNNModel, CNNConfig, dict]:
    state, config = ckpt.load_checkpoint(source, engine="cnn")
    cfg = CNNConfig.from_dict(config["model"])
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.eval(), cfg, config


@torch.no_grad()
def evaluate_checkpoint(source, data, split: str = "test", batch: int = 64, max_pairs: int | None = None) -> dict:
    """Teacher-forced next-window BCE per cell and cell F1 at the stored thresholds, per track, with the
    'repeat the previous window' baseline's F1 and the constant-density baseline's BCE for comparison."""
    from torch.utils.data import DataLoader

    model, cfg, _ = load_model(source)
    t0 = time.perf_counter()
    ds = RW.WindowPairs(*RW.derived_pairs(data, cfg.windows_per_piece, splits=(split,))[split], max_pairs=max_pairs)
    sums: dict[str, float] = {}
    f1s = {k: torch.zeros(RW.N_TRACKS) for k in ("tp", "pp", "ap", "btp", "bpp")}
    for b in DataLoader(ds, batch_size=batch):
        _, s = cnn_loss(model, b)
        for k, v in s.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        probs = predict_probs(model, b)
        pred = probs > model.thresholds[None, :, None, None]
        c = RW.f1_sums(pred, b[:, 1])
        base = RW.f1_sums(b[:, 0], b[:, 1])
        for k in ("tp", "pp", "ap"):
            f1s[k] += c[k]
        f1s["btp"] += base["tp"]
        f1s["bpp"] += base["pp"]
    out = summarize(sums)
    out["frame_hit_rate"] = out.pop("accuracy")
    for k, name in enumerate(RW.TRACKS):
        out[f"f1_{name}"] = RW.f1(float(f1s["tp"][k]), float(f1s["pp"][k]), float(f1s["ap"][k]))
        out[f"repeat_f1_{name}"] = RW.f1(float(f1s["btp"][k]), float(f1s["bpp"][k]), float(f1s["ap"][k]))
    cells = len(ds) * RW.WINDOW * RW.PITCHES
    for k, name in enumerate(RW.TRACKS):
        out[f"density_bce_{name}"] = RW.density_bce(float(f1s["ap"][k]), cells)
    out["density_bce"] = float(np.mean([out[f"density_bce_{name}"] for name in RW.TRACKS]))
    out["f1"] = RW.f1(float(f1s["tp"].sum()), float(f1s["pp"].sum()), float(f1s["ap"].sum()))
    out["repeat_f1"] = RW.f1(float(f1s["btp"].sum()), float(f1s["bpp"].sum()), float(f1s["ap"].sum()))
    out.update({"engine": "cnn", "checkpoint": str(source), "split": split, "pairs": len(ds),
                "thresholds": [round(float(t), 4) for t in model.thresholds],
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


# ---- the engine -----------------------------------------------------------------------------------------
class CNNEngine(Engine):
    name = "cnn"
    description = ("MelodyCNN + conditional harmony CNNs (seed 001): the next 4-bar pianoroll window of the piano "
                   "from the current one, then guitar, bass, strings and drums from the new piano window and "
                   "their own previous window; cells thresholded to notes.  Deterministic given its start: "
                   "variants differ only by their (seeded) start window from a stored set, and with an "
                   "uploaded MIDI all variants are the same.  The seed found the output hardly changes with "
                   "the start.")
    controls = frozenset({"groups", "drums", "bars", "variants", "seed", "bpm", "prompt"})
    styles = ()

    def __init__(self, source: str | Path | None = None):
        source = ckpt.shipped(self.name, source)
        self.model, self.cfg, config = load_model(source)
        self.meta = config.get("meta", {})
        self.source = str(source)
        self.last_stats: dict = {}
        self._lock = threading.Lock()

    @torch.no_grad()
    def rollout(self, start: np.ndarray, n: int, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """start (B, 5, 32, 128) bool -> the n windows after it (B, n, 5, 32, 128) bool."""
        cur = torch.from_numpy(np.asarray(start, bool))
        out = []
        for i in range(n):
            cur = self.model.step(cur)
            out.append(cur)
            if progress is not None:
                progress((i + 1) / n)
        return torch.stack(out, 1).numpy()

    def generate(self, request: GenerationRequest, progress: Callable[[float], None] | None = None) -> list[Score]:
        req = request.validate()
        with self._lock:
            t0 = time.perf_counter()
            start, picks = RW.start_windows(req, self.model.start_windows)
            n = RW.n_windows(req.bars)
            rolls = self.rollout(start, n, progress)
            dt = time.perf_counter() - t0
        steps = req.variants * n * RW.WINDOW
        self.last_stats = {"seconds": dt, "tokens": steps, "tokens_per_s": steps / max(dt, 1e-9), "starts": picks}
        return RW.windows_to_scores(req, rolls)


register("cnn", CNNEngine)


def main(argv=None) -> int:
    return ckpt.evaluate_main(argv, "python -m model.cnn", "held-out BCE and cell F1 of a cnn checkpoint", ("cnn",),
                              evaluate_checkpoint)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["CNNConfig", "PRESETS", "CNNModel", "MelodyCNN", "HarmonyCNN", "build_model", "cnn_loss", "summarize",
           "calibrate", "CNNEngine", "TRAIN_TASKS", "evaluate_checkpoint"]
