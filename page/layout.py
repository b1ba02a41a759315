"""The page: layout and wiring, one builder per area.  Widgets are kept by name (`Page.w`), the controls come
from the table in page/controls.py, the edit buttons, the edit panel and the named endpoints from the edit
registry (model/edits.py); the handlers (page/handlers.py) do the work through the `Studio`.

    demo = build_demo(Studio())      # then page.serve(demo)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gradio as gr

from model import request as R
from model.edits import EDITS, EditField
from model.engine import engine_names
from studio import EDIT_COMMON, NO_REFERENCE, NO_STYLE, Studio, UploadCache
from tokenizer import vocab as V

from . import handlers as H
from .controls import CONTROLS
from .endpoints import (
    common_params,
    edit_doc,
    edit_field_names,
    edit_params,
    event_function,
    generate_doc,
    generate_params,
)
from .roll import roll_html

TITLE = ("# MIDI Bangers\nPick instruments, length and how adventurous; press **Generate**; listen, edit, and "
         "download the MIDI you like.")
HOW_TO = ("**How it works.** Choose instruments, length and an engine on the left and press **Generate**. "
          "Each variant gets a piano roll that plays along with its preview, and its MIDI for your DAW. Then, "
          "per variant: **continue** it, **add** or **regenerate** a part, **infill** bars, or **keep** it as "
          "the start of the next generation; **Undo** and **Redo** step through your edits. A key, a chord "
          "progression and a drum kit are under *Key, chords and drum kit*.")
PAIRS = {"bars": "variants", "top_p": "top_k", "seed": "bpm"}  # controls that share a row on the page
AREAS = (("harmony", "Key, chords and drum kit", True), ("upload", "Upload a MIDI (optional)", False),
         ("options", "Engine options: variation and reference song", True))
AREA_NOTES = {"upload": "The transformer continues it, style-vae restyles it, vae-nn and cnn start from it."}
QUEUED = {"concurrency_limit": 2, "concurrency_id": "generate"}  # generation and edits share two workers
PRIVATE = {"api_visibility": "private"}


@dataclass
class Page:
    """The page's widgets by name, and the groups the wiring needs."""
    w: dict[str, Any] = field(default_factory=dict)  # controls, edit fields, and the result widgets
    boxes: dict[str, Any] = field(default_factory=dict)  # accordions by area
    slots: list = field(default_factory=list)  # per variant: PNG, MP3, MIDI
    slot_boxes: list = field(default_factory=list)
    rolls: list = field(default_factory=list)
    edit_buttons: list = field(default_factory=list)  # (variant index, edit name, button)
    keep_buttons: list = field(default_factory=list)

    @property
    def outputs(self) -> list:
        """/generate's outputs (handlers.result_outputs fills them in this order)."""
        return [self.w["seed_used"], self.w["summary"], self.w["zip"], *self.slots]

    @property
    def shown(self) -> list:
        return [self.w["result_bar"], self.w["edit_box"], *self.slot_boxes, *self.rolls, self.w["undo"],
                self.w["redo"]]


def _control(p: Page, name: str, view: H.EngineView, **overrides: Any) -> None:
    c = CONTROLS[name]
    if c.needs is not None:
        overrides.setdefault("interactive", c.needs in view.controls)
    p.w[name] = c.make(**overrides)


def _main_controls(p: Page, view: H.EngineView) -> None:
    partners = set(PAIRS.values())
    for c in CONTROLS.values():
        if c.area != "main" or c.name in partners:
            continue
        if c.name == "style":
            _control(p, "style", view, choices=[NO_STYLE, *view.styles], visible=bool(view.styles) and
                     "style" in view.controls)
        elif c.name in PAIRS:
            with gr.Row():
                _control(p, c.name, view)
                _control(p, PAIRS[c.name], view)
        else:
            _control(p, c.name, view)
        if c.name == "engine":
            p.w["engine_note"] = gr.Markdown(view.note)


def _area_controls(p: Page, view: H.EngineView) -> None:
    for area, title, is_open in AREAS:
        visible = area != "options" or any(c in view.controls for c in H.OPTION_CONTROLS)
        with gr.Accordion(title, open=is_open, visible=visible) as box:
            if area in AREA_NOTES:
                gr.Markdown(AREA_NOTES[area])
            for c in CONTROLS.values():
                if c.area == area:
                    extra = {"choices": [NO_REFERENCE, *view.references]} if c.name == "reference" else {}
                    _control(p, c.name, view, **extra)
        p.boxes[area] = box


def edit_field_widget(f: EditField, **kwargs: Any) -> Any:
    """The widget of an edit's own field: a part is a group, bars are a whole number."""
    if f.kind == "part":
        return gr.Dropdown(list(V.GROUPS), value=f.default, label=f.label, **kwargs)
    return gr.Number(value=f.default, minimum=1, maximum=R.MAX_BARS, precision=0, label=f.label, **kwargs)


