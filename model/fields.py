"""Request fields as people see them: their labels, the error a person's mistake raises, and the two number checks.

Every message names the field by `LABELS` and says what is allowed and what it got: "Temperature must be
0.1 to 2.0 (got 3)".  `model.request` (the request), `model.edits` (the edit kinds) and the studio share them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

# Each field as the page labels it; the page uses these labels and every message names the field by them.
LABELS = {
    "engine": "Engine",
    "groups": "Instrument groups",
    "drums": "Drums",
    "bars": "Length (bars)",
    "variants": "Variants",
    "temperature": "Temperature",
    "top_p": "Top-p",
    "top_k": "Top-k",
    "seed": "Seed",
    "bpm": "BPM",
    "style": "Style",
    "prompt": "MIDI file",
    "prompt_bars": "Use the first N bars",
    "noise_sd": "Variation (latent noise sd)",
    "alpha": "Pull towards the reference (alpha)",
    "reference": "Reference song",
    "reference_midi": "Reference MIDI",
    "key": "Key",
    "chords": "Chords",
    "chord_bias": "Chord pull",
    "edit": "Edit",
    "part": "Part",
    "infill_bars": "Infill bars",
    "drum_kit": "Drum kit",
    "loop": "Seamless loop",
}


class RequestError(ValueError):
    """A value a person got wrong; the message names the field and says what to change."""


def shown(value: Any) -> str:
    """A value as a message quotes it: 3, 2.5, 'abc' (long text cut)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return repr(float(value))
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def whole_number(value: Any, name: str, lo: int, hi: int, note: str = "") -> int:
    """`value` as an int in lo..hi, or RequestError naming LABELS[name]; floats are refused even when
    whole (callers convert their own types)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and lo <= value <= hi:
        return int(value)
    raise RequestError(f"{LABELS[name]} must be a whole number from {lo} to {hi}{note} (got {shown(value)})")


def real_number(value: Any, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    """`value` as a float in lo..hi (above lo when `lo_open`), or RequestError naming LABELS[name]."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if is_number and (lo < value if lo_open else lo <= value) and value <= hi:
        return float(value)
    allowed = f"above {lo} and at most {hi}" if lo_open else f"{lo} to {hi}" if is_number else f"from {lo} to {hi}"
    raise RequestError(f"{LABELS[name]} must be {'' if is_number else 'a number '}{allowed} (got {shown(value)})")
