"""The `vae-nn` engine (seed 001, MusicGenDL): per-instrument convolutional VAEs + latent MLPs.

Windows are 5 tracks (piano, guitar, bass, strings, drums) x 32 steps x 128 pitches at 2 steps per
beat (4 bars of 4/4).  As in the seed:
- one convolutional VAE per instrument (3 convolutions -> mean and log-variance of a 16-d latent;
  dense -> 3 transposed convolutions -> 32x128 cell logits);
- `MelodyNN`: an MLP mapping the piano latent z_t to z_{t+1};
- four `ConditionalNN` MLPs mapping (instrument z_t, piano z_{t+1}) to the instrument's z_{t+1}.

Training (our choice): one module trained jointly through the shared loop (training/train.py) on
consecutive window pairs (model/rollwindows.py): the sum of the five VAE losses on window t (binary
cross-entropy summed over cells + KL to N(0, I), beta = 1) plus the MLPs' latent regression (squared
error): inputs are the encoders' detached posterior samples of window t (and the detached piano mean
of window t+1 for the ConditionalNNs), targets the encoders' detached means of window t+1.  So the
MLPs never shape the latent spaces.

Generation: start from the prompt's window (an uploaded MIDI) or from a window of a small start set
stored in the checkpoint (the app needs no corpus).  Each step encodes the current window per
instrument, adds Gaussian noise with sd `noise_sd` (seed: 0.5-1.0 gives the best variation; default
0.75) to the means, optionally pulls towards a reference song, z' = alpha*s + (1-alpha)*z_t (s: the
latents of a window of the reference drawn at random; alpha 0.5 by default, 0 = no reference, 1 = the
reference latent), maps piano with MelodyNN and the others with their ConditionalNN, decodes, and
thresholds the cell probabilities to notes with per-track thresholds stored in the checkpoint (tuned
on validation pairs along the generation path, with the default noise, so that the note density
matches the data's).  The thresholded window is the next step's input.  References: ~30 named
test-split songs whose windows the checkpoint stores (`VAENNEngine.references`), or an uploaded Score.

Request options (GenerationRequest.extra): "noise_sd" (0..MAX_NOISE_SD), "alpha" (0..1),
"reference" (None, a name from `references`, or a Score).

    python -m model.vae_nn evaluate vae-nn --data data/corpus --split test   # held-out figures
"""

from __future__ import annotations

import logging
import math
import numbers
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
from .cnn import HARMONY, conv_tower, deconv_tower, flat_size, frame_hits
from .engine import MAX_NOISE_SD, Engine, GenerationRequest, register

log = logging.getLogger(__name__)


@dataclass
class VAENNConfig:
    channels: list = field(default_factory=lambda: [16, 32, 32])  # the VAEs' 3 convolutions
    latent: int = 16  # seed: 16 (8, 16, 32, 64 tried)
    mlp_hidden: int = 128  # MelodyNN / ConditionalNN width
    beta: float = 1.0  # KL weight
    noise_sd: float = 0.75  # default latent noise (seed: 0.5-1.0)
    alpha: float = 0.5  # default pull towards a reference (seed: 0.5)
    n_start: int = 64  # start windows stored in the checkpoint
    n_ref_windows: int = 0  # reference windows stored (set from the data)
    reference_names: list = field(default_factory=list)  # built-in reference songs ("style: title")
    n_references: int = 30
    ref_windows_per_song: int = 12
    windows_per_piece: int = 8  # training pairs: consecutive windows kept per piece
    steps_per_beat: int = RW.STEPS_PER_BEAT
    window: int = RW.WINDOW

    @classmethod
    def from_dict(cls, d: dict) -> "VAENNConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, VAENNConfig] = {
    "tiny": VAENNConfig(channels=[4, 8, 8], latent=4, mlp_hidden=16, n_start=4, n_references=3,
                        ref_windows_per_song=4, windows_per_piece=8),
    "cpu": VAENNConfig(channels=[32, 64, 64], latent=16, mlp_hidden=128, n_start=64, n_references=30,
                       ref_windows_per_song=12, windows_per_piece=8),
}


