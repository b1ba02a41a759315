"""Keys, chords and registers as pitch-class sets (numpy only), and the adherence figures of a result.

    key = parse_key("D minor")            # Key(tonic=2, mode="minor")
    key.pitch_classes                      # frozenset({2, 4, 5, 7, 9, 10, 0})
    chords = parse_chords("Dm Bb F C/E")   # one chord a bar, repeating
    chords[3].tones, chords[3].bass        # frozenset({0, 4, 7}), 4

Modes: major, minor (natural), dorian, phrygian, lydian, mixolydian, locrian, harmonic-minor,
major-pentatonic, minor-pentatonic, blues.  Chord symbols: a root (C, F#, Bb), a quality ("" or maj,
m, 7, maj7, m7, dim, aug, sus2, sus4) and an optional slash bass ("C/E"); the bass note counts as a
chord tone.  Parse errors are ValueErrors that say what is allowed.

`REGISTERS` (each group's pitch range: 1st to 99th percentile of its notes) and `PART_DENSITY` (each group's
median notes per bar where it plays) are measured on the corpus's train split by
`python -m evaluation.registers --data data/corpus --split train` (the command is recorded beside the
tables; `python -m tokenizer.harmony registers FILES_OR_FOLDERS` measures registers of loose MIDI files).
The figures (`in_key_share`, `chord_tone_share`, `parts_per_bar`, `kept_share`, `part_fit`) are pure
functions of notes, shared by the CLI and the evaluation report.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import vocab as V

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
    "harmonic-minor": (0, 2, 3, 5, 7, 8, 11),
    "major-pentatonic": (0, 2, 4, 7, 9),
    "minor-pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}
_MODE_ALIASES = {"ionian": "major", "aeolian": "minor", "natural-minor": "minor", "m": "minor", "min": "minor",
                 "maj": "major", "": "major"}

QUALITIES: dict[str, tuple[int, ...]] = {
    "": (0, 4, 7), "maj": (0, 4, 7), "m": (0, 3, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11), "M7": (0, 4, 7, 11), "m7": (0, 3, 7, 10), "min7": (0, 3, 7, 10),
    "dim": (0, 3, 6), "aug": (0, 4, 8), "+": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7), "sus": (0, 5, 7),
}
_NOTE_RE = r"[A-Ga-g](?:#|b|♯|♭){0,2}"
_CHORD_RE = re.compile(rf"^({_NOTE_RE})([A-Za-z0-9+]*)(?:/({_NOTE_RE}))?$")
_SHOWN_QUALITIES = ("m", "7", "maj7", "m7", "dim", "aug", "sus2", "sus4")
MAX_CHORDS = 64


def quoted(text: str, limit: int = 40) -> str:
    """`text` as a message quotes it: repr, cut to `limit` characters (a message never echoes a huge value)."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def parse_note(name: str) -> int:
    """'C' -> 0, 'F#' -> 6, 'Bb' -> 10 (letters either case, # b ♯ ♭ accidentals)."""
    text = name.strip()
    if not re.fullmatch(_NOTE_RE, text):
        raise ValueError(f"{quoted(name)} is not a note name such as C, F# or Bb")
    pc = _LETTERS[text[0].upper()]
    for acc in text[1:]:
        pc += 1 if acc in "#♯" else -1
    return pc % 12


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class 0..11
    mode: str  # a MODES name

    @property
    def pitch_classes(self) -> frozenset[int]:
        return frozenset((self.tonic + i) % 12 for i in MODES[self.mode])

    def __str__(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.mode}"


