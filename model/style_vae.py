"""The style-conditioned VAE (Lim, Chan & Loo, "Style-Conditioned Music Generation", ICME 2020): config,
presets, network and engine.  Its training (loss, mu-forcing, segment data) is in training/tasks/style_vae.py,
its representation (note events in segments) in tokenizer/events.py.

A segment of music (4 bars by reference; the `cpu` preset uses 2) is a sequence of note events
(onset shift, duration, instrument-pitch); the shift has one extra class, EOS, which ends the segment.

Model: a bidirectional GRU encoder (two layers) reads the events; its final states give mu, log sigma^2
of the content latent z_c and the style logits.  z_cat = softmax((logits + G) / tau), G Gumbel noise,
tau constant (0.02: nearly one-hot); z_s = z_cat @ codebook (a learnable styles x d_s table);
z = [z_c, z_s] -> linear -> tanh -> the initial state of a two-layer GRU decoder.  As a deviation
from the reference, z is also concatenated to every decoder input (a long polyphonic segment otherwise
forgets its latent; `z_every_step`), and, with `position` (the `cpu` preset), each event's onset within
the segment is embedded and added to its input (a recurrent net cannot count steps, so it otherwise
loses the beat and the segment's end).  Within an event the decoder predicts shift, then duration given
the shift, then pitch given both.

Baseline (`style_mode="label"`): the same VAE with the one-hot style label fed straight to the decoder
in place of z_s (no codebook, no Gumbel-softmax, no style loss), the baseline the reference compares against.

Generation: z_cat = the chosen style's one-hot row (so z_s is that style's codebook row), z_c drawn
from N(0, I); the requested bars are cut into segments and the segments are decoded together in one
batch.  Chaining: segment k+1's z_c = rho * z_k + sqrt(1 - rho^2) * noise, a stationary walk in the
prior, so neighbouring segments share content and the piece drifts instead of jumping.  Instruments:
the pitch softmax is masked to the requested groups (and drums iff asked), so the style decides the
rhythm and voicing and the musician decides who plays it.  A key (and chords) shift the pitch logits at
each event's onset (model.sampling.pitch.PitchLock: pitched groups in the scale, the bass on its bar's chord
tones, a chord-tone pull for the others; drums exempt), each group keeping the model's odds that it plays
the event (so a locked bass is not crowded out).  Style transfer: an uploaded MIDI is cut into segments,
each encoded to its mean mu (its content), and decoded with the requested style.

    python -m training.train --engine style-vae --preset cpu --data data/corpus --out runs/style-vae-cpu
    python -m training.evaluate runs/style-vae-cpu/best --data data/corpus            # reconstruction
    python -m evaluation.style_accuracy runs/style-vae-cpu/best --data data/corpus    # + generated styles
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenizer import Score
from tokenizer import vocab as V
from tokenizer.events import HEADER, N_PITCH, notes_to_events, pack_segment, segments_to_notes
from tokenizer.score import cut_at

from . import checkpoint as ckpt
from .engine import Engine, GenerationRequest, register
from .sampling.filters import SamplingParams, sample_token
from .sampling.pitch import PitchLock, lock_notes


# ---- config ---------------------------------------------------------------------------------------
@dataclass
class StyleVAEConfig(ckpt.Config):
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


PRESETS: dict[str, StyleVAEConfig] = {
    "tiny": StyleVAEConfig(segment_bars=1, max_events=24, hidden=32, layers=1, z_content=8, style_dim=4,
                           pitch_embed=8, time_embed=4, kl_anneal_steps=10, dropout=0.0, position=True),
    # 2-bar segments, at most 128 events: affordable on a 2-core CPU; 97% of segments fit whole
    "cpu": StyleVAEConfig(segment_bars=2, max_events=128, hidden=256, layers=2, kl_anneal_steps=1500, position=True),
    "full": StyleVAEConfig(),
}


# ---- model ----------------------------------------------------------------------------------------
def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """softmax((logits + G) / tau), G = -log(-log U): a relaxed one-hot sample."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-9, 1 - 1e-9)
    g = -torch.log(-torch.log(u))
    return torch.softmax((logits + g) / tau, dim=-1)


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
        # training steps taken (the KL weight's annealing schedule; the training loss advances it)
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

    # -- teacher-forced pass -----------------------------------------------------------------------
    def forward(self, batch: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """batch (B, 1 + T, 3) packed segments (tokenizer.events.pack_segment) -> the encoder's mu, logvar
        and style logits, the shift targets (the events' shifts, EOS at position n) and the three heads'
        logits at every position.  `sample`: z_c drawn around mu and z_cat by Gumbel-softmax; otherwise
        z_c = mu and z_cat the encoder's most likely style (the baseline always gets the true label)."""
        cfg = self.cfg
        batch = batch.long()
        style, n = batch[:, 0, 0], batch[:, 0, 1]
        ev = batch[:, HEADER:]  # (B, T, 3)
        mu, logvar, logits = self.encode(ev, n)
        z_c = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        if cfg.style_mode == "codebook":
            z_cat = gumbel_softmax(logits, cfg.tau) if sample else F.one_hot(logits.argmax(-1), cfg.n_styles).float()
        else:
            z_cat = F.one_hot(style, cfg.n_styles).float()
        z = torch.cat([z_c, self.style_vector(z_cat)], -1)
        h, _ = self.decoder(self.decoder_inputs(ev, z), self.init_state(z))  # (B, T, H)
        pos = torch.arange(ev.shape[1], device=ev.device)[None]
        target_shift = torch.where(pos == n[:, None], torch.full_like(ev[..., 0], cfg.eos), ev[..., 0])
        ls, ld, lp = self.heads(h, target_shift, ev[..., 1])
        return {"mu": mu, "logvar": logvar, "style_logits": logits, "target_shift": target_shift,
                "shift": ls, "duration": ld, "pitch": lp}

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: torch.Tensor, params: SamplingParams, allowed_pitch: torch.Tensor,
               generator: torch.Generator | None = None, eos_from: float | None = None,
               lock: PitchLock | None = None, start: torch.Tensor | None = None) -> list[np.ndarray]:
        """z (B, Z) -> per row the sampled events (n, 3).  Shifts keep events inside the segment, EOS
        waits until the segment is `eos_from` (default `cfg.eos_from`) done; the pitch softmax is limited
        to `allowed_pitch` (N_PITCH,) bool and, with a key and chord `lock`, shifted by it at each event's
        onset (`start` (B,): each row's segment start in the piece, in steps; default 0), each group keeping
        its share of the event (`lock_notes`)."""
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
        table = None if lock is None else pitch_table(lock)  # (C', N_PITCH)
        every_pitch = torch.ones(128, dtype=torch.bool)
        start = torch.zeros(B, dtype=torch.long) if start is None else start
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
            if table is not None:  # per group: the model picks who plays the event, the lock the pitch
                sh = table[lock.chord_of(start + t + s.clamp_max(cfg.segment_steps - 1))]
                lp = lock_notes(lp.view(B, V.N_GROUPS, 128), sh.view(B, V.N_GROUPS, 128), every_pitch).view(B, -1)
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


