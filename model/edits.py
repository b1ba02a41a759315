"""The edit registry: each kind of edit of an uploaded song is one class, and everything else asks it.

    edit = EDITS["add_part"]          # or get_edit(name), which refuses an unknown name by field
    edit.fields                        # its own inputs (here: part), as the page, the API and MCP show them
    req = GenerationRequest(prompt=song, **edit.request_fields({"part": "bass"})).validate()
    edit.describe(req)                 # "bass part added"
    req.edit_kind is edit              # a request's Edit (a prompt without an edit: DEFAULT_EDIT, continue)
    edit.plan(req)                     # what the sampler decodes (model.sampling.plan.Plan)

A class says: its name (the request's `edit` value, the API endpoint), its button and help for people, its
own fields (`EditField`: name, kind, default, label, help), how those become request fields, its check against
the uploaded song, how many new bars it makes, how it reads in a summary, its CLI flag, and how the sampler
decodes it (`plan`: what is context, kept and new, and which soft rules it turns on).  Adding an edit kind is
one class here with `@register_edit`; the page's buttons, the named endpoints, the MCP tools and the CLI flags
are generated from the registry.  A prompt without an edit is continued (`DEFAULT_EDIT`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from tokenizer import Score
from tokenizer import harmony as H
from tokenizer import vocab as V

from .fields import LABELS, RequestError, shown
from .sampling.plan import READ_NOTES_PER_BAR, Plan, part_density, read_groups, requested_groups, split_notes


@dataclass(frozen=True)
class EditField:
    """One input of an edit besides the song: `name` is the keyword the API, MCP and the studio use."""
    name: str
    kind: str  # "bars" (a whole number of bars) or "part" (a vocab.GROUPS name)
    default: Any
    label: str  # as the page labels it
    help: str  # one line for the API's and MCP's help


class Edit:
    """One kind of edit of an uploaded song (`GenerationRequest.prompt`)."""

    name: ClassVar[str] = ""  # GenerationRequest.edit, the API endpoint's name
    tool: ClassVar[str] = ""  # the Python name of its API function / MCP tool (`continue` is a keyword)
    button: ClassVar[str] = ""  # the page's button
    help: ClassVar[str] = ""  # what it does, for the API's and MCP's help (first line: a summary)
    returns: ClassVar[str] = ""  # what comes back, e.g. "the MIDI with the new part"
    fields: ClassVar[tuple[EditField, ...]] = ()
    new_part: ClassVar[bool] = False  # it writes one part over the whole song (the request's `part`)
    extends: ClassVar[bool] = False  # its new bars come after the song's (the result is longer than the song)
    control: ClassVar[str] = "edit"  # the engine control it needs besides "prompt" ("": every engine with one)
    flag: ClassVar[str] = ""  # its option of `python -m model.generate` ("": none)
    metavar: ClassVar[str] = ""  # the option's value, as its help shows it
    flag_help: ClassVar[str] = ""  # the option's help

    def parse_flag(self, text: str) -> dict[str, Any]:
        """The CLI option's text -> GenerationRequest fields (the request checks them), or RequestError."""
        raise NotImplementedError

    def request_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The edit's own values (by EditField name, converted to Python types) -> GenerationRequest fields."""
        return {"edit": self.name}

    def check(self, req: Any) -> dict[str, Any]:
        """Normalized request fields (part, infill_bars) for `req`, whose prompt is a Score with notes; or
        RequestError naming the field."""
        return {"part": None, "infill_bars": None}

    def new_bars(self, req: Any) -> int:
        """Bars the edit adds after the song."""
        return 0

    def describe(self, req: Any) -> str:
        """The edit of a validated request in a few words: "bass part added"."""
        raise NotImplementedError

    def summary(self, req: Any, bars: int, kept_bars: int) -> str:
        """What a result of `bars` bars made of the `kept_bars` prompt bars: "bass part added over 8 prompt
        bars"."""
        raise NotImplementedError

    def plan(self, req: Any) -> Plan:
        """The decoding problem of a validated request whose prompt has notes (`model.sampling.plan`)."""
        raise NotImplementedError


EDITS: dict[str, Edit] = {}


def register_edit(cls: type[Edit]) -> type[Edit]:
    EDITS[cls.name] = cls()
    return cls


def get_edit(name: Any) -> Edit:
    """The registered edit `name`, or RequestError naming the field."""
    if isinstance(name, str) and name in EDITS:
        return EDITS[name]
    raise RequestError(f"{LABELS['edit']}: unknown edit {shown(name)}; choose from {', '.join(EDITS)} (or none)")


def edit_of(req: Any) -> Edit | None:
    """The Edit a request makes of its prompt: its `edit`, or DEFAULT_EDIT for a prompt without one; None without
    a prompt (free generation)."""
    if req.edit not in ("", None):
        return get_edit(req.edit)
    return None if req.prompt is None else EDITS[DEFAULT_EDIT]


