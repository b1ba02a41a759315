"""Piano-roll pictures (matplotlib's Agg canvas, no pyplot state, so variants draw in parallel): one colour per instrument group with a legend, bar lines,
drums in their own lane below the pitched notes, and a title with bars and BPM."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from tokenizer import Score
from tokenizer import vocab as V

# One fixed colour per group (tab20-like, readable on white); drums are dark grey.
GROUP_COLORS = {
    "piano": "#1f77b4", "chromatic": "#17becf", "organ": "#9467bd", "guitar": "#ff7f0e",
    "bass": "#2ca02c", "strings": "#d62728", "brass": "#bcbd22", "reed": "#8c564b",
    "pipe": "#e377c2", "lead": "#ff1493", "pad": "#7f7fff", "drums": "#444444",
}


def _boxes(onset: np.ndarray, duration: np.ndarray, y: np.ndarray, h: float) -> np.ndarray:
    x0, x1 = onset.astype(float), (onset + duration).astype(float)
    y0, y1 = y.astype(float) - h / 2, y.astype(float) + h / 2
    return np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                     np.stack([x0, y1], 1)], 1)  # (notes, 4 corners, xy)


def draw_pianoroll(score: Score, path: str | os.PathLike, width: int = 1000, height: int = 420,
                   title: str | None = None, dpi: int = 100) -> Path:
    """Write a `width` x `height` PNG of `score` to `path`."""
    notes = score.notes
    bar = score.bar_steps
    total = max(score.length or 0, score.end_step, bar)
    n_bars = -(-total // bar)
    pitched = notes[notes["group"] != V.DRUM_GROUP]
    drums = notes[notes["group"] == V.DRUM_GROUP]
    has_drums = len(drums) > 0

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)  # no pyplot: safe to draw from several threads
    ratios = [3, 1] if has_drums else [1]
    axes = fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios, "hspace": 0.08})
    axes = np.atleast_1d(axes)
    ax_p = axes[0]
    handles = []
    for g in score.groups:
        if g == V.DRUM_GROUP:
            continue
        n = pitched[pitched["group"] == g]
        name = V.GROUPS[g]
        ax_p.add_collection(PolyCollection(_boxes(n["onset"], n["duration"], n["pitch"], 0.9),
                                           facecolors=GROUP_COLORS[name], edgecolors="none", alpha=0.85))
        handles.append(Patch(color=GROUP_COLORS[name], label=f"{name} ({len(n)})"))
    if len(pitched):
        lo, hi = int(pitched["pitch"].min()), int(pitched["pitch"].max())
        pad = max(2, (12 - (hi - lo)) // 2)
        ax_p.set_ylim(lo - pad, hi + pad)
    else:
        ax_p.set_ylim(36, 84)
        ax_p.text(0.5, 0.5, "no pitched notes", transform=ax_p.transAxes, ha="center", va="center",
                  color="#888888")
    ax_p.set_ylabel("pitch")
    ax_p.yaxis.set_major_locator(MaxNLocator(integer=True))
    if has_drums:
        ax_d = axes[1]
        kit = np.unique(drums["pitch"])
        row = np.searchsorted(kit, drums["pitch"])
        # hits drawn with a fixed 1/16-note width (drum durations carry no meaning)
        ax_d.add_collection(PolyCollection(_boxes(drums["onset"], np.full(len(drums), 2), row, 0.8),
                                           facecolors=GROUP_COLORS["drums"], edgecolors="none", alpha=0.85))
        ax_d.set_ylim(-0.7, len(kit) - 0.3)
        ax_d.set_yticks([] if len(kit) > 8 else range(len(kit)), [] if len(kit) > 8 else [str(k) for k in kit],
                        fontsize=7)
        ax_d.set_ylabel("drums")
        handles.append(Patch(color=GROUP_COLORS["drums"], label=f"drums ({len(drums)})"))
    for ax in axes:
        ax.set_xlim(0, n_bars * bar)
        step = max(1, n_bars // 16)  # at most ~16 labelled bar lines
        # bar lines as one collection (an artist a line took 0.1 s for 64 bars, a one-off timing)
        lines = np.arange(n_bars + 1)
        ax.vlines(lines * bar, 0, 1, transform=ax.get_xaxis_transform(), lw=0.6, zorder=0,
                  colors=np.where(lines % step == 0, "#999999", "#dddddd"))
        ax.set_xticks([b * bar for b in range(0, n_bars, step)], [str(b + 1) for b in range(0, n_bars, step)])
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("bar")
    if handles:
        ax_p.legend(handles=handles, loc="upper right", fontsize=7, ncol=min(4, len(handles)), framealpha=0.8)
    if title is None:
        title = f"{n_bars} bar{'s' if n_bars != 1 else ''} · {score.bpm:.0f} BPM · {len(notes)} notes"
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.91, bottom=0.11)
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png")
    return path
