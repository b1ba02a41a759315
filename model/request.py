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

from dataclasses import dataclass, field, fields, replace
from typing import Any

from tokenizer import Score
from tokenizer import harmony as H
from tokenizer import vocab as V

from .edits import EDITS, Edit, check_edit, edit_of  # noqa: F401 (EDITS re-exported)
from .fields import LABELS, RequestError, real_number, shown, whole_number  # noqa: F401 (re-exported)

# Limits shared by the page, the CLI and the API.
MAX_BARS = 64  # bars one request writes
MAX_PROMPT_BARS = 1024  # bars of an upload a request reads (whole songs; the budget refuses what would take too long)
MAX_VARIANTS = 8
MIN_BPM, MAX_BPM = 40, 240
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 2.0
MAX_TOP_K = V.VOCAB_SIZE
SEED_LIMIT = 2**32  # seeds are 0 .. SEED_LIMIT - 1

# Control names an engine may declare.  The last three are engine options carried in
# GenerationRequest.extra: "noise_sd" (float, latent noise), "alpha" (float 0..1, pull towards the
# reference), "reference" (a built-in reference name from Engine.references, or an uploaded Score).
# "key" (key and scale lock), "chords" (a progression, with its chord pull) and "edit" (continue, add a part,
# regenerate a part, infill bars) are the editing controls (GenerationRequest.key / chords / edit).
# "loop" (GenerationRequest.loop): the last bar leads back into the first (model.sampling.loop).
ALL_CONTROLS = ("groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm",
                "style", "prompt", "noise_sd", "alpha", "reference", "key", "chords", "edit", "loop")
MAX_NOISE_SD = 2.0
MAX_CHORD_BIAS = 10.0
SESSION_FORMAT = "midi-bangers-session"  # session.json of the studio's zip (python -m model.generate --session)

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
            raise RequestError(f"{LABELS['groups']}: unknown group {shown(g)}; choose from {', '.join(V.PITCHED_GROUPS)}")
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


MAX_TEXT = 1000  # characters of a key or a chord progression (64 bars of long chord symbols fit)


