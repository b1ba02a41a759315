"""The `vae-nn` engine (MusicGenDL): per-instrument convolutional VAEs + latent MLPs.

Windows are 5 tracks (piano, guitar, bass, strings, drums) x 32 steps x 128 pitches at 2 steps per
beat (4 bars of 4/4).  As in MusicGenDL:
- one convolutional VAE per instrument (3 convolutions -> mean and log-variance of a 16-d latent;
  dense -> 3 transposed convolutions -> 32x128 cell logits);
- `MelodyNN`: an MLP mapping the piano latent z_t to z_{t+1};
- four `ConditionalNN` MLPs mapping (instrument z_t, piano z_{t+1}) to the instrument's z_{t+1}.
All live in one module (`VAENN`), trained jointly (training/tasks/vae_nn.py).

Generation (model/rollwindows.py): from a start window, each step encodes the current window per
instrument, adds Gaussian noise with sd `noise_sd` (MusicGenDL: 0.5-1.0 gives the best variation;
default 0.75) to the means, optionally pulls towards a reference song, z' = alpha*s + (1-alpha)*z_t
(s: the latents of a window of the reference drawn at random; alpha 0.5 by default, 0 = no reference,
1 = the reference latent), maps piano with MelodyNN and the others with their ConditionalNN, decodes,
and thresholds the cell probabilities to notes with per-track thresholds stored in the checkpoint
(tuned on validation pairs along the generation path, with the default noise, so that the note
density matches the data's), after a key and chord lock has shifted the logits (RW.lock_shifts).  The
thresholded window is the next step's input.  References: ~30 named
test-split songs whose windows the checkpoint stores (`VAENNEngine.references`), or an uploaded Score.

Request options (GenerationRequest.extra, range-checked by the request): "noise_sd", "alpha",
"reference" (None, a name from `references`, or a Score).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from tokenizer import Score
from tokenizer.pianoroll import score_windows

from . import checkpoint as ckpt
from . import rollwindows as RW
from .engine import GenerationRequest, register


@dataclass
class VAENNConfig(ckpt.Config):
    channels: list = field(default_factory=lambda: [16, 32, 32])  # the VAEs' 3 convolutions
    latent: int = 16  # MusicGenDL: 16 (8, 16, 32, 64 tried)
    mlp_hidden: int = 128  # MelodyNN / ConditionalNN width
    beta: float = 1.0  # KL weight
    noise_sd: float = 0.75  # default latent noise (MusicGenDL: 0.5-1.0)
    alpha: float = 0.5  # default pull towards a reference (MusicGenDL: 0.5)
    n_start: int = 64  # start windows stored in the checkpoint
    n_ref_windows: int = 0  # reference windows stored (set from the data)
    reference_names: list = field(default_factory=list)  # built-in reference songs ("style: title")
    n_references: int = 30
    ref_windows_per_song: int = 12
    windows_per_piece: int = 8  # training pairs: consecutive windows kept per piece
    steps_per_beat: int = RW.STEPS_PER_BEAT
    window: int = RW.WINDOW


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
        f = RW.flat_size(cfg.channels)
        self.enc = RW.conv_tower(cfg.channels)
        self.to_stats = nn.Linear(f, 2 * cfg.latent)
        self.from_z = nn.Sequential(nn.Linear(cfg.latent, f), nn.ReLU())
        self.dec = RW.deconv_tower(cfg.channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.enc(x[:, None].float())).chunk(2, -1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(self.from_z(z))[:, 0]


class MelodyNN(nn.Module):
    """piano z_t (B, L) -> piano z_{t+1} (B, L)."""

    def __init__(self, cfg: VAENNConfig):
        super().__init__()
        self.net = RW.mlp(cfg.latent, cfg.mlp_hidden, cfg.latent)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConditionalNN(nn.Module):
    """(instrument z_t, piano z_{t+1}) (B, L) each -> instrument z_{t+1} (B, L)."""

    def __init__(self, cfg: VAENNConfig):
        super().__init__()
        self.net = RW.mlp(2 * cfg.latent, cfg.mlp_hidden, cfg.latent)

    def forward(self, z: torch.Tensor, piano_next: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, piano_next], -1))


def style_mix(z: torch.Tensor, s: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """z' = alpha*s + (1-alpha)*z (MusicGenDL); alpha 0 or no reference: z itself, alpha 1: s itself."""
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
        self.cond = nn.ModuleDict({name: ConditionalNN(cfg) for name in RW.HARMONY})
        self.register_buffer("start_windows", torch.zeros(cfg.n_start, *RW.PACKED_WINDOW, dtype=torch.uint8))
        self.register_buffer("ref_windows", torch.zeros(cfg.n_ref_windows, *RW.PACKED_WINDOW, dtype=torch.uint8))
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
        return torch.stack([p] + [self.cond[name](z[:, k], cond_in) for k, name in enumerate(RW.HARMONY, 1)], 1)

    @torch.no_grad()
    def next_logits(self, x_t: torch.Tensor, noise: torch.Tensor | None = None, s: torch.Tensor | None = None,
                    alpha: float = 0.0) -> torch.Tensor:
        """The generation path: windows t (B, 5, 32, 128) -> cell logits of windows t+1 (B, 5, 32, 128):
        encode, add `noise` (B, 5, L) to the means, pull towards reference latents `s` by `alpha`, predict,
        decode."""
        mu, _ = self.encode(x_t)
        z = mu if noise is None else mu + noise
        return self.decode(self.predict(style_mix(z, s, alpha))).float()

    @torch.no_grad()
    def next_probs(self, x_t: torch.Tensor, noise: torch.Tensor | None = None, s: torch.Tensor | None = None,
                   alpha: float = 0.0) -> torch.Tensor:
        """`next_logits` as cell probabilities."""
        return torch.sigmoid(self.next_logits(x_t, noise, s, alpha))


