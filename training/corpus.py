"""The offline training corpus (DESIGN.md section 3).

    python -m training.corpus build --out data/corpus [--midi-dir DIR ...] [--limit N] [--workers N]
                                    [--no-default]

Default sources (all offline, from installed packages):
  abc      folk tunes from music21's bundled ABC collections (Ryan's Mammoth, O'Neill's 1850, Aird's
           Airs, Essen, misc), parsed with symusic (abc2midi port), each arranged 1-3 times with MMA
           grooves: melody + chords per bar (the tune's own chord symbols where present, else the
           diatonic triad that best covers the bar) -> drums, bass, chords, lead.  Style = groove family.
  classical  music21's bundled scores (Bach chorales, Palestrina, Monteverdi, the quartets, ...),
           converted to MIDI with music21.  Style by composer (baroque / renaissance / classical).
  openmsx  Debian openttd-openmsx MIDI songs, style "game".
  midi:    any --midi-dir, walked lazily (never listed in memory), style None.

Each source item (a tune, a score file, a MIDI file) is processed once and cached under
OUT/cache/ (keyed by item id + BUILDER_VERSION); a re-run only processes new items, and an
interrupted build resumes.  Assembly then walks the items again in their fixed order and writes

  {split}.tokens.npy           one flat uint16 token stream per split (pieces = encode(score))
  {split}.index.jsonl          one JSON row per piece (id, group, source, style, groups, drums,
                               offset, length, n_notes, bars)
  {split}.pianoroll.npy        (N, 5, 32, 16) uint8 = packbits of (N, 5, 32, 128) windows, 2 steps/beat
  {split}.pianoroll_index.npy  (N,) int32: row of each window's piece in {split}.index.jsonl
  stats.json, report.md

Splits are by piece group (a tune, with all its arrangements), by hash: 90 / 5 / 5.
All outputs are written to a temp name and renamed.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

import tokenizer
from tokenizer import vocab as V
from tokenizer.pianoroll import score_to_pianoroll, windows
from tokenizer.score import from_symusic

log = logging.getLogger("training.corpus")

BUILDER_VERSION = "1"
SPLITS = ("train", "validation", "test")
MAX_NOTES = 20_000
MAX_SECONDS = 30 * 60
PR_STEPS_PER_BEAT = 2
PR_LENGTH = 32
PR_MAX_WINDOWS = 16
CLASSICAL_TIMEOUT_S = 30
# music21 parses Palestrina at ~1 s a mass movement: a deterministic sample keeps the default build
# within its time budget (the corpus is dominated by the ABC arrangements anyway).
CLASSICAL_MAX_PER_COMPOSER = {"palestrina": 450}

MMA_LIB = Path("/usr/share/mma/lib/stdlib")
OPENMSX_DIR = Path("/usr/share/games/openttd/baseset/openmsx")
MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")


# ---- splits ----------------------------------------------------------------------------------
def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:8], "big")


def split_of(group_id: str) -> str:
    """Deterministic split of a piece group (a tune with all its arrangements): 90/5/5."""
    r = _h("split:" + group_id) % 100
    return "train" if r < 90 else "validation" if r < 95 else "test"


# ---- MMA grooves ------------------------------------------------------------------------------
# groove file (stem) -> style.  Files not listed are not used.
GROOVE_STYLE: dict[str, str] = {}
for _style, _files in {
    "rock": "50srock 60srock basicrock bubblerock rock-128 softrock twist folkrock rockwaltz",
    "pop": "8beat boneym trance showtune broadway slowbroadway",
    "jazz": "bebop descendingjazz evansish folkyjazz jazzcombo jazzguitar jazzrock lfusion mellowjazz "
            "modernjazz nitejazz slowjazz gypsyjazz ragtime jazzwaltz fastjazzwaltz modernjazzwaltz",
    "swing": "68swing swing easyswing fastswing bigband dixie jive foxtrot quickstep softshoe strut charleston",
    "latin": "afro-cuban beguine bolero slowbolero bossanova calypso chacha cubanguitar jazzrhumba lighttango "
             "mambo merengue rhumba salsa samba son tango latinwaltz",
    "country": "bluegrass countryswing hillcountry slowcountry westernswing zydeco countrywaltz",
    "blues": "blues blues128 blues68 bluefolk countryblues fastblues slowblues boggiewoggie shuffleboggie",
    "waltz": "waltz fastwaltz vienesewaltz frenchwaltz broadwaywaltz arpeggiowaltz",
    "ballad": "ballad ballad128 ballad68 folkballad guitarballad pianoballad popballad rb-ballad rockballad "
              "stringballad lullaby",
    "funk": "bvfunk dsoul rb",
    "march": "march 68march bwmarch dixiemarch",
    "folk": "folk arpeggio44 arpeggio68 hymn spiritual popspiritual slowspiritual",
    "world": "polka desert ska",
}.items():
    for _f in _files.split():
        GROOVE_STYLE[_f] = _style
assert set(GROOVE_STYLE.values()) <= set(V.STYLES)

_SKIP_GROOVE = re.compile(r"intro|end|fill|break|metronome", re.I)


def groove_table() -> list[dict]:
    """Grooves usable for whole songs: name, style, bar length in real quarters (qbar), compound
    (6/8-like) flag and scale (real quarters per MMA beat)."""
    global _GROOVES
    if _GROOVES is not None:
        return _GROOVES
    out = []
    for stem, style in sorted(GROOVE_STYLE.items()):
        path = MMA_LIB / f"{stem}.mma"
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        m = re.search(r"(?im)^\s*time\s+(\d+)", text)
        beats = int(m.group(1)) if m else 4
        m = re.search(r"(?im)^\s*timesig\s+(\d+)\s*/?\s*(\d+)", text)
        sig = (int(m.group(1)), int(m.group(2))) if m else (beats, 4)
        compound = sig[1] == 8 or "128" in stem
        if compound:
            scale = {6: 0.5, 3: 1.0, 2: 1.5, 4: 1.5}.get(beats)
        else:
            scale = 1.0 if beats in (3, 4) else None
        if scale is None:
            continue
        qbar = beats * scale
        for name in re.findall(r"(?im)^\s*defgroove\s+(\S+)", text):
            if _SKIP_GROOVE.search(name):
                continue
            out.append(dict(name=name, file=stem, style=style, qbar=qbar, compound=compound, scale=scale))
    _GROOVES = out
    return out


_GROOVES: list[dict] | None = None


# ---- item sources -------------------------------------------------------------------------------
def music21_corpus_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("music21")
    return Path(spec.origin).parent / "corpus"


ABC_DIRS = ("ryansMammoth", "oneills1850", "airdsAirs", "essenFolksong", "miscFolk", "nottingham-dataset")

CLASSICAL_STYLE = {
    "bach": "baroque", "handel": "baroque", "corelli": "baroque", "cpebach": "baroque",
    "palestrina": "renaissance", "monteverdi": "renaissance", "josquin": "renaissance",
    "ciconia": "renaissance", "trecento": "renaissance", "luca": "renaissance", "lusitano": "renaissance",
    "beethoven": "classical", "mozart": "classical", "haydn": "classical", "schubert": "classical",
    "chopin": "classical", "schumann_clara": "classical", "schumann_robert": "classical",
    "weber": "classical", "verdi": "classical", "beach": "classical", "joplin": "classical",
}
CLASSICAL_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc")


def _abc_tunes(text: str) -> Iterator[tuple[str, str]]:
    """(X number, tune text with the file header) for each tune of an ABC file."""
    parts = re.split(r"(?m)^(?=X:)", text)
    header = "" if parts[0].startswith("X:") else parts[0]
    # keep only header fields/directives (not stray music) from the file header
    header = "\n".join(ln for ln in header.splitlines() if re.match(r"^(%%|[A-Za-z]:)", ln))
    seen: collections.Counter = collections.Counter()
    for p in parts:
        if not p.startswith("X:"):
            continue
        x = p.split("\n", 1)[0][2:].strip() or "0"
        seen[x] += 1
        xid = x if seen[x] == 1 else f"{x}.{seen[x]}"
        lines = p.split("\n")
        tune = lines[0] + "\n" + (header + "\n" if header else "") + "\n".join(lines[1:])
        yield xid, tune


def iter_abc(limit: int | None = None) -> Iterator[dict]:
    root = music21_corpus_dir()
    for d in ABC_DIRS:
        n = 0
        for path in sorted((root / d).glob("*.abc")):
            text = path.read_text(encoding="latin-1")
            for x, tune in _abc_tunes(text):
                if limit is not None and n >= limit:
                    break
                tid = f"abc:{d}/{path.name}#{x}"
                yield dict(source="abc", id=tid, group=tid, collection=d, abc=tune)
                n += 1
            if limit is not None and n >= limit:
                break


def iter_classical(limit: int | None = None) -> Iterator[dict]:
    root = music21_corpus_dir()
    per = collections.Counter()
    # interleave composers so a --limit build still sees several styles
    lists = []
    for comp in sorted(CLASSICAL_STYLE):
        files = sorted(p for p in (root / comp).rglob("*") if p.suffix.lower() in CLASSICAL_SUFFIXES) \
            if (root / comp).exists() else []
        if comp == "bach":  # prefer the chorale; skip "-sc" duplicates
            files = [p for p in files if "-sc" not in p.stem]
        # one file per work: the same movement often ships as both .krn and .mxl
        best: dict[tuple[str, str], Path] = {}
        for p in files:
            key = (str(p.parent), p.stem)
            if key not in best or CLASSICAL_SUFFIXES.index(p.suffix.lower()) < \
                    CLASSICAL_SUFFIXES.index(best[key].suffix.lower()):
                best[key] = p
        files = sorted(best.values())
        cap = CLASSICAL_MAX_PER_COMPOSER.get(comp)
        if cap and len(files) > cap:
            files = sorted(files, key=lambda p: _h(p.name))[:cap]
        lists.append((comp, files))
    for rnd in itertools.count():
        any_left = False
        for comp, files in lists:
            if rnd >= len(files):
                continue
            any_left = True
            if limit is not None and sum(per.values()) >= limit:
                return
            p = files[rnd]
            rel = p.relative_to(root).as_posix()
            per[comp] += 1
            yield dict(source="classical", id=f"m21:{rel}", group=f"m21:{rel}", path=str(p),
                       style=CLASSICAL_STYLE[comp], composer=comp)
        if not any_left:
            return


def iter_openmsx(limit: int | None = None) -> Iterator[dict]:
    if not OPENMSX_DIR.exists():
        return
    files = sorted(p for p in OPENMSX_DIR.iterdir() if p.suffix.lower() == ".mid")
    for p in files[:limit]:
        yield dict(source="openmsx", id=f"openmsx:{p.name}", group=f"openmsx:{p.name}", path=str(p), style="game")


def _walk_midi(root: str) -> Iterator[str]:
    """Lazily yields MIDI paths under root, sorted per directory (deterministic), never listing all."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk_midi(e.path)
            elif e.is_file() and e.name.lower().endswith(MIDI_SUFFIXES):
                yield e.path
        except OSError:
            continue