PART_HELP = ", ".join(V.GROUPS)


def _part(req: Any) -> tuple[str, bool]:
    """(the request's part as a group name, whether the prompt has it), or RequestError."""
    name = req.part.strip().lower() if isinstance(req.part, str) else req.part
    if name not in V.GROUPS:
        raise RequestError(f"{LABELS['part']} must be one of {', '.join(V.GROUPS)} (got {shown(req.part)})")
    return name, V.GROUPS.index(name) in req.prompt.groups


@register_edit
class Continue(Edit):
    name = "continue"
    tool = "continue_midi"
    button = "Continue"
    help = "Continue a MIDI song: keep every note of it and add `bars` new bars in its tempo and metre."
    returns = "the continued MIDI"
    fields = (EditField("bars", "bars", 4, "Continue by (bars)", "how many bars to add, 1 to 64."),)
    extends = True
    control = ""  # every engine that takes a prompt continues it
    # no CLI flag: the CLI continues a prompt by default (--bars)

    def request_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"edit": self.name, "bars": values.get("bars", 4)}

    def new_bars(self, req: Any) -> int:
        return req.bars

    def describe(self, req: Any) -> str:
        return f"continued by {req.bars} bars"

    def summary(self, req: Any, bars: int, kept_bars: int) -> str:
        return f"{kept_bars} prompt bars + {bars - kept_bars} new bars"

    def plan(self, req: Any) -> Plan:
        """The prompt is the context; req.bars bars of the requested groups (and the prompt's) follow it."""
        prompt = req.prompt
        bar, length = prompt.bar_steps, prompt.span_steps
        allowed = requested_groups(req)
        limit = length + req.bars * bar
        return Plan.of_song(prompt, context=prompt.notes, allowed=allowed,
                            prefix_groups=sorted(set(allowed) | set(prompt.groups)),
                            drums_flag=req.drums or prompt.has_drums, played=set(prompt.groups), min_time=length,
                            new_end=limit, limit=limit, force_at=length + min(bar, req.bars * bar // 2))


DEFAULT_EDIT = Continue.name  # what a prompt without an edit gets


DENSE_HELP = (f" In a dense song (over {READ_NOTES_PER_BAR:.0f} notes a bar in its other parts) the model listens "
              f"to its busiest parts only; the others stay as they are. The stems hold the new part's alone where every "
              f"part's would hold over 10 minutes of audio.")


class _PartEdit(Edit):
    """One part written over the whole song, every other note kept; the part is heard in every bar, pulled
    towards `density` notes a bar and, without a key or chords, to the song's pitch classes."""
    new_part = True
    verb = ""
    metavar = "GROUP"

    def request_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        part = values.get("part", self.fields[0].default)
        return {"edit": self.name, "part": part.strip().lower() if isinstance(part, str) else part}

    def parse_flag(self, text: str) -> dict[str, Any]:
        return {"edit": self.name, "part": text}

    def describe(self, req: Any) -> str:
        return f"{req.part} part {self.verb}"

    def summary(self, req: Any, bars: int, kept_bars: int) -> str:
        return f"{req.part} part {self.verb} over {bars} prompt bars"

    def density(self, song: Score, group: int) -> float:
        """Notes a bar (of `song`'s metre) the new part of `group` is pulled towards."""
        raise NotImplementedError

    def plan(self, req: Any) -> Plan:
        prompt = req.prompt
        length, notes = prompt.span_steps, prompt.notes
        g = V.GROUPS.index(req.part)
        others = notes[notes["group"] != g]
        read = np.isin(others["group"], sorted(read_groups(others, length)))  # a dense song: some of its parts
        groups = sorted({int(x) for x in others["group"][read]} | {g})
        return Plan.of_song(prompt, kept=others[read], aside=others[~read], allowed=[g], prefix_groups=groups,
                            drums_flag=V.DRUM_GROUP in groups, new_end=length, limit=length,
                            force_at=min(prompt.bar_steps, length // 2), every_bar=True,
                            density=self.density(prompt, g), song_pitch_pull=True, bar_note_divisor=3,
                            follow_repeats=True)


@register_edit
class AddPart(_PartEdit):
    name = "add_part"
    tool = "add_part"
    button = "Add part"
    verb = "added"
    flag = "--add-part"
    flag_help = "add this part to the prompt's bars"
    help = ("Add a part to a MIDI song: every note of the song stays; a new part plays along over all its bars, "
            "and where the song repeats a bar, the part repeats what it played there." + DENSE_HELP)
    returns = "the MIDI with the new part"
    fields = (EditField("part", "part", "strings", "Part",
                        f"the part to add, one of {PART_HELP} (the song must not have it yet)."),)

    def check(self, req: Any) -> dict[str, Any]:
        name, has = _part(req)
        if has:
            raise RequestError(f"{LABELS['part']}: the {LABELS['prompt']} already has a {name} part; "
                               f"regenerate it instead, or choose another part")
        return {"part": name, "infill_bars": None}

    def density(self, song: Score, group: int) -> float:
        """The corpus median of the group (PART_DENSITY), in this metre's bars."""
        return H.PART_DENSITY[V.GROUPS[group]] * song.bar_steps / V.STEPS_PER_BAR


@register_edit
class RegeneratePart(_PartEdit):
    name = "regenerate_part"
    tool = "regenerate_part"
    button = "Regenerate part"
    verb = "regenerated"
    flag = "--regenerate-part"
    flag_help = "write this part of the prompt anew"
    help = ("Regenerate one part of a MIDI song: that part is written anew, every other note stays; where the song "
            "repeats a bar, the new part repeats what it played there." + DENSE_HELP)
    returns = "the MIDI with the part regenerated"
    fields = (EditField("part", "part", "bass", "Part",
                        "the part to write anew (the song must have it), e.g. bass or drums."),)

    def check(self, req: Any) -> dict[str, Any]:
        name, has = _part(req)
        if not has:
            raise RequestError(f"{LABELS['part']}: the {LABELS['prompt']} has no {name} part to regenerate "
                               f"(it has {', '.join(V.GROUPS[g] for g in req.prompt.groups)})")
        return {"part": name, "infill_bars": None}

    def density(self, song: Score, group: int) -> float:
        """The original part's notes a bar where it plays."""
        return part_density(song.notes[song.notes["group"] == group], song.bar_steps)


@register_edit
class Infill(Edit):
    name = "infill"
    tool = "infill"
    button = "Infill bars"
    help = ("Infill bars of a MIDI song: bars first_bar..last_bar are written anew, leading into the bars after "
            "them; every other bar stays note for note.")
    returns = "the MIDI with the bars infilled"
    flag = "--infill-bars"
    metavar = "FIRST-LAST"
    flag_help = "write these bars of the prompt anew"
    fields = (EditField("first_bar", "bars", 2, "Infill from bar", "the first bar to write anew (1 = the song's first bar)."),
              EditField("last_bar", "bars", 3, "to bar",
                        "the last bar to write anew (at least first_bar, at most the song's last bar)."))

    def request_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        first = values.get("first_bar", 2)
        last = values.get("last_bar")
        return {"edit": self.name, "infill_bars": (first, first if last is None else last)}

    def check(self, req: Any) -> dict[str, Any]:
        n_bars = req.prompt.bars
        value = req.infill_bars
        ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
        if not ok or not 1 <= value[0] <= value[1] <= n_bars:
            raise RequestError(f"{LABELS['infill_bars']} must be a first and a last bar with 1 <= first <= last <= "
                               f"{n_bars} (the bars of the {LABELS['prompt']}; got {shown(value)})")
        return {"part": None, "infill_bars": (int(value[0]), int(value[1]))}

    def parse_flag(self, text: str) -> dict[str, Any]:
        first, _, last = text.partition("-")
        try:
            bars = (int(first), int(last or first))
        except ValueError:
            raise RequestError(f"{LABELS['infill_bars']}: write FIRST-LAST, e.g. 3-4 (got {shown(text)})") from None
        return {"edit": self.name, "infill_bars": bars}

    def describe(self, req: Any) -> str:
        return "bars {}-{} infilled".format(*req.infill_bars)

    def summary(self, req: Any, bars: int, kept_bars: int) -> str:
        first, last = req.infill_bars
        return f"bars {first}-{last} of {bars} prompt bars infilled"

    def plan(self, req: Any) -> Plan:
        """The bars before the span are the context, the bars after it the tail; the span is the song's parts."""
        prompt = req.prompt
        bar, notes = prompt.bar_steps, prompt.notes
        first, last = req.infill_bars
        lo, hi = (first - 1) * bar, last * bar
        context, _, tail = split_notes(notes, lo, hi)
        groups = prompt.groups
        return Plan.of_song(prompt, context=context, tail=tail, allowed=groups,
                            prefix_groups=groups, drums_flag=prompt.has_drums, played=set(groups), min_time=lo,
                            new_end=hi, limit=prompt.span_steps, force_at=hi)


def check_edit(req: Any, prompt: Score | None) -> tuple[Edit | None, dict[str, Any]]:
    """(the request's Edit or None, its normalized fields edit/part/infill_bars) for validate()."""
    if req.edit in ("", None):
        return None, {"edit": None, "part": None, "infill_bars": None}
    edit = get_edit(req.edit)
    if prompt is None:
        raise RequestError(f"{LABELS['edit']}: {edit.button.lower()} needs an uploaded {LABELS['prompt']}")
    return edit, {"edit": edit.name, **edit.check(req)}
