"""The page's events as functions Gradio can call, generated from the tables: `/generate` from the controls
(page/controls.py) and one named endpoint and MCP tool per edit kind from the edit registry (model/edits.py).
Each function's signature (its parameters by name, with their defaults) and docstring are the API's and the MCP
tool's: a value travels by name from the caller to the studio, never by position through a hand-written list.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import gradio as gr

from model.edits import EDITS, Edit
from studio import EDIT_COMMON
from studio.inputs import MAX_PROMPT_NOTES

from .controls import CONTROLS
from .handlers import SLOTS, progress_of, session_of

MIDI_HELP = (f"the song, a .mid file (or a base64 data URI); the whole song is edited, however many bars (up to "
             f"{MAX_PROMPT_NOTES:,} notes; a song that would take longer than the request budget is refused with what "
             f"to change).")
GENERATE_HELP = "Generate new music as MIDI: several variants, each with an MP3 preview and a piano roll."
GENERATE_RETURNS = (f"the seed used, a summary (Markdown), a zip of everything, then for each of {SLOTS} variant "
                    "slots its piano roll (PNG), MP3 and MIDI (empty for unused slots).")


def event_function(name: str, params: list[tuple[str, Any]], doc: str,
                   call: Callable[[dict[str, Any], str | None, Any], Any], with_progress: bool = True,
                   stream: bool = False) -> Callable:
    """A function Gradio calls with the event's input values in `params`' order (then the browser request and,
    `with_progress`, the progress tracker, which Gradio adds by their place in the signature); it hands `call`
    the values by name, the session and a progress callback (None without one).  `params`: (name, default)
    pairs (inspect.Parameter.empty: no default).  `stream`: `call` returns an iterator of outputs, each sent on."""
    names = [n for n, _ in params]

    def split(args: tuple) -> tuple:
        request, progress = (list(args[len(names):]) + [None, None])[:2]
        return dict(zip(names, args)), session_of(request), progress_of(progress)

    if stream:  # a generator function: Gradio sends each output it yields
        def handler(*args: Any) -> Any:
            yield from call(*split(args))
    else:
        def handler(*args: Any) -> Any:
            return call(*split(args))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    handler.__signature__ = inspect.Signature(
        [inspect.Parameter(n, kind, default=d) for n, d in params]
        + [inspect.Parameter("request", kind, default=None, annotation=gr.Request)]
        + ([inspect.Parameter("progress", kind, default=gr.Progress())] if with_progress else []))
    handler.__annotations__ = {"request": gr.Request}  # Gradio finds the request by its type hint
    handler.__name__ = handler.__qualname__ = name
    handler.__doc__ = doc
    return handler


def docstring(summary: str, args: list[tuple[str, str]], returns: str) -> str:
    """A Google-style docstring (Gradio reads its Args for the API's and the MCP tools' help)."""
    lines = [summary, "", "Args:", *(f"    {n}: {h}" for n, h in args), "Returns:", f"    {returns}"]
    return "\n".join(lines)


def generate_params() -> list[tuple[str, Any]]:
    return [(c.name, c.default) for c in CONTROLS.values()]


def generate_doc() -> str:
    return docstring(GENERATE_HELP, [(c.name, c.help) for c in CONTROLS.values()], GENERATE_RETURNS)


def common_params() -> list[tuple[str, Any]]:
    """The parameters every edit shares (studio.EDIT_COMMON), with the page's defaults."""
    return [(n, CONTROLS[n].default) for n in EDIT_COMMON]


def edit_params(edit: Edit) -> list[tuple[str, Any]]:
    """A named editing endpoint's parameters: the song, the edit's own fields, then the shared ones."""
    return [("midi", inspect.Parameter.empty)] + [(f.name, f.default) for f in edit.fields] + common_params()


def edit_doc(edit: Edit) -> str:
    args = [("midi", MIDI_HELP)] + [(f.name, f.help) for f in edit.fields]
    args += [(n, "the engine; editing needs one with the edit control (transformer)." if n == "engine"
              else CONTROLS[n].help) for n in EDIT_COMMON]
    returns = f"{edit.returns}, its MP3 preview, its piano roll (PNG) and a summary (Markdown)."
    return docstring(edit.help, args, returns)


def edit_field_names() -> list[str]:
    """The fields of every edit kind, each once, in registry order (the edit panel's and the API's inputs)."""
    return list(dict.fromkeys(f.name for e in EDITS.values() for f in e.fields))
