"""The live piano roll's data: a compact JSON description of a score (`roll_data`) that the page's roll
component (page/roll.py, `roll_html`) draws on a <canvas>, with a playhead that follows the variant's player.

    data = roll_data(score, audio_seconds=4.2)       # JSON-able dict (or None for "no roll")

The roll draws the same colours and part names as the PNG of render/pianoroll.py, pitched parts on one
pitch axis and drums on their own lane below (one row per drum sound, named by its GM drum name), bar
numbers on top.  In the browser (render/static/roll.js, served inline in the page's <head>: no CDN):
- the playhead follows the media element of the gr.Audio whose elem_id is `audio_elem_id` (Gradio 6
  plays through WaveSurfer, whose <audio> lives in an open shadow root inside that block; a plain
  <audio> in the block is used when there is one);
- a click seeks that audio; a drag (or shift-click) selects a range of whole bars, which the component
  reports through its `select` event: `evt.index` = [first_bar, last_bar] (1-based, inclusive), or
  None with `evt.selected` False when the selection is cleared (double-click, Escape, or a new value).
One requestAnimationFrame loop serves every roll on the page, and it runs only while something plays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tokenizer import Score
from tokenizer import vocab as V

from .pianoroll import GROUP_COLORS

STATIC = Path(__file__).resolve().parent / "static"

# General MIDI percussion key map (channel 10), keys 35..81.
GM_DRUMS = {
    35: "Acoustic Bass Drum", 36: "Bass Drum 1", 37: "Side Stick", 38: "Acoustic Snare", 39: "Hand Clap",
    40: "Electric Snare", 41: "Low Floor Tom", 42: "Closed Hi-Hat", 43: "High Floor Tom", 44: "Pedal Hi-Hat",
    45: "Low Tom", 46: "Open Hi-Hat", 47: "Low-Mid Tom", 48: "Hi-Mid Tom", 49: "Crash Cymbal 1", 50: "High Tom",
    51: "Ride Cymbal 1", 52: "Chinese Cymbal", 53: "Ride Bell", 54: "Tambourine", 55: "Splash Cymbal",
    56: "Cowbell", 57: "Crash Cymbal 2", 58: "Vibraslap", 59: "Ride Cymbal 2", 60: "Hi Bongo", 61: "Low Bongo",
    62: "Mute Hi Conga", 63: "Open Hi Conga", 64: "Low Conga", 65: "High Timbale", 66: "Low Timbale",
    67: "High Agogo", 68: "Low Agogo", 69: "Cabasa", 70: "Maracas", 71: "Short Whistle", 72: "Long Whistle",
    73: "Short Guiro", 74: "Long Guiro", 75: "Claves", 76: "Hi Wood Block", 77: "Low Wood Block",
    78: "Mute Cuica", 79: "Open Cuica", 80: "Mute Triangle", 81: "Open Triangle",
}
DRUM_HIT_STEPS = 2  # drum hits are drawn 1/16 note long, as in the PNG (their durations carry no meaning)
DIGITS = 4  # seconds are rounded to 0.1 ms


def drum_name(key: int) -> str:
    return GM_DRUMS.get(int(key), f"drum {int(key)}")


def pitch_range(pitches: np.ndarray) -> list[int] | None:
    """[low, high] of the pitch axis, padded as in the PNG (at least an octave shown); None if no pitches."""
    if not len(pitches):
        return None
    lo, hi = int(pitches.min()), int(pitches.max())
    pad = max(2, (12 - (hi - lo)) // 2)
    return [max(0, lo - pad), min(127, hi + pad)]


def roll_data(score: Score, audio_seconds: float | None = None, audio_start: float = 0.0) -> dict[str, Any]:
    """A JSON-able description of `score` for the live roll; its audio (`audio_seconds` long) starts
    `audio_start` seconds into the song (a preview of the bars around an edit of a long song).

    Keys: bpm, time_signature [num, den], step_seconds, beat_seconds, bar_seconds, n_bars, seconds (the
    time axis: the whole bars the piece spans, or to the audio's end when that is later), audio_start, bars (bar-line times,
    n_bars + 1 of them), beats (beat-line times between bar lines), pitch_range ([low, high] of the
    pitched parts, padded; None without pitched notes), drum_rows ([{key, name}], row 0 = lowest key,
    drawn at the bottom of the drum lane), parts ([{name, color, drums, count, notes}] in group order,
    drums last; notes = [[start_s, duration_s, pitch or drum row, midi_velocity], ...] sorted by start).
    """
    step = 60.0 / float(score.bpm) / V.STEPS_PER_QUARTER
    bar = score.bar_steps
    beat = V.STEPS_PER_QUARTER * 4 // score.time_signature[1]
    total = max(score.length or 0, score.end_step, bar)
    n_bars = -(-total // bar)
    seconds = max(n_bars * bar * step, float(audio_start) + float(audio_seconds or 0.0))

    def sec(steps) -> list[float]:
        return np.round(np.asarray(steps, dtype=np.float64) * step, DIGITS).tolist()

    notes = score.notes
    pitched = notes[notes["group"] != V.DRUM_GROUP]
    drums = notes[notes["group"] == V.DRUM_GROUP]
    kit = np.unique(drums["pitch"])
    parts = []
    for g in score.groups:
        n = notes[notes["group"] == g]
        name = V.GROUPS[g]
        is_drums = g == V.DRUM_GROUP
        y = np.searchsorted(kit, n["pitch"]) if is_drums else n["pitch"]
        dur = np.full(len(n), DRUM_HIT_STEPS) if is_drums else n["duration"]
        vel = (n["velocity"].astype(np.int64) + 1) * V.VELOCITY_STEP  # = vocab.level_velocity
        parts.append({"name": name, "color": GROUP_COLORS[name], "drums": bool(is_drums), "count": int(len(n)),
                      "notes": [list(row) for row in zip(sec(n["onset"]), sec(dur), y.tolist(), vel.tolist())]})
    bar_lines = range(0, n_bars * bar + 1, bar)
    beat_lines = [s for s in range(0, n_bars * bar, beat) if s % bar]
    return {
        "bpm": float(score.bpm),
        "time_signature": list(score.time_signature),
        "step_seconds": step,
        "beat_seconds": beat * step,
        "bar_seconds": bar * step,
        "n_bars": int(n_bars),
        "seconds": round(seconds, DIGITS),
        "audio_start": round(float(audio_start), DIGITS),
        "bars": sec(list(bar_lines)),
        "beats": sec(beat_lines),
        "pitch_range": pitch_range(pitched["pitch"]),
        "drum_rows": [{"key": int(k), "name": drum_name(k)} for k in kit],
        "parts": parts,
    }


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


ROLL_JS = _static("roll.js")  # the browser side, served inline by the page (page/roll.py)
ROLL_CSS = _static("roll.css")
if "</script" in ROLL_JS.lower():
    raise RuntimeError("render/static/roll.js may not contain '</script': it is served inline")
