"""Folk tunes in ABC -> full arrangements: chords per bar (the tune's own chord symbols where present,
else the diatonic triad that best covers the melody), an MMA groove for drums, bass and chords, and
the tune as the lead.  The groove's family is the piece's style.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess

import numpy as np

import tokenizer
from tokenizer import vocab as V
from tokenizer.score import from_symusic

from .common import Skip, stable_hash
from .sources import groove_table

# ---- chords -------------------------------------------------------------------------------------
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJ, MIN = (0, 4, 7), (0, 3, 7)


def _pc_weights(notes: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Pitch-class weights of notes sounding in [lo, hi): overlap duration, onset notes doubled."""
    w = np.zeros(12)
    if not len(notes):
        return w
    on, off = notes["onset"], notes["onset"] + notes["duration"]
    ov = np.minimum(off, hi) - np.maximum(on, lo)
    m = ov > 0
    if not m.any():
        return w
    extra = np.where(on[m] == lo, 2.0, 1.0)
    np.add.at(w, notes["pitch"][m] % 12, ov[m] * extra)
    return w


def derive_chords(melody: np.ndarray, key_sharps: int, minor: bool, n_win: int, win: int) -> list[str]:
    """Per window, the diatonic triad (plus the major V of the relative minor) covering the melody."""
    t = (7 * key_sharps) % 12  # tonic of the parent major scale
    cands = [(0, MAJ, "", 0.3 if not minor else 0.1), (2, MIN, "m", 0.05 if not minor else 0.1),
             (4, MIN, "m", 0.0), (5, MAJ, "", 0.15 if not minor else 0.05), (7, MAJ, "", 0.2 if not minor else 0.05),
             (9, MIN, "m", 0.05 if not minor else 0.3), (4, MAJ, "", 0.0 if not minor else 0.2)]
    out, prev = [], None
    for i in range(n_win):
        w = _pc_weights(melody, i * win, (i + 1) * win)
        if w.sum() <= 0:
            out.append(prev or f"{NOTE_NAMES[(t + (9 if minor else 0)) % 12]}{'m' if minor else ''}")
            prev = out[-1]
            continue
        w = w / w.sum()
        best, best_s = None, -9.0
        for deg, tri, suf, prior in cands:
            root = (t + deg) % 12
            pcs = {(root + k) % 12 for k in tri}
            inside = sum(w[p] for p in pcs)
            name = NOTE_NAMES[root] + suf
            s = inside - 0.5 * (1 - inside) + prior + (0.1 if name == prev else 0.0) + 0.15 * w[root]
            if s > best_s:
                best, best_s = name, s
        out.append(best)
        prev = best
    return out


def chord_from_accomp(acc: np.ndarray, lo: int, hi: int) -> str | None:
    """Name the chord that abc2midi's accompaniment (bass + chord tracks) plays in [lo, hi)."""
    m = (acc["onset"] >= lo) & (acc["onset"] < hi)
    if not m.any():
        return None
    a = acc[m]
    first = a[a["onset"] == a["onset"].min()]
    root = int(first["pitch"].min()) % 12
    pcs = {int(p) % 12 for p in a["pitch"]}
    rel = {(p - root) % 12 for p in pcs}
    if 3 in rel and 6 in rel and 4 not in rel:
        q = "m7b5" if 10 in rel else "dim"
    elif 3 in rel and 4 not in rel:
        q = "m7" if 10 in rel else "m"
    else:
        q = "7" if 10 in rel else "maj7" if 11 in rel else ""
    return NOTE_NAMES[root] + q


# ---- the ABC -> MMA arrangement -------------------------------------------------------------------
MELODY_PROGRAMS = (0, 24, 25, 40, 110, 73, 74, 78, 65, 66, 71, 56, 11, 80, 16, 22, 105, 4, 68, 13)
STEP = V.STEPS_PER_QUARTER