# ---- models ------------------------------------------------------------------------------------------
class WindowVAE(nn.Module):
    """One instrument's VAE: (B, 32, 128) -> (mu, logvar) (B, latent); latent -> cell logits (B, 32, 128)."""

    def __init__(self, cfg: VAENNConfig):
        super().__init__()
        f = flat_size(cfg.channels)
        self.enc = conv_tower(cfg.channels)
        self.to_stats = nn.Linear(f, 2 * cfg.latent)
        self.from_z = nn.Sequential(nn.Linear(cfg.latent, f), nn.ReLU())
        self.dec = deconv_tower(cfg.channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.enc(x[:, None].float())).chunk(2, -1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(self.from_z(z))[:, 0]


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class MelodyNN(nn.Module):
    """piano z_t (B, L) -> piano z_{t+1} (B, L)."""

    def __init__(self, cfg: VAENNConfig):
        super().__init__()
        self.net = mlp(cfg.latent, cfg.mlp_hidden, cfg.latent)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConditionalNN(nn.Module):
    """(instrument z_t, piano z_{t+1}) (B, L) each -> instrument z_{t+1} (B, L)."""

    def __init__(self, cfg: VAENNConfig):
        super().__init__()
        self.net = mlp(2 * cfg.latent, cfg.mlp_hidden, cfg.latent)

    def forward(self, z: torch.Tensor, piano_next: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, piano_next], -1))


