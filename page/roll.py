"""The live piano roll as a Gradio component: a gr.HTML that draws a `render.roll.roll_data` dict on a <canvas>
and follows a gr.Audio's playhead (the browser side is render/static/roll.js, served inline: no CDN).

    roll = roll_html("roll-1", "audio-1")       # in a gr.Blocks; its value is a roll_data dict or None

Its `select` event carries the bars chosen on the roll: `evt.index` = [first_bar, last_bar] (1-based,
inclusive), or None when the selection is cleared (see render/roll.py).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from render.roll import ROLL_CSS, ROLL_JS

# Inline, so the page loads nothing from elsewhere; gr.HTML injects a given inline script only once
# however many rolls carry it.
ROLL_HEAD = f"<script>\n{ROLL_JS}\n</script>"
ROLL_TEMPLATE = ('<div class="mb-roll"><div class="mb-legend"></div>'
                 '<div class="mb-scroll"><div class="mb-stage"><canvas class="mb-canvas"></canvas>'
                 '<div class="mb-sel"></div><div class="mb-head"></div></div></div></div>')
ROLL_JS_ON_LOAD = "MidiBangersRoll.mount(element, props, trigger, watch);"


def roll_html(elem_id: str, audio_elem_id: str, value: dict | None = None, **kwargs: Any) -> gr.HTML:
    """A gr.HTML that draws a `roll_data` dict (its value; None shows an empty box) and follows the
    gr.Audio with elem_id `audio_elem_id`.  Extra keyword arguments go to gr.HTML (visible, ...)."""
    return gr.HTML(value, html_template=ROLL_TEMPLATE, css_template=ROLL_CSS, js_on_load=ROLL_JS_ON_LOAD,
                   head=ROLL_HEAD, apply_default_css=False, elem_id=elem_id, audio_elem_id=audio_elem_id,
                   **kwargs)
