"""session.json: the recipe of a studio zip's variants, from which `python -m model.generate --session
session.json` makes the same MIDI.  Its format is written and read here only.

    content, files = session_content(entries)   # the JSON, and {name in the zip: file to put there}
    entries = read_session("unzipped/session.json")
    for e in entries: e.engine, e.checkpoint, e.request (validated, prompt and reference loaded), e.result_index

A session lists its variants; each names its engine, its checkpoint (None: the shipped one), every request
field (`GenerationRequest.to_json`), which of its request's results it is, and the MIDI files of its prompt
(with the bars cut from it) and of an uploaded reference song, stored beside session.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizer import load_midi

from .request import GenerationRequest

SESSION_FORMAT = "midi-bangers-session"
SESSION_VERSION = 1
PROMPTS_FOLDER = "prompts"  # where the prompt and reference files go, beside session.json


@dataclass(frozen=True)
class SessionEntry:
    """One variant of a session: how to make it again."""
    variant: int  # its slot (1-based); its MIDI is variant-N/variant-N.mid
    engine: str
    checkpoint: str | None  # None: the engine's shipped checkpoint
    request: GenerationRequest  # read back: validated, with its prompt and uploaded reference loaded
    result_index: int = 0  # which of the request's variants it is (0-based)
    prompt_file: Path | None = None  # the MIDI file the prompt is the first `prompt_bars` bars of
    prompt_bars: int | None = None
    reference_file: Path | None = None  # an uploaded reference song (request.extra["reference"])

    def recipe_key(self) -> str:
        """Equal for the entries of one request (made once, then each takes its own result)."""
        files = [None if p is None else str(p) for p in (self.prompt_file, self.reference_file)]
        return json.dumps([self.engine, self.checkpoint, self.request.to_json(), files, self.prompt_bars],
                          sort_keys=True)


def session_content(entries: Iterable[SessionEntry], folder: str = PROMPTS_FOLDER) -> tuple[dict, dict[str, Path]]:
    """(session.json's content, {name beside it: file to copy there}) for the entries: each prompt and
    reference file is stored as `folder/variant-N-prompt.mid` / `-reference.mid`."""
    files: dict[str, Path] = {}
    out = []
    for e in entries:
        row = {"variant": e.variant, "midi": f"variant-{e.variant}/variant-{e.variant}.mid", "engine": e.engine,
               "checkpoint": e.checkpoint, "request": e.request.to_json(), "result_index": e.result_index,
               "prompt": None, "reference": None}
        for kind, path in (("prompt", e.prompt_file), ("reference", e.reference_file)):
            if path is not None:
                name = f"{folder}/variant-{e.variant}-{kind}.mid"
                files[name] = path
                row[kind] = {"file": name, "bars": e.prompt_bars} if kind == "prompt" else {"file": name}
        out.append(row)
    return {"format": SESSION_FORMAT, "version": SESSION_VERSION, "variants": out}, files


def read_session(path: str | os.PathLike) -> list[SessionEntry]:
    """The entries of a session.json, each request validated with its prompt and reference read from the
    files beside it.  Raises ValueError (a one-line message: not a session, an entry lacking or mistyping a
    field, a bad request; MidiError for a broken file) or OSError."""
    name = os.fspath(path)
    session = json.loads(Path(path).read_text())
    if not isinstance(session, dict) or session.get("format") != SESSION_FORMAT:
        raise ValueError(f"{name} is not a MIDI Bangers session.json (no format {SESSION_FORMAT!r})")
    try:
        return [_entry(row, Path(path).parent) for row in session["variants"]]
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{name}: a session entry lacks or mistypes {e}") from None


def _entry(row: dict, base: Path) -> SessionEntry:
    prompt, ref = row.get("prompt"), row.get("reference")
    prompt_file = base / prompt["file"] if prompt else None
    bars = int(prompt["bars"]) if prompt else None
    reference_file = base / ref["file"] if ref else None
    request = GenerationRequest.from_json(
        row["request"], load_midi(prompt_file).first_bars(bars) if prompt_file else None,
        load_midi(reference_file) if reference_file else None)
    return SessionEntry(int(row["variant"]), row["engine"], row.get("checkpoint"), request,
                        int(row.get("result_index", 0)), prompt_file, bars, reference_file)
