"""Page values by name -> a validated `GenerationRequest` (and the engine that serves it).

    prepared = generate_request({"engine": "transformer", "groups": ["piano"], "bars": "4", "seed": ""})
    prepared.engine, prepared.request, prepared.seed_was_random
    prepared = edit_request("add_part", song, {"part": "strings", "seed": 3})

The studio only converts the page's values to Python types (text to numbers, a whole float to an int, a blank
seed to a random one, "none" to None, an upload to its path); the range checks are the request's own
`GenerationRequest.validate()`, the one place they live.  A missing name takes its default
(`GENERATE_DEFAULTS`, or for an edit its registry fields' defaults and `EDIT_DEFAULTS`); an unknown name is a
`RequestError` that names it.
"""

from __future__ import annotations

import logging
import numbers
import os
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from model.edits import EDITS, Edit, EditField, get_edit
from model.engine import engine_names, get_engine
from model.request import (
    LABELS,
    MAX_BPM,
    MAX_PROMPT_BARS,
    MIN_BPM,
    SEED_LIMIT,
    GenerationRequest,
    RequestError,
    shown,
    whole_number,
)
from tokenizer import MidiError, Score, load_midi
from tokenizer import vocab as V

log = logging.getLogger(__name__)

MAX_PROMPT_NOTES = 20_000  # an uploaded MIDI with more notes than this is refused (memory and time)
# The word each dropdown shows for "no choice" (the same text, one name per control)
NO_STYLE = "none"
NO_REFERENCE = "none"
NO_KEY = "none"  # no key lock
NO_KIT = "none"  # no drum kit: the prompt's kit, else the standard one

# The generate fields by name, in the page's order, with the page's defaults.
GENERATE_DEFAULTS: dict[str, Any] = {
    "engine": "transformer", "groups": ("piano", "bass"), "drums": True, "bars": 8, "variants": 2,
    "temperature": 1.0, "top_p": 0.95, "top_k": 0, "seed": "", "bpm": 120, "style": NO_STYLE, "midi": None,
    "prompt_bars": 4, "noise_sd": 0.75, "alpha": 0.5, "reference": NO_REFERENCE, "reference_midi": None,
    "key": NO_KEY, "chords": "", "drum_kit": NO_KIT, "loop": False,
}
# The fields every edit takes besides its own (EDITS[kind].fields), with their defaults.
EDIT_COMMON = ("engine", "temperature", "top_p", "top_k", "seed", "key", "chords", "drum_kit")
EDIT_DEFAULTS: dict[str, Any] = {name: GENERATE_DEFAULTS[name] for name in EDIT_COMMON}


@dataclass(frozen=True)
class Prepared:
    """A validated request, the engine that serves it, and the uploaded files it was read from."""
    engine: Any  # a model.engine.Engine
    request: GenerationRequest
    seed_was_random: bool
    prompt_file: Path | None = None  # the MIDI file the prompt was cut from (an edit's caller sets its song's)
    reference_file: Path | None = None  # an uploaded reference song (engines with the reference control)


# ---- page values to Python types (the checks are GenerationRequest.validate's) ------------------------
def to_number(value: Any) -> Any:
    """A number typed or sent as text -> int or float; a whole float -> int.  Anything else is returned
    as it is, for validate() to refuse with the field's name."""
    if isinstance(value, str):
        text = value.strip()
        for parse in (int, float):
            try:
                value = parse(text)
                break
            except ValueError:
                pass
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    return value


def blank(value: Any) -> bool:
    """None or text of only spaces."""
    return value is None or (isinstance(value, str) and not value.strip())


def parse_seed(value: Any) -> tuple[Any, bool]:
    """(seed, was_random): blank means a fresh random seed; anything else goes to validate() as a number."""
    if blank(value):
        return secrets.randbelow(SEED_LIMIT), True
    return to_number(value), False


def to_flag(value: Any) -> Any:
    """A checkbox: True/False, also "true"/"false"/"on"/"off" and 1/0; None is off."""
    if value is None or isinstance(value, bool):
        return bool(value)
    words = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    return bool(value) if isinstance(value, numbers.Integral) and value in (0, 1) else value