def _fields() -> dict[str, EditField]:
    first = {}
    for e in EDITS.values():
        for f in e.fields:
            first.setdefault(f.name, f)
    return first


def _edit_panel(p: Page) -> None:
    with gr.Accordion("Edit a variant: settings for its buttons", open=True, visible=False) as p.w["edit_box"]:
        with gr.Row():
            for name, f in _fields().items():
                p.w[name] = edit_field_widget(f, elem_id=f"edit-{name.replace('_', '-')}")
        with gr.Row():
            p.w["undo"] = gr.Button("↶ Undo", interactive=False, elem_id="undo-btn", size="sm")
            p.w["redo"] = gr.Button("↷ Redo", interactive=False, elem_id="redo-btn", size="sm")


def _variant_slots(p: Page) -> None:
    for i in range(1, H.SLOTS + 1):
        with gr.Group(elem_classes="variant-slot", visible=False) as box:
            p.rolls.append(roll_html(f"roll-{i}", f"audio-{i}"))
            img = gr.Image(label=f"Variant {i}: piano roll", type="filepath", interactive=False, visible=False,
                           elem_id=f"roll-png-{i}")
            aud = gr.Audio(label=f"Variant {i}: MP3 preview", type="filepath", interactive=False, elem_id=f"audio-{i}")
            with gr.Row(elem_classes="variant-actions"):
                for e in EDITS.values():
                    button = gr.Button(e.button, size="sm", elem_id=f"{e.name.replace('_', '-')}-{i}")
                    p.edit_buttons.append((i, e.name, button))
                p.keep_buttons.append(gr.Button("Keep as start", size="sm", elem_id=f"keep-{i}"))
            fil = gr.File(label=f"Variant {i}: MIDI", interactive=False, elem_id=f"midi-{i}")
        p.slots += [img, aud, fil]
        p.slot_boxes.append(box)


def _results(p: Page) -> None:
    p.w["summary"] = gr.Markdown(HOW_TO, elem_id="summary")
    with gr.Row(visible=False) as p.w["result_bar"]:
        p.w["seed_used"] = gr.Textbox(label="Seed used", interactive=False, elem_id="seed-used", scale=1)
        p.w["zip"] = gr.File(label="Everything (zip: MIDI, stems, MP3s, rolls, session.json)", interactive=False,
                             elem_id="zip", scale=2)
    _edit_panel(p)
    _variant_slots(p)


def layout(view: H.EngineView) -> tuple[Page, Any, Any]:
    """The widgets, in the current gr.Blocks: (page, Generate button, Stop button)."""
    p = Page()
    gr.Markdown(TITLE)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            _main_controls(p, view)
            _area_controls(p, view)
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                stop = gr.Button("Stop", variant="stop", elem_id="stop-btn")
        with gr.Column(scale=2):
            _results(p)
    return p, go, stop


# ---- wiring ---------------------------------------------------------------------------------------------
def on_engine(p: Page, name: str) -> dict:
    """Updates of the controls for engine `name`: what it lacks is greyed out, its styles and references."""
    v = H.engine_view(name)
    ups = {p.w[c.name]: gr.update(interactive=c.needs in v.controls) for c in CONTROLS.values() if c.needs}
    ups[p.w["style"]] = gr.update(choices=[NO_STYLE, *v.styles], value=NO_STYLE,
                                  visible=bool(v.styles) and "style" in v.controls)
    ups[p.w["reference"]] = gr.update(choices=[NO_REFERENCE, *v.references], value=NO_REFERENCE,
                                      interactive="reference" in v.controls)
    ups[p.w["engine_note"]] = v.note
    ups[p.boxes["options"]] = gr.update(visible=any(c in v.controls for c in H.OPTION_CONTROLS))
    return ups


def show(p: Page, studio: Studio, session: str | None) -> dict:
    """After any change of the page state: slots, live rolls, edit panel and undo/redo."""
    v = H.page_view(studio.history(session))
    ups = {p.w["result_bar"]: gr.update(visible=v.shown), p.w["edit_box"]: gr.update(visible=v.shown)}
    ups.update({box: gr.update(visible=i < v.variants) for i, box in enumerate(p.slot_boxes)})
    ups.update(dict(zip(p.rolls, v.rolls)))
    ups[p.w["undo"]] = gr.update(interactive=v.can_undo)
    ups[p.w["redo"]] = gr.update(interactive=v.can_redo)
    return ups


def shower(p: Page, studio: Studio):
    """The event function that shows the browser session's page state (after every change of it)."""
    return event_function("show", [], "", lambda values, session, progress: show(p, studio, session),
                          with_progress=False)


def reveal(p: Page):
    """On Generate: the result bar and the slots of the variants asked for, so that each shows as it streams in."""
    def on_click(variants: Any) -> dict:
        try:
            n = min(max(int(variants), 0), H.SLOTS)
        except (TypeError, ValueError):
            n = 0
        return {p.w["result_bar"]: gr.update(visible=n > 0),
                **{box: gr.update(visible=i < n) for i, box in enumerate(p.slot_boxes)}}
    return on_click


