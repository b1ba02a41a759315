"""One table of the page's generation controls: each row is a name, a widget, a label and a default.

The row order is the order of `/generate`'s parameters (API and MCP); a control's name is the studio's field
name (`studio.GENERATE_DEFAULTS`, which holds its default) and its label is `model.request.LABELS[name]`, the
word every message uses.  Adding a control is one row here, one request field and one label.

    CONTROLS["temperature"].make()          # the widget, in a gr.Blocks context
    [c.name for c in CONTROLS.values()]     # /generate's parameters, in order
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from model import request as R
from model.engine import engine_names
from studio import GENERATE_DEFAULTS, NO_KEY, NO_KIT, NO_REFERENCE, NO_STYLE
from tokenizer import harmony as H
from tokenizer import vocab as V

KEYS = [NO_KEY] + [f"{t} {m}" for t in H.NOTE_NAMES for m in H.MODES]
KITS = [NO_KIT, *V.DRUM_KITS]


@dataclass(frozen=True)
class Control:
    """One page control.  `widget` is the Gradio class, `options` its other arguments (a callable for choices
    known only when the page is built), `note` what the page adds after the label, `help` the API's and MCP's
    line for it, `needs` the engine control without which it is greyed out, `area` where the page puts it."""
    name: str
    widget: Callable[..., Any]
    help: str
    area: str = "main"  # main, harmony (key, chords, kit), upload, options (engine options)
    note: str = ""
    options: dict | Callable[[], dict] = field(default_factory=dict)
    needs: str | None = None
    labelled_as: str | None = None  # the LABELS key when it is not the name (the upload is the request's prompt)

    @property
    def default(self) -> Any:
        return GENERATE_DEFAULTS[self.name]

    @property
    def label(self) -> str:
        return R.LABELS[self.labelled_as or self.name] + (f" {self.note}" if self.note else "")

    def make(self, **overrides: Any) -> Any:
        """The widget with its label, default and elem_id (the name with dashes); `overrides` win."""
        options = self.options() if callable(self.options) else self.options
        value = list(self.default) if isinstance(self.default, tuple) else self.default
        args = {"label": self.label, "value": value, "elem_id": self.name.replace("_", "-"), **options}
        return self.widget(**{**args, **overrides})


def _engines() -> dict:
    names = engine_names()
    return {"choices": names, "value": names[0]}


_MIDI = {"file_types": [".mid", ".midi"], "type": "filepath"}
_ROWS = (
    Control("engine", gr.Dropdown, "transformer (the main one; the only one that edits), style-vae, vae-nn, cnn, "
            "gru, lstm or multi-rnn.", options=_engines),
    Control("groups", gr.CheckboxGroup, 'pitched instrument groups, e.g. ["piano", "bass", "strings"].',
            options={"choices": list(V.PITCHED_GROUPS)}, needs="groups"),
    Control("drums", gr.Checkbox, "whether there is a drum part.", needs="drums"),
    Control("bars", gr.Slider, "length in bars, 1 to 64 (new bars after an uploaded MIDI).",
            options={"minimum": 1, "maximum": R.MAX_BARS, "step": 1}, needs="bars"),
    Control("variants", gr.Slider, "how many different results, 1 to 8.",
            options={"minimum": 1, "maximum": R.MAX_VARIANTS, "step": 1}, needs="variants"),
    Control("temperature", gr.Slider, "randomness, 0.1 to 2.0 (1.0 = as trained).",
            options={"minimum": R.MIN_TEMPERATURE, "maximum": R.MAX_TEMPERATURE, "step": 0.05}, needs="temperature"),
    Control("top_p", gr.Slider, "nucleus sampling, above 0 to 1.",
            options={"minimum": 0.05, "maximum": 1.0, "step": 0.01}, needs="top_p"),
    Control("top_k", gr.Number, "keep the k likeliest choices (0 = off).", note="(0 = off)",
            options={"minimum": 0, "maximum": R.MAX_TOP_K}, needs="top_k"),
    Control("seed", gr.Textbox, "a whole number for repeatable results, or blank for a random one.",
            note="(blank = random)", options={"max_lines": 1}, needs="seed"),
    Control("bpm", gr.Slider, "tempo, 40 to 240 (an uploaded MIDI keeps its own).",
            options={"minimum": R.MIN_BPM, "maximum": R.MAX_BPM, "step": 1}, needs="bpm"),
    Control("style", gr.Dropdown, 'a style name the engine knows, or "none".',
            options={"choices": [NO_STYLE, *V.STYLES]}),
    Control("midi", gr.File, "a .mid file to continue (transformer), restyle (style-vae) or start from (vae-nn, "
            "cnn); or None.", area="upload", note="(.mid)", options=_MIDI, needs="prompt", labelled_as="prompt"),
    Control("prompt_bars", gr.Slider, "how many bars of that file to use.", area="upload",
            options={"minimum": 1, "maximum": R.MAX_PROMPT_BARS, "step": 1}),
    Control("noise_sd", gr.Slider, "vae-nn only: latent noise (variation).", area="options",
            options={"minimum": 0.0, "maximum": R.MAX_NOISE_SD, "step": 0.05}, needs="noise_sd"),
    Control("alpha", gr.Slider, "vae-nn only: pull towards the reference song, 0 to 1.", area="options",
            options={"minimum": 0.0, "maximum": 1.0, "step": 0.05}, needs="alpha"),
    Control("reference", gr.Dropdown, 'vae-nn only: a built-in reference song name, or "none".', area="options",
            options={"choices": [NO_REFERENCE], "allow_custom_value": True}, needs="reference"),  # the engine checks it
    Control("reference_midi", gr.File, "vae-nn only: a .mid file as the reference song, or None.", area="options",
            note="of your own (.mid)", options=_MIDI, needs="reference"),
    Control("key", gr.Dropdown, 'key and scale lock such as "D minor", "A dorian" or "E blues", or "none".',
            area="harmony", note="(every pitched note in it)", options={"choices": KEYS}, needs="key"),
    Control("chords", gr.Textbox, 'one chord a bar, repeating, such as "Dm Bb F C", or blank.', area="harmony",
            note="(one a bar, repeating)", options={"placeholder": "e.g. Dm Bb F C", "max_lines": 1}, needs="chords"),
    Control("drum_kit", gr.Dropdown, "General MIDI drum kit (" + ", ".join(V.DRUM_KITS) + '), or "none" (the '
            "upload's kit, else standard).", area="harmony", note="(none = standard)", options={"choices": KITS}),
    Control("loop", gr.Checkbox, "transformer only: a seamless loop, the last bar leads back into the first "
            "(new pieces; not with an uploaded MIDI).", note="(last bar leads into the first)", needs="loop"),
)
CONTROLS: dict[str, Control] = {c.name: c for c in _ROWS}
if list(CONTROLS) != list(GENERATE_DEFAULTS):
    raise RuntimeError(f"page controls {list(CONTROLS)} and studio fields {list(GENERATE_DEFAULTS)} differ")
