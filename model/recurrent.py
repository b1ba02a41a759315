"""The recurrent engines `gru`, `lstm` and `multi-rnn`, sharing one module (inference only).

- `gru` (the MusicGenDL GRU baseline): one part as a sequence of eighth-note steps; each step is a
  note or chord token (the pitches starting there), HOLD (the previous chord sounds on) or REST
  (`tokenizer.melody`, chord8 scheme).  Embedding 96, one GRU layer, a linear layer over the
  vocabulary; multinomial sampling with temperature.  The chord vocabulary is the training data's most
  frequent chords, stored in the checkpoint's config.
- `lstm` (after an LSTM melody generator app): the melody (the top voice of one part) as (pitch or
  REST, duration) token pairs on the 1/32-note grid (melody scheme); LSTM with hidden size 256,
  training windows of 32 tokens; temperature, tempo and length controls; notes shorter than 1/16 are
  removed from the output.
- `multi-rnn` (the MusicGenDL multi-instrument RNN): 5 x 128 pianoroll frames (piano, guitar, bass,
  strings, drums; 2 frames per beat) flattened to 640; the RNN predicts the next frame from the
  previous 32.  As in MusicGenDL, a softmax runs over each instrument's 128 pitches separately and
  every frame samples a fixed number of notes per instrument (without replacement).  Its authors found
  the result sounds random; this engine is a faithful reproduction, not a fix.

`RNNLM` is the one token model (cell type and token scheme from its config); `FrameRNN` the frame
model.  Both generate over a sliding window of the last `seq_len` steps (the training length).
Training and held-out evaluation: training/tasks/recurrent.py.

Key and chords (`model.sampling.pitch.PitchLock`, the rule every engine applies): every pitched note in the key's
scale (without a key, in the chords' notes), the bass on its bar's chord tones, a chord-tone pull
(`chord_bias`) for the other pitched parts, drums exempt.  gru and lstm shift their token logits (a chord
token with one forbidden pitch is forbidden) and keep the model's odds of a new note against hold and rest
(`lock_notes`); multi-rnn shifts each track's pitch logits before it draws its notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from tokenizer import Score
from tokenizer import melody as M
from tokenizer import vocab as V
from tokenizer.pianoroll import GROUP_TO_TRACK, N_TRACKS, TRACKS, pianoroll_to_score
from tokenizer.score import cut_at

from . import checkpoint as ckpt
from .engine import Engine, GenerationRequest, register
from .rollwindows import output_groups
from .sampling.filters import SamplingParams, apply_temperature, sample_token
from .sampling.pitch import PitchLock, lock_notes

NEG = float("-inf")


# ---- configs ----------------------------------------------------------------------------------
@dataclass
class RNNLMConfig(ckpt.Config):
    cell: str = "gru"  # gru | lstm
    scheme: str = "chord8"  # chord8 (gru) | melody (lstm): tokenizer.melody
    vocab_size: int = M.CHORD_VOCAB_BASE
    embed_dim: int = 96  # MusicGenDL: embedding 96
    hidden: int = 256  # the LSTM app: 256 (reduced from 512)
    layers: int = 1  # MusicGenDL: a single GRU layer
    dropout: float = 0.0
    seq_len: int = 32  # the LSTM app: sequence length 32
    max_chords: int = 1000  # chord8: multi-note chords kept in the vocabulary
    chords: list = field(default_factory=list)  # chord8: the vocabulary's chords (from the training data)
    min_note_steps: int = 0  # notes shorter than this are removed from the output (lstm: 2 = 1/16)


@dataclass
class FrameRNNConfig(ckpt.Config):
    cell: str = "gru"
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    seq_len: int = 32  # MusicGenDL: the next frame from the previous 32
    steps_per_beat: int = 2  # the corpus pianoroll resolution
    notes_per_frame: list = field(default_factory=lambda: [2, 3, 1, 2, 2])  # per track; set from the data


PRESETS: dict[str, dict[str, object]] = {
    "gru": {
        "tiny": RNNLMConfig(cell="gru", scheme="chord8", embed_dim=16, hidden=32, seq_len=16, max_chords=50),
        "cpu": RNNLMConfig(cell="gru", scheme="chord8", embed_dim=96, hidden=256, layers=1, seq_len=32),
    },
    "lstm": {
        "tiny": RNNLMConfig(cell="lstm", scheme="melody", vocab_size=M.MEL_VOCAB, embed_dim=16, hidden=32,
                            seq_len=16, min_note_steps=2),
        "cpu": RNNLMConfig(cell="lstm", scheme="melody", vocab_size=M.MEL_VOCAB, embed_dim=96, hidden=256,
                           layers=2, seq_len=32, min_note_steps=2),
    },
    "multi-rnn": {
        "tiny": FrameRNNConfig(hidden=32, seq_len=32),
        "cpu": FrameRNNConfig(hidden=256, layers=1, seq_len=32),
    },
}


# ---- networks ---------------------------------------------------------------------------------
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


def build_model(cfg: RNNLMConfig | FrameRNNConfig) -> nn.Module:
    return FrameRNN(cfg) if isinstance(cfg, FrameRNNConfig) else RNNLM(cfg)


# ---- engines ----------------------------------------------------------------------------------
class TokenRNNEngine(Engine):
    """gru / lstm: one pitched part, written as the first requested instrument group."""

    controls = frozenset({"groups", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm", "key",
                          "chords"})
    plays = frozenset(V.PITCHED_GROUPS)  # any pitched group, one a request (`groups_written`); no drums
    unit = "tokens"
    config_class = RNNLMConfig
    build = staticmethod(build_model)

    def groups_written(self, req: GenerationRequest) -> tuple[str, ...]:
        """The groups a (restricted) request's result can hold: the first requested group only."""
        return tuple(req.groups[:1])

    def token_pitches(self) -> torch.Tensor:
        """(V, 128) bool: the pitches each token starts (single notes, the checkpoint's chords, melody
        pitches); HOLD, REST and durations start none."""
        m = torch.zeros(self.cfg.vocab_size, 128, dtype=torch.bool)
        if self.cfg.scheme == "melody":
            m[M.MEL_PITCH_OFFSET:M.MEL_PITCH_OFFSET + 128] = torch.eye(128, dtype=torch.bool)
        else:
            m[M.CHORD_OFFSET:M.CHORD_OFFSET + 128] = torch.eye(128, dtype=torch.bool)
            for i, chord in enumerate(self.cfg.chords[:self.cfg.vocab_size - M.CHORD_VOCAB_BASE]):
                m[M.CHORD_VOCAB_BASE + i, chord] = True
        return m

    def token_shift(self, lock: PitchLock, group: int) -> torch.Tensor:
        """(max(1, C), V) float32: the lock's pitch shift per token under each chord: -inf for a token with a
        forbidden pitch (a chord token: any of its pitches), else the mean chord pull of its pitches."""
        has = self.token_pitches().float()  # (V, 128)
        table = lock.table(group)  # (C', 128)
        forbidden = (torch.isinf(table).float() @ has.T) > 0  # (C', V)
        pull = torch.where(torch.isinf(table), 0.0, table) @ has.T / has.sum(1).clamp_min(1)
        return pull.masked_fill(forbidden, NEG)

    def _mask(self, n: int) -> torch.Tensor:
        """(V,) bool: tokens allowed at the n-th sampled position."""
        m = torch.zeros(self.cfg.vocab_size, dtype=torch.bool)
        if self.cfg.scheme == "melody":
            if n % 2 == 0:
                m[M.MEL_REST:M.MEL_DUR_OFFSET] = True
            else:
                m[M.MEL_DUR_OFFSET:M.MEL_VOCAB] = True
        else:
            m[M.HOLD:] = True
        return m

    @torch.no_grad()
    def sample_tokens(self, n_variants: int, limit: int, params: SamplingParams,
                      progress: Callable[[float], None] | None = None, lock: PitchLock | None = None,
                      group: int = 0) -> list[list[int]]:
        """Sample until every variant covers `limit` steps (1/32 notes).  Sliding window of seq_len.
        With a `lock`, the tokens' pitches keep to it as the part `group` (`token_shift` at each token's
        onset, `lock_notes`)."""
        gen = torch.Generator().manual_seed(int(params.seed))
        B, L = n_variants, self.cfg.seq_len
        seq = torch.full((B, 1), M.BOS, dtype=torch.long)
        t = torch.zeros(B, dtype=torch.long)  # time covered, in steps: the next token's onset
        melody = self.cfg.scheme == "melody"
        shift = None if lock is None else self.token_shift(lock, group)
        is_note = self.token_pitches().any(1)
        n = 0
        while bool((t < limit).any()):
            logits = self.model(seq[:, -L:])[:, -1].float().masked_fill(~self._mask(n), NEG)  # (B, V)
            if shift is not None:
                logits = lock_notes(logits, shift[lock.chord_of(t)], is_note)
            tok = sample_token(logits, params, gen)
            seq = torch.cat([seq, tok[:, None]], 1)
            if melody:
                if n % 2 == 1:
                    t += tok - M.MEL_DUR_OFFSET + 1
            else:
                t += M.CHORD_GRID
            n += 1
            if progress is not None:
                progress(min(1.0, float(t.min()) / limit))
        return [row[1:].tolist() for row in seq]

    def decode(self, tokens: list[int]) -> np.ndarray:
        """Sampled tokens -> notes (group 0), short notes removed where the config says so."""
        notes = M.melody_decode(tokens) if self.cfg.scheme == "melody" else M.chord8_decode(tokens, self.cfg.chords)
        return M.remove_short_notes(notes, self.cfg.min_note_steps) if self.cfg.min_note_steps else notes

    def _generate(self, req: GenerationRequest, progress: Callable[[float], None] | None) -> tuple[list[Score], dict]:
        if not req.groups:
            raise ValueError(f"the {self.name} engine writes one pitched part: choose an instrument group")
        group = req.group_ids[0]
        limit = req.bars * V.STEPS_PER_BAR
        params = SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed)
        rows = self.sample_tokens(req.variants, limit, params, progress, PitchLock.of(req), group)
        scores = []
        for toks in rows:
            notes = self.decode(toks)
            notes["group"] = group
            scores.append(Score(cut_at(notes, limit), bpm=req.bpm, length=limit))
        return scores, {"count": sum(len(r) for r in rows)}


