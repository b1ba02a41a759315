"""The page's tables and handlers without a browser: the controls table fixes /generate's parameters, the edit
registry makes the named endpoints, values reach the studio by name, and messages reach people as they are."""

from __future__ import annotations

import inspect

import gradio as gr

from model.edits import EDITS
from model.request import LABELS, RequestError
from page import handlers as H
from page.controls import CONTROLS
from page.endpoints import edit_doc, edit_params, event_function, generate_doc, generate_params
from studio import EDIT_COMMON, GENERATE_DEFAULTS, Cancelled, History


def test_the_controls_table_is_the_studios_fields_in_order_with_their_labels():
    assert list(CONTROLS) == list(GENERATE_DEFAULTS)
    for name, c in CONTROLS.items():
        assert c.label.startswith(LABELS[c.labelled_as or name]) and c.default == GENERATE_DEFAULTS[name]
    assert [n for n, _ in generate_params()] == list(CONTROLS)
    doc = generate_doc()
    assert all(f"    {n}: " in doc for n in CONTROLS) and doc.startswith("Generate new music")


def test_each_edit_kind_is_a_named_endpoint_with_its_fields_and_help():
    for e in EDITS.values():
        names = [n for n, _ in edit_params(e)]
        assert names == ["midi", *(f.name for f in e.fields), *EDIT_COMMON]
        doc = edit_doc(e)
        assert doc.startswith(e.help) and all(f"    {n}: " in doc for n in names)


def test_an_event_function_hands_values_by_name_with_the_session_and_progress():
    seen = {}

    def call(values, session, progress):
        seen.update(values=values, session=session, progress=progress)
        return "done"

    fn = event_function("generate", [("bars", 8), ("seed", "")], "help", call)
    params = inspect.signature(fn).parameters
    assert list(params) == ["bars", "seed", "request", "progress"] and params["bars"].default == 8
    assert params["request"].annotation is gr.Request and isinstance(params["progress"].default, gr.Progress)
    assert fn.__name__ == "generate" and fn.__doc__ == "help"

    class Req:
        session_hash = "abc"

    ticks = []
    assert fn(4, "7", Req(), lambda f, desc: ticks.append((f, desc))) == "done"
    assert seen["values"] == {"bars": 4, "seed": "7"} and seen["session"] == "abc"
    seen["progress"](0.5, "generating")
    assert ticks == [(0.5, "generating")]
    fn(4, "7")  # called without the request and the tracker: no session, no progress
    assert seen["session"] is None and seen["progress"] is None


def test_messages_reach_people_as_they_are_and_failures_as_an_apology(caplog):
    assert H.error(RequestError("Seed must be a whole number")).message == "Seed must be a whole number"
    assert H.error(Cancelled("stopped")).message == "Stopped."
    with caplog.at_level("ERROR", logger="page"):
        said = H.error(ValueError("secret internals")).message
    assert said == H.SORRY and "secret" not in said and caplog.records


def test_views_of_the_engines_and_of_an_empty_history():
    v = H.engine_view("transformer")
    assert "edit" in v.controls and "rock" in v.styles and "Not supported" not in v.note
    assert "Not supported by this engine (disabled): Drums" in H.engine_view("gru").note
    broken = H.engine_view("no-such-engine")
    assert not broken.controls and "not available" in broken.note
    empty = H.page_view(History())
    assert not empty.shown and empty.variants == 0 and empty.rolls == [None] * H.SLOTS
    assert H.selected_bars([3, 5]) == (3, 5) and H.selected_bars(None) is None


def test_the_edit_panel_has_each_edit_field_once():
    from page.endpoints import edit_field_names

    names = edit_field_names()
    assert len(names) == len(set(names)) and set(names) == {f.name for e in EDITS.values() for f in e.fields}


def test_the_pages_no_news_yield_is_what_gradio_makes_of_a_skip():
    """PageBlocks passes an all-skip yield through without rebuilding the components: the same values gradio's own
    postprocessing gives, for the output kinds /generate and the edit endpoints have; anything else is gradio's."""
    import asyncio

    from gradio.state_holder import SessionState

    with H.PageBlocks() as demo:
        outs = [gr.Textbox(), gr.Markdown(), gr.File(), gr.Image(type="filepath"), gr.Audio(type="filepath")]
        btn = gr.Button()
        btn.click(lambda: None, None, outs)
    fn = demo.fns[0]
    skips = H.skips(len(outs))

    async def both(predictions):
        ours = await demo.postprocess_data(fn, predictions, SessionState(demo))
        theirs = await gr.Blocks.postprocess_data(demo, fn, predictions, SessionState(demo))
        return ours, theirs

    ours, theirs = asyncio.run(both(skips))
    assert ours == theirs == [{"__type__": "update"}] * len(outs)
    mixed = ("7", "**done**", *H.skips(3))
    ours, theirs = asyncio.run(both(mixed))
    assert ours == theirs and ours[0] == "7"