def parse_key(text: str) -> Key:
    """'D minor', 'Bb major', 'F# harmonic minor', 'A dorian', 'Dm', 'E' (major) -> Key."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("write a tonic and a mode, e.g. 'D minor'")
    m = re.match(rf"^\s*({_NOTE_RE})\s*(.*?)\s*$", text)
    if not m:
        raise ValueError(f"{quoted(text)} does not start with a tonic such as C, F# or Bb (e.g. 'D minor')")
    mode = re.sub(r"[\s_]+", "-", m.group(2).strip().lower())
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"unknown mode {quoted(m.group(2))}; choose from {', '.join(MODES)}")
    return Key(parse_note(m.group(1)), mode)


@dataclass(frozen=True)
class Chord:
    root: int
    quality: str
    bass: int  # the lowest note: the root, or the slash bass

    @property
    def tones(self) -> frozenset[int]:
        return frozenset({(self.root + i) % 12 for i in QUALITIES[self.quality]} | {self.bass})

    def __str__(self) -> str:
        name = NOTE_NAMES[self.root] + self.quality
        return name if self.bass == self.root else f"{name}/{NOTE_NAMES[self.bass]}"


def parse_chord(symbol: str) -> Chord:
    m = _CHORD_RE.match(symbol.strip())
    if not m or m.group(2) not in QUALITIES:
        raise ValueError(f"{quoted(symbol)} is not a chord symbol: a root (C, F#, Bb), then nothing (major) or one of "
                         f"{', '.join(_SHOWN_QUALITIES)}, and an optional slash bass such as C/E")
    root = parse_note(m.group(1))
    return Chord(root, m.group(2), parse_note(m.group(3)) if m.group(3) else root)


def parse_chords(text: str) -> tuple[Chord, ...]:
    """'Dm Bb F C' (spaces, commas or bars between) -> one Chord a bar; the list repeats."""
    if not isinstance(text, str):
        raise ValueError(f"write chord symbols separated by spaces, e.g. 'Dm Bb F C' (got {type(text).__name__})")
    symbols = [s for s in re.split(r"[\s,|]+", text) if s]
    if not symbols:
        raise ValueError("write at least one chord symbol, e.g. 'Dm Bb F C'")
    if len(symbols) > MAX_CHORDS:
        raise ValueError(f"at most {MAX_CHORDS} chords (one a bar; the list repeats; got {len(symbols)})")
    return tuple(parse_chord(s) for s in symbols)


def pitch_mask(pitch_classes) -> np.ndarray:
    """(128,) bool: the MIDI pitches whose pitch class is in the set."""
    pcs = np.zeros(12, bool)
    pcs[list(pitch_classes)] = True
    return pcs[np.arange(128) % 12]


# ---- registers and part densities (measured) --------------------------------------------------
# Produced by: python -m evaluation.registers --data data/corpus --split train
# (all 16,370 pieces of the train split, 3 s; the printed table is in docs/runs/registers-train.log).
# REGISTERS: each pitched group's 1st to 99th percentile of pitch, all its notes pooled.
REGISTER_SOURCE = "data/corpus train split (16,370 pieces), 1st-99th percentile of each group's pitches"
REGISTERS: dict[str, tuple[int, int]] = {
    "piano": (43, 81),
    "chromatic": (52, 90),
    "organ": (33, 83),
    "guitar": (38, 81),
    "bass": (28, 57),
    "strings": (43, 83),
    "brass": (31, 84),
    "reed": (45, 84),
    "pipe": (52, 93),
    "lead": (57, 83),
    "pad": (42, 100),
}
# PART_DENSITY: the median over pieces of a group's notes per 4/4 bar (32 steps) in the bars where it plays
# (quartiles in the log); the sampler pulls an added or regenerated part towards it.
PART_DENSITY: dict[str, float] = {
    "piano": 8.1,
    "chromatic": 5.9,
    "organ": 6.3,
    "guitar": 9.0,
    "bass": 2.9,
    "strings": 3.0,
    "brass": 5.0,
    "reed": 5.9,
    "pipe": 5.6,
    "lead": 6.6,
    "pad": 11.1,
    "drums": 9.2,
}
MIN_REGISTER_NOTES = 200
PERCENTILES = (1.0, 99.0)


def measure_registers(scores) -> dict[str, tuple[int, int]]:
    """Per pitched group (lo, hi): the PERCENTILES of its notes' pitches over `scores`; groups with fewer
    than MIN_REGISTER_NOTES notes get the range of all pitched notes."""
    pitches: dict[int, list[np.ndarray]] = {g: [] for g in range(V.N_PITCHED)}
    for s in scores:
        for g in range(V.N_PITCHED):
            pitches[g].append(s.notes["pitch"][s.notes["group"] == g].astype(np.int64))
    per = {g: np.concatenate(p) if p else np.zeros(0, np.int64) for g, p in pitches.items()}
    every = np.concatenate(list(per.values()))
    out = {}
    for g, p in per.items():
        src = p if len(p) >= MIN_REGISTER_NOTES else every
        lo, hi = np.percentile(src, PERCENTILES) if len(src) else (0, 127)
        out[V.GROUPS[g]] = (int(np.floor(lo)), int(np.ceil(hi)))
    return out


def register_mask(group: int) -> np.ndarray:
    """(128,) bool: the pitches in the group's register (drums: every key)."""
    m = np.zeros(128, bool)
    if group == V.DRUM_GROUP:
        m[:] = True
        return m
    lo, hi = REGISTERS[V.GROUPS[group]]
    m[lo:hi + 1] = True
    return m