# ---- sampling -------------------------------------------------------------------------------------
def allowed_pitches(group_ids, drums: bool) -> torch.Tensor:
    """The instrument-pitch classes (N_PITCH,) bool that the given groups (and drums iff asked) may play."""
    m = torch.zeros(V.N_GROUPS, 128, dtype=torch.bool)
    for g in group_ids:
        m[g] = True
    if drums:
        m[V.DRUM_GROUP] = True
    return m.flatten()


def pitch_table(lock: PitchLock) -> torch.Tensor:
    """(max(1, C), N_PITCH): a key and chord lock's logit shift of every instrument-pitch class under each
    chord (drums 0)."""
    return torch.cat([lock.table(g) for g in range(V.N_GROUPS)], 1)


def prior_walk(first: torch.Tensor, steps: int, rho: float, generator: torch.Generator) -> torch.Tensor:
    """first z_c (n, zc) -> (n, steps, zc): each next z_c = rho * z_prev + sqrt(1 - rho^2) * noise, a walk
    that stays in the N(0, I) prior."""
    zc = [first]
    for _ in range(steps - 1):
        zc.append(rho * zc[-1] + math.sqrt(1 - rho * rho) * torch.randn(first.shape, generator=generator))
    return torch.stack(zc, 1)


def segment_count(cfg: StyleVAEConfig, bars: int) -> int:
    return math.ceil(bars * V.STEPS_PER_BAR / cfg.segment_steps)