def _text(value: Any, name: str, parse):
    """None for a blank value; else the parsed value, or RequestError naming LABELS[name]."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise RequestError(f"{LABELS[name]} is too long: {len(value):,} characters, at most {MAX_TEXT:,} (got "
                           f"{shown(value)})")
    try:
        return parse(value)
    except ValueError as e:
        raise RequestError(f"{LABELS[name]}: {e}") from None


def _harmony(key: Any, chords: Any) -> tuple[str | None, str | None]:
    """Key and chords as normalized text ('D minor', 'Dm Bb F C'); every chord must have a note in the key
    (the bass plays only notes that are both)."""
    k = _text(key, "key", H.parse_key)
    c = _text(chords, "chords", H.parse_chords)
    for chord in c or ():
        if k is not None and not chord.tones & k.pitch_classes:
            raise RequestError(f"{LABELS['chords']}: {chord} has no note in {k}; change the chord or the "
                               f"{LABELS['key']}")
    return (None if k is None else str(k)), (None if c is None else " ".join(map(str, c)))


def prompt_bars(prompt: Score) -> int:
    """Whole bars an uploaded (cut) score spans (`Score.bars`)."""
    return prompt.bars


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
    key: str | None = None  # "D minor": every pitched note in the scale (control "key")
    chords: str | None = None  # "Dm Bb F C": one chord a bar from bar 1, repeating (control "chords")
    chord_bias: float = 2.0  # logit pull of the non-bass parts towards chord tones (the bass plays only them)
    edit: str | None = None  # None, or one of EDITS, on `prompt` (control "edit")
    part: str | None = None  # the group added or regenerated (a vocab.GROUPS name; "drums" too)
    infill_bars: tuple[int, int] | None = None  # (first, last), 1-based inclusive, bars of `prompt`
    drum_kit: str | None = None  # a vocab.DRUM_KITS name (the drum track's program change, every engine);
    # None: the prompt's kit, else standard
    loop: bool = False  # a seamless loop: the last bar leads back into the first (control "loop"; new pieces only)

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
        prompt = None if self.prompt is None else _score(
            self.prompt, "prompt", f"the bars used contain no notes; raise '{LABELS['prompt_bars']}' or upload "
                                   "another file")
        key, chords = _harmony(self.key, self.chords)
        _, edit_fields = check_edit(replace(self, prompt=prompt), prompt)
        if not isinstance(self.loop, bool):
            raise RequestError(f"{LABELS['loop']} must be on or off (true or false; got {shown(self.loop)})")
        if self.loop and prompt is not None:
            raise RequestError(f"{LABELS['loop']}: a loop is a new piece; remove the {LABELS['prompt']} or turn "
                               f"{LABELS['loop']} off")
        kit = self.drum_kit.strip().lower() or None if isinstance(self.drum_kit, str) else self.drum_kit
        if kit is not None and kit not in V.DRUM_KITS:
            raise RequestError(f"{LABELS['drum_kit']}: unknown kit {shown(self.drum_kit)}; choose from "
                               f"{', '.join(V.DRUM_KITS)}")
        return replace(
            self, groups=groups, key=key, chords=chords, **edit_fields, drum_kit=kit,
            chord_bias=real_number(self.chord_bias, "chord_bias", 0.0, MAX_CHORD_BIAS),
            bars=whole_number(self.bars, "bars", 1, MAX_BARS),
            variants=whole_number(self.variants, "variants", 1, MAX_VARIANTS),
            temperature=real_number(self.temperature, "temperature", MIN_TEMPERATURE, MAX_TEMPERATURE),
            top_p=real_number(self.top_p, "top_p", 0.0, 1.0, lo_open=True),
            top_k=whole_number(self.top_k, "top_k", 0, MAX_TOP_K, note=" (0 = off)"),
            seed=whole_number(self.seed, "seed", 0, SEED_LIMIT - 1),
            bpm=real_number(self.bpm, "bpm", MIN_BPM, MAX_BPM),
            prompt=prompt,
            extra=_extra(self.extra),
        )

    @property
    def drum_program(self) -> int:
        """The General MIDI program of the drum kit (channel 10): the request's, else the prompt's, else 0."""
        if self.drum_kit is not None:
            return V.DRUM_KITS[self.drum_kit]
        return self.prompt.drum_kit if self.prompt is not None else 0

    @property
    def edit_kind(self) -> Edit | None:
        """The Edit this request makes of its prompt (`model.edits`): its `edit`, or a continuation for a prompt
        without one; None without a prompt (free generation)."""
        return edit_of(self)

    @property
    def group_ids(self) -> list[int]:
        return [V.GROUPS.index(g) for g in self.groups]

    @property
    def parsed_key(self) -> H.Key | None:
        return None if not self.key else H.parse_key(self.key)

    @property
    def parsed_chords(self) -> tuple[H.Chord, ...]:
        return () if not self.chords else H.parse_chords(self.chords)

    def to_json(self) -> dict:
        """The request's fields as JSON values (for session.json); the prompt and an uploaded reference are
        files, written beside it by the caller and left out here."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "prompt":
                continue
            if f.name == "extra":
                value = {k: v for k, v in value.items() if k != "reference" or isinstance(v, str)}
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict, prompt: Score | None = None, reference: Score | None = None) -> "GenerationRequest":
        """The request `to_json` wrote (with its prompt and uploaded reference, if any), validated; unknown
        fields are refused by name."""
        if not isinstance(data, dict):
            raise RequestError(f"a request must be a JSON object (got {type(data).__name__})")
        known = {f.name for f in fields(cls)} - {"prompt"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RequestError(f"unknown request field {shown(unknown[0])}; known: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        extra = dict(values.get("extra") or {})
        if reference is not None:
            extra["reference"] = reference
        values["extra"] = extra
        return cls(**values, prompt=prompt).validate()

    def controls_used(self) -> set[str]:
        """The editing controls this request asks for (an engine without one refuses the request)."""
        used = {"key"} if self.key not in (None, "") else set()
        used |= {"chords"} if self.chords not in (None, "") else set()
        used |= {"loop"} if self.loop is True else set()
        if self.edit not in (None, ""):
            kind = EDITS.get(self.edit) if isinstance(self.edit, str) else None
            control = "edit" if kind is None else kind.control  # an unknown edit: validate() refuses it
            used |= {control} if control else set()
        return used
