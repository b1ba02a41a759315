"""What a generation or an edit gives the page: `Result` (the variants and how the action went), `Variant` (one
slot's score and files) and `Recipe` (how they were made), and their wording: the Markdown summary, the
adherence figures in words, and a sentence for a requested part a variant lacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.edits import EDITS
from model.request import GenerationRequest
from render.audio import Stem
from tokenizer import Score
from tokenizer import vocab as V


@dataclass
class Recipe:
    """How one request's variants were made, enough to make them again (the zip's session.json):
    `python -m model.generate --session session.json` gives the same MIDI."""
    engine: str
    checkpoint: str | None  # None: the shipped checkpoint
    request: GenerationRequest
    prompt_file: Path | None = None  # the MIDI file the prompt was cut from (its first `prompt_bars` bars)
    prompt_bars: int | None = None
    reference_file: Path | None = None  # an uploaded reference song (engines with the reference control)


@dataclass
class Variant:
    index: int  # 1-based slot on the page
    score: Score
    midi: Path
    png: Path
    mp3: Path | None  # None when no preview could be made (see preview_error)
    preview_error: str | None = None
    audio_seconds: float = 0.0
    recipe: Recipe | None = None
    result_index: int = 0  # which of its request's variants it is (0-based)
    adherence: dict = field(default_factory=dict)  # model.adherence figures for its request
    missing: str | None = None  # a requested part this variant does not play, and why, in words
    stems: list[Stem] = field(default_factory=list)  # per track: audio (FLAC, the mix's gain) and MIDI
    preview_bars: tuple[int, int] | None = None  # the bars (first, last) the MP3 plays; None: all of them

    @property
    def audio_start(self) -> float:
        """Seconds into the song where the MP3 starts (0 for a preview of the whole song)."""
        s = self.score
        first = self.preview_bars[0] if self.preview_bars else 1
        return (first - 1) * s.bar_steps / V.STEPS_PER_QUARTER * 60.0 / s.bpm

    @property
    def bars(self) -> int:
        """Bars the variant sounds for: its length, or further where a note rings past it."""
        s = self.score
        return -(-max(s.length or 0, s.end_step) // s.bar_steps)

    @property
    def song(self) -> Score:
        """The variant as a song to edit or continue: its score over `bars` whole bars."""
        return self.score.first_bars(self.bars)

    def files(self) -> list[Path]:
        return [p for p in (self.midi, self.png, self.mp3) if p is not None] + [
            p for st in self.stems for p in (st.audio, st.midi)]


def new_bars(request: GenerationRequest) -> int:
    """Bars a request writes after its prompt: all of them for a generation, the edit's own for an edit."""
    return EDITS[request.edit].new_bars(request) if request.edit else request.bars


