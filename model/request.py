"""What a musician asks an engine for: `GenerationRequest`, its limits, and its one validation.

    req = GenerationRequest(groups=("piano", "bass"), drums=True, bars=8).validate()

`validate()` is the one place request values are range-checked, the engine options in `extra`
included.  It raises `RequestError` (a ValueError) whose message names the field as the page labels it
(`LABELS`), says what is allowed and what it got: "Temperature must be 0.1 to 2.0 (got 3)".  Callers
convert their own input types first (the page: text to numbers, blank seed to a random one) and leave
the checking to `validate()`; `whole_number` and `real_number` are the same checks for the few values
that are not request fields (the page's "use the first N bars").  Checks that need a loaded engine
(is this reference song one of the engine's?) live in that engine, once.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Any

from tokenizer import Score
from tokenizer import vocab as V

# Limits shared by the page, the CLI and the API.
MAX_BARS = 64
MAX_VARIANTS = 8
MIN_BPM, MAX_BPM = 40, 240
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 2.0
MAX_TOP_K = V.VOCAB_SIZE
SEED_LIMIT = 2**32  # seeds are 0 .. SEED_LIMIT - 1

# Control names an engine may declare.  The last three are engine options carried in
# GenerationRequest.extra: "noise_sd" (float, latent noise), "alpha" (float 0..1, pull towards the
# reference), "reference" (a built-in reference name from Engine.references, or an uploaded Score).
ALL_CONTROLS = ("groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm",
                "style", "prompt", "noise_sd", "alpha", "reference")
MAX_NOISE_SD = 2.0

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


def _score(value: Any, name: str, empty: str) -> Score:
    """An uploaded Score with notes; `empty` says what to change when it has none."""
    if not isinstance(value, Score):
        raise RequestError(f"{LABELS[name]} must be an uploaded MIDI (got {type(value).__name__})")
    if not len(value.notes):
        raise RequestError(f"{LABELS[name]}: {empty}")
    return value


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not all(isinstance(g, str) for g in value):
        raise RequestError(f"{LABELS['groups']} must be a list of names from {', '.join(V.PITCHED_GROUPS)} "
                           f"(got {shown(value)})")
    groups = tuple(dict.fromkeys(g.strip().lower() for g in value if g.strip()))
    groups = tuple(g for g in groups if g != "drums")  # drums are their own switch
    for g in groups:
        if g not in V.PITCHED_GROUPS:
            raise RequestError(f"{LABELS['groups']}: unknown group {g!r}; choose from {', '.join(V.PITCHED_GROUPS)}")
    return groups


def _extra(extra: Any) -> dict:
    """The engine options: numbers in range, a reference that is a name or an uploaded MIDI.  Other keys
    pass through unchecked (add the check here when an engine gains an option)."""
    if not isinstance(extra, dict):
        raise RequestError(f"engine options must be a dict (got {type(extra).__name__})")
    out = dict(extra)
    if out.get("noise_sd") is not None:
        out["noise_sd"] = real_number(out["noise_sd"], "noise_sd", 0.0, MAX_NOISE_SD)
    if out.get("alpha") is not None:
        out["alpha"] = real_number(out["alpha"], "alpha", 0.0, 1.0)
    ref = out.get("reference")
    if isinstance(ref, str) and not ref.strip():
        out["reference"] = None
    elif ref is not None and not isinstance(ref, str):
        if not isinstance(ref, Score):
            raise RequestError(f"{LABELS['reference']}: the reference must be a name from the list or an "
                               f"uploaded MIDI (got {shown(ref)})")
        _score(ref, "reference_midi", "the file contains no notes; upload another one")
    return out


@dataclass(frozen=True)
class GenerationRequest:
    groups: tuple[str, ...] = ("piano",)  # pitched group names (vocab.PITCHED_GROUPS)
    drums: bool = True
    bars: int = 8
    variants: int = 1
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    seed: int = 0
    bpm: float = 120.0
    style: str | None = None
    prompt: Score | None = None  # continue this score (already cut to the bars to keep)
    extra: dict = field(default_factory=dict)  # engine options (see ALL_CONTROLS)

    def validate(self) -> "GenerationRequest":
        """Return a normalized copy (ints, floats, lower-case unique groups) or raise RequestError."""
        groups = _groups(self.groups)
        if not isinstance(self.drums, bool):
            raise RequestError(f"{LABELS['drums']} must be on or off (true or false; got {shown(self.drums)})")
        if not groups and not self.drums:
            raise RequestError(f"{LABELS['groups']}: choose at least one (or turn {LABELS['drums']} on, with an "
                               "engine that plays drums)")
        if self.style is not None and self.style not in V.STYLES:
            raise RequestError(f"{LABELS['style']}: unknown style {shown(self.style)}; choose from "
                               f"{', '.join(V.STYLES)} (or none)")
        return replace(
            self, groups=groups,
            bars=whole_number(self.bars, "bars", 1, MAX_BARS),
            variants=whole_number(self.variants, "variants", 1, MAX_VARIANTS),
            temperature=real_number(self.temperature, "temperature", MIN_TEMPERATURE, MAX_TEMPERATURE),
            top_p=real_number(self.top_p, "top_p", 0.0, 1.0, lo_open=True),
            top_k=whole_number(self.top_k, "top_k", 0, MAX_TOP_K, note=" (0 = off)"),
            seed=whole_number(self.seed, "seed", 0, SEED_LIMIT - 1),
            bpm=real_number(self.bpm, "bpm", MIN_BPM, MAX_BPM),
            prompt=None if self.prompt is None else _score(
                self.prompt, "prompt", f"the bars used contain no notes; raise '{LABELS['prompt_bars']}' or upload "
                                       "another file"),
            extra=_extra(self.extra),
        )

    @property
    def group_ids(self) -> list[int]:
        return [V.GROUPS.index(g) for g in self.groups]