def style_mix(z: torch.Tensor, s: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """z' = alpha*s + (1-alpha)*z (seed 001); alpha 0 or no reference: z itself, alpha 1: s itself."""
    if s is None or alpha == 0:
        return z
    if alpha == 1:
        return s.expand_as(z).clone()
    return alpha * s + (1 - alpha) * z


class VAENN(nn.Module):
    """Five VAEs, MelodyNN, four ConditionalNNs, plus buffers for offline use: start windows and
    reference windows (packed bits), each reference window's song, and the per-track thresholds."""

    def __init__(self, cfg: VAENNConfig):
        super().__init__()
        self.cfg = cfg
        self.vaes = nn.ModuleDict({name: WindowVAE(cfg) for name in RW.TRACKS})
        self.melody = MelodyNN(cfg)
        self.cond = nn.ModuleDict({name: ConditionalNN(cfg) for name in HARMONY})
        packed = (RW.N_TRACKS, RW.WINDOW, RW.PITCHES // 8)
        self.register_buffer("start_windows", torch.zeros(cfg.n_start, *packed, dtype=torch.uint8))
        self.register_buffer("ref_windows", torch.zeros(cfg.n_ref_windows, *packed, dtype=torch.uint8))
        self.register_buffer("ref_song", torch.zeros(cfg.n_ref_windows, dtype=torch.int64))
        self.register_buffer("thresholds", torch.full((RW.N_TRACKS,), 0.5))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """windows (B, 5, 32, 128) -> mu, logvar (B, 5, L)."""
        stats = [self.vaes[name].encode(x[:, k]) for k, name in enumerate(RW.TRACKS)]
        return torch.stack([s[0] for s in stats], 1), torch.stack([s[1] for s in stats], 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents (B, 5, L) -> cell logits (B, 5, 32, 128)."""
        return torch.stack([self.vaes[name].decode(z[:, k]) for k, name in enumerate(RW.TRACKS)], 1)

    def predict(self, z: torch.Tensor, piano_next: torch.Tensor | None = None) -> torch.Tensor:
        """latents t (B, 5, L) -> latents t+1 (B, 5, L).  The ConditionalNNs get `piano_next` when given
        (training: the true piano latent), else MelodyNN's prediction (generation)."""
        p = self.melody(z[:, 0])
        cond_in = p if piano_next is None else piano_next
        return torch.stack([p] + [self.cond[name](z[:, k], cond_in) for k, name in enumerate(HARMONY, 1)], 1)


def build_model(cfg: VAENNConfig) -> VAENN:
    return VAENN(cfg)


# ---- loss for the shared training loop ------------------------------------------------------------------
def vae_nn_loss(model: VAENN, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """batch (B, 2, 5, 32, 128) 0/1.  Per pair: sum over instruments of (BCE summed over cells + beta*KL)
    of window t, plus the MLPs' squared error to the detached means of window t+1."""
    x = batch.float()
    x_t, x_n = x[:, 0], x[:, 1]
    B = x.shape[0]
    mu, logvar = model.encode(x_t)  # (B, 5, L)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    logits = model.decode(z)  # (B, 5, 32, 128)
    bce = F.binary_cross_entropy_with_logits(logits.float(), x_t, reduction="none").sum((2, 3))  # (B, 5)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)  # (B, 5)
    with torch.no_grad():
        mu_n, _ = model.encode(x_n)
    pred = model.predict(z.detach(), mu_n[:, 0])
    mse = (pred - mu_n).pow(2).sum(-1)  # (B, 5)
    loss = (bce.sum() + model.cfg.beta * kl.sum() + mse.sum()) / B
    with torch.no_grad():
        hits, notes = frame_hits(logits, x_t)
        sums = {"total": loss.detach() * B, "pairs": torch.tensor(float(B)), "hits": hits.sum(), "notes": notes.sum()}
        for k, name in enumerate(RW.TRACKS):
            sums[f"bce_{name}"] = bce[:, k].detach().sum()
            sums[f"kl_{name}"] = kl[:, k].detach().sum()
            sums[f"mse_{name}"] = mse[:, k].detach().sum()
            sums[f"hits_{name}"], sums[f"notes_{name}"] = hits[k], notes[k]
    return loss, sums


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """loss: per pair (nats); accuracy: reconstruction frame-hit rate (of the n pitches sounding in a
    track's step, the share among the n most likely); bce_*: reconstruction BCE per cell."""
    n = max(sums["pairs"], 1.0)
    out = {"loss": sums["total"] / n, "accuracy": sums["hits"] / max(sums["notes"], 1.0)}
    cells = RW.WINDOW * RW.PITCHES
    for name in RW.TRACKS:
        if f"bce_{name}" in sums:
            out[f"bce_{name}"] = sums[f"bce_{name}"] / n / cells
            out[f"kl_{name}"] = sums[f"kl_{name}"] / n
            out[f"mse_{name}"] = sums[f"mse_{name}"] / n
            out[f"hits_{name}"] = sums[f"hits_{name}"] / max(sums[f"notes_{name}"], 1.0)
    return out


@torch.no_grad()
def next_probs(model: VAENN, x_t: torch.Tensor, noise_sd: float = 0.0, gen: torch.Generator | None = None,
               s: torch.Tensor | None = None, alpha: float = 0.0) -> torch.Tensor:
    """The generation path: windows t (B, 5, 32, 128) -> probabilities of windows t+1 (B, 5, 32, 128)."""
    mu, _ = model.encode(x_t.float())
    z = mu + noise_sd * torch.randn(mu.shape, generator=gen) if noise_sd else mu
    z = style_mix(z, s, alpha)
    return torch.sigmoid(model.decode(model.predict(z)).float())


def calibrate(model: VAENN, val_batch: torch.Tensor, noise_sd: float | None = None) -> None:
    """Per-track thresholds so that the generation path's thresholded output on validation pairs has
    the data's note density (with the default noise, a fixed generator)."""
    was = model.training
    model.eval()
    sd = model.cfg.noise_sd if noise_sd is None else noise_sd
    probs = next_probs(model, val_batch[:, 0], sd, torch.Generator().manual_seed(0))
    model.thresholds.copy_(RW.density_thresholds(probs, val_batch[:, 1]))
    model.train(was)


# ---- training task ----------------------------------------------------------------------------------------
def _preset(name: str) -> VAENNConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} for vae-nn; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def _task(args):
    from training.train import TrainTask

    cfg = _preset(args.preset)
    pairs = RW.derived_pairs(args.data, cfg.windows_per_piece)
    starts = torch.from_numpy(RW.start_set(*pairs["train"], cfg.n_start))
    names, ref_w, ref_song = RW.reference_set(args.data, cfg.n_references, cfg.ref_windows_per_song)
    cfg = VAENNConfig(**{**cfg.__dict__, "n_start": len(starts), "n_ref_windows": len(ref_w),
                         "reference_names": names})
    val = RW.WindowPairs(*pairs["validation"], max_pairs=args.val_windows)
    calib = RW.batch_of(val, 256)

    def build(c: VAENNConfig) -> VAENN:
        m = build_model(c)
        m.start_windows.copy_(starts)
        m.ref_windows.copy_(torch.from_numpy(ref_w))
        m.ref_song.copy_(torch.from_numpy(ref_song))
        return m

    def state(m: VAENN) -> dict:
        calibrate(m, calib)
        return m.state_dict()

    return TrainTask(engine="vae-nn", config=cfg, build=build, loss=vae_nn_loss, summarize=summarize,
                     train_set=RW.WindowPairs(*pairs["train"]), val_set=val, state_for_checkpoint=state)


TRAIN_TASKS: dict[str, Callable] = {"vae-nn": _task}


# ---- held-out evaluation ------------------------------------------------------------------------------------
def load_model(source) -> tuple[VAENN, VAENNConfig, dict]:
    state, config = ckpt.load_checkpoint(source, engine="vae-nn")
    cfg = VAENNConfig.from_dict(config["model"])
    model = build_model(cfg)
    model.load_state_dict(state)
    return model.eval(), cfg, config


@torch.no_grad()
def evaluate_checkpoint(source, data, split: str = "test", batch: int = 64, max_pairs: int | None = None) -> dict:
    """Held-out VAE loss (per pair), per-instrument reconstruction BCE per cell and frame-hit rate, KL,
    the MLPs' latent error, and next-window cell F1 along the generation path (no noise, stored
    thresholds), with the 'repeat the previous window' baseline's F1 and the constant-density
    baseline's BCE per cell."""
    from torch.utils.data import DataLoader

    model, cfg, _ = load_model(source)
    t0 = time.perf_counter()
    ds = RW.WindowPairs(*RW.derived_pairs(data, cfg.windows_per_piece, splits=(split,))[split], max_pairs=max_pairs)
    torch.manual_seed(0)
    sums: dict[str, float] = {}
    acc = {k: torch.zeros(RW.N_TRACKS) for k in ("tp", "pp", "ap", "btp", "bpp", "nbce")}
    for b in DataLoader(ds, batch_size=batch):
        _, s = vae_nn_loss(model, b)
        for k, v in s.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        probs = next_probs(model, b[:, 0])
        target = b[:, 1].float()
        acc["nbce"] += F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), target, reduction="none").sum((0, 2, 3))
        c = RW.f1_sums(probs > model.thresholds[None, :, None, None], b[:, 1])
        base = RW.f1_sums(b[:, 0], b[:, 1])
        for k in ("tp", "pp", "ap"):
            acc[k] += c[k]
        acc["btp"] += base["tp"]
        acc["bpp"] += base["pp"]
    out = summarize(sums)
    out["recon_frame_hit_rate"] = out.pop("accuracy")
    cells = len(ds) * RW.WINDOW * RW.PITCHES
    for k, name in enumerate(RW.TRACKS):
        out[f"next_bce_{name}"] = float(acc["nbce"][k]) / max(cells, 1)
        out[f"next_f1_{name}"] = RW.f1(float(acc["tp"][k]), float(acc["pp"][k]), float(acc["ap"][k]))
        out[f"repeat_f1_{name}"] = RW.f1(float(acc["btp"][k]), float(acc["bpp"][k]), float(acc["ap"][k]))
    for k, name in enumerate(RW.TRACKS):
        out[f"density_bce_{name}"] = RW.density_bce(float(acc["ap"][k]), cells)
    out["density_bce"] = float(np.mean([out[f"density_bce_{name}"] for name in RW.TRACKS]))
    out["next_bce"] = float(acc["nbce"].sum()) / max(cells * RW.N_TRACKS, 1)
    out["next_f1"] = RW.f1(float(acc["tp"].sum()), float(acc["pp"].sum()), float(acc["ap"].sum()))
    out["repeat_f1"] = RW.f1(float(acc["btp"].sum()), float(acc["bpp"].sum()), float(acc["ap"].sum()))
    out.update({"engine": "vae-nn", "checkpoint": str(source), "split": split, "pairs": len(ds),
                "thresholds": [round(float(t), 4) for t in model.thresholds],
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


# ---- the engine ------------------------------------------------------------------------------------------
def _number(extra: dict, key: str, default: float, lo: float, hi: float, what: str) -> float:
    v = extra.get(key)
    if v is None:
        return float(default)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{what} must be a number from {lo} to {hi} (got {v!r})")
    if not lo <= float(v) <= hi:
        raise ValueError(f"{what} must be {lo} to {hi} (got {v})")
    return float(v)


class VAENNEngine(Engine):
    name = "vae-nn"
    description = ("VAE-NN (seed 001): a convolutional VAE per instrument (16-d latents of 4-bar pianoroll "
                   "windows); an MLP maps the piano latent to the next window's, and conditional MLPs map each "
                   "other instrument's latent plus the new piano latent to its next one; Gaussian noise on the "
                   "latents (noise sd) makes variants differ even from the same start; a reference song pulls "
                   "the latents towards its windows (z' = alpha*s + (1-alpha)*z).  Decoded cells are "
                   "thresholded to notes.")
    controls = frozenset({"groups", "drums", "bars", "variants", "seed", "bpm", "prompt", "noise_sd", "alpha",
                          "reference"})
    styles = ()

    def __init__(self, source: str | Path | None = None):
        source = ckpt.shipped(self.name, source)
        self.model, self.cfg, config = load_model(source)
        self.meta = config.get("meta", {})
        self.source = str(source)
        self.references = tuple(self.cfg.reference_names)
        self.last_stats: dict = {}
        self._lock = threading.Lock()
        with torch.no_grad():
            w = torch.from_numpy(RW.unpack(self.model.ref_windows.numpy()))
            self._ref_latents = self.model.encode(w)[0] if len(w) else torch.zeros(0, RW.N_TRACKS, self.cfg.latent)

    # -- options ------------------------------------------------------------------------------------------
    def options(self, extra: dict) -> tuple[float, float, torch.Tensor | None]:
        """(noise_sd, alpha, reference latents (n, 5, L) or None) from request.extra; ValueError if bad."""
        noise_sd = _number(extra, "noise_sd", self.cfg.noise_sd, 0.0, MAX_NOISE_SD, "noise sd")
        alpha = _number(extra, "alpha", self.cfg.alpha, 0.0, 1.0, "alpha (the pull towards the reference)")
        ref = extra.get("reference")
        if ref is None or (isinstance(ref, str) and not ref.strip()):
            return noise_sd, alpha, None
        if isinstance(ref, str):
            if ref not in self.references:
                raise ValueError(f"unknown reference song {ref!r}; choose one of the {len(self.references)} built-in "
                                 f"references (e.g. {', '.join(self.references[:3])}) or upload a MIDI")
            return noise_sd, alpha, self._ref_latents[self.model.ref_song == self.references.index(ref)]
        if isinstance(ref, Score):
            w = RW.score_windows(ref)
            if not len(w):
                raise ValueError("the reference MIDI has no notes")
            with torch.no_grad():
                return noise_sd, alpha, self.model.encode(torch.from_numpy(w))[0]
        raise ValueError(f"reference must be a built-in reference name or an uploaded MIDI (got {type(ref).__name__})")

    @torch.no_grad()
    def rollout(self, start: np.ndarray, n: int, seed: int, noise_sd: float, alpha: float,
                ref: torch.Tensor | None, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """start (B, 5, 32, 128) bool -> the n windows after it (B, n, 5, 32, 128) bool.  Variant b draws its
        noise and its reference windows from its own generators (seeded from (seed, b))."""
        B = start.shape[0]
        noise_gens = [RW.variant_generator(seed, b) for b in range(B)]
        ref_gens = [RW.variant_generator(seed + 2**32, b) for b in range(B)]
        th = self.model.thresholds.float()[None, :, None, None]
        cur = torch.from_numpy(np.asarray(start, bool)).float()
        out = []
        for i in range(n):
            mu, _ = self.model.encode(cur)  # (B, 5, L)
            z = mu
            if noise_sd:
                z = mu + noise_sd * torch.stack([torch.randn(mu.shape[1:], generator=g) for g in noise_gens])
            s = None
            if ref is not None and alpha > 0:
                s = ref[torch.cat([torch.randint(len(ref), (1,), generator=g) for g in ref_gens])]  # (B, 5, L)
            z = style_mix(z, s, alpha)
            nxt = torch.sigmoid(self.model.decode(self.model.predict(z)).float()) > th
            out.append(nxt)
            cur = nxt.float()
            if progress is not None:
                progress((i + 1) / n)
        return torch.stack(out, 1).numpy()

    def generate(self, request: GenerationRequest, progress: Callable[[float], None] | None = None) -> list[Score]:
        req = request.validate()
        noise_sd, alpha, ref = self.options(req.extra or {})
        with self._lock:
            t0 = time.perf_counter()
            start, picks = RW.start_windows(req, self.model.start_windows)
            n = RW.n_windows(req.bars)
            rolls = self.rollout(start, n, req.seed, noise_sd, alpha, ref, progress)
            dt = time.perf_counter() - t0
        steps = req.variants * n * RW.WINDOW
        self.last_stats = {"seconds": dt, "tokens": steps, "tokens_per_s": steps / max(dt, 1e-9), "starts": picks,
                           "noise_sd": noise_sd, "alpha": alpha if ref is not None else 0.0}
        return RW.windows_to_scores(req, rolls)


register("vae-nn", VAENNEngine)


def main(argv=None) -> int:
    return ckpt.evaluate_main(argv, "python -m model.vae_nn", "held-out figures of a vae-nn checkpoint", ("vae-nn",),
                              evaluate_checkpoint)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["VAENNConfig", "PRESETS", "VAENN", "WindowVAE", "MelodyNN", "ConditionalNN", "style_mix", "build_model",
           "vae_nn_loss", "summarize", "calibrate", "VAENNEngine", "TRAIN_TASKS", "evaluate_checkpoint"]