@dataclass
class Result:
    """What the page shows: the variants (after a generation or an edit) and how the last action went."""
    variants: list[Variant]
    zip_path: Path | None  # None in a partial result (variants still rendering)
    seed: int
    seed_was_random: bool
    request: GenerationRequest
    engine: str
    stats: dict = field(default_factory=dict)
    render_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    prompt_use: str = "continuing"  # what the engine does with an upload (Engine.prompt_use)
    controls: frozenset = frozenset({"temperature", "top_p", "top_k"})  # the engine's (Engine.controls)
    action: str | None = None  # an edit of one variant, in words ("variant 2: bass part added"); None: generated

    @property
    def summary(self) -> str:
        """Markdown: what was made and how fast (two lines), the settings, then a line per variant."""
        lines = [self._headline(), self._speed_line(), self._settings_line()]
        lines += [self._variant_line(v) for v in self.variants]
        return "  \n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:])

    def _length_text(self) -> str:
        r = self.request
        if r.prompt is not None and r.prompt.length and new_bars(r):
            return f"{-(-r.prompt.length // r.prompt.bar_steps)} prompt bars + {r.bars} new bars"
        if r.prompt is not None:
            return f"{r.prompt.bars} bars"
        return f"{r.bars} bars"

    def _headline(self) -> str:
        first = self.variants[0].score if self.variants else None
        bpm = first.bpm if first is not None else self.request.bpm  # a continuation keeps the upload's tempo
        metre = f" in {first.time_signature[0]}/{first.time_signature[1]}" if first is not None else ""
        what = (f"**{self.action}**" if self.action else
                f"**{len(self.variants)} variant{'s' if len(self.variants) != 1 else ''}**")
        return (f"{what} · engine `{self.engine}` · {self._length_text()} at {bpm:g} BPM{metre} · "
                f"seed **{self.seed}**{' (random)' if self.seed_was_random else ''}")

    def _speed_line(self) -> str:
        s = self.stats
        unit = next((k[: -len("_per_s")] for k in s if k.endswith("_per_s")), "tokens")  # the engine's own unit
        return (f"generation: {s.get('seconds', 0.0):.2f} s, {s.get(unit, 0)} {unit}, "
                f"{s.get(f'{unit}_per_s', 0.0):.0f} {unit}/s · rendering: {self.render_seconds:.2f} s")

    def _settings_line(self) -> str:
        r = self.request
        sampling = [text for c, text in (("temperature", f"temperature {r.temperature:g}"),
                                          ("top_p", f"top-p {r.top_p:g}"), ("top_k", f"top-k {r.top_k or 'off'}"))
                    if c in self.controls]  # only what this engine uses
        line = (f"groups: {', '.join(r.groups) or '—'}; drums {'on' if r.drums else 'off'}"
                + (f" ({r.drum_kit} kit)" if r.drum_kit else "")
                + (f"; {', '.join(sampling)}" if sampling else "")
                + (f"; style {r.style}" if r.style else "")
                + (f"; key {r.key}" if r.key else "") + (f"; chords {r.chords}" if r.chords else "")
                + ("; seamless loop" if r.loop else "")
                + (f"; {self.prompt_use} {len(r.prompt.notes)} uploaded notes"
                   if r.prompt is not None and not self.action else ""))
        if r.extra:
            ref = r.extra.get("reference")
            opts = [f"{k.replace('_', ' ')} {v:g}" for k, v in r.extra.items() if isinstance(v, float)]
            if ref is not None:
                opts.append(f"reference {ref if isinstance(ref, str) else f'upload ({len(ref.notes)} notes)'}")
            line += "; " + ", ".join(opts)
        return line

    def _variant_line(self, v: Variant) -> str:
        per = ", ".join(f"{g} {n}" for g, n in v.score.notes_per_group().items()) or "no notes"
        style = f", style {v.score.style}" if v.score.style and v.score.style != self.request.style else ""
        fit = adherence_text(v.adherence)
        return (f"- variant {v.index}: {v.bars} bars{style}, {len(v.score.notes)} notes ({per})"
                + (f" · {fit}" if fit else "") + (f" — ⚠️ {v.missing}" if v.missing else "")
                + (f" — {v.preview_error}" if v.preview_error else "")
                + (f" · the preview plays bars {v.preview_bars[0]}-{v.preview_bars[1]} (the edit and the bars around "
                   f"it; the MIDI holds the whole song)" if v.preview_bars and v.mp3 else ""))


def adherence_text(fig: dict) -> str:
    """A variant's adherence figures in words: "in key 100% · chord tones on strong beats 81% · ..."."""
    parts = []
    for k, label in (("in_key", "in key"), ("chord_tones_on_strong_beats", "chord tones on strong beats"),
                     ("bass_on_chord_tones", "bass on chord tones"), ("part_heard_in_bars", "new part heard in"),
                     ("prompt_notes_kept", "prompt notes kept")):
        if fig.get(k) is not None:
            parts.append(f"{label} {fig[k]:.0%}" + (" of bars" if k == "part_heard_in_bars" else ""))
    ppb = fig.get("parts_per_bar")
    if ppb:
        parts.append(f"parts heard per bar {sum(map(len, ppb)) / len(ppb):.1f}")
    return " · ".join(parts)


def missing_parts(engine: Any, request: GenerationRequest, score: Score) -> str | None:
    """A plain sentence when the variant lacks a part the request asked for (None when it has them all):
    whether the engine does not write it for such a request (`Engine.groups_written`) or the model left it
    out this time.  An edit that writes one part asks for that part only."""
    wanted = list(request.groups) + (["drums"] if request.drums else [])
    if request.edit and EDITS[request.edit].new_part:
        wanted = [request.part]
    have = set(score.notes_per_group())
    lacking = [g for g in wanted if g not in have]
    if not lacking:
        return None
    written = set(engine.groups_written(request))
    cannot = [g for g in lacking if g not in written]
    said = []
    if cannot:
        said.append(f"engine {engine.name} does not play {', '.join(cannot)} (for this request it writes only "
                    f"{', '.join(g for g in V.GROUPS if g in written) or 'nothing'}), so "
                    f"{'it was' if len(cannot) == 1 else 'they were'} left out")
    silent = [g for g in lacking if g not in cannot]
    if silent:
        said.append(f"no {', '.join(silent)} notes in this variant (the model left {'it' if len(silent) == 1 else 'them'}"
                    " out; try another seed)")
    return "; ".join(said)