@torch.no_grad()
def sample_pieces(model: StyleVAE, style: int, n: int, bars: int, params: SamplingParams,
                  allowed: torch.Tensor | None = None, z_content: torch.Tensor | None = None,
                  lock: PitchLock | None = None) -> list[np.ndarray]:
    """n pieces of `bars` bars in one style: notes per piece.  z_content (n, k, zc) overrides the
    prior walk (style transfer); otherwise segment k+1's z_c = rho z_k + sqrt(1 - rho^2) noise.  `lock`:
    the request's key and chords (every pitch sampled keeps to them)."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(int(params.seed))
    k = segment_count(cfg, bars)
    if z_content is None:
        z_content = prior_walk(torch.randn(n, cfg.z_content, generator=gen), k, cfg.chain_rho, gen)  # (n, k, zc)
    z_cat = F.one_hot(torch.full((n * k,), style), cfg.n_styles).float()
    z = torch.cat([z_content.reshape(n * k, -1), model.style_vector(z_cat)], -1)
    allowed = allowed if allowed is not None else torch.ones(N_PITCH, dtype=torch.bool)
    start = torch.arange(k).repeat(n) * cfg.segment_steps  # row i * k + j: segment j of piece i
    rows = model.decode(z, params, allowed, gen, lock=lock, start=start)
    # cut at the requested end: nothing rings past it (durations rounded down to a level)
    return [cut_at(segments_to_notes(rows[i * k:(i + 1) * k], cfg.segment_steps), bars * V.STEPS_PER_BAR)
            for i in range(n)]


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


# ---- the engine -----------------------------------------------------------------------------------
@register
class StyleVAEEngine(Engine):
    name = "style-vae"
    description = ("Style-conditioned VAE (Lim, Chan & Loo 2020): choose a style; it samples the content "
                   "latent and decodes segments in that style through a learned style codebook, chained into "
                   "the requested length.  Upload a MIDI to restyle it (style transfer).  Instruments and "
                   "drums limit who plays; the style decides how.")
    controls = frozenset({"groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm",
                          "style", "prompt", "key", "chords"})
    prompt_use = "restyling"
    unit = "events"
    config_class = StyleVAEConfig
    build = staticmethod(build_model)

    def load(self, state: dict, config: dict) -> None:
        super().load(state, config)
        self.styles = tuple(self.cfg.styles)

    def groups_written(self, req: GenerationRequest) -> tuple[str, ...]:
        """The groups a (restricted) request's result can hold: the requested ones, drums iff asked (the
        pitch softmax is masked to them; the style decides which of them play)."""
        return tuple(req.groups) + (("drums",) if req.drums else ())

    def restyle_content(self, notes: np.ndarray, k: int, seed: int) -> torch.Tensor:
        """An upload's content codes for k segments (k, zc): its own segments' mean z_c, continued past its
        end by the prior walk from its last segment."""
        mu = encode_content(self.model, notes)[:k]
        if len(mu) < k:
            gen = torch.Generator().manual_seed(seed)
            mu = torch.cat([mu, prior_walk(mu[-1:], k - len(mu) + 1, self.cfg.chain_rho, gen)[0, 1:]])
        return mu

    def _generate(self, req: GenerationRequest, progress: Callable[[float], None] | None) -> tuple[list[Score], dict]:
        if req.style is not None and req.style not in self.styles:
            raise ValueError(f"style-vae knows the styles {', '.join(self.styles)}; not {req.style!r}")
        params = SamplingParams(req.temperature, req.top_p, req.top_k, req.seed)
        rng = np.random.default_rng(req.seed)
        styles = [req.style] * req.variants if req.style else \
            [self.styles[int(i)] for i in rng.integers(0, len(self.styles), req.variants)]
        allowed = allowed_pitches(req.group_ids, req.drums)
        z_prompt = None
        if req.prompt is not None:  # style transfer: the upload's content, segment by segment
            z_prompt = self.restyle_content(req.prompt.notes, segment_count(self.cfg, req.bars), req.seed)[None]
        lock = PitchLock.of(req)
        scores = []
        for i, st in enumerate(styles):
            notes = sample_pieces(self.model, self.styles.index(st), 1, req.bars,
                                  replace(params, seed=req.seed + i), allowed, z_prompt, lock)[0]
            scores.append(Score(notes, bpm=req.bpm, style=st, length=req.bars * V.STEPS_PER_BAR))
            if progress is not None:
                progress((i + 1) / len(styles))
        return scores, {"count": sum(len(s.notes) for s in scores)}


__all__ = ["StyleVAEConfig", "PRESETS", "StyleVAE", "StyleVAEEngine", "build_model", "gumbel_softmax",
           "allowed_pitches", "pitch_table", "prior_walk", "sample_pieces", "encode_content"]
