"""The style-conditioned VAE (seed 000; Lim, Chan & Loo, "Style-Conditioned Music Generation", ICME 2020).

A segment of music (4 bars by reference; the `cpu` preset uses 2) is a sequence of note events
(onset shift, duration, instrument-pitch), in the corpus order (by onset, then group, then pitch):

- shift: steps (1/32 notes) from the previous event's onset (the first: from the segment start);
  one extra class, EOS, ends the segment;
- duration: the vocabulary's duration level (tokenizer.vocab.DURATION_LEVELS);
- pitch: group * 128 + MIDI pitch, so an event also says which instrument group plays it (drums
  included): the segment is a whole arrangement, not one line.

Model: a bidirectional GRU encoder (two layers) reads the events; its final states give mu, log sigma^2
of the content latent z_c and the style logits.  z_cat = softmax((logits + G) / tau), G Gumbel noise,
tau constant (0.02: nearly one-hot); z_s = z_cat @ codebook (a learnable styles x d_s table);
z = [z_c, z_s] -> linear -> tanh -> the initial state of a two-layer GRU decoder.  As a deviation
from the reference, z is also concatenated to every decoder input (a long polyphonic segment otherwise
forgets its latent; `z_every_step`), and, with `position` (the `cpu` preset), each event's onset within
the segment is embedded and added to its input (a recurrent net cannot count steps, so it otherwise
loses the beat and the segment's end).  Within an event the decoder predicts shift, then duration given
the shift, then pitch given both.

Loss per segment: reconstruction (summed cross-entropy of the three features over the events)
+ beta * KL(q(z_c|x) || N(0, I)) (beta annealed linearly from 0 over `kl_anneal_steps`)
+ cross-entropy(style labels, logits) + mu-forcing max(0, beta_mu - (1/2N) sum_n |mu_n - mean mu|^2).

Baseline (`style_mode="label"`): the same VAE with the one-hot style label fed straight to the decoder
in place of z_s (no codebook, no Gumbel-softmax, no style loss), as the seed compares against.

Generation: z_cat = the chosen style's one-hot row (so z_s is that style's codebook row), z_c drawn
from N(0, I); the requested bars are cut into segments and the segments are decoded together in one
batch.  Chaining: segment k+1's z_c = rho * z_k + sqrt(1 - rho^2) * noise, a stationary walk in the
prior, so neighbouring segments share content and the piece drifts instead of jumping.  Instruments:
the pitch softmax is masked to the requested groups (and drums iff asked), so the style decides the
rhythm and voicing and the musician decides who plays it.  Style transfer: an uploaded MIDI is cut
into segments, each encoded to its mean mu (its content), and decoded with the requested style.

    python -m training.train --engine style-vae --preset cpu --data data/corpus --out runs/style-vae-cpu
    python -m model.style_vae evaluate runs/style-vae-cpu/best runs/style-vae-label-cpu/best --data data/corpus
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
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

from . import checkpoint as ckpt
from .engine import Engine, GenerationRequest, register
from .sampling import SamplingParams, sample_token

log = logging.getLogger(__name__)

N_PITCH = V.N_GROUPS * 128  # group * 128 + pitch
DEFAULT_VELOCITY = V.velocity_level(96)
HEADER = 1  # row 0 of a packed segment: (style, n_events, truncated)


# ---- config ---------------------------------------------------------------------------------------
@dataclass
class StyleVAEConfig:
    styles: list = field(default_factory=lambda: list(V.STYLES))  # the corpus styles (set from the data)
    segment_bars: int = 4  # reference: 4-bar segments
    max_events: int = 256  # longer segments are cut (their EOS is not scored)
    hidden: int = 512  # reference: 512
    layers: int = 2  # reference: two RNN layers in the encoder and in the decoder
    z_content: int = 120  # reference: z_c 120
    style_dim: int = 80  # reference: style embedding 80
    pitch_embed: int = 64
    time_embed: int = 32
    tau: float = 0.02  # Gumbel-softmax temperature, constant (reference)
    beta: float = 1.0  # reference: beta = 1 best
    beta_mu: float = 1.3  # mu-forcing target (reference)
    kl_anneal_steps: int = 2000
    style_mode: str = "codebook"  # codebook (the paper) | label (the baseline)
    z_every_step: bool = True
    # (our addition) each event's onset within the segment is embedded too: a recurrent decoder cannot
    # count steps, so without it it loses the beat and the segment's end.  Off in the reference.
    position: bool = False
    transpose: int = 5  # augmentation: pitched notes moved by -transpose..+transpose+1 semitones
    chain_rho: float = 0.8  # correlation of neighbouring segments' z_c at generation
    # At generation a segment may end (EOS) only once its last event is this far into it: a safety net for
    # models without `position`, which ended half their segments before 3/4, leaving a hole every segment.
    eos_from: float = 0.875
    dropout: float = 0.1

    @property
    def segment_steps(self) -> int:
        return self.segment_bars * V.STEPS_PER_BAR

    @property
    def n_shift(self) -> int:  # shifts 0..segment_steps-1, then EOS
        return self.segment_steps + 1

    @property
    def eos(self) -> int:
        return self.segment_steps

    @property
    def n_styles(self) -> int:
        return len(self.styles)

    @property
    def z_style(self) -> int:
        return self.style_dim if self.style_mode == "codebook" else self.n_styles

    @classmethod
    def from_dict(cls, d: dict) -> "StyleVAEConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, StyleVAEConfig] = {
    "tiny": StyleVAEConfig(segment_bars=1, max_events=24, hidden=32, layers=1, z_content=8, style_dim=4,
                           pitch_embed=8, time_embed=4, kl_anneal_steps=10, dropout=0.0, position=True),
    # 2-bar segments, at most 128 events: affordable on a 2-core CPU; 97% of segments fit whole
    "cpu": StyleVAEConfig(segment_bars=2, max_events=128, hidden=256, layers=2, kl_anneal_steps=1500, position=True),
    "full": StyleVAEConfig(),
}


# ---- events ---------------------------------------------------------------------------------------
_DUR_LEVEL = np.asarray([V.duration_level(d) for d in range(V.MAX_DURATION + 1)], np.int64)


def notes_to_events(notes: np.ndarray, seg_steps: int) -> list[np.ndarray]:
    """Notes -> per segment an int64 array (n, 3) of (shift, duration level, group*128+pitch),
    sorted by onset, group, pitch.  Segment k covers steps [k*seg_steps, (k+1)*seg_steps)."""
    if not len(notes):
        return []
    order = np.lexsort((notes["pitch"], notes["group"], notes["onset"]))
    n = notes[order]
    on = n["onset"].astype(np.int64)
    seg = on // seg_steps
    dur = _DUR_LEVEL[np.clip(n["duration"].astype(np.int64), 1, V.MAX_DURATION)]
    pitch = n["group"].astype(np.int64) * 128 + n["pitch"].astype(np.int64)
    out = []
    for k in range(int(seg.max()) + 1):
        m = seg == k
        o = on[m] - k * seg_steps
        shift = np.diff(o, prepend=0)
        out.append(np.stack([shift, dur[m], pitch[m]], 1))
    return out


def events_to_notes(events, start: int = 0, velocity_level: int = DEFAULT_VELOCITY) -> np.ndarray:
    """(n, 3) events -> notes starting at step `start`."""
    e = np.asarray(events, np.int64).reshape(-1, 3)
    onset = start + np.cumsum(e[:, 0])
    dur = np.asarray(V.DURATION_LEVELS, np.int64)[e[:, 1]]
    return make_notes(onset, dur, velocity_level, e[:, 2] // 128, e[:, 2] % 128)


def pack_segment(events: np.ndarray, style: int, max_events: int) -> np.ndarray:
    """(max_events + 1, 3) int16: row 0 = (style, n events kept, truncated?), then the events, 0-padded."""
    n = min(len(events), max_events)
    out = np.zeros((max_events + HEADER, 3), np.int16)
    out[0] = (style, n, int(len(events) > max_events))
    out[HEADER:HEADER + n] = events[:n]
    return out


# ---- model ----------------------------------------------------------------------------------------
def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """softmax((logits + G) / tau), G = -log(-log U): a relaxed one-hot sample."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-9, 1 - 1e-9)
    g = -torch.log(-torch.log(u))
    return torch.softmax((logits + g) / tau, dim=-1)


