"""The live piano roll's gr.HTML component (page.roll.roll_html): self-contained, nothing fetched from elsewhere."""

from page.roll import ROLL_HEAD, roll_html
from render.roll import roll_data
from tests.render.test_roll import waltz


def test_roll_html_component_is_self_contained():
    import gradio as gr

    with gr.Blocks():
        roll = roll_html("live-roll-1", "audio-1", value=roll_data(waltz()))
    assert isinstance(roll, gr.HTML) and roll.elem_id == "live-roll-1"
    assert roll.props["audio_elem_id"] == "audio-1"
    assert roll.head == ROLL_HEAD and "MidiBangersRoll" in ROLL_HEAD
    assert "http" not in ROLL_HEAD and "src=" not in ROLL_HEAD  # nothing fetched from elsewhere
    assert roll.value["parts"][0]["name"] == "piano"
    # gr.HTML reads its css_template as a Handlebars + JS template string: nothing in it may look like one
    assert not any(s in roll.css_template for s in ("`", "${", "{{"))