# ---- adherence figures ----------------------------------------------------------------------
def _pitched(notes: np.ndarray) -> np.ndarray:
    return notes[notes["group"] != V.DRUM_GROUP]


def in_key_share(notes: np.ndarray, key: Key) -> float | None:
    """Share of pitched notes whose pitch class is in the key's scale (None without pitched notes)."""
    n = _pitched(notes)
    return None if not len(n) else float(pitch_mask(key.pitch_classes)[n["pitch"]].mean())


def strong_beat(onsets: np.ndarray, bar_steps: int, numerator: int = 4) -> np.ndarray:
    """True for onsets on beat 1, and on the middle beat of bars with an even number of beats."""
    pos = np.asarray(onsets) % bar_steps
    half = bar_steps // 2 if numerator % 2 == 0 else -1
    return (pos == 0) | (pos == half)


def chord_at(onsets: np.ndarray, chords, bar_steps: int) -> np.ndarray:
    """Index into `chords` of the chord sounding at each onset (one chord a bar from bar 1, repeating)."""
    return (np.asarray(onsets, np.int64) // bar_steps) % len(chords)


def chord_tone_share(notes: np.ndarray, chords, bar_steps: int, numerator: int = 4, groups=None,
                     strong_only: bool = True) -> float | None:
    """Share of pitched notes (on strong beats, unless not `strong_only`) that are tones of their bar's chord
    (optionally only `groups`); None where there are none."""
    n = _pitched(notes)
    if groups is not None:
        n = n[np.isin(n["group"], list(groups))]
    if strong_only:
        n = n[strong_beat(n["onset"], bar_steps, numerator)]
    if not len(n):
        return None
    tones = np.stack([pitch_mask(c.tones) for c in chords])  # (n_chords, 128)
    return float(tones[chord_at(n["onset"], chords, bar_steps), n["pitch"]].mean())


def parts_per_bar(notes: np.ndarray, bar_steps: int, n_bars: int, first_bar: int = 0) -> list[list[str]]:
    """The group names heard (a note starts) in each bar first_bar .. n_bars-1."""
    bars = np.asarray(notes["onset"], np.int64) // bar_steps
    return [[V.GROUPS[int(g)] for g in np.unique(notes["group"][bars == b])] for b in range(first_bar, n_bars)]


def kept_share(kept: np.ndarray, result: np.ndarray) -> float | None:
    """Share of the `kept` notes found in `result` with the same onset, group, pitch, velocity and
    duration (None when nothing had to be kept)."""
    if not len(kept):
        return None
    fields = ["onset", "group", "pitch", "velocity", "duration"]
    have = set(map(tuple, np.stack([result[f].astype(np.int64) for f in fields], 1).tolist()))
    want = np.stack([kept[f].astype(np.int64) for f in fields], 1).tolist()
    return float(np.mean([tuple(w) in have for w in want]))


# ---- how a part sits in a song ------------------------------------------------------------------
def song_scale(notes: np.ndarray) -> frozenset[int] | None:
    """The diatonic scale (one of the 12 major scales: also the natural minors and the other modes) that
    holds the most of the pitched notes (the lowest tonic on a tie); None without pitched notes."""
    n = _pitched(notes)
    if not len(n):
        return None
    hist = np.bincount(n["pitch"].astype(np.int64) % 12, minlength=12)
    major = np.asarray(MODES["major"])
    cover = [hist[(t + major) % 12].sum() for t in range(12)]
    tonic = int(np.argmax(cover))
    return frozenset(int(x) for x in (tonic + major) % 12)


def song_grid(notes: np.ndarray, bar_steps: int, min_bars: int = 2) -> np.ndarray:
    """(bar_steps,) bool: the positions in the bar at which the notes start in at least `min_bars` bars
    (in every bar where they span fewer bars)."""
    pos = np.asarray(notes["onset"], np.int64) % bar_steps
    bars = np.asarray(notes["onset"], np.int64) // bar_steps
    pairs = np.unique(np.stack([pos, bars], 1), axis=0) if len(pos) else np.zeros((0, 2), np.int64)
    count = np.bincount(pairs[:, 0], minlength=bar_steps)
    return count >= min(min_bars, max(1, len(np.unique(bars))))


LOCAL_BARS = 4  # the song's local key: the scale of its notes within this many bars either side of a bar


def local_scale_share(part: np.ndarray, song: np.ndarray, bar_steps: int, reach: int = LOCAL_BARS) -> float | None:
    """The share of the part's pitched notes in the song's local scale: `song_scale` of the song's notes within
    `reach` bars either side of the note's bar (a song that changes key is judged bar by bar; None for drums or
    without song notes near)."""
    pitched = _pitched(part)
    if not len(pitched):
        return None
    song_bars = np.asarray(song["onset"], np.int64) // bar_steps
    order = np.argsort(song_bars, kind="stable")
    song_bars, song = song_bars[order], song[order]
    ok = total = 0
    bars = np.asarray(pitched["onset"], np.int64) // bar_steps
    for b in np.unique(bars):
        lo, hi = np.searchsorted(song_bars, [b - reach, b + reach + 1])
        scale = song_scale(song[lo:hi])
        if scale is None:
            continue
        notes = pitched[bars == b]
        ok += int(pitch_mask(scale)[notes["pitch"]].sum())
        total += len(notes)
    return ok / total if total else None


def bar_profiles(notes: np.ndarray, bar_steps: int, first_bar: int, n_bars: int) -> np.ndarray:
    """(bars, 12 + 16): per bar, its pitch-class counts (pitched notes) and its onsets over 16 positions of the
    bar (drums included), each half scaled to unit length (zeros for a silent bar)."""
    out = np.zeros((n_bars - first_bar, 28))
    bars = np.asarray(notes["onset"], np.int64) // bar_steps - first_bar
    inside = (bars >= 0) & (bars < n_bars - first_bar)
    n, bars = notes[inside], bars[inside]
    pitched = n["group"] != V.DRUM_GROUP
    np.add.at(out, (bars[pitched], np.asarray(n["pitch"][pitched], np.int64) % 12), 1.0)
    pos = (np.asarray(n["onset"], np.int64) % bar_steps) * 16 // bar_steps
    np.add.at(out, (bars, 12 + pos), 1.0)
    for lo, hi in ((0, 12), (12, 28)):
        norm = np.linalg.norm(out[:, lo:hi], axis=1, keepdims=True)
        out[:, lo:hi] /= np.where(norm > 0, norm, 1.0)
    return out


def repeats_with_song(part: np.ndarray, song: np.ndarray, bar_steps: int, n_bars: int, first_bar: int = 0,
                      ) -> float | None:
    """Whether the part repeats where the song repeats: the correlation of the two bar-by-bar self-similarity
    matrices (cosine of `bar_profiles`), over the pairs of bars where both play (None with fewer than 3 such
    bars or no variation)."""
    a, b = (bar_profiles(x, bar_steps, first_bar, n_bars) for x in (part, song))
    both = np.flatnonzero((a.any(1)) & (b.any(1)))
    if len(both) < 3:
        return None
    a, b = a[both], b[both]
    sa, sb = a @ a.T / 2, b @ b.T / 2  # two unit halves: 0..1
    iu = np.triu_indices(len(both), 1)
    x, y = sa[iu], sb[iu]
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def part_fit(part: np.ndarray, song: np.ndarray, bar_steps: int, n_bars: int, first_bar: int = 0) -> dict:
    """How one part (its notes) sits in a song (the other parts' notes), over bars first_bar .. n_bars-1:
    - notes_per_bar: its notes per 4/4 bar (32 steps) in the bars where it starts a note (None if silent);
    - heard_in_bars: the share of the bars where it starts a note;
    - in_song_scale: the share of its pitched notes in `song_scale` of the song (None for drums);
    - in_local_scale: the same against the song's local scale (`local_scale_share`: 4 bars either side);
    - on_song_grid: the share of its onsets at a position in the bar where the song starts notes in at
      least two bars (`song_grid`) (None if silent or the song is);
    - repeats_with_song: the correlation of its bar-by-bar self-similarity with the song's
      (`repeats_with_song`: does it repeat where the song repeats).
    Real parts of the corpus measured the same way are the yardstick (python -m evaluation.edits)."""
    lo, hi = first_bar * bar_steps, n_bars * bar_steps

    def span(n):
        return n[(n["onset"] >= lo) & (n["onset"] < hi)]

    part, song = span(part), span(song)
    bars = np.asarray(part["onset"], np.int64) // bar_steps
    heard = len(np.unique(bars))
    out: dict = {"notes_per_bar": float(len(part)) / (heard * bar_steps / V.STEPS_PER_BAR) if heard else None,
                 "heard_in_bars": heard / max(1, n_bars - first_bar)}
    scale, pitched = song_scale(song), _pitched(part)
    out["in_song_scale"] = float(pitch_mask(scale)[pitched["pitch"]].mean()) if scale and len(pitched) else None
    out["in_local_scale"] = local_scale_share(part, song, bar_steps)
    if len(part) and len(song):
        grid = song_grid(song, bar_steps)
        out["on_song_grid"] = float(grid[np.asarray(part["onset"], np.int64) % bar_steps].mean())
    else:
        out["on_song_grid"] = None
    out["repeats_with_song"] = repeats_with_song(part, song, bar_steps, n_bars, first_bar)
    return out


# ---- the command that measured REGISTERS ---------------------------------------------------------
def _midi_files(paths) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.rglob("*.mid")) + sorted(p.rglob("*.midi")) if p.is_dir() else [p]
    return files


def main(argv=None) -> int:
    """python -m tokenizer.harmony registers FILES_OR_FOLDERS: print the register table as Python."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "registers":
        print("usage: python -m tokenizer.harmony registers FILES_OR_FOLDERS...", file=sys.stderr)
        return 2
    from .score import MidiError, load_midi

    scores, files = [], _midi_files(args[1:])
    for f in files:
        try:
            scores.append(load_midi(f))
        except MidiError as e:
            print(f"skipped {f}: {e}", file=sys.stderr)
    table = measure_registers(scores)
    print(f"# {len(scores)} files, percentiles {PERCENTILES}")
    for name, (lo, hi) in table.items():
        print(f"    {name!r}: ({lo}, {hi}),")
    return 0


if __name__ == "__main__":
    sys.exit(main())