def mu_forcing(mu: torch.Tensor, beta_mu: float) -> torch.Tensor:
    """max(0, beta_mu - (1/2N) sum_n |mu_n - mean mu|^2) over the batch (B, z)."""
    var = 0.5 * (mu - mu.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    return F.relu(beta_mu - var)


class StyleVAE(nn.Module):
    def __init__(self, cfg: StyleVAEConfig):
        super().__init__()
        self.cfg = cfg
        H, E = cfg.hidden, cfg.pitch_embed + 2 * cfg.time_embed
        self.emb_shift = nn.Embedding(cfg.n_shift, cfg.time_embed)
        self.emb_dur = nn.Embedding(V.N_DURATION, cfg.time_embed)
        self.emb_pitch = nn.Embedding(N_PITCH, cfg.pitch_embed)
        if cfg.position:
            self.emb_pos = nn.Embedding(cfg.segment_steps, E)
        self.encoder = nn.GRU(E, H, cfg.layers, batch_first=True, bidirectional=True,
                              dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.to_mu = nn.Linear(2 * H, cfg.z_content)
        self.to_logvar = nn.Linear(2 * H, cfg.z_content)
        self.to_style = nn.Linear(2 * H, cfg.n_styles)
        if cfg.style_mode == "codebook":
            self.codebook = nn.Parameter(torch.randn(cfg.n_styles, cfg.style_dim))
        elif cfg.style_mode != "label":
            raise ValueError(f"style_mode must be codebook or label, not {cfg.style_mode!r}")
        Z = cfg.z_content + cfg.z_style
        self.to_state = nn.Linear(Z, cfg.layers * H)
        self.bos = nn.Parameter(torch.zeros(E))
        self.decoder = nn.GRU(E + (Z if cfg.z_every_step else 0), H, cfg.layers, batch_first=True,
                              dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head_shift = nn.Linear(H, cfg.n_shift)
        self.head_dur = nn.Linear(H + cfg.time_embed, V.N_DURATION)
        self.head_pitch = nn.Linear(H + 2 * cfg.time_embed, N_PITCH)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    # -- pieces ------------------------------------------------------------------------------------
    def embed(self, ev: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """events (B, T, 3) [, their onsets in the segment (B, T): by default the running sum of the
        shifts] -> (B, T, E)."""
        x = torch.cat([self.emb_shift(ev[..., 0]), self.emb_dur(ev[..., 1]), self.emb_pitch(ev[..., 2])], -1)
        if self.cfg.position:
            if pos is None:
                pos = ev[..., 0].cumsum(-1)
            x = x + self.emb_pos(pos.clamp(0, self.cfg.segment_steps - 1))
        return x

    def encode(self, ev: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """events (B, T, 3), lengths (B,) -> mu (B, zc), logvar (B, zc), style logits (B, S)."""
        x = self.embed(ev)
        packed = nn.utils.rnn.pack_padded_sequence(x, n.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.encoder(packed)  # (layers * 2, B, H)
        h = torch.cat([h[-2], h[-1]], -1)  # top layer, forward and backward: (B, 2H)
        return self.to_mu(h), self.to_logvar(h).clamp(-10, 10), self.to_style(h)

    def style_vector(self, z_cat: torch.Tensor) -> torch.Tensor:
        """(B, S) style distribution / one-hot -> z_s (B, d_s): codebook rows, or the label itself."""
        return z_cat @ self.codebook if self.cfg.style_mode == "codebook" else z_cat

    def init_state(self, z: torch.Tensor) -> torch.Tensor:
        H, L = self.cfg.hidden, self.cfg.layers
        return torch.tanh(self.to_state(z)).view(-1, L, H).transpose(0, 1).contiguous()  # (L, B, H)

    def decoder_inputs(self, ev: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: BOS then events[:-1], each with z if z_every_step: (B, T, E [+ Z])."""
        B, T = ev.shape[:2]
        x = torch.cat([self.bos.expand(B, 1, -1), self.embed(ev[:, :-1])], 1)
        if self.cfg.z_every_step:
            x = torch.cat([x, z[:, None].expand(B, T, -1)], -1)
        return x

    def heads(self, h: torch.Tensor, shift: torch.Tensor, dur: torch.Tensor):
        """h (..., H), target shift and duration (...) -> logits of shift, duration | shift, pitch | both."""
        es, ed = self.emb_shift(shift), self.emb_dur(dur)
        return (self.head_shift(h), self.head_dur(torch.cat([h, es], -1)),
                self.head_pitch(torch.cat([h, es, ed], -1)))

    # -- training forward ------------------------------------------------------------------------
    def forward(self, batch: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """batch (B, 1 + T, 3) packed segments -> loss terms and sums for the metrics."""
        cfg = self.cfg
        batch = batch.long()
        style, n, trunc = batch[:, 0, 0], batch[:, 0, 1], batch[:, 0, 2]
        ev = batch[:, HEADER:]  # (B, T, 3)
        B, T = ev.shape[:2]
        mu, logvar, logits = self.encode(ev, n)
        z_c = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        if cfg.style_mode == "codebook":
            z_cat = gumbel_softmax(logits, cfg.tau) if sample else F.one_hot(logits.argmax(-1), cfg.n_styles).float()
        else:
            z_cat = F.one_hot(style, cfg.n_styles).float()
        z = torch.cat([z_c, self.style_vector(z_cat)], -1)
        h, _ = self.decoder(self.decoder_inputs(ev, z), self.init_state(z))  # (B, T, H)
        # targets: the events, then EOS at position n (when the segment was not cut)
        pos = torch.arange(T, device=ev.device)[None]
        tgt_shift = torch.where(pos == n[:, None], torch.full_like(ev[..., 0], cfg.eos), ev[..., 0])
        is_event = pos < n[:, None]  # (B, T)
        is_eos = (pos == n[:, None]) & (trunc[:, None] == 0)
        ls, ld, lp = self.heads(h, tgt_shift, ev[..., 1])
        nll_s = F.cross_entropy(ls.float().transpose(1, 2), tgt_shift, reduction="none")  # (B, T)
        nll_d = F.cross_entropy(ld.float().transpose(1, 2), ev[..., 1], reduction="none")
        nll_p = F.cross_entropy(lp.float().transpose(1, 2), ev[..., 2], reduction="none")
        m_s, m_e = (is_event | is_eos).float(), is_event.float()
        rec = ((nll_s * m_s).sum(1) + ((nll_d + nll_p) * m_e).sum(1))  # (B,) nats per segment
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)  # (B,)
        if self.training:
            self.train_steps += 1
        beta = cfg.beta * min(1.0, float(self.train_steps) / max(1, cfg.kl_anneal_steps))
        style_ce = F.cross_entropy(logits.float(), style, reduction="none")  # (B,)
        l_mu = mu_forcing(mu.float(), cfg.beta_mu)
        loss = (rec + beta * kl).mean() + l_mu
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
        return {"loss": loss, "sums": sums}

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: torch.Tensor, params: SamplingParams, allowed_pitch: torch.Tensor,
               generator: torch.Generator | None = None, eos_from: float | None = None) -> list[np.ndarray]:
        """z (B, Z) -> per row the sampled events (n, 3).  Shifts keep events inside the segment, EOS
        waits until the segment is `eos_from` (default `cfg.eos_from`) done; the pitch softmax is limited
        to `allowed_pitch` (N_PITCH,) bool."""
        cfg = self.cfg
        B = z.shape[0]
        state = self.init_state(z)
        x = self.bos.expand(B, 1, -1)
        t = torch.zeros(B, dtype=torch.long)  # onset of the last event within the segment
        done = torch.zeros(B, dtype=torch.bool)
        rows: list[list[tuple[int, int, int]]] = [[] for _ in range(B)]
        shifts = torch.arange(cfg.n_shift)
        eos_at = int((cfg.eos_from if eos_from is None else eos_from) * cfg.segment_steps)
        neg = float("-inf")
        for _ in range(cfg.max_events):
            inp = torch.cat([x, z[:, None]], -1) if cfg.z_every_step else x
            h, state = self.decoder(inp, state)
            h = h[:, 0]  # (B, H)
            ls = self.head_shift(h)
            ok = torch.where(shifts[None] == cfg.eos, t[:, None] >= eos_at,
                             t[:, None] + shifts[None] < cfg.segment_steps)  # (B, n_shift)
            s = sample_token(ls.masked_fill(~ok, neg), params, generator)
            s = torch.where(done, torch.full_like(s, cfg.eos), s)
            es = self.emb_shift(s)
            d = sample_token(self.head_dur(torch.cat([h, es], -1)), params, generator)
            ed = self.emb_dur(d)
            lp = self.head_pitch(torch.cat([h, es, ed], -1)).masked_fill(~allowed_pitch, neg)
            p = sample_token(lp, params, generator)
            done = done | (s == cfg.eos)
            if bool(done.all()):
                break
            live = (~done).nonzero().flatten().tolist()
            for b in live:
                rows[b].append((int(s[b]), int(d[b]), int(p[b])))
            t = torch.where(done, t, t + s)
            x = self.embed(torch.stack([s.clamp_max(cfg.n_shift - 1), d, p], -1)[:, None], t[:, None])
        return [np.asarray(r, np.int64).reshape(-1, 3) for r in rows]


def build_model(cfg: StyleVAEConfig) -> StyleVAE:
    return StyleVAE(cfg)


def vae_loss(model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(batch)
    return out["loss"], out["sums"]


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
DERIVED_VERSION = "1"


def piece_notes(tokens: np.ndarray, row: dict) -> np.ndarray | None:
    piece = np.asarray(tokens[row["offset"]:row["offset"] + row["length"]], np.int64)
    _, _, _, i = parse_prefix(piece[:64])
    try:
        notes, _ = decode_notes(piece[i:])
    except ValueError:
        return None
    return notes


def derived_segments(data: str | Path, cfg: StyleVAEConfig, splits=("train", "validation", "test"),
                     limit: int | None = None) -> dict[str, np.ndarray]:
    """Packed segments (N, 1 + max_events, 3) int16 per split, built once under <data>/derived/."""
    from training.corpus import load_split

    data = Path(data)
    d = data / "derived" / f"style-vae-v{DERIVED_VERSION}-b{cfg.segment_bars}-e{cfg.max_events}" \
        f"{'' if limit is None else f'-l{limit}'}"
    out = {}
    for split in splits:
        path = d / f"{split}.npy"
        if not path.exists():
            t0 = time.time()
            toks, index = load_split(data, split)
            segs = []
            for row in index[:limit]:
                if row["style"] not in cfg.styles:
                    continue
                notes = piece_notes(toks, row)
                if notes is None:
                    continue
                s = cfg.styles.index(row["style"])
                segs += [pack_segment(e, s, cfg.max_events) for e in notes_to_events(notes, cfg.segment_steps)
                         if len(e)]
            arr = np.stack(segs) if segs else np.zeros((0, cfg.max_events + HEADER, 3), np.int16)
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{split}.{os.getpid()}.tmp.npy"  # two runs may build it at once
            np.save(tmp, arr)
            os.replace(tmp, path)
            log.info("style-vae %s: %d segments in %.1fs", split, len(arr), time.time() - t0)
        out[split] = np.load(path, mmap_mode="r")
    return out


def corpus_styles(data: str | Path) -> list[str]:
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
        self.idx = np.arange(n) if not max_items or n <= max_items else np.linspace(0, n - 1, max_items).astype(np.int64)

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


def _train_task(mode: str):
    def task(args):
        from training.train import TrainTask

        if args.preset not in PRESETS:
            raise ValueError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
        cfg = replace(PRESETS[args.preset], style_mode=mode, styles=corpus_styles(args.data))
        segs = derived_segments(args.data, cfg, splits=("train", "validation"))
        return TrainTask(engine="style-vae", config=cfg, build=build_model, loss=vae_loss, summarize=summarize,
                         train_set=Segments(segs["train"], cfg.transpose, seed=args.seed),
                         val_set=Segments(segs["validation"], max_items=args.val_windows))
    return task


# "style-vae-label" trains the baseline; its checkpoint is a style-vae checkpoint with style_mode "label".
TRAIN_TASKS: dict[str, Callable] = {"style-vae": _train_task("codebook"), "style-vae-label": _train_task("label")}


# ---- checkpoints and measurement ---------------------------------------------------------------
def load_model(source: str | Path) -> tuple[StyleVAE, dict]:
    state, config = ckpt.load_checkpoint(source, engine="style-vae")
    model = build_model(StyleVAEConfig.from_dict(config["model"]))
    model.load_state_dict(state)
    return model.eval(), config


@torch.no_grad()
def reconstruction(model: StyleVAE, packed: np.ndarray, batch: int = 64, max_items: int | None = None) -> dict:
    """Teacher-forced reconstruction from z_c = mu and the encoder's style (argmax; the label for
    the baseline): per-feature accuracy, nats per event, KL, style-logit accuracy."""
    from torch.utils.data import DataLoader

    model.eval()
    sums: dict[str, float] = {}
    for b in DataLoader(Segments(packed, max_items=max_items), batch_size=batch):
        for k, v in model(b, sample=False)["sums"].items():
            sums[k] = sums.get(k, 0.0) + float(v)
    out = summarize(sums)
    out["segments"] = int(sums["segments"])
    return out


def allowed_pitches(group_ids, drums: bool) -> torch.Tensor:
    m = torch.zeros(V.N_GROUPS, 128, dtype=torch.bool)
    for g in group_ids:
        m[g] = True
    if drums:
        m[V.DRUM_GROUP] = True
    return m.flatten()


@torch.no_grad()
def sample_pieces(model: StyleVAE, style: int, n: int, bars: int, params: SamplingParams,
                  allowed: torch.Tensor | None = None, z_content: torch.Tensor | None = None) -> list[np.ndarray]:
    """n pieces of `bars` bars in one style: notes per piece.  z_content (n, k, zc) overrides the
    prior walk (style transfer); otherwise segment k+1's z_c = rho z_k + sqrt(1 - rho^2) noise."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(int(params.seed))
    k = math.ceil(bars * V.STEPS_PER_BAR / cfg.segment_steps)
    if z_content is None:
        zc = [torch.randn(n, cfg.z_content, generator=gen)]
        rho = cfg.chain_rho
        for _ in range(k - 1):
            zc.append(rho * zc[-1] + math.sqrt(1 - rho * rho) * torch.randn(n, cfg.z_content, generator=gen))
        z_content = torch.stack(zc, 1)  # (n, k, zc)
    z_cat = F.one_hot(torch.full((n * k,), style), cfg.n_styles).float()
    z = torch.cat([z_content.reshape(n * k, -1), model.style_vector(z_cat)], -1)
    allowed = allowed if allowed is not None else torch.ones(N_PITCH, dtype=torch.bool)
    rows = model.decode(z, params, allowed, gen)
    limit = bars * V.STEPS_PER_BAR
    pieces = []
    for i in range(n):
        parts = [events_to_notes(rows[i * k + j], j * cfg.segment_steps) for j in range(k)]
        notes = np.concatenate(parts)
        notes = notes[notes["onset"] < limit]
        end = notes["onset"].astype(np.int64) + notes["duration"]
        notes["duration"] = np.minimum(end, limit) - notes["onset"]
        pieces.append(notes)
    return pieces


@torch.no_grad()
def encode_content(model: StyleVAE, notes: np.ndarray) -> torch.Tensor:
    """A piece's notes -> its segments' mean z_c (k, zc)."""
    cfg = model.cfg
    segs = notes_to_events(notes, cfg.segment_steps)
    if not segs:
        raise ValueError("the uploaded MIDI has no notes to restyle")
    packed = torch.from_numpy(np.stack([pack_segment(e, 0, cfg.max_events) for e in segs]).astype(np.int64))
    mu, _, _ = model.encode(packed[:, HEADER:], packed[:, 0, 1])
    return mu


def style_accuracy(model: StyleVAE, classifier, per_style: int, bars: int, seed: int,
                   temperature: float = 1.0) -> dict:
    """Generate `per_style` pieces per style (instruments and drums left to the model) and let the
    evaluation's style classifier name each one's style."""
    hits, per = 0, {}
    for s, name in enumerate(model.cfg.styles):
        if name not in classifier.config["styles"]:
            continue
        notes = sample_pieces(model, s, per_style, bars, SamplingParams(temperature, 1.0, 0, seed + s))
        scores = [Score(n, bpm=120.0, length=bars * V.STEPS_PER_BAR) for n in notes]
        pred = classifier.predict_styles(scores)
        ok = sum(p == name for p in pred)
        per[name] = ok / per_style
        hits += ok
    total = per_style * len(per)
    return {"style_accuracy": hits / max(total, 1), "pieces": total, "per_style": per}


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
    packed = np.stack([pack_segment(r, 0, cfg.max_events) for r in rows])
    return segment_fill(packed, cfg.segment_steps)


# ---- the engine -----------------------------------------------------------------------------------
class StyleVAEEngine(Engine):
    name = "style-vae"
    description = ("Style-conditioned VAE (seed 000; Lim, Chan & Loo 2020): choose a style; it samples the "
                   "content latent and decodes segments in that style through a learned style codebook, "
                   "chained into the requested length.  Upload a MIDI to restyle it (style transfer).  "
                   "Instruments and drums limit who plays; the style decides how.")
    controls = frozenset({"groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm",
                          "style", "prompt"})
    prompt_use = "restyling"

    def __init__(self, source: str | Path | None = None):
        source = ckpt.shipped(self.name, source)
        self.model, config = load_model(source)
        self.cfg = self.model.cfg
        self.styles = tuple(self.cfg.styles)
        self.source = str(source)
        self.meta = config.get("meta", {})
        self.last_stats: dict = {}
        self._lock = threading.Lock()

    def held_out_metrics(self, data, split: str = "test", max_items: int | None = None) -> dict:
        """Teacher-forced reconstruction of the split's segments (evaluation.report calls this)."""
        segs = derived_segments(data, self.cfg, splits=(split,))[split]
        r = reconstruction(self.model, segs, max_items=max_items)
        return {"segments": r["segments"], "shift acc": r["acc_shift"], "duration acc": r["acc_duration"],
                "pitch acc": r["acc_pitch"], "nats/event": r["rec_per_event"], "KL/segment": r["kl_per_segment"],
                "encoder style acc": r["style_acc"]}

    def generate(self, request: GenerationRequest, progress: Callable[[float], None] | None = None) -> list[Score]:
        req = request.validate()
        if req.style is not None and req.style not in self.styles:
            raise ValueError(f"style-vae knows the styles {', '.join(self.styles)}; not {req.style!r}")
        params = SamplingParams(req.temperature, req.top_p, req.top_k, req.seed)
        rng = np.random.default_rng(req.seed)
        styles = [req.style] * req.variants if req.style else \
            [self.styles[int(i)] for i in rng.integers(0, len(self.styles), req.variants)]
        allowed = allowed_pitches(req.group_ids, req.drums)
        k = math.ceil(req.bars * V.STEPS_PER_BAR / self.cfg.segment_steps)
        with self._lock:
            t0 = time.perf_counter()
            z_prompt = None
            if req.prompt is not None:  # style transfer: the upload's content, segment by segment
                mu = encode_content(self.model, req.prompt.notes)[:k]
                if len(mu) < k:  # continue past the upload with the prior walk from its last segment
                    gen = torch.Generator().manual_seed(req.seed)
                    rho, extra = self.cfg.chain_rho, [mu[-1]]
                    for _ in range(k - len(mu)):
                        extra.append(rho * extra[-1] + math.sqrt(1 - rho * rho) *
                                     torch.randn(self.cfg.z_content, generator=gen))
                    mu = torch.cat([mu, torch.stack(extra[1:])])
                z_prompt = mu
            scores = []
            for i, st in enumerate(styles):
                zc = z_prompt[None] if z_prompt is not None else None
                notes = sample_pieces(self.model, self.styles.index(st), 1, req.bars,
                                      replace(params, seed=req.seed + i), allowed, zc)[0]
                scores.append(Score(notes, bpm=req.bpm, style=st, length=req.bars * V.STEPS_PER_BAR))
                if progress is not None:
                    progress((i + 1) / len(styles))
            dt = time.perf_counter() - t0
        n_ev = sum(len(s.notes) for s in scores)
        self.last_stats = {"seconds": dt, "tokens": n_ev, "tokens_per_s": n_ev / max(dt, 1e-9)}
        return scores


register("style-vae", StyleVAEEngine)


# ---- CLI ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m model.style_vae")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate", help="reconstruction accuracy per feature and style accuracy of generated "
                                        "pieces, for one or more checkpoints side by side")
    e.add_argument("checkpoints", nargs="+")
    e.add_argument("--data", default="data/corpus")
    e.add_argument("--split", default="test", choices=("train", "validation", "test"))
    e.add_argument("--max-segments", type=int, default=None)
    e.add_argument("--classifier", default=str(ckpt.CHECKPOINT_ROOT / "style_classifier"))
    e.add_argument("--per-style", type=int, default=10, help="generated pieces per style")
    e.add_argument("--bars", type=int, default=8, help="length of each generated piece")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--temperatures", type=float, nargs="+", default=[1.0],
                   help="sampling temperatures for the style measure (the first one is `style_accuracy`)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from evaluation.style import StyleClassifier

    try:
        clf = StyleClassifier.load(args.classifier)
        for c in args.checkpoints:
            src = ckpt.shipped(c) if c == "style-vae" else c
            model, config = load_model(src)
            t0 = time.perf_counter()
            segs = derived_segments(args.data, model.cfg, splits=(args.split,))[args.split]
            rec = reconstruction(model, segs, max_items=args.max_segments)
            by_t = {t: style_accuracy(model, clf, args.per_style, args.bars, args.seed, t) for t in args.temperatures}
            sty = by_t[args.temperatures[0]]
            print(json.dumps({"checkpoint": str(src), "style_mode": model.cfg.style_mode, "split": args.split,
                              "step": config.get("meta", {}).get("train", {}).get("step"),
                              "reconstruction": rec, **sty, "chance": 1 / max(1, len(sty["per_style"])),
                              "style_accuracy_by_temperature": {t: r["style_accuracy"] for t, r in by_t.items()},
                              "segment_fill": {"real": segment_fill(segs, model.cfg.segment_steps),
                                               "generated, own ending": generated_fill(model, args.seed),
                                               "generated, as the engine": generated_fill(model, args.seed, eos_from=None)},
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["StyleVAEConfig", "PRESETS", "StyleVAE", "StyleVAEEngine", "build_model", "vae_loss", "summarize",
           "gumbel_softmax", "mu_forcing", "notes_to_events", "events_to_notes", "TRAIN_TASKS", "asdict"]