def to_names(value: Any) -> Any:
    """A multi-select: a list of names; text is split at commas and spaces; None is no names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(g for g in re.split(r"[,\s]+", value) if g)
    return tuple(value) if isinstance(value, list) else value


def to_choice(value: Any, none_word: str) -> Any:
    """A dropdown value; blank or `none_word` means no choice (None)."""
    if blank(value) or (isinstance(value, str) and value.strip().lower() == none_word):
        return None
    return value.strip() if isinstance(value, str) else value


def file_path(value: Any, name: str) -> Path | None:
    """An upload as Gradio passes it (a path, or a FileData dict/object with a path) -> its path."""
    if blank(value):
        return None
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", value)
    if isinstance(path, (str, os.PathLike)) and str(path).strip():
        return Path(path)
    raise RequestError(f"{LABELS[name]} must be an uploaded .mid file (got {type(value).__name__})")


def load_upload(path: Path, name: str) -> Score:
    """The whole uploaded MIDI (its size is checked by load_midi against tokenizer.score.MAX_FILE_BYTES)."""
    if not path.is_file():
        raise RequestError(f"{LABELS[name]}: the upload is no longer on the server (uploads are kept for a "
                           "while); please upload it again")
    try:
        score = load_midi(path)
    except MidiError as e:
        raise RequestError(f"{LABELS[name]}: {e}") from None
    if len(score.notes) > MAX_PROMPT_NOTES:
        raise RequestError(f"{LABELS[name]}: the file has {len(score.notes):,} notes; the limit is "
                           f"{MAX_PROMPT_NOTES:,}")
    if not len(score.notes):
        raise RequestError(f"{LABELS[name]}: the file contains no notes")
    if tuple(score.time_signature) != (4, 4):
        log.info("upload in %s/%s; generation works in 4/4", *score.time_signature)
    return score


def engine_options(engine: Any, noise_sd: Any = None, alpha: Any = None, reference: Any = None,
                   reference_midi: Any = None) -> dict[str, Any]:
    """The engine options (GenerationRequest.extra) the engine has; the page sends them all, the others
    are dropped.  Blank means the engine's default."""
    ctl, extra = engine.controls, {}
    for key, value in (("noise_sd", noise_sd), ("alpha", alpha)):
        if key in ctl and not blank(value):
            extra[key] = to_number(value)
    if "reference" in ctl:
        ref_path = file_path(reference_midi, "reference_midi")
        ref = load_upload(ref_path, "reference_midi") if ref_path else to_choice(reference, NO_REFERENCE)
        if ref is not None:
            extra["reference"] = ref
    return extra


# ---- values by name -> request ---------------------------------------------------------------------
def with_defaults(values: Mapping[str, Any], defaults: Mapping[str, Any], what: str) -> dict[str, Any]:
    """`defaults` updated by `values`; a name `defaults` lacks is a RequestError that names it."""
    unknown = [name for name in values if name not in defaults]
    if unknown:
        raise RequestError(f"{what}: unknown field {shown(unknown[0])}; the fields are {', '.join(defaults)}")
    return {**defaults, **values}


def pick_engine(name: Any) -> Any:
    """The registered engine `name` (loaded), or RequestError naming the engine field."""
    names = engine_names()
    if not isinstance(name, str) or name not in names:
        raise RequestError(f"{LABELS['engine']}: unknown engine {shown(name)}; choose from {', '.join(names)}")
    try:
        return get_engine(name)
    except (OSError, ValueError) as e:  # e.g. a missing checkpoint
        log.exception("engine %s unavailable", name)
        raise RequestError(f"{LABELS['engine']}: {name} is not available ({e}); choose another") from None


def sampling_fields(v: Mapping[str, Any]) -> dict[str, Any]:
    """The request fields a generation and an edit share (temperature, top-p/k, key, chords, drum kit)."""
    return dict(temperature=to_number(v["temperature"]), top_p=to_number(v["top_p"]),
                top_k=0 if blank(v["top_k"]) else to_number(v["top_k"]), key=to_choice(v["key"], NO_KEY),
                chords=None if blank(v["chords"]) else v["chords"], drum_kit=to_choice(v["drum_kit"], NO_KIT))