def wire_generate(p: Page, studio: Studio, go: Any) -> Any:
    def call(values, session, progress):
        return H.generate(studio, values, session, progress)

    fn = event_function("generate", generate_params(), generate_doc(), call, stream=True)
    go.click(reveal(p), p.w["variants"], [p.w["result_bar"], *p.slot_boxes], queue=False, **PRIVATE)
    # preprocess=False: the values arrive as sent, so the studio (not Gradio) says what is wrong with them
    event = go.click(fn, [p.w[n] for n in CONTROLS], p.outputs, api_name="generate", preprocess=False, **QUEUED)
    event.then(shower(p, studio), None, p.shown, queue=False, **PRIVATE)
    return event


def wire_editing(p: Page, studio: Studio) -> list:
    """The per-variant edit buttons, undo/redo, keep, and the bars chosen on a roll."""
    inputs = [p.w[n] for n in edit_field_names() + list(EDIT_COMMON)]
    params = [(n, None) for n in edit_field_names()] + common_params()
    after = shower(p, studio)

    def edit_call(index: int, kind: str):
        return lambda values, session, progress: H.edit_variant(studio, session, index, kind, values, progress)

    def step_call(direction: str):
        return lambda values, session, progress: H.step(studio, session, direction)

    def keep_call(index: int):
        return lambda values, session, progress: (*H.keep(studio, session, index), gr.update(open=True))

    events = []
    for index, kind, button in p.edit_buttons:
        fn = event_function(f"edit_{kind}_{index}", params, "", edit_call(index, kind), stream=True)
        ev = button.click(fn, inputs, p.outputs, **QUEUED, **PRIVATE)
        ev.then(after, None, p.shown, queue=False, **PRIVATE)
        events.append(ev)
    for direction in ("undo", "redo"):
        fn = event_function(direction, [], "", step_call(direction), with_progress=False)
        p.w[direction].click(fn, None, p.outputs, **PRIVATE).then(after, None, p.shown, queue=False, **PRIVATE)
    for index, button in enumerate(p.keep_buttons, 1):
        fn = event_function(f"keep_{index}", [], "", keep_call(index), with_progress=False)
        button.click(fn, None, [p.w["midi"], p.w["prompt_bars"], p.boxes["upload"]], **PRIVATE)

    def on_select(evt: gr.SelectData):
        bars = H.selected_bars(evt.index)
        return (gr.update(), gr.update()) if bars is None else bars

    for roll in p.rolls:
        roll.select(on_select, None, [p.w["first_bar"], p.w["last_bar"]], queue=False, **PRIVATE)
    return events


def wire_api(studio: Studio) -> None:
    """The named editing endpoints (API and MCP tools), one per edit kind: a MIDI file in, the edited one out."""
    def upload_call(kind: str):
        return lambda values, session, progress: H.edit_upload(studio, kind, values, progress)

    with gr.Column(visible=False):
        midi = gr.File(label=R.LABELS["prompt"], file_types=[".mid", ".midi"], type="filepath")
        fields = {name: edit_field_widget(f) for name, f in _fields().items()}
        common = [CONTROLS[n].make(elem_id=None, interactive=True) for n in EDIT_COMMON]
        outputs = [gr.File(label="MIDI"), gr.Audio(label="MP3", type="filepath"),
                   gr.Image(label="Piano roll", type="filepath"), gr.Markdown()]
        for e in EDITS.values():
            fn = event_function(e.tool, edit_params(e), edit_doc(e), upload_call(e.name), stream=True)
            inputs = [midi, *(fields[f.name] for f in e.fields), *common]
            gr.Button(visible=False).click(fn, inputs, outputs, api_name=e.name, preprocess=False, **QUEUED)


def build_demo(studio: Studio | None = None) -> gr.Blocks:
    """The page over `studio` (a default Studio: output folders and uploads in Gradio's cache, bounded and
    swept by its janitor after every request, on page load and every few seconds while the server runs)."""
    studio = studio or Studio(uploads=UploadCache())  # only files uploaded to this page are read
    view = H.engine_view(engine_names()[0])
    with H.PageBlocks(title="MIDI Bangers", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        p, go, stop = layout(view)
        p.w["engine"].change(partial(on_engine, p), p.w["engine"], [
            p.w["engine_note"], p.w["style"], p.boxes["options"],
            *(p.w[c.name] for c in CONTROLS.values() if c.needs)], **PRIVATE)
        events = [wire_generate(p, studio, go), *wire_editing(p, studio)]
        stop_fn = event_function("stop", [], "", lambda values, session, progress: studio.stop(session),
                                 with_progress=False)
        stop.click(stop_fn, None, None, cancels=events, queue=False, **PRIVATE)
        wire_api(studio)
        demo.load(studio.janitor.sweep, None, None, queue=False, **PRIVATE)
    demo.studio = studio  # page.serve prunes its uploads after each upload
    studio.janitor.start(running=lambda: demo.is_running)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo
