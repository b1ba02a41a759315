"""The style-conditioned VAE's training task and held-out evaluation ("style-vae", and "style-vae-label",
the label baseline: a style-vae checkpoint with style_mode "label").

Data: every piece of a split cut into segments of note events (tokenizer.events), packed with the
piece's style, built once per corpus build (training.data.derived).

Loss per segment: reconstruction (summed cross-entropy of the three features over the events; the
shift after the last event is EOS, unscored in a segment cut at max_events)
+ beta * KL(q(z_c|x) || N(0, I)) (beta annealed linearly from 0 over `kl_anneal_steps`)
+ cross-entropy(style labels, logits) (codebook only)
+ mu-forcing max(0, beta_mu - (1/2N) sum_n |mu_n - mean mu|^2).

Held-out figures (`evaluate_checkpoint`, `python -m training.evaluate`): teacher-forced reconstruction
from z_c = mu and the encoder's most likely style (the baseline: the true label): accuracy per feature,
nats per event, KL per segment, the encoder's style accuracy; and segment fill, how far into its segment
the music goes, for real segments and generated ones.  Whether generated pieces sound like their style
needs the style classifier: `python -m evaluation.style_accuracy`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from model.sampling.filters import SamplingParams
from model.style_vae import PRESETS, StyleVAE, StyleVAEConfig, StyleVAEEngine, build_model
from tokenizer import vocab as V
from tokenizer.codec import piece_notes
from tokenizer.events import HEADER, N_PITCH, notes_to_events, pack_segment

from ..data import derived, load_split, piece_tokens
from .base import TrainTask, sum_metrics


# ---- loss -----------------------------------------------------------------------------------------
def mu_forcing(mu: torch.Tensor, beta_mu: float) -> torch.Tensor:
    """max(0, beta_mu - (1/2N) sum_n |mu_n - mean mu|^2) over the batch (B, z)."""
    var = 0.5 * (mu - mu.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    return F.relu(beta_mu - var)


def vae_loss(model: nn.Module, batch: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict]:
    """Packed segments (B, 1 + T, 3) -> (the loss, summed metrics).  In training mode each call advances
    the network's step count, which anneals the KL weight.  `sample=False`: z_c = mu, the most likely
    style (evaluation)."""
    net: StyleVAE = getattr(model, "module", model)  # DataParallel / DistributedDataParallel
    cfg = net.cfg
    out = model(batch, sample=sample)
    batch = batch.long()
    style, n, trunc = batch[:, 0, 0], batch[:, 0, 1], batch[:, 0, 2]
    ev = batch[:, HEADER:]  # (B, T, 3)
    B, T = ev.shape[:2]
    mu, logvar, logits, tgt_shift = out["mu"], out["logvar"], out["style_logits"], out["target_shift"]
    ls, ld, lp = out["shift"], out["duration"], out["pitch"]
    pos = torch.arange(T, device=ev.device)[None]
    is_event = pos < n[:, None]  # (B, T)
    is_eos = (pos == n[:, None]) & (trunc[:, None] == 0)
    nll_s = F.cross_entropy(ls.float().transpose(1, 2), tgt_shift, reduction="none")  # (B, T)
    nll_d = F.cross_entropy(ld.float().transpose(1, 2), ev[..., 1], reduction="none")
    nll_p = F.cross_entropy(lp.float().transpose(1, 2), ev[..., 2], reduction="none")
    m_s, m_e = (is_event | is_eos).float(), is_event.float()
    rec = ((nll_s * m_s).sum(1) + ((nll_d + nll_p) * m_e).sum(1))  # (B,) nats per segment
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)  # (B,)
    if net.training:
        net.train_steps += 1
    beta = cfg.beta * min(1.0, float(net.train_steps) / max(1, cfg.kl_anneal_steps))
    style_ce = F.cross_entropy(logits.float(), style, reduction="none")  # (B,)
    loss = (rec + beta * kl).mean() + mu_forcing(mu.float(), cfg.beta_mu)
    if cfg.style_mode == "codebook":
        loss = loss + style_ce.mean()
    with torch.no_grad():
        sums = {
            "nll_shift": (nll_s * m_s).sum(), "nll_duration": (nll_d * m_e).sum(), "nll_pitch": (nll_p * m_e).sum(),
            "correct_shift": ((ls.argmax(-1) == tgt_shift).float() * m_s).sum(),
            "correct_duration": ((ld.argmax(-1) == ev[..., 1]).float() * m_e).sum(),
            "correct_pitch": ((lp.argmax(-1) == ev[..., 2]).float() * m_e).sum(),
            "count_shift": m_s.sum(), "count": m_e.sum(), "kl": kl.sum(), "segments": torch.tensor(float(B)),
            "style_ce": style_ce.sum(), "style_correct": (logits.argmax(-1) == style).float().sum(),
            "mu_var": 0.5 * (mu - mu.mean(0, keepdim=True)).pow(2).sum(-1).mean() * B,
        }
    return loss, sums


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Per-event figures: loss = negative ELBO (beta = 1) per event, accuracy = mean over the features."""
    n, ns, seg = max(sums["count"], 1.0), max(sums["count_shift"], 1.0), max(sums["segments"], 1.0)
    rec = sums["nll_shift"] + sums["nll_duration"] + sums["nll_pitch"]
    acc = {k: sums[f"correct_{k}"] / (ns if k == "shift" else n) for k in ("shift", "duration", "pitch")}
    return {"loss": (rec + sums["kl"]) / n, "accuracy": sum(acc.values()) / 3,
            "rec_per_event": rec / n, **{f"acc_{k}": v for k, v in acc.items()},
            "kl_per_segment": sums["kl"] / seg, "style_acc": sums["style_correct"] / seg,
            "style_ce": sums["style_ce"] / seg, "mu_var": sums["mu_var"] / seg}


# ---- data -----------------------------------------------------------------------------------------
def segments(data: str | Path, cfg: StyleVAEConfig, split: str) -> np.ndarray:
    """Packed segments (N, 1 + max_events, 3) int16 of a split's pieces in `cfg.styles` (read-only memmap),
    built once per corpus build and segment shape."""
    params = {"split": split, "segment_bars": cfg.segment_bars, "max_events": cfg.max_events,
              "styles": list(cfg.styles)}

    def build(folder: Path) -> None:
        toks, index = load_split(data, split)
        packed = []
        for row in index:
            if row["style"] not in cfg.styles:
                continue
            notes = piece_notes(piece_tokens(toks, row))
            if notes is None:
                continue
            s = cfg.styles.index(row["style"])
            packed += [pack_segment(e, s, cfg.max_events) for e in notes_to_events(notes, cfg.segment_steps)
                       if len(e)]
        arr = np.stack(packed) if packed else np.zeros((0, cfg.max_events + HEADER, 3), np.int16)
        np.save(folder / "segments.npy", arr)

    return np.load(derived(data, "style-vae", params, build) / "segments.npy", mmap_mode="r")


def corpus_styles(data: str | Path) -> list[str]:
    """The styles the corpus has (its stats.json), in vocabulary order; all of them if it does not say."""
    stats = Path(data) / "stats.json"
    if stats.exists():
        st = json.loads(stats.read_text()).get("styles")
        if st:
            return [s for s in V.STYLES if s in st]
    return list(V.STYLES)


