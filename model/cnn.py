"""The `cnn` engine (MusicGenDL): MelodyCNN + conditional harmony CNNs over pianoroll windows.

Windows are 5 tracks (piano, guitar, bass, strings, drums) x 32 steps x 128 pitches at 2 steps per
beat (4 bars of 4/4).  Networks, as in MusicGenDL:
- `MelodyCNN`: 3 convolutions, 3 dense layers, 3 transposed convolutions; piano window t -> piano
  window t+1 (32x128 in and out).
- `HarmonyCNN` (one per guitar, bass, strings, drums): 3 convolutions on the piano window t+1 and 3 on
  the instrument's own window t, concatenated, 3 dense layers, 3 transposed convolutions -> the
  instrument's window t+1.
All five live in one module (`CNNModel`), trained jointly (training/tasks/cnn.py).

Generation (model/rollwindows.py): from a start window, window by window: piano from MelodyCNN, the
others from their harmony CNNs given the new piano window, each thresholded to notes with per-track
thresholds stored in the checkpoint (tuned on validation pairs so the predicted note density matches
the data's) and fed back.  A key and chords shift the logits before thresholding (RW.lock_shifts), so
the harmony CNNs already see the locked piano window.  The network is deterministic given its start:
variants differ only by their (seeded) start windows; with an uploaded MIDI every variant is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from . import checkpoint as ckpt
from . import rollwindows as RW
from .engine import GenerationRequest, register


@dataclass
class CNNConfig(ckpt.Config):
    channels: list = field(default_factory=lambda: [16, 32, 32])  # the 3 convolutions' channels
    hidden: int = 128  # the dense layers' width
    n_start: int = 64  # start windows stored in the checkpoint
    windows_per_piece: int = 4  # training pairs: consecutive windows kept per piece
    steps_per_beat: int = RW.STEPS_PER_BEAT
    window: int = RW.WINDOW


PRESETS: dict[str, CNNConfig] = {
    "tiny": CNNConfig(channels=[4, 8, 8], hidden=16, n_start=4, windows_per_piece=8),
    "cpu": CNNConfig(channels=[32, 64, 32], hidden=128, n_start=64, windows_per_piece=8),
}


class MelodyCNN(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        f, h = RW.flat_size(cfg.channels), cfg.hidden
        self.conv = RW.conv_tower(cfg.channels)
        self.dense = nn.Sequential(*RW.mlp(f, h, f), nn.ReLU())
        self.deconv = RW.deconv_tower(cfg.channels)

    def forward(self, piano: torch.Tensor) -> torch.Tensor:
        """piano window t (B, 32, 128) -> logits of piano window t+1 (B, 32, 128)."""
        return self.deconv(self.dense(self.conv(piano[:, None].float())))[:, 0]


class HarmonyCNN(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        f, h = RW.flat_size(cfg.channels), cfg.hidden
        self.conv_piano = RW.conv_tower(cfg.channels)
        self.conv_own = RW.conv_tower(cfg.channels)
        self.dense = nn.Sequential(*RW.mlp(2 * f, h, f), nn.ReLU())
        self.deconv = RW.deconv_tower(cfg.channels)

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
        self.harmony = nn.ModuleDict({name: HarmonyCNN(cfg) for name in RW.HARMONY})
        self.register_buffer("start_windows", torch.zeros(cfg.n_start, *RW.PACKED_WINDOW, dtype=torch.uint8))
        self.register_buffer("thresholds", torch.full((RW.N_TRACKS,), 0.5))

    def forward(self, x_t: torch.Tensor, piano_next: torch.Tensor) -> torch.Tensor:
        """Windows t (B, 5, 32, 128) and the piano window t+1 (B, 32, 128) -> logits of windows t+1
        (B, 5, 32, 128) (piano from MelodyCNN, the rest given `piano_next`)."""
        out = [self.melody(x_t[:, 0])]
        for k, name in enumerate(RW.HARMONY, start=1):
            out.append(self.harmony[name](piano_next, x_t[:, k]))
        return torch.stack(out, 1)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Generation: windows t (B, 5, 32, 128) bool -> windows t+1 bool.  `shift` (5, 32, 128): a key and
        chord lock added to the logits before thresholding (RW.lock_shifts); the harmony CNNs see the locked
        piano window."""
        th = self.thresholds.float()

        def cells(logits: torch.Tensor, k: int) -> torch.Tensor:
            return torch.sigmoid((logits if shift is None else RW.locked_logits(logits, shift[k])).float()) > th[k]

        piano = cells(self.melody(x_t[:, 0]), 0)  # (B, 32, 128)
        out = [piano]
        for k, name in enumerate(RW.HARMONY, start=1):
            out.append(cells(self.harmony[name](piano, x_t[:, k]), k))
        return torch.stack(out, 1)


@register
class CNNEngine(RW.WindowEngine):
    name = "cnn"
    description = ("Pianoroll CNNs (MusicGenDL): a melody CNN predicts the piano's next 4-bar pianoroll window "
                   "from the current one, then one harmony CNN per instrument writes guitar, bass, strings and "
                   "drums from the new piano window and their own previous window; cells are thresholded to "
                   "notes.  Deterministic given its start: variants differ only by their (seeded) start window "
                   "from a stored set, and with an uploaded MIDI all variants are the same.")
    config_class = CNNConfig
    build = staticmethod(CNNModel)

    def stepper(self, req: GenerationRequest):
        return self.model.step, {}


__all__ = ["CNNConfig", "PRESETS", "CNNModel", "MelodyCNN", "HarmonyCNN", "CNNEngine"]
