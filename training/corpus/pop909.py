"""POP909 (Wang, Chen et al., "POP909: A Pop-song Dataset for Music Arrangement Generation", ISMIR 2020;
MIT licence): 909 Chinese pop songs as piano arrangements, one folder per song:

  NNN/NNN.mid          tracks MELODY (the vocal line), BRIDGE (secondary melodies, fills, lead
                       instruments), PIANO (the accompaniment), all written on program 0
  NNN/chord_midi.txt   start (s), end (s), chord ("C:maj", "A:min7", "N" = no chord), on the MIDI's clock
  NNN/key_audio.txt    start (s), end (s), key ("Gb:maj"), on the audio's clock

`read_song` gives a song's Score with its parts on instrument groups a musician would choose (ROLE_PROGRAM),
its chords on the step grid and its key; `song_pieces` is the corpus builder's entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenizer import vocab as V
from tokenizer.score import MidiError, Score, file_meter, from_symusic, scan_midi

# Track name -> the GM program the part is written with (all three are program 0 in the files).
# MELODY is the sung line: an alto sax (reed) plays a vocal line in its own breath-phrased way and covers
# both male and female singing ranges (reed register 45-84), where a synth lead (57-83) would lose the low
# male melodies.  BRIDGE holds the counter-melodies and instrumental fills between sung phrases: a flute
# (pipe) gives it a second melodic colour that stays apart from the sax, as a pop arranger would double or
# answer a vocal.  PIANO stays the piano.  Training can remap these among compatible groups
# (training.data.Augment "remap").
ROLE_PROGRAM = {"MELODY": 65, "BRIDGE": 73, "PIANO": 0}
ROLE_GROUP = {role: V.GROUPS[V.GM_PROGRAM_TO_GROUP[p]] for role, p in ROLE_PROGRAM.items()}
assert ROLE_GROUP == {"MELODY": "reed", "BRIDGE": "pipe", "PIANO": "piano"}
LICENSE = "MIT"
CITATION = ('Wang, Chen et al., "POP909: A Pop-song Dataset for Music Arrangement Generation", ISMIR 2020')
_SONG = re.compile(r"^\d{3}$")


@dataclass
class Song:
    """One POP909 song: its Score, chords as (start step, end step, chord text) with "N" (no chord) left out,
    its key ("Gb:maj", the first key of key_audio.txt) and every key change as (start s, end s, key)."""

    id: str
    score: Score
    chords: list[tuple[int, int, str]]
    key: str | None
    keys: list[tuple[float, float, str]]


def song_dirs(root: str | Path) -> list[Path]:
    """The song folders (NNN/ holding NNN.mid) under a POP909 folder, in song order."""
    root = Path(root)
    return sorted(d for d in root.iterdir() if d.is_dir() and _SONG.match(d.name) and (d / f"{d.name}.mid").is_file())


def read_labels(path: Path) -> list[tuple[float, float, str]]:
    """The rows (start s, end s, label) of a POP909 label file (tab- or space-separated); none when the
    file is missing."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            rows.append((float(parts[0]), float(parts[1]), parts[2]))
    return rows


def seconds_to_ticks(seconds: np.ndarray, tempos: list[tuple[int, int]], tpq: int) -> np.ndarray:
    """Times in seconds -> MIDI ticks through the file's tempo map [(tick, microseconds per quarter)]
    (120 BPM before the first tempo event)."""
    seconds = np.asarray(seconds, np.float64)
    changes = sorted(tempos) or [(0, 500_000)]
    if changes[0][0] > 0:
        changes.insert(0, (0, 500_000))
    ticks = np.asarray([t for t, _ in changes], np.float64)
    sec_per_tick = np.asarray([m for _, m in changes], np.float64) / 1e6 / tpq
    starts = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * sec_per_tick[:-1])])  # seconds at each change
    i = np.clip(np.searchsorted(starts, seconds, side="right") - 1, 0, len(starts) - 1)
    return ticks[i] + (seconds - starts[i]) / sec_per_tick[i]


def read_song(folder: str | Path) -> Song:
    """A POP909 song folder -> its Song (Score style "pop").  MidiError for a broken MIDI file.

    The files mostly declare 1/4 time, an artefact of their export (the songs are in 4/4 or 3/4 and
    their bars were not annotated): 1/4 is read as 4/4 so that bars and segments are whole 4/4 bars."""
    from symusic import Score as SymScore

    folder = Path(folder)
    data = (folder / f"{folder.name}.mid").read_bytes()
    scan = scan_midi(data)
    bpm, ts = file_meter(scan.tempos, scan.time_signatures)
    if ts == (1, 4):
        ts = (4, 4)
    try:
        sym = SymScore.from_midi(data)
    except Exception as e:
        raise MidiError(f"broken MIDI file ({e})") from None
    for track in sym.tracks:
        track.program = ROLE_PROGRAM.get(track.name.strip().upper(), 0)
    score = from_symusic(sym, style="pop", bpm=bpm, time_signature=ts)
    tpq = int(sym.ticks_per_quarter)
    tempos = [(int(t.time), int(t.mspq)) for t in sym.tempos]
    chords = []
    rows = [r for r in read_labels(folder / "chord_midi.txt") if r[2] != "N"]
    if rows:
        bounds = seconds_to_ticks(np.asarray([[a, b] for a, b, _ in rows]).ravel(), tempos, tpq)
        steps = np.rint(bounds * V.STEPS_PER_QUARTER / tpq).astype(np.int64).reshape(-1, 2)
        chords = [(int(a), int(b), c) for (a, b), (_, _, c) in zip(steps, rows) if b > a]
    keys = read_labels(folder / "key_audio.txt")
    return Song(id=folder.name, score=score, chords=chords, key=keys[0][2] if keys else None, keys=keys)


def song_pieces(item: dict) -> list[dict]:
    """A corpus item (source "pop909", path = the song folder) -> its one piece dict, with the key and the
    number of chord labels in the index row."""
    try:
        song = read_song(item["path"])
    except MidiError as e:
        from .common import Skip

        raise Skip(f"broken: {e}") from None
    return [dict(id=item["id"], group=item["group"], source="pop909", style="pop", score=song.score,
                 extra=dict(song=song.id, key=song.key, chord_labels=len(song.chords)))]