class Segments(Dataset):
    """Packed segments; with `transpose`, pitched notes move by a random interval that keeps them in range."""

    def __init__(self, packed: np.ndarray, transpose: int = 0, seed: int = 0, max_items: int | None = None):
        self.packed = packed
        self.transpose = transpose
        self.seed, self.epoch = seed, 0
        n = len(packed)
        every = not max_items or n <= max_items
        self.idx = np.arange(n) if every else np.linspace(0, n - 1, max_items).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = np.asarray(self.packed[self.idx[i]], np.int64).copy()
        if self.transpose:
            n = int(x[0, 1])
            ev = x[HEADER:HEADER + n]
            pitched = (ev[:, 2] // 128) != V.DRUM_GROUP
            if pitched.any():
                p = ev[pitched, 2] % 128
                rng = np.random.default_rng((self.seed, self.epoch, int(self.idx[i])))
                lo, hi = max(-self.transpose, -int(p.min())), min(self.transpose + 1, 127 - int(p.max()))
                if lo <= hi:
                    ev[pitched, 2] += int(rng.integers(lo, hi + 1))
        return torch.from_numpy(x)


# ---- training tasks -------------------------------------------------------------------------------
def _task(mode: str):
    def task(args) -> TrainTask:
        if args.preset not in PRESETS:
            raise ValueError(f"unknown preset {args.preset!r} for the style VAE; choose from {', '.join(PRESETS)}")
        cfg = replace(PRESETS[args.preset], style_mode=mode, styles=corpus_styles(args.data))
        return TrainTask(engine="style-vae", config=cfg, build=build_model, loss=vae_loss, summarize=summarize,
                         train_set=Segments(segments(args.data, cfg, "train"), cfg.transpose, seed=args.seed),
                         val_set=Segments(segments(args.data, cfg, "validation"), max_items=args.val_windows))
    return task


# "style-vae-label" trains the baseline; its checkpoint is a style-vae checkpoint with style_mode "label".
TASKS = {"style-vae": _task("codebook"), "style-vae-label": _task("label")}


# ---- held-out figures -----------------------------------------------------------------------------
def reconstruction(model: StyleVAE, packed: np.ndarray, batch: int = 64, max_items: int | None = None) -> dict:
    """Teacher-forced reconstruction from z_c = mu and the encoder's style (argmax; the label for the
    baseline): `summarize`'s figures and the number of segments."""
    model.eval()
    sums = sum_metrics(partial(vae_loss, sample=False), model,
                       DataLoader(Segments(packed, max_items=max_items), batch_size=batch))
    return {**summarize(sums), "segments": int(sums["segments"])} if sums else {"segments": 0}


def segment_fill(packed: np.ndarray, seg_steps: int) -> float:
    """Mean over whole (uncut, non-empty) segments of (last onset + 1) / segment length: how far into
    its segment the music goes."""
    head = np.asarray(packed[:, 0])
    keep = (head[:, 1] > 0) & (head[:, 2] == 0)
    shifts = np.asarray(packed[keep, HEADER:, 0], np.int64)  # padding rows have shift 0
    return float(((shifts.sum(1) + 1) / seg_steps).mean()) if keep.any() else float("nan")


def generated_fill(model: StyleVAE, seed: int, n: int = 64, temperature: float = 1.0,
                   eos_from: float | None = 0.0) -> float:
    """segment_fill of n generated segments (styles in turn).  By default the model ends each segment
    itself (eos_from 0: does it know where a segment ends?); None applies the engine's `eos_from` rule."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    z_cat = F.one_hot(torch.arange(n) % cfg.n_styles, cfg.n_styles).float()
    z = torch.cat([torch.randn(n, cfg.z_content, generator=gen), model.style_vector(z_cat)], -1)
    rows = model.decode(z, SamplingParams(temperature, 1.0, 0, seed), torch.ones(N_PITCH, dtype=torch.bool), gen,
                        eos_from=eos_from)
    return segment_fill(np.stack([pack_segment(r, 0, cfg.max_events) for r in rows]), cfg.segment_steps)


def evaluate_checkpoint(engine: str, source, data, split: str = "test", max_items: int | None = None,
                        batch: int = 64, seed: int = 0) -> dict:
    """Reconstruction figures on (at most `max_items` evenly spaced) segments of the split, and segment fill
    of the split's segments and of 64 generated ones (ended by the model itself, and by the engine's rule)."""
    eng = StyleVAEEngine(source)
    cfg = eng.cfg
    if engine == "style-vae-label" and cfg.style_mode != "label":
        raise ValueError(f"{source} is a style-vae checkpoint with style_mode {cfg.style_mode!r}, not the label "
                         "baseline; evaluate it as --engine style-vae")
    t = time.perf_counter()
    packed = segments(data, cfg, split)
    rec = reconstruction(eng.model, packed, batch, max_items)
    if cfg.style_mode == "label":  # the baseline never trains its encoder's style logits
        rec = {k: v for k, v in rec.items() if k not in ("style_acc", "style_ce")}
    return {"engine": engine, "checkpoint": str(source), "dtype": eng.config.get("dtype"), "split": split,
            "style_mode": cfg.style_mode, "step": eng.meta.get("train", {}).get("step"), **rec,
            "segment_fill_real": segment_fill(packed, cfg.segment_steps),
            "segment_fill_own_ending": generated_fill(eng.model, seed),
            "segment_fill_as_engine": generated_fill(eng.model, seed, eos_from=None),
            "seconds": round(time.perf_counter() - t, 1)}


__all__ = ["TASKS", "Segments", "corpus_styles", "evaluate_checkpoint", "generated_fill", "mu_forcing",
           "reconstruction", "segment_fill", "segments", "summarize", "vae_loss"]