def iter_midi_dir(root: str, limit: int | None = None) -> Iterator[dict]:
    root = os.path.abspath(root)
    tag = Path(root).name
    for i, path in enumerate(_walk_midi(root)):
        if limit is not None and i >= limit:
            return
        rel = os.path.relpath(path, root)
        pid = f"midi:{tag}/{rel}"
        try:
            st = os.stat(path)
            key = f"{pid}|{path}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            key = f"{pid}|{path}"
        yield dict(source="midi", id=pid, group=pid, path=path, style=None, cache_key=key)


def iter_items(midi_dirs=(), limit=None, default=True) -> Iterator[dict]:
    if default:
        yield from iter_openmsx(limit)
        yield from iter_classical(limit)
        yield from iter_abc(limit)
    for d in midi_dirs:
        yield from iter_midi_dir(d, limit)


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


class Skip(Exception):
    """An item (or arrangement) left out, with the reason."""


def _sym_notes(tracks, tpq: int) -> np.ndarray:
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
    h = _h(item["id"])
    if item.get("collection") == "essenFolksong":
        n_arr = 1
    else:
        n_arr = 1 + h % 3
    by_style: dict[str, list[dict]] = collections.defaultdict(list)
    for g in grooves:
        by_style[g["style"]].append(g)
    styles = sorted(by_style)
    order = sorted(styles, key=lambda s: _h(f"{item['id']}|{s}"))
    pieces = []
    errors = []
    for k, style in enumerate(order[:n_arr]):
        opts = by_style[style]
        g = opts[_h(f"{item['id']}|{k}|groove") % len(opts)]
        try:
            pieces.append(_arrange_one(item, k, g, melody, acc, qt, phase, key_sharps, minor, qpm, h, workdir))
        except Skip as e:
            errors.append(str(e))
    if not pieces:
        raise Skip(errors[0] if errors else "abc: no arrangement")
    return pieces