def _sym_notes(tracks, tpq: int) -> np.ndarray:
    """The notes of symusic tracks on the step grid (velocity levels, group 0)."""
    parts = []
    for tr in tracks:
        a = tr.notes.numpy()
        if not len(a["time"]):
            continue
        on = np.rint(a["time"].astype(np.int64) * STEP / tpq).astype(np.int64)
        off = np.rint((a["time"].astype(np.int64) + a["duration"]) * STEP / tpq).astype(np.int64)
        vlev = np.clip(np.rint(a["velocity"].astype(np.int64) / V.VELOCITY_STEP), 1, V.N_VELOCITY) - 1
        parts.append(tokenizer.make_notes(on, np.maximum(off - on, 1), vlev, 0, a["pitch"].astype(np.int64) & 127))
    return np.concatenate(parts) if parts else np.zeros(0, tokenizer.NOTE_DTYPE)


def _parse_abc(abc: str):
    """abc2midi's parse of a tune twice: as written (melody + chord accompaniment) and melody only."""
    from symusic import Score as SymScore

    try:
        full = SymScore.from_abc(abc)
        mel_only = SymScore.from_abc(re.sub(r"(?m)^(K:.*)$", r"\1\n%%MIDI gchordoff", abc, count=1))
    except Exception as e:
        raise Skip(f"abc parse error ({str(e)[:60]})") from None
    return full, mel_only


def arrange_abc(item: dict, workdir: str) -> list[dict]:
    """One tune -> 1..3 arrangements (each a piece dict with a Score)."""
    full, mel = _parse_abc(item["abc"])
    tpq = int(full.ticks_per_quarter)
    n_mel_tracks = len(mel.tracks)
    melody = _sym_notes(mel.tracks, tpq)
    if len(melody) < 8:
        raise Skip("abc: fewer than 8 melody notes")
    acc = _sym_notes(full.tracks[n_mel_tracks:], tpq) if len(full.tracks) > n_mel_tracks else None
    sigs = {(int(t.numerator), int(t.denominator)) for t in full.time_signatures}
    if len(sigs) > 1:
        raise Skip("abc: meter changes")
    num, den = next(iter(sigs)) if sigs else (4, 4)
    qt = num * 4 / den  # tune bar in quarters
    compound = den == 8 and num % 3 == 0
    # phase: downbeats carry abc2midi's highest velocity
    vel = melody["velocity"]
    bar_steps = int(round(qt * STEP))
    if bar_steps <= 0:
        raise Skip("abc: bad meter")
    down = melody["onset"][vel == vel.max()] % bar_steps
    down = down[1:] if len(down) > 1 else down
    phase = int(np.bincount(down).argmax()) if len(down) else 0
    # a groove bar may hold 2 or 4 tune bars (2/4, 3/8, 1/4), or a tune bar 2..4 groove bars (4/1, 6/2, 12/8)
    grooves = [g for g in groove_table() if g["compound"] == compound
               and any(abs(g["qbar"] - q) < 1e-6 for q in (qt, 2 * qt, 4 * qt, qt / 2, qt / 3, qt / 4))]
    if not grooves:
        raise Skip(f"abc: no groove for meter {num}/{den}")
    ks = full.key_signatures
    key_sharps, minor = (int(ks[0].key), bool(ks[0].tonality)) if len(ks) else (0, False)
    qpm = float(full.tempos[0].qpm) if len(full.tempos) else 120.0
    h = stable_hash(item["id"])
    if item.get("collection") == "essenFolksong":
        n_arr = 1
    else:
        n_arr = 1 + h % 3
    by_style: dict[str, list[dict]] = collections.defaultdict(list)
    for g in grooves:
        by_style[g["style"]].append(g)
    styles = sorted(by_style)
    order = sorted(styles, key=lambda s: stable_hash(f"{item['id']}|{s}"))
    pieces = []
    errors = []
    for k, style in enumerate(order[:n_arr]):
        opts = by_style[style]
        g = opts[stable_hash(f"{item['id']}|{k}|groove") % len(opts)]
        try:
            pieces.append(_arrange_one(item, k, g, melody, acc, qt, phase, key_sharps, minor, qpm, h, workdir))
        except Skip as e:
            errors.append(str(e))
    if not pieces:
        raise Skip(errors[0] if errors else "abc: no arrangement")
    return pieces


