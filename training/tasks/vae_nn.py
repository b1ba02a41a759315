"""The vae-nn engine's training task and held-out evaluation (model/vae_nn.py holds the networks).

Loss (our choice; one module trained jointly): the sum of the five VAE losses on window t (binary
cross-entropy summed over cells + beta * KL to N(0, I)) plus the MLPs' latent regression (squared
error): inputs are the encoders' detached posterior samples of window t (and the detached piano mean of
window t+1 for the ConditionalNNs), targets the encoders' detached means of window t+1, so the MLPs
never shape the latent spaces.  Thresholds are calibrated along the generation path with the default
noise; data and the evaluation loop are shared with cnn (training/tasks/rollwindows.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.vae_nn import PRESETS, VAENN, VAENNEngine
from tokenizer.pianoroll import PITCHES, TRACKS, WINDOW

from .rollwindows import evaluate_pairs, frame_hits, window_task


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
        for k, name in enumerate(TRACKS):
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
    cells = WINDOW * PITCHES
    for name in TRACKS:
        if f"bce_{name}" in sums:
            out[f"bce_{name}"] = sums[f"bce_{name}"] / n / cells
            out[f"kl_{name}"] = sums[f"kl_{name}"] / n
            out[f"mse_{name}"] = sums[f"mse_{name}"] / n
            out[f"hits_{name}"] = sums[f"hits_{name}"] / max(sums[f"notes_{name}"], 1.0)
    return out


@torch.no_grad()
def generation_probs(model: VAENN, batch: torch.Tensor, noise_sd: float = 0.0) -> torch.Tensor:
    """Next-window probabilities (B, 5, 32, 128) of pairs (B, 2, 5, 32, 128) along the generation path
    (MelodyNN's piano latent feeds the ConditionalNNs), with latent noise of sd `noise_sd` from a fixed
    generator."""
    x_t = batch[:, 0]
    noise = None
    if noise_sd:
        shape = (x_t.shape[0], len(TRACKS), model.cfg.latent)
        noise = (noise_sd * torch.randn(shape, generator=torch.Generator().manual_seed(0))).to(x_t.device)
    return model.next_probs(x_t, noise)


def calibration_probs(model: VAENN, batch: torch.Tensor) -> torch.Tensor:
    """The generation path with the default noise: what the thresholds are tuned on."""
    return generation_probs(model, batch, model.cfg.noise_sd)


def task(args):
    return window_task(VAENNEngine, args, PRESETS, vae_nn_loss, summarize, calibration_probs,
                       references=True)


TASKS = {"vae-nn": task}


def evaluate_checkpoint(engine: str, source, data, split: str = "test", max_items: int | None = None,
                        batch: int = 64) -> dict:
    """Held-out VAE loss (per pair), per-instrument reconstruction BCE per cell, frame-hit rate
    (recon_frame_hit_rate), KL and the MLPs' latent error; then next-window BCE and cell F1 along the
    generation path (no noise, stored thresholds), with the repeat and constant-density baselines."""
    return evaluate_pairs(engine, source, data, split, max_items, batch, vae_nn_loss, summarize, generation_probs,
                          hit_name="recon_frame_hit_rate")