def served(engine: Any, request: GenerationRequest) -> GenerationRequest:
    """`request` as `engine` serves it (controls it lacks reset), validated; or RequestError."""
    try:
        request = engine.restrict(request)
    except RequestError:  # a refusal that already names its field (key, chords, edit)
        raise
    except ValueError as e:  # an upload the engine cannot use
        raise RequestError(f"{LABELS['prompt']}: {e}; choose another engine or remove the file") from None
    return request.validate()


def generate_request(values: Mapping[str, Any]) -> Prepared:
    """The page's generate values by name (`GENERATE_DEFAULTS`) -> the engine and its validated request."""
    v = with_defaults(values, GENERATE_DEFAULTS, "generate")
    engine = pick_engine(v["engine"])
    seed, was_random = parse_seed(v["seed"])
    prompt_path = file_path(v["midi"], "prompt")
    prompt = None
    if prompt_path is not None:
        n_bars = whole_number(to_number(v["prompt_bars"]), "prompt_bars", 1, MAX_PROMPT_BARS)
        prompt = load_upload(prompt_path, "prompt").first_bars(n_bars)
    extra = engine_options(engine, v["noise_sd"], v["alpha"], v["reference"], v["reference_midi"])
    request = served(engine, GenerationRequest(
        groups=to_names(v["groups"]), drums=to_flag(v["drums"]), bars=to_number(v["bars"]),
        variants=to_number(v["variants"]), seed=seed, bpm=to_number(v["bpm"]), style=to_choice(v["style"], NO_STYLE),
        prompt=prompt, extra=extra, loop=to_flag(v["loop"]), **sampling_fields(v)))
    uploaded_reference = isinstance(request.extra.get("reference"), Score)
    return Prepared(engine, request, was_random, prompt_path if request.prompt is not None else None,
                    file_path(v["reference_midi"], "reference_midi") if uploaded_reference else None)


def edit_field_value(field: EditField, value: Any) -> Any:
    """An edit's own value as a Python type: a number of bars (blank: None), or a part name as sent."""
    if field.kind == "bars":
        return None if blank(value) else to_number(value)
    return value


def edit_fields(edit: Edit, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the edit's own values converted, the common ones) by name, defaults filled in."""
    own = {f.name: f.default for f in edit.fields}
    v = with_defaults(values, {**own, **EDIT_DEFAULTS}, edit.name.replace("_", " "))
    return {f.name: edit_field_value(f, v[f.name]) for f in edit.fields}, v


def without_other_edits_fields(kind: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` less the fields of the other edit kinds (one panel holds every edit's fields; each edit button
    sends them all).  Names no edit has stay, for edit_request to refuse."""
    own = {f.name for f in get_edit(kind).fields}
    others = {f.name for e in EDITS.values() for f in e.fields} - own
    return {name: value for name, value in values.items() if name not in others}


def edit_request(kind: str, song: Score, values: Mapping[str, Any]) -> Prepared:
    """Edit `kind` (a model.edits name) of `song`, the whole of it (any length the upload limits allow; the
    request budget, studio.budget, refuses what would take too long), with the edit's own values and
    `EDIT_COMMON` by name: one variant at the song's tempo, metre and groups."""
    edit = get_edit(kind)
    own, v = edit_fields(edit, values)
    # the whole song over its bars; its last notes ring on as they do in the file (past the last bar line)
    cut = replace(song, length=song.bars * song.bar_steps) if not song.length else song.first_bars(song.bars)
    engine = pick_engine(v["engine"])
    seed, was_random = parse_seed(v["seed"])
    pitched = tuple(V.GROUPS[g] for g in cut.groups if g != V.DRUM_GROUP)
    bpm = min(max(round(song.bpm), MIN_BPM), MAX_BPM)  # the engine keeps the song's own tempo
    request = served(engine, GenerationRequest(
        groups=pitched, drums=cut.has_drums, variants=1, seed=seed, bpm=bpm, prompt=cut, **sampling_fields(v),
        **{"bars": 1, **edit.request_fields(own)}))
    return Prepared(engine, request, was_random)