def _arrange_one(item, k, g, melody, acc, qt, phase, key_sharps, minor, qpm, h, workdir) -> dict:
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
    start = _h(f"{item['id']}|{k}|lead") % len(progs)
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


# ---- classical (music21) ----------------------------------------------------------------------------
def _alarm(signum, frame):
    raise TimeoutError


def classical_scores(item: dict) -> list[dict]:
    import music21
    from symusic import Score as SymScore

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CLASSICAL_TIMEOUT_S)
    try:
        parsed = music21.converter.parse(item["path"])
        works = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
        blobs = []
        for w in works:
            mf = music21.midi.translate.streamToMidiFile(w)
            blobs.append(mf.writestr())
    except TimeoutError:
        raise Skip(f"music21 took more than {CLASSICAL_TIMEOUT_S} s") from None
    except Skip:
        raise
    except Exception as e:
        raise Skip(f"music21 could not read it ({type(e).__name__})") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out = []
    for i, data in enumerate(blobs):
        try:
            sym = SymScore.from_midi(data)
        except Exception:
            continue
        tracks = [t for t in sym.tracks if len(t.notes)]
        if tracks and all(int(t.program) == 0 for t in tracks):
            h = _h(item["id"])
            comp = item["composer"]
            if comp == "bach":
                choice = (19, 48, 0, 52)[h % 4]  # church organ, strings, piano, choir
                progs = [choice] * len(tracks)
            elif item["style"] == "renaissance":
                choice = (52, 19, 74, 48)[h % 4]  # choir, organ, recorders, strings
                progs = [choice] * len(tracks)
            else:
                progs = [0] * len(tracks)
            for t, p in zip(tracks, progs):
                t.program = p
        score = from_symusic(sym, style=item["style"])
        suffix = f"#{i}" if len(blobs) > 1 else ""
        out.append(dict(id=item["id"] + suffix, group=item["group"] + suffix, source="classical",
                        style=item["style"], score=score, extra=dict(composer=item["composer"])))
    return out