def _arrange_one(item, k, g, melody, acc, qt, phase, key_sharps, minor, qpm, h, workdir) -> dict:
    """Arrangement k of a tune over groove g: chords per bar, MMA renders the band, the tune leads."""
    gbar = int(round(g["qbar"] * STEP))  # groove bar in steps
    shift = (gbar - phase % gbar) % gbar
    mel = melody.copy()
    mel["onset"] += shift
    end = int((mel["onset"] + mel["duration"]).max())
    n_bars = max(1, -(-end // gbar))
    if n_bars > 400:
        raise Skip("abc: too long for an arrangement")
    halves = gbar in (4 * STEP, 6 * STEP)
    if acc is not None and len(acc):
        a = acc.copy()
        a["onset"] += shift
        win = gbar // 2 if halves else gbar
        names = [chord_from_accomp(a, i * win, (i + 1) * win) for i in range(n_bars * (gbar // win))]
        prev = None
        for i, c in enumerate(names):  # fill gaps (pickup bar, rests) with neighbours
            names[i] = c or prev
            prev = names[i]
        first = next((c for c in names if c), None)
        names = [c or first for c in names]
        if first is None:
            raise Skip("abc: chord symbols without notes")
    else:
        win = int(round(min(qt, g["qbar"]) * STEP))
        names = derive_chords(mel, key_sharps, minor, n_bars * (gbar // win), win)
    per_bar = len(names) // n_bars
    lines = []
    for b in range(n_bars):
        cs = names[b * per_bar:(b + 1) * per_bar]
        lines.append(cs[0] if len(set(cs)) == 1 else " ".join(cs))
    bpm = float(min(max(qpm, 60.0), 200.0)) if qpm != 120.0 else float(90 + h % 60)
    mma_tempo = bpm / g["scale"]
    text = f"Tempo {mma_tempo:.0f}\nGroove {g['name']}\n" + "\n".join(lines) + "\n"
    base = os.path.join(workdir, "song")
    with open(base + ".mma", "w") as f:
        f.write(text)
    try:
        os.unlink(base + ".mid")
    except FileNotFoundError:
        pass
    r = subprocess.run(["mma", base + ".mma", "-f", base + ".mid"], capture_output=True, text=True,
                       timeout=60, cwd=workdir)
    if r.returncode != 0 or not os.path.exists(base + ".mid"):
        err = (r.stdout + r.stderr).strip().splitlines()
        raise Skip(f"mma failed ({(err[-1] if err else 'no output')[:80]})")
    from symusic import Score as SymScore

    sym = SymScore(base + ".mid")
    sym.ticks_per_quarter = int(round(sym.ticks_per_quarter / g["scale"]))
    acc_score = from_symusic(sym)
    acc_notes = acc_score.notes
    acc_notes = acc_notes[acc_notes["onset"] < n_bars * gbar]
    groups_used = set(int(x) for x in np.unique(acc_notes["group"]))
    progs = [p for p in MELODY_PROGRAMS]
    start = stable_hash(f"{item['id']}|{k}|lead") % len(progs)
    prog = progs[start]
    for j in range(len(progs)):
        p = progs[(start + j) % len(progs)]
        if V.GM_PROGRAM_TO_GROUP[p] not in groups_used:
            prog = p
            break
    mel["group"] = V.GM_PROGRAM_TO_GROUP[prog]
    mel["velocity"] = np.clip(mel["velocity"].astype(np.int64) + 1, 0, V.N_VELOCITY - 1)  # lead on top
    if g["compound"]:
        ts = (6, 8) if gbar == 3 * STEP else (12, 8)
    else:
        ts = (gbar // STEP, 4)
    score = tokenizer.Score(np.concatenate([acc_notes, mel]), bpm=bpm, time_signature=ts, style=g["style"])
    return dict(id=f"{item['id']}~{k}", group=item["group"], source="abc", style=g["style"], score=score,
                extra=dict(groove=g["name"], lead_program=prog,
                           chords="given" if acc is not None and len(acc) else "derived"))
