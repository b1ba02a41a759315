"""The edit registry: each kind of edit of an uploaded song is one class, and everything else asks it.

    edit = EDITS["add_part"]          # or get_edit(name), which refuses an unknown name by field
    edit.fields                        # its own inputs (here: part), as the page, the API and MCP show them
    req = GenerationRequest(prompt=song, **edit.request_fields({"part": "bass"})).validate()
    edit.describe(req)                 # "bass part added"

A class says: its name (the request's `edit` value, the API endpoint, the CLI flag), its button and help for
people, its own fields (`EditField`: name, kind, default, label, help), how those become request fields, its
check against the uploaded song, how many new bars it makes, and how it reads in a summary.  Adding an edit
kind is one class here with `@register_edit`; the page's buttons, the named endpoints, the MCP tools and the
CLI flags are generated from the registry.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from tokenizer import Score
from tokenizer import vocab as V

from .fields import LABELS, RequestError, shown


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


EDITS: dict[str, Edit] = {}


def register_edit(cls: type[Edit]) -> type[Edit]:
    EDITS[cls.name] = cls()
    return cls


def get_edit(name: Any) -> Edit:
    """The registered edit `name`, or RequestError naming the field."""
    if isinstance(name, str) and name in EDITS:
        return EDITS[name]
    raise RequestError(f"{LABELS['edit']}: unknown edit {shown(name)}; choose from {', '.join(EDITS)} (or none)")


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

    def request_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"edit": self.name, "bars": values.get("bars", 4)}

    def new_bars(self, req: Any) -> int:
        return req.bars

    def describe(self, req: Any) -> str:
        return f"continued by {req.bars} bars"


class _PartEdit(Edit):
    new_part = True
    verb = ""

    def request_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        part = values.get("part", self.fields[0].default)
        return {"edit": self.name, "part": part.strip().lower() if isinstance(part, str) else part}

    def describe(self, req: Any) -> str:
        return f"{req.part} part {self.verb}"


@register_edit
class AddPart(_PartEdit):
    name = "add_part"
    tool = "add_part"
    button = "Add part"
    verb = "added"
    help = "Add a part to a MIDI song: every note of the song stays; a new part plays along over all its bars."
    returns = "the MIDI with the new part"
    fields = (EditField("part", "part", "strings", "Part",
                        f"the part to add, one of {PART_HELP} (the song must not have it yet)."),)

    def check(self, req: Any) -> dict[str, Any]:
        name, has = _part(req)
        if has:
            raise RequestError(f"{LABELS['part']}: the {LABELS['prompt']} already has a {name} part; "
                               f"regenerate it instead, or choose another part")
        return {"part": name, "infill_bars": None}


@register_edit
class RegeneratePart(_PartEdit):
    name = "regenerate_part"
    tool = "regenerate_part"
    button = "Regenerate part"
    verb = "regenerated"
    help = "Regenerate one part of a MIDI song: that part is written anew, every other note stays."
    returns = "the MIDI with the part regenerated"
    fields = (EditField("part", "part", "bass", "Part",
                        "the part to write anew (the song must have it), e.g. bass or drums."),)

    def check(self, req: Any) -> dict[str, Any]:
        name, has = _part(req)
        if not has:
            raise RequestError(f"{LABELS['part']}: the {LABELS['prompt']} has no {name} part to regenerate "
                               f"(it has {', '.join(V.GROUPS[g] for g in req.prompt.groups)})")
        return {"part": name, "infill_bars": None}


@register_edit
class Infill(Edit):
    name = "infill"
    tool = "infill"
    button = "Infill bars"
    help = ("Infill bars of a MIDI song: bars first_bar..last_bar are written anew, leading into the bars after "
            "them; every other bar stays note for note.")
    returns = "the MIDI with the bars infilled"
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

    def describe(self, req: Any) -> str:
        return "bars {}-{} infilled".format(*req.infill_bars)


def check_edit(req: Any, prompt: Score | None) -> tuple[Edit | None, dict[str, Any]]:
    """(the request's Edit or None, its normalized fields edit/part/infill_bars) for validate()."""
    if req.edit in ("", None):
        return None, {"edit": None, "part": None, "infill_bars": None}
    edit = get_edit(req.edit)
    if prompt is None:
        raise RequestError(f"{LABELS['edit']}: {edit.button.lower()} needs an uploaded {LABELS['prompt']}")
    return edit, {"edit": edit.name, **edit.check(req)}