@register
class VAENNEngine(RW.WindowEngine):
    name = "vae-nn"
    controls = RW.WindowEngine.controls | {"noise_sd", "alpha", "reference"}
    config_class = VAENNConfig
    build = staticmethod(VAENN)
    description = ("Per-instrument VAEs with latent MLPs (VAE-NN, MusicGenDL): a convolutional VAE per instrument "
                   "encodes 4-bar pianoroll windows into 16-d latents; an MLP maps the piano latent to the next "
                   "window's, and conditional MLPs map each other instrument's latent plus the new piano latent "
                   "to its next one; Gaussian noise on the latents (noise sd) makes variants differ even from the "
                   "same start; a reference song pulls the latents towards its windows (z' = alpha*s + "
                   "(1-alpha)*z).  Decoded cells are thresholded to notes.")

    def load(self, state: dict, config: dict) -> None:
        super().load(state, config)
        self.references = tuple(self.cfg.reference_names)
        with torch.no_grad():
            w = torch.from_numpy(RW.unpack_windows(self.model.ref_windows.numpy()))
            self._ref_latents = self.model.encode(w)[0] if len(w) else torch.zeros(0, RW.N_TRACKS, self.cfg.latent)

    def reference_latents(self, ref) -> torch.Tensor | None:
        """The latents (n, 5, L) of a reference: a built-in name, an uploaded Score, or None (no reference)."""
        if ref is None:
            return None
        if isinstance(ref, Score):
            w = score_windows(ref)
            if not len(w):
                raise ValueError("the reference MIDI has no notes in its first 256 bars")
            with torch.no_grad():
                return self.model.encode(torch.from_numpy(w))[0]
        if ref not in self.references:
            raise ValueError(f"unknown reference song {ref!r}; choose one of the {len(self.references)} built-in "
                             f"references (e.g. {', '.join(self.references[:3])}) or upload a MIDI")
        return self._ref_latents[self.model.ref_song == self.references.index(ref)]

    def stepper(self, req: GenerationRequest):
        """Variant b draws its noise and its reference windows from its own generators (seeded from
        (seed, b)); the thresholded window is the next step's input."""
        extra = req.extra
        noise_sd = self.cfg.noise_sd if extra.get("noise_sd") is None else extra["noise_sd"]
        alpha = self.cfg.alpha if extra.get("alpha") is None else extra["alpha"]
        ref = self.reference_latents(extra.get("reference"))
        noise_gens = [RW.variant_generator(req.seed, b) for b in range(req.variants)]
        ref_gens = [RW.variant_generator(req.seed + 2**32, b) for b in range(req.variants)]
        th = self.model.thresholds

        def step(cur: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
            L = self.cfg.latent
            noise = noise_sd * torch.stack([torch.randn((RW.N_TRACKS, L), generator=g) for g in noise_gens]) \
                if noise_sd else None
            s = None
            if ref is not None and alpha > 0:
                s = ref[torch.cat([torch.randint(len(ref), (1,), generator=g) for g in ref_gens])]  # (B, 5, L)
            return RW.threshold(self.model.next_logits(cur, noise, s, alpha), th, shift)

        return step, {"noise_sd": noise_sd, "alpha": alpha if ref is not None else 0.0}


__all__ = ["VAENNConfig", "PRESETS", "VAENN", "WindowVAE", "MelodyNN", "ConditionalNN", "style_mix",
           "VAENNEngine"]