# ---- per-item processing ----------------------------------------------------------------------------
def check_score(score: tokenizer.Score) -> None:
    n = len(score.notes)
    if n == 0:
        raise Skip("no notes")
    if n > MAX_NOTES:
        raise Skip(f"too long (> {MAX_NOTES} notes)")
    if score.seconds() > MAX_SECONDS:
        raise Skip(f"too long (> {MAX_SECONDS // 60} minutes)")


def piece_record(p: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    score = p["score"]
    toks = tokenizer.encode(score)
    roll = score_to_pianoroll(score, steps_per_beat=PR_STEPS_PER_BEAT)
    w = windows(roll, PR_LENGTH)
    if len(w) > PR_MAX_WINDOWS:
        idx = np.unique(np.linspace(0, len(w) - 1, PR_MAX_WINDOWS).round().astype(int))
        w = w[idx]
    packed = np.packbits(w, axis=-1) if len(w) else np.zeros((0, 5, PR_LENGTH, 16), np.uint8)
    meta = dict(id=p["id"], group=p["group"], source=p["source"], style=p["style"],
                groups=[V.GROUPS[g] for g in score.groups if g != V.DRUM_GROUP], drums=score.has_drums,
                n_notes=int(len(score.notes)), bars=score.n_bars, length=int(len(toks)),
                bpm=round(score.bpm, 2), time_signature=list(score.time_signature), **p.get("extra", {}))
    return meta, toks.astype(np.uint16), packed


_WORKDIR: str | None = None


def _init_worker(quiet: bool = True) -> None:
    global _WORKDIR
    _WORKDIR = tempfile.mkdtemp(prefix="corpus-worker-")
    if quiet:  # abc2midi's C parser prints warnings straight to fd 2
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_item(item: dict) -> dict:
    """-> {"id", "pieces": [(meta, tokens, packed)], "skipped": [(id, reason)], "seconds"}"""
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = tempfile.mkdtemp(prefix="corpus-worker-")
    t0 = time.time()
    pieces, skipped = [], []
    try:
        if item["source"] == "abc":
            raw = arrange_abc(item, _WORKDIR)
        elif item["source"] == "classical":
            raw = classical_scores(item)
        else:
            try:
                score = tokenizer.load_midi(item["path"], style=item.get("style"))
            except tokenizer.MidiError as e:
                raise Skip(f"broken: {e}") from None
            raw = [dict(id=item["id"], group=item["group"], source=item["source"], style=item.get("style"),
                        score=score)]
        for p in raw:
            try:
                check_score(p["score"])
                pieces.append(piece_record(p))
            except Skip as e:
                skipped.append((p["id"], str(e)))
    except Skip as e:
        skipped.append((item["id"], str(e)))
    except Exception as e:  # a bug or an unexpected file: never kill the build
        skipped.append((item["id"], f"error: {type(e).__name__}: {str(e)[:80]}"))
    return dict(id=item["id"], pieces=pieces, skipped=skipped, seconds=time.time() - t0)


# ---- cache --------------------------------------------------------------------------------------------
# bump a source's version to rebuild only that source's items
SOURCE_VERSION = {"abc": "2"}


def cache_path(out: Path, item_id: str) -> Path:
    """Cache file of an item (its id, or its cache_key: MIDI files add path, size and mtime)."""
    v = SOURCE_VERSION.get(item_id.split(":", 1)[0], "")
    h = hashlib.sha1((f"{BUILDER_VERSION}|{item_id}" + (f"|{v}" if v else "")).encode()).hexdigest()
    return out / "cache" / h[:2] / f"{h}.npz"


def save_cache(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metas = [m for m, _, _ in res["pieces"]]
    toks = np.concatenate([t for _, t, _ in res["pieces"]]) if res["pieces"] else np.zeros(0, np.uint16)
    prs = np.concatenate([p for _, _, p in res["pieces"]]) if res["pieces"] else np.zeros((0, 5, PR_LENGTH, 16), np.uint8)
    n_pr = np.asarray([len(p) for _, _, p in res["pieces"]], np.int32)
    info = json.dumps(dict(id=res["id"], pieces=metas, skipped=res["skipped"], seconds=res["seconds"]))
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, tokens=toks.astype(np.uint16), pr=prs, n_pr=n_pr, info=np.frombuffer(info.encode(), np.uint8))
    os.replace(tmp, path)


def load_cache(path: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as z:
        info = json.loads(bytes(z["info"]).decode())
        return info, z["tokens"], z["pr"], z["n_pr"]


def _process_and_cache(args: tuple[dict, str]) -> tuple[str, int, int, float]:
    item, out = args
    res = process_item(item)
    save_cache(cache_path(Path(out), item.get("cache_key", item["id"])), res)
    return item["source"], len(res["pieces"]), len(res["skipped"]), res["seconds"]


# ---- build --------------------------------------------------------------------------------------------
class _SplitWriter:
    def __init__(self, out: Path, split: str):
        self.out, self.split = out, split
        self.tok_tmp = out / f".{split}.tokens.raw.tmp"
        self.pr_tmp = out / f".{split}.pianoroll.raw.tmp"
        self.idx_tmp = out / f".{split}.index.jsonl.tmp"
        self.tok_f = open(self.tok_tmp, "wb")
        self.pr_f = open(self.pr_tmp, "wb")
        self.idx_f = open(self.idx_tmp, "w")
        self.n_tokens = 0
        self.n_pieces = 0
        self.n_windows = 0
        self.pr_rows: list[np.ndarray] = []

    def add(self, meta: dict, toks: np.ndarray, pr: np.ndarray) -> None:
        row = dict(meta)
        row["offset"] = self.n_tokens
        row["length"] = int(len(toks))
        row["split"] = self.split
        self.tok_f.write(np.ascontiguousarray(toks, np.uint16).tobytes())
        self.pr_f.write(np.ascontiguousarray(pr, np.uint8).tobytes())
        self.pr_rows.append(np.full(len(pr), self.n_pieces, np.int32))
        self.idx_f.write(json.dumps(row) + "\n")
        self.n_tokens += len(toks)
        self.n_windows += len(pr)
        self.n_pieces += 1

    def finish(self) -> None:
        for f in (self.tok_f, self.pr_f, self.idx_f):
            f.close()
        _raw_to_npy(self.tok_tmp, self.out / f"{self.split}.tokens.npy", np.uint16, (self.n_tokens,))
        _raw_to_npy(self.pr_tmp, self.out / f"{self.split}.pianoroll.npy", np.uint8,
                    (self.n_windows, 5, PR_LENGTH, 16))
        rows = np.concatenate(self.pr_rows) if self.pr_rows else np.zeros(0, np.int32)
        _atomic_npy(self.out / f"{self.split}.pianoroll_index.npy", rows)
        os.replace(self.idx_tmp, self.out / f"{self.split}.index.jsonl")


def _raw_to_npy(raw: Path, dst: Path, dtype, shape) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    header_arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    flat = header_arr.reshape(-1) if header_arr.size else header_arr
    n = int(np.prod(shape))
    with open(raw, "rb") as f:
        pos, chunk = 0, 1 << 24
        itemsize = np.dtype(dtype).itemsize
        while pos < n:
            buf = f.read(min(chunk, n - pos) * itemsize)
            if not buf:
                raise IOError(f"{raw} is shorter than expected")
            a = np.frombuffer(buf, dtype)
            flat[pos:pos + len(a)] = a
            pos += len(a)
    header_arr.flush()
    del header_arr, flat
    os.replace(tmp, dst)
    os.unlink(raw)


def _atomic_npy(dst: Path, arr: np.ndarray) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, dst)


def _atomic_text(dst: Path, text: str) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, dst)


