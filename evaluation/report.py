"""The evaluation report: every engine against held-out real music (the test split).

    python -m evaluation.report --engines all --pieces 100 --out runs/eval [--run runs/transformer-cpu]

Writes DIR/report.md, DIR/report.json and PNG plots (feature histograms of generated vs real music,
pitch-class histograms, training curves when --run names a folder with metrics.csv).

Generation requests: for piece i (seeds 0..N-1), the groups and drums of a real test piece drawn at
random (fixed seed), 8 bars, that piece's style where the engine takes a style, everything else at the
request defaults.  Real reference: the first 8 bars of real test pieces; ceiling: the same features of
real train pieces compared with the test pieces in the same way.

Adherence (`model.adherence`, the figures the CLI prints per result): over those requests, for every engine,
the share of (bar, requested part) pairs in which the part is heard and the share of silent bars; and for
engines that take a key and / or chords (read from `Engine.controls` at run time), a second set of
--adherence-pieces requests, the first ones again with a key and a progression from KEY_CHORDS (cycling):
the share of pitched notes in the key, of strong-beat notes on chord tones, of bass notes on chord tones.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from tokenizer import Score
from tokenizer import vocab as V

from . import compare as C
from . import metrics as M
from . import style as S

log = logging.getLogger("evaluation.report")

BARS = 8
FEATURE_LABELS = {
    "pitch_class_entropy": "pitch-class entropy (bits)",
    "scale_consistency": "scale consistency",
    "groove_consistency": "groove consistency",
    "empty_beat_rate": "empty-beat rate",
    "polyphony": "polyphony",
    "note_density": "notes per bar",
    "pitch_range": "pitch range (semitones)",
    "mean_ioi": "mean inter-onset interval (steps)",
    "pitch_class_histogram": "pitch-class histogram",
    "note_length_histogram": "note-length histogram",
    "pitch_class_transition_matrix": "pitch-class transition matrix",
}
SHORT = {"pitch_class_entropy": "PCE", "scale_consistency": "scale", "groove_consistency": "groove",
         "empty_beat_rate": "empty", "polyphony": "poly", "note_density": "notes/bar", "pitch_range": "range",
         "mean_ioi": "IOI"}


# ---- feature tables ------------------------------------------------------------------------------------
def feature_table(scores: list[Score]) -> dict[str, np.ndarray]:
    """{feature: (n,) or (n, d) array}; vector features of pieces without pitched notes are NaN."""
    rows = [M.score_features(s) for s in scores]
    out = {}
    for k in M.SCALAR_FEATURES:
        out[k] = np.array([r[k] for r in rows], np.float64)
    for k in M.VECTOR_FEATURES:
        dim = len(M.score_features(Score())[k])
        vals = [np.asarray(r[k], np.float64) if np.asarray(r[k]).sum() else np.full(dim, np.nan) for r in rows]
        out[k] = np.stack(vals) if vals else np.zeros((0, dim))
    return out


def compare_tables(reference: dict, candidate: dict) -> dict[str, dict]:
    return {k: C.compare_sets(reference[k], candidate[k]) for k in reference}


def summary(table: dict) -> dict[str, float]:
    return {k: float(np.nanmean(table[k])) if np.isfinite(table[k]).any() else float("nan")
            for k in M.SCALAR_FEATURES}


def group_summary(scores: list[Score]) -> dict[str, dict[str, float]]:
    """Per pitched group: mean of each per-group metric over the pieces that use the group."""
    acc: dict[str, dict[str, list[float]]] = {}
    for s in scores:
        for g, feats in M.group_features(s).items():
            for k, v in feats.items():
                acc.setdefault(g, {}).setdefault(k, []).append(v)
    return {g: {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in d.items()}
            | {"pieces": len(next(iter(d.values())))} for g, d in acc.items()}


def mean_oa(cmp: dict) -> float:
    v = [cmp[k]["oa"] for k in M.SCALAR_FEATURES if np.isfinite(cmp[k]["oa"])]
    return float(np.mean(v)) if v else float("nan")


def mean_kl(cmp: dict) -> float:
    v = [cmp[k]["kl"] for k in M.SCALAR_FEATURES if np.isfinite(cmp[k]["kl"])]
    return float(np.mean(v)) if v else float("nan")


# ---- real music -----------------------------------------------------------------------------------------
def sample_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    if n >= len(rows):
        return list(rows)
    pick = np.random.default_rng(seed).choice(len(rows), n, replace=False)
    return [rows[i] for i in sorted(pick)]


def real_excerpts(data, split: str, n: int, seed: int) -> list[tuple[dict, Score]]:
    from training.data import load_split

    _, rows = load_split(data, split)
    pairs = S.corpus_scores(data, split, sample_rows(rows, n, seed))
    out = []
    for r, s in pairs:
        e = s.first_bars(BARS)
        e.style = r["style"]
        if len(e.notes):
            out.append((r, e))
    return out


# ---- engines --------------------------------------------------------------------------------------------
def requests_for(engine, test_rows: list[dict], n: int, seed: int, bars: int = BARS, **overrides):
    """n GenerationRequests: groups/drums (and style where supported) of random real test pieces."""
    from model.engine import GenerationRequest

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = test_rows[int(rng.integers(len(test_rows)))]
        groups = tuple(g for g in r["groups"] if g in V.PITCHED_GROUPS)
        drums = bool(r["drums"]) or not groups
        style = r["style"] if engine.supports("style") and r["style"] in getattr(engine, "styles", ()) else None
        kw = dict(groups=groups, drums=drums, bars=bars, variants=1, seed=i, style=style)
        kw.update(overrides)
        out.append(GenerationRequest(**kw))
    return out


def adherence(requests, scores: list[Score], classifier: S.StyleClassifier | None) -> dict:
    """Control adherence of generated scores to their requests.  `heard`: every requested part (each
    group, and drums if asked) plays in both halves of the piece, so none is missing or dies out."""
    in_groups = total = drums_ok = bars_ok = heard = 0
    style_hits, style_n = 0, 0
    predicted = classifier.predict_styles(scores) if classifier is not None else [None] * len(scores)
    for req, s, pred in zip(requests, scores, predicted):
        allowed = set(req.group_ids) | ({V.DRUM_GROUP} if req.drums else set())
        g = s.notes["group"].astype(np.int64)
        in_groups += int(np.isin(g, list(allowed)).sum())
        total += len(g)
        drums_ok += int(s.has_drums == req.drums)
        steps = req.bars * V.STEPS_PER_BAR
        bars_ok += int(s.length == steps and (not len(s.notes) or int(s.notes["onset"].max()) < steps))
        half = s.notes["onset"] < steps // 2
        heard += int(all(set(allowed) <= set(g[h].tolist()) for h in (half, ~half)))
        if req.style is not None and pred is not None:
            style_n += 1
            style_hits += int(pred == req.style)
    n = max(1, len(scores))
    return {"group_share": in_groups / total if total else float("nan"), "drums_iff": drums_ok / n,
            "bars_exact": bars_ok / n, "heard": heard / n, "style": style_hits / style_n if style_n else float("nan"),
            "style_n": style_n}


# a key and a chord progression (one chord a bar) per key-and-chords request, cycling
KEY_CHORDS = (("C major", "C G Am F"), ("A minor", "Am F C G"), ("D minor", "Dm Bb F C"), ("G major", "G Em C D"),
              ("E minor", "Em C G D"), ("F major", "F Bb C F"))
CONTROL_FIGURES = ("in_key", "chord_tones_on_strong_beats", "bass_on_chord_tones", "requested_parts_heard")


def control_adherence(requests, scores: list[Score], engine=None) -> dict:
    """Means over results of `model.adherence` figures (None where no result has one): in key, chord tones on
    strong beats, bass on chord tones, requested parts heard per bar; `silent_bars`: the share of the
    generated bars without a note.  With `engine`, each request is judged as the engine serves it
    (`Engine.restrict`: drums off for an engine without drums)."""
    from model.adherence import adherence as figures

    acc: dict[str, list] = {k: [] for k in CONTROL_FIGURES}
    silent = bars = 0
    for req, s in zip(requests, scores):
        if engine is not None:
            try:
                req = engine.restrict(req)
            except ValueError:
                pass
        f = figures(req.validate(), s)
        for k in CONTROL_FIGURES:
            if f.get(k) is not None:
                acc[k].append(f[k])
        silent += f["silent_bars"]
        bars += len(f["parts_per_bar"])
    out = {k: float(np.mean(v)) if v else None for k, v in acc.items()}
    out["silent_bars"] = silent / bars if bars else None
    out["n"] = len(scores)
    return out


def key_chord_requests(engine, requests, n: int) -> tuple[list, str]:
    """The first n of `requests` with a key and chords from KEY_CHORDS, as far as the engine takes them
    ([] where it takes neither), and what they ask ("key + chords", "key", "chords" or "")."""
    from dataclasses import replace

    key, chords = engine.supports("key"), engine.supports("chords")
    if not (key or chords) or n <= 0:
        return [], ""
    out = []
    for i, req in enumerate(requests[:n]):
        k, c = KEY_CHORDS[i % len(KEY_CHORDS)]
        out.append(replace(req, key=k if key else None, chords=c if chords else None))
    return out, " + ".join(x for x, on in (("key", key), ("chords", chords)) if on)


def real_parts_heard(excerpts: list[Score]) -> dict:
    """The same bar figures of real excerpts, each against its own parts (the yardstick)."""
    from tokenizer import harmony as H

    heard, silent, bars = [], 0, 0
    for s in excerpts:
        per_bar = H.parts_per_bar(s.notes, s.bar_steps, s.bars)
        wanted = [V.GROUPS[g] for g in s.groups]
        heard += [w in parts for parts in per_bar for w in wanted]
        silent += sum(not parts for parts in per_bar)
        bars += len(per_bar)
    return {"requested_parts_heard": float(np.mean(heard)) if heard else None,
            "silent_bars": silent / bars if bars else None, "n": len(excerpts)}


def held_out_metrics(name: str, engine, data, max_items: int | None, batch: int) -> dict:
    """The engine family's held-out figures on the test split (training.tasks, the same figures as
    `python -m training.evaluate`): loss, accuracy, ... for every engine."""
    from training.tasks import evaluate_checkpoint

    opts = {"batch": batch} if name == "transformer" else {}
    return evaluate_checkpoint(name, engine.source, data, "test", max_items=max_items, **opts)


def parse_engines(spec: str) -> list[tuple[str, str | None]]:
    """'all' or 'transformer,cnn' or 'transformer=checkpoints/transformer,transformer=runs/x/best' ->
    [(engine name, checkpoint or None)]: the same engine may appear with several checkpoints."""
    from model.engine import engine_names

    out = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        if item == "all":
            out += [(n, None) for n in engine_names()]
            continue
        name, _, ckpt = item.partition("=")
        out.append((name.strip(), ckpt.strip() or None))
    return out


def run_engine(name: str, test_rows, n: int, seed: int, classifier, data, max_windows, batch,
               with_model_metrics: bool = True, checkpoint: str | None = None, adherence_pieces: int = 0,
               **overrides) -> dict:
    from model.engine import get_engine

    t = time.perf_counter()
    engine = get_engine(name, checkpoint)
    load_s = time.perf_counter() - t
    reqs = requests_for(engine, test_rows, n, seed, **overrides)
    scores, gen_s, units = [], 0.0, 0
    for i, req in enumerate(reqs):
        t = time.perf_counter()
        out = engine.generate(req)
        gen_s += time.perf_counter() - t
        units += int(engine.last_stats.get(engine.unit, 0))
        scores.append(out[0])
        log.info("%s: %d/%d generated", name, i + 1, n)
    kreqs, asked = key_chord_requests(engine, reqs, adherence_pieces)
    kscores = []
    for i, req in enumerate(kreqs):
        kscores.append(engine.generate(req)[0])
        log.info("%s: %d/%d generated with %s", name, i + 1, len(kreqs), asked)
    label = name if checkpoint is None else f"{name} ({checkpoint})"
    res = {"name": label, "engine": name, "checkpoint": engine.source, "requests": reqs, "scores": scores,
           "load_seconds": load_s, "seconds_per_variant": gen_s / max(1, len(scores)),
           "units_per_second": units / gen_s if units and gen_s > 0 else None, "unit": engine.unit,
           "adherence": adherence(reqs, scores, classifier), "description": engine.description,
           "bar_adherence": control_adherence(reqs, scores, engine),
           "key_chord_adherence": control_adherence(kreqs, kscores, engine) | {"asked": asked} if kreqs else None}
    res["held_out"] = held_out_metrics(name, engine, data, max_windows, batch) if with_model_metrics else None
    return res


# ---- plots ----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_features(out: Path, sets: dict[str, dict]) -> Path:
    """One histogram panel per scalar feature, every set overlaid (densities)."""
    plt = _plt()
    feats = M.SCALAR_FEATURES
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(feats) / cols), cols, figsize=(16, 7))
    for ax, k in zip(axes.ravel(), feats):
        vals = {name: t[k][np.isfinite(t[k])] for name, t in sets.items()}
        allv = np.concatenate([v for v in vals.values() if len(v)] or [np.zeros(1)])
        lo, hi = float(allv.min()), float(allv.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 25)
        for name, v in vals.items():
            if len(v):
                ax.hist(v, bins=bins, density=True, histtype="step", linewidth=1.6, label=f"{name} (n={len(v)})")
        ax.set_title(FEATURE_LABELS[k], fontsize=10)
    axes.ravel()[0].legend(fontsize=8)
    for ax in axes.ravel()[len(feats):]:
        ax.axis("off")
    fig.tight_layout()
    p = out / "features.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


def plot_pitch_classes(out: Path, sets: dict[str, dict]) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    names = list(sets)
    w = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        h = sets[name]["pitch_class_histogram"]
        h = np.nanmean(h, 0) if np.isfinite(h).any() else np.zeros(12)
        ax.bar(np.arange(12) + i * w, h, width=w, label=name)
    ax.set_xticks(np.arange(12) + 0.4 - w / 2, ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"])
    ax.set_ylabel("share of pitched notes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out / "pitch_classes.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


def read_metrics_csv(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def plot_training(out: Path, run: Path) -> Path | None:
    rows = read_metrics_csv(run / "metrics.csv")
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for split in sorted({r["split"] for r in rows}):
        rs = [r for r in rows if r["split"] == split and r.get("loss")]
        x = [int(r["step"]) for r in rs]
        axes[0].plot(x, [float(r["loss"]) for r in rs], label=split, marker="." if len(rs) < 50 else None)
        axes[1].plot(x, [float(r["accuracy"]) for r in rs if r.get("accuracy")], label=split)
    axes[0].set_ylabel("loss (nats/token)")
    axes[1].set_ylabel("token accuracy")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"training curves: {run}")
    fig.tight_layout()
    p = out / "training_curves.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


# ---- markdown -------------------------------------------------------------------------------------------
def _f(v, fmt=".3f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return format(v, fmt)


def _pct(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


def render_markdown(r: dict) -> str:
    L = ["# Evaluation report", "",
         f"{r['generated_at']} · {r['machine']} · {r['pieces']} generated pieces per engine "
         f"(8 bars, seeds 0..{r['pieces'] - 1}) · {r['n_real']} real test excerpts (first 8 bars) · "
         f"{r['n_train']} real train excerpts (ceiling) · corpus `{r['data']}`", "",
         "Requests draw groups and drums from random real test pieces (and their style, where an engine takes "
         "one). OA = overlapped area of the intra-set distance distribution of the real test excerpts and the "
         "inter-set distances of a set against them (Yang & Lerch 2018), mean over the scalar features; "
         "1.0 = indistinguishable. KL = KL(intra || inter), nats. The train-split row is the ceiling.", "",
         *[f"- engine `{n}` not evaluated: {why}" for n, why in r.get("unavailable", {}).items()],
         "## Summary", ""]
    feats = M.SCALAR_FEATURES
    head = (["set"] + [SHORT[k] for k in feats] + ["OA", "KL", "in groups", "drums iff", "all parts heard",
            "bars exact", "style",
            "s / 8-bar variant", "test loss", "token acc", "bits/note"])
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))

    def row(name, summ, cmp, adh=None, speed=None, model=None, style=None):
        cells = [name] + [_f(summ[k], ".2f") for k in feats]
        cells += [_f(mean_oa(cmp)) if cmp else "1 (ref.)", _f(mean_kl(cmp)) if cmp else "0 (ref.)"]
        if adh:
            cells += [_pct(adh["group_share"]), _pct(adh["drums_iff"]), _pct(adh["heard"]), _pct(adh["bars_exact"]),
                      _pct(adh["style"])]
        else:
            cells += ["—", "—", "—", "—", _pct(style) if style is not None else "—"]
        cells += [_f(speed, ".2f") if speed is not None else "—"]
        cells += ([_f(model["loss"], ".4f"), _pct(model["accuracy"]), _f(model["bits_per_note"], ".2f")]
                  if model and "bits_per_note" in model else ["—", "—", "—"])
        L.append("| " + " | ".join(cells) + " |")

    row("real test (reference)", r["real"]["summary"], None, style=r["classifier"]["real_test_accuracy"])
    row("real train (ceiling)", r["train"]["summary"], r["train"]["compare"])
    for e in r["engines"]:
        row(e["name"], e["summary"], e["compare"], e["adherence"], e["seconds_per_variant"], e["held_out"])
    L += ["", "Style column: share of generated pieces the style classifier assigns the requested style "
          "(real row: the classifier's accuracy on the same real test excerpts). All parts heard: every "
          "requested group, and drums if asked, plays in both halves of the piece. Feature columns are means.", ""]

    L += ["## Adherence (`model.adherence`, as the CLI prints it per result)", "",
          "Parts heard per bar: the share of (bar, requested part) pairs in which the part starts a note (drums "
          "count where asked; real row: each excerpt's own parts). Silent bars: share of bars without a note. "
          "With key / chords: the first "
          f"{r.get('adherence_pieces', 0)} requests again with a key and a progression ("
          + ", ".join(f"{k}: {c}" for k, c in KEY_CHORDS) + ", cycling) for the engines that take them; "
          "in key: share of pitched notes in the key's scale; chord tones: share of pitched notes on strong beats "
          "(beat 1, and the middle beat of even metres) that are tones of the bar's chord; bass: share of bass "
          "notes on chord tones.", ""]
    ahead = ["set", "parts heard per bar", "silent bars", "key / chords asked", "n", "in key",
             "chord tones on strong beats", "bass on chord tones", "parts heard per bar (key / chords)",
             "silent bars (key / chords)"]
    L.append("| " + " | ".join(ahead) + " |")
    L.append("|" + "---|" * len(ahead))
    rb = r["real"].get("bars") or {}
    L.append(f"| real test (reference) | {_pct(rb.get('requested_parts_heard'))} | {_pct(rb.get('silent_bars'))} | "
             + " | ".join(["—"] * (len(ahead) - 3)) + " |")
    for e in r["engines"]:
        b, k = e.get("bar_adherence") or {}, e.get("key_chord_adherence")
        cells = [e["name"], _pct(b.get("requested_parts_heard")), _pct(b.get("silent_bars"))]
        if k:
            cells += [k["asked"], str(k["n"]), _pct(k["in_key"]), _pct(k["chord_tones_on_strong_beats"]),
                      _pct(k["bass_on_chord_tones"]), _pct(k["requested_parts_heard"]), _pct(k["silent_bars"])]
        else:
            cells += ["not taken"] + ["—"] * (len(ahead) - 4)
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    L += ["## Per feature: OA / KL against the real test excerpts", ""]
    names = ["real train"] + [e["name"] for e in r["engines"]]
    cmps = [r["train"]["compare"]] + [e["compare"] for e in r["engines"]]
    L.append("| feature | " + " | ".join(names) + " |")
    L.append("|---|" + "---|" * len(names))
    for k in list(M.SCALAR_FEATURES) + list(M.VECTOR_FEATURES):
        L.append(f"| {FEATURE_LABELS[k]} | " + " | ".join(f"{_f(c[k]['oa'])} / {_f(c[k]['kl'], '.2f')}"
                                                          for c in cmps) + " |")
    L += ["", "Value OA (overlap of the feature values themselves, not of distances):", ""]
    L.append("| feature | " + " | ".join(names) + " |")
    L.append("|---|" + "---|" * len(names))
    for k in M.SCALAR_FEATURES:
        L.append(f"| {FEATURE_LABELS[k]} | " + " | ".join(_f(c[k].get("value_oa")) for c in cmps) + " |")

    L += ["", "## Per instrument group (means over the pieces using the group; drums excluded)", "",
          "Pitch-class entropy / scale consistency / pitch range / polyphony / notes per bar; n = pieces.", ""]
    gsets = [("real test", r["real"]["groups"])] + [(e["name"], e["groups"]) for e in r["engines"]]
    L.append("| group | " + " | ".join(n for n, _ in gsets) + " |")
    L.append("|---|" + "---|" * len(gsets))
    for g in V.PITCHED_GROUPS:
        if not any(g in gs for _, gs in gsets):
            continue
        cells = []
        for _, gs in gsets:
            d = gs.get(g)
            cells.append("—" if d is None else " / ".join(
                _f(d[k], ".2f") for k in ("pitch_class_entropy", "scale_consistency", "pitch_range", "polyphony",
                                          "note_density")) + f" (n={d['pieces']})")
        L.append(f"| {g} | " + " | ".join(cells) + " |")

    L += ["", "## Model metrics (test split)", "",
          "The engines' held-out figures, as `python -m training.evaluate` gives them.", ""]
    lm = [e for e in r["engines"] if e.get("held_out") and "bits_per_note" in e["held_out"]]
    for e in lm:
        m = e["held_out"]
        L += [f"**{e['name']}** (`{m['checkpoint']}`, {m['dtype']}, {m['windows']} windows, {m['tokens']} tokens, "
              f"{m['seconds']} s): loss {m['loss']:.4f}, token accuracy {100 * m['accuracy']:.2f}%, perplexity "
              f"shift {m['ppl_shift']:.2f} / durvel {m['ppl_durvel']:.2f} / grouppitch {m['ppl_grouppitch']:.2f}, "
              f"{m['bits_per_note']:.2f} bits per note.", ""]
    for e in r["engines"]:
        if e.get("held_out") and e not in lm:
            L.append(f"- **{e['name']}**: " + ", ".join(
                f"{k} {_f(v, '.4f') if isinstance(v, float) else v}" for k, v in e["held_out"].items()
                if k not in ("engine", "checkpoint", "split")))
    L.append("")

    c = r["classifier"]
    L += ["## Style classifier", "",
          f"`{c['source']}`: {c['config'].get('hidden')}-unit MLP on {c['config'].get('n_features')} features, "
          f"trained on {c['config'].get('train_excerpts')} excerpts of the train split. Test split: accuracy "
          f"{_pct(c['real_test_accuracy'])}, balanced accuracy {_pct(c['real_test_balanced_accuracy'])} on "
          f"{c['real_test_n']} excerpts of this report; saved figures: test accuracy "
          f"{_pct(c['config'].get('test_accuracy'))} on {c['config'].get('test_excerpts')} excerpts.", ""]

    L += ["## Engines", ""]
    for e in r["engines"]:
        tps = f", {e['units_per_second']:.0f} {e['unit']}/s" if e.get("units_per_second") else ""
        L.append(f"- **{e['name']}**: {e['description']} Load {e['load_seconds']:.1f} s, "
                 f"{e['seconds_per_variant']:.2f} s per 8-bar variant{tps} (one variant per call).")
    L += ["", "## Plots", ""]
    for p in r["plots"]:
        L.append(f"![{p}]({p})")
    L += ["", "Regenerate: `" + r["command"] + "`", ""]
    return "\n".join(L)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items() if k not in ("scores", "requests")}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


# ---- main -----------------------------------------------------------------------------------------------
def load_or_train_classifier(path, data, seed: int) -> tuple[S.StyleClassifier, str]:
    p = Path(path)
    if (p / "config.json").exists():
        return S.StyleClassifier.load(p), str(p)
    log.warning("no style classifier at %s: training one on the train split (deterministic)", p)
    return S.train_from_corpus(data, seed=seed), "trained in this run"


def build_report(args) -> dict:
    names = parse_engines(args.engines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_real = args.real_pieces or max(args.pieces, 100)

    real = real_excerpts(args.data, "test", n_real, args.seed)
    train = real_excerpts(args.data, "train", n_real, args.seed + 1)
    real_t = feature_table([s for _, s in real])
    train_t = feature_table([s for _, s in train])

    clf, clf_src = load_or_train_classifier(args.style_classifier, args.data, args.seed)
    Xr = np.stack([S.style_features(s) for _, s in real]) if real else np.zeros((0, S.n_features()))
    yr = np.array([V.STYLES.index(r["style"]) for r, _ in real], np.int64)
    acc = S.accuracy_report(clf, Xr, yr)

    engines, unavailable = [], {}
    for name, checkpoint in names:
        log.info("engine %s %s", name, checkpoint or "")
        if checkpoint is None and "all" in args.engines.split(","):  # with "all", a missing checkpoint is listed
            from model.engine import get_engine

            try:
                get_engine(name)
            except (FileNotFoundError, OSError, ValueError) as err:
                log.warning("engine %s unavailable: %s", name, err)
                unavailable[name] = str(err)
                continue
        e = run_engine(name, [r for r, _ in real], args.pieces, args.seed, clf, args.data, args.model_windows,
                       args.batch, with_model_metrics=not args.no_model_metrics, checkpoint=checkpoint,
                       adherence_pieces=min(args.pieces, args.adherence_pieces))
        t = feature_table(e["scores"])
        e.update({"table": t, "summary": summary(t), "compare": compare_tables(real_t, t),
                  "groups": group_summary(e["scores"])})
        engines.append(e)

    sets = {"real test": real_t, "real train": train_t}
    sets.update({e["name"]: e["table"] for e in engines})
    plots = [plot_features(out, sets).name, plot_pitch_classes(out, sets).name]
    if args.run:
        p = plot_training(out, Path(args.run))
        if p:
            plots.append(p.name)

    import platform

    import torch

    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}" + (
        f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    report = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "data": str(args.data),
        "pieces": args.pieces, "n_real": len(real), "n_train": len(train),
        "real": {"summary": summary(real_t), "groups": group_summary([s for _, s in real]),
                 "bars": real_parts_heard([s for _, s in real])},
        "adherence_pieces": min(args.pieces, args.adherence_pieces),
        "train": {"summary": summary(train_t), "compare": compare_tables(real_t, train_t)},
        "engines": [{k: v for k, v in e.items() if k not in ("table",)} for e in engines],
        "unavailable": unavailable,
        "classifier": {"source": clf_src, "config": clf.config, "real_test_accuracy": acc["accuracy"],
                       "real_test_balanced_accuracy": acc["balanced_accuracy"], "real_test_n": acc["n"],
                       "per_style": acc["per_style"]},
        "plots": plots,
        "command": "python -m evaluation.report " + " ".join(args.argv),
    }
    (out / "report.md").write_text(render_markdown(report))
    (out / "report.json").write_text(json.dumps(_jsonable(report), indent=1) + "\n")
    for e in engines:
        for i, s in enumerate(e["scores"][: args.save_midi]):
            from tokenizer.score import to_midi_bytes

            stem = e["engine"] if e["name"] == e["engine"] else f"{e['engine']}-{Path(e['checkpoint']).name}"
            (out / f"{stem}_{i:03d}.mid").write_bytes(to_midi_bytes(s))
    return report


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m evaluation.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="all",
                    help='"all", or a comma-separated list of engine names (and "all"), each optionally NAME=CHECKPOINT '
                         '(the same engine may be listed with several checkpoints, side by side)')
    ap.add_argument("--pieces", type=int, default=100, help="generated pieces per engine (seeds 0..N-1)")
    ap.add_argument("--out", default="runs/eval")
    ap.add_argument("--data", default="data/corpus")
    ap.add_argument("--run", default=None, help="a training run folder with metrics.csv: plot its curves")
    ap.add_argument("--real-pieces", type=int, default=None, help="real test (and train) excerpts; default max(N, 100)")
    ap.add_argument("--style-classifier", default=str(Path(__file__).resolve().parent.parent / "checkpoints"
                                                      / "style_classifier"))
    ap.add_argument("--model-windows", type=int, default=64,
                    help="cap on test windows / pairs / segments for the held-out model metrics")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-model-metrics", action="store_true")
    ap.add_argument("--save-midi", type=int, default=4, help="MIDI files of the first K pieces per engine")
    ap.add_argument("--adherence-pieces", type=int, default=20,
                    help="requests (the first ones again) with a key and chords, for engines that take them (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if args.pieces < 1:
        ap.error("--pieces must be at least 1")
    t = time.perf_counter()
    try:
        r = build_report(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"wrote {out / 'report.md'} ({len(r['engines'])} engines, {time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