@register
class GRUEngine(TokenRNNEngine):
    name = "gru"
    description = ("GRU next-note model (MusicGenDL baseline): one part as notes and chords on an eighth-note "
                   "grid, embedding 96, multinomial sampling with temperature.  Writes one part (the first "
                   "instrument chosen); no drums.")


@register
class LSTMEngine(TokenRNNEngine):
    name = "lstm"
    description = ("LSTM melody generator: hidden 256, sequence length 32; temperature, tempo and length "
                   "controls; notes shorter than 1/16 removed.  Writes one melody line (the first instrument "
                   "chosen); no drums.")


@register
class MultiRNNEngine(Engine):
    name = "multi-rnn"
    description = ("Multi-instrument RNN (MusicGenDL): 5x128 pianoroll frames flattened to 640, the next frame "
                   "from the previous 32, a fixed number of notes sampled per instrument and frame.  Its "
                   "authors found it sounds random; so does this faithful reproduction.  Instruments fold into "
                   "piano, guitar, bass, strings (each written as the first chosen group it covers).")
    controls = frozenset({"groups", "drums", "bars", "variants", "temperature", "seed", "bpm", "key", "chords"})
    unit = "frames"
    config_class = FrameRNNConfig
    build = staticmethod(build_model)

    def groups_written(self, req: GenerationRequest) -> tuple[str, ...]:
        """The groups a (restricted) request's result can hold: per track the first requested group folding
        into it (piano, chromatic, organ -> the piano track; guitar; bass; the other pitched groups -> the
        strings track), drums iff asked."""
        return tuple(V.GROUPS[g] for g in sorted(output_groups(req).values()))

    @torch.no_grad()
    def sample_frames(self, n_variants: int, n_frames: int, tracks: dict[int, int], temperature: float, seed: int,
                      progress: Callable[[float], None] | None = None,
                      shifts: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_frames, 5, 128) 0/1; `tracks` maps track -> notes per frame (other tracks stay silent).
        Starts from one silent frame; each step sees the last seq_len frames.  `shifts` (n_frames, 5, 128),
        a key and chord lock (PitchLock.shift): added to the logits; a track samples no more notes than it
        has allowed pitches."""
        gen = torch.Generator().manual_seed(int(seed))
        B = n_variants
        frames = torch.zeros(B, 1, N_TRACKS, 128)
        for i in range(n_frames):
            logits = self.model(frames[:, -self.cfg.seq_len:])[:, -1].float()  # (B, 5, 128)
            nxt = torch.zeros(B, N_TRACKS, 128)
            for tr, k in tracks.items():
                lg = logits[:, tr] if shifts is None else logits[:, tr] + shifts[i, tr]
                probs = torch.softmax(apply_temperature(lg, temperature), -1)  # (B, 128)
                if shifts is not None:  # allowed pitches whose probability underflowed stay drawable
                    allowed = torch.isfinite(shifts[i, tr])
                    probs = torch.where(allowed, probs.clamp_min(1e-30), 0.0)
                    k = min(k, int(allowed.sum()))
                idx = torch.multinomial(probs, k, replacement=False, generator=gen)  # (B, k)
                nxt[:, tr].scatter_(-1, idx, 1.0)
            frames = torch.cat([frames, nxt[:, None]], 1)
            if progress is not None:
                progress((i + 1) / n_frames)
        return frames[:, 1:]

    def notes_per_track(self, extra: dict, played) -> dict[int, int]:
        """Track -> notes per frame for the `played` tracks: the config's counts, or the request's extra
        "notes_per_frame" ({track name: 1 to 16})."""
        counts = dict(enumerate(self.cfg.notes_per_frame))
        for name, k in (extra.get("notes_per_frame") or {}).items():
            if name not in TRACKS or not (isinstance(k, int) and 1 <= k <= 16):
                raise ValueError(f"notes_per_frame: {name!r} must be one of {TRACKS} with 1 to 16 notes")
            counts[TRACKS.index(name)] = k
        return {tr: int(counts[tr]) for tr in sorted(played)}

    def _generate(self, req: GenerationRequest, progress: Callable[[float], None] | None) -> tuple[list[Score], dict]:
        spb = self.cfg.steps_per_beat
        frames_per_bar = V.STEPS_PER_BAR // (V.STEPS_PER_QUARTER // spb)
        out_group = output_groups(req)  # track -> the first requested group it covers
        n_frames = req.bars * frames_per_bar
        shifts, lock = None, PitchLock.of(req)
        if lock is not None:
            onsets = torch.arange(n_frames) * (V.STEPS_PER_QUARTER // spb)
            shifts = torch.zeros(n_frames, N_TRACKS, 128)
            for tr, g in out_group.items():
                shifts[:, tr] = lock.shift(g, onsets)
        frames = self.sample_frames(req.variants, n_frames, self.notes_per_track(req.extra, out_group), req.temperature,
                                    req.seed, progress, shifts)
        limit = req.bars * V.STEPS_PER_BAR
        scores = []
        for b in range(req.variants):
            roll = frames[b].permute(1, 0, 2).numpy() > 0  # (5, T, 128)
            notes = pianoroll_to_score(roll, spb, req.bpm).notes
            tr_of = np.asarray(GROUP_TO_TRACK)[notes["group"]]
            notes["group"] = np.asarray([out_group[int(t)] for t in tr_of], np.int8) if len(notes) else notes["group"]
            scores.append(Score(cut_at(notes, limit), bpm=req.bpm, length=limit))
        return scores, {"count": req.variants * n_frames}


__all__ = ["RNNLMConfig", "FrameRNNConfig", "PRESETS", "RNNLM", "FrameRNN", "build_model",
           "make_rnn", "TokenRNNEngine", "GRUEngine", "LSTMEngine", "MultiRNNEngine"]