def build(out, midi_dirs=(), limit: int | None = None, workers: int | None = None, default: bool = True,
          progress: bool = True) -> dict:
    """Build (or resume) the corpus in `out`; returns the stats dict."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    t0 = time.time()
    midi_dirs = [str(d) for d in midi_dirs]
    # phase 1: process uncached items (streaming, in bounded batches)
    n_cached = n_done = 0
    proc_seconds = collections.Counter()
    items = iter_items(midi_dirs, limit, default)

    def todo() -> Iterator[tuple[dict, str]]:
        nonlocal n_cached
        for it in items:
            if cache_path(out, it.get("cache_key", it["id"])).exists():
                n_cached += 1
                continue
            yield it, str(out)

    bar = tqdm(desc="processing", unit="item", disable=not progress, smoothing=0.05)
    pending = todo()
    if workers <= 1:
        for args in pending:
            src, _, _, sec = _process_and_cache(args)
            proc_seconds[src] += sec
            n_done += 1
            bar.update()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            while True:
                batch = list(itertools.islice(pending, 256 * workers))
                if not batch:
                    break
                for src, _, _, sec in pool.imap_unordered(_process_and_cache, batch, chunksize=2):
                    proc_seconds[src] += sec
                    n_done += 1
                    bar.update()
    bar.close()
    t_proc = time.time() - t0
    log.info("processed %d items (%d cached) in %.0f s", n_done, n_cached, t_proc)

    # phase 2: assemble in item order
    writers = {s: _SplitWriter(out, s) for s in SPLITS}
    skipped = collections.Counter()
    skip_examples: dict[str, list[str]] = collections.defaultdict(list)
    per_split = {s: collections.Counter() for s in SPLITS}
    styles = {s: collections.Counter() for s in SPLITS}
    groups = collections.Counter()
    sources = collections.Counter()
    style_all = collections.Counter()
    drums = 0
    n_items = 0
    chords = collections.Counter()
    for it in tqdm(iter_items(midi_dirs, limit, default), desc="assembling", unit="item", disable=not progress):
        n_items += 1
        path = cache_path(out, it.get("cache_key", it["id"]))
        if not path.exists():  # cannot happen unless the cache was deleted meanwhile
            skipped["missing from cache"] += 1
            continue
        info, toks, pr, n_pr = load_cache(path)
        for pid, reason in info["skipped"]:
            key = re.sub(r"\d+(\.\d+)?", "N", reason) if reason.startswith("error") else reason
            skipped[key] += 1
            if len(skip_examples[key]) < 3:
                skip_examples[key].append(pid)
        t_off, p_off = 0, 0
        for meta, npr in zip(info["pieces"], n_pr):
            t = toks[t_off:t_off + meta["length"]]
            p = pr[p_off:p_off + int(npr)]
            t_off += meta["length"]
            p_off += int(npr)
            split = split_of(meta["group"])
            writers[split].add(meta, t, p)
            c = per_split[split]
            c["pieces"] += 1
            c["tokens"] += meta["length"]
            c["notes"] += meta["n_notes"]
            c["windows"] += int(npr)
            styles[split][meta["style"] or "none"] += 1
            style_all[meta["style"] or "none"] += 1
            for g in meta["groups"] + (["drums"] if meta["drums"] else []):
                groups[g] += 1
            sources[meta["source"]] += 1
            drums += bool(meta["drums"])
            if "chords" in meta:
                chords[meta["chords"]] += 1
    for w in writers.values():
        w.finish()
    total = sum(c["pieces"] for c in per_split.values())
    seconds = time.time() - t0
    stats = dict(
        builder_version=BUILDER_VERSION, vocab_size=V.VOCAB_SIZE, items=n_items,
        items_processed=n_done, items_cached=n_cached,
        pieces=total, tokens=sum(c["tokens"] for c in per_split.values()),
        notes=sum(c["notes"] for c in per_split.values()),
        splits={s: dict(per_split[s]) for s in SPLITS},
        styles=dict(style_all.most_common()), styles_per_split={s: dict(styles[s]) for s in SPLITS},
        groups=dict(groups.most_common()), drums_share=round(drums / total, 4) if total else 0.0,
        sources=dict(sources.most_common()), abc_chords=dict(chords),
        skipped=dict(skipped.most_common()), skipped_total=sum(skipped.values()),
        skipped_examples={k: v for k, v in skip_examples.items()},
        build_seconds=round(seconds, 1), processing_seconds=round(t_proc, 1),
        processing_cpu_seconds_by_source={k: round(v, 1) for k, v in proc_seconds.items()},
        items_per_second=round(n_done / t_proc, 2) if t_proc > 0 and n_done else None,
        workers=workers, limit=limit, midi_dirs=midi_dirs, default_sources=default,
    )
    _atomic_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    _atomic_text(out / "report.md", render_report(stats))
    log.info("corpus: %d pieces, %d tokens, %d skipped, %.0f s", total, stats["tokens"], stats["skipped_total"],
             seconds)
    return stats


def render_report(s: dict) -> str:
    L = ["# Training corpus report", ""]
    L.append(f"Builder version {s['builder_version']}, vocabulary {s['vocab_size']}. "
             f"Built in {s['build_seconds']} s ({s['items_processed']} items processed, {s['items_cached']} "
             f"from cache, {s['workers']} workers, {s['items_per_second']} items/s).")
    L += ["", "| split | pieces | notes | tokens | pianoroll windows |", "|---|---:|---:|---:|---:|"]
    for sp in SPLITS:
        c = s["splits"][sp]
        L.append(f"| {sp} | {c.get('pieces', 0)} | {c.get('notes', 0)} | {c.get('tokens', 0)} | {c.get('windows', 0)} |")
    L.append(f"| total | {s['pieces']} | {s['notes']} | {s['tokens']} | |")
    L += ["", f"Drums in {100 * s['drums_share']:.1f}% of pieces.", "", "## Styles", ""]
    L += [f"- {k}: {v}" for k, v in s["styles"].items()]
    L += ["", "## Sources", ""] + [f"- {k}: {v}" for k, v in s["sources"].items()]
    if s.get("abc_chords"):
        L += ["", "ABC arrangements' chords: " + ", ".join(f"{k} {v}" for k, v in s["abc_chords"].items())]
    L += ["", "## Instrument groups (pieces using each)", ""] + [f"- {k}: {v}" for k, v in s["groups"].items()]
    L += ["", f"## Skipped ({s['skipped_total']})", ""]
    for k, v in s["skipped"].items():
        ex = ", ".join(s["skipped_examples"].get(k, []))
        L.append(f"- {v} x {k} (e.g. {ex})")
    return "\n".join(L) + "\n"


# ---- readers for the training code ----------------------------------------------------------------------
def load_split(out, split: str) -> tuple[np.ndarray, list[dict]]:
    """(token stream as a read-only uint16 memmap, index rows)."""
    out = Path(out)
    toks = np.load(out / f"{split}.tokens.npy", mmap_mode="r")
    with open(out / f"{split}.index.jsonl") as f:
        index = [json.loads(line) for line in f if line.strip()]
    return toks, index


def load_pianoroll(out, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(bool windows (N, 5, 32, 128), piece row per window).  Unpacks into memory."""
    out = Path(out)
    packed = np.load(out / f"{split}.pianoroll.npy", mmap_mode="r" if mmap else None)
    rows = np.load(out / f"{split}.pianoroll_index.npy")
    roll = np.unpackbits(np.asarray(packed), axis=-1, count=128).astype(bool)
    return roll, rows


def piece_tokens(toks: np.ndarray, row: dict) -> np.ndarray:
    return np.asarray(toks[row["offset"]:row["offset"] + row["length"]], np.int64)


# ---- CLI -------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or resume the corpus")
    b.add_argument("--out", required=True)
    b.add_argument("--midi-dir", action="append", default=[], help="a folder of MIDI files (repeatable)")
    b.add_argument("--limit", type=int, default=None,
                   help="quick builds: N items per source (per ABC collection, per --midi-dir)")
    b.add_argument("--workers", type=int, default=None)
    b.add_argument("--no-default", action="store_true", help="only the --midi-dir folders")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "build":
        stats = build(args.out, args.midi_dir, args.limit, args.workers, default=not args.no_default,
                      progress=not args.quiet)
        print(json.dumps({k: stats[k] for k in ("pieces", "tokens", "drums_share", "styles", "skipped_total",
                                                 "build_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
