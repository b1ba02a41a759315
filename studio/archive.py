"""The zip of a page state: per variant its MIDI, MP3, piano roll and stems (per track a MIDI and a FLAC with
the mix's gain), and session.json (model.session's format, with the prompts it needs), from which
`python -m model.generate --session session.json` makes the same MIDI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from model.session import SessionEntry, session_content

from .results import Variant


def session_entries(variants: list[Variant]) -> list[SessionEntry]:
    """The session entries of the variants that have a recipe."""
    return [SessionEntry(v.index, v.recipe.engine, v.recipe.checkpoint, v.recipe.request, v.result_index,
                         v.recipe.prompt_file, v.recipe.prompt_bars, v.recipe.reference_file)
            for v in variants if v.recipe is not None]


COMPRESSED = {".mp3", ".flac", ".png"}  # stored as they are: deflating them again took CPU and saved under 1%


def write_zip(variants: list[Variant], out: Path, seed: int) -> Path:
    """`out/midi-bangers-SEED.zip` holding the variants' files and their session.json."""
    zip_path = out / f"midi-bangers-{seed}.zip"
    session, extra = session_content(session_entries(variants))
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        def add(path: Path, name: str) -> None:
            z.write(path, name, compress_type=zipfile.ZIP_STORED if Path(path).suffix in COMPRESSED else None)

        for v in variants:
            base = f"variant-{v.index}/variant-{v.index}"
            add(v.midi, f"{base}.mid")
            add(v.png, f"{base}.png")
            if v.mp3 is not None:
                add(v.mp3, f"{base}.mp3")
            for st in v.stems:  # one MIDI and one audio file per track; the audio sums to the mix
                add(st.midi, f"variant-{v.index}/stems/{st.group}.mid")
                add(st.audio, f"variant-{v.index}/stems/{st.group}{st.audio.suffix}")
        for name, path in extra.items():
            add(path, name)
        z.writestr("session.json", json.dumps(session, indent=2))
    return zip_path
