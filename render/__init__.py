"""Rendering: MIDI to MP3 previews (FluidSynth + a GM soundfont) and piano-roll pictures; audio and
pictures only (the page's service layer is the top-level studio.py: render <- studio <- app).

    from render import render_mp3, draw_pianoroll
    info = render_mp3(score, "out.mp3")       # raises RenderError("no preview: ...") when it cannot
    draw_pianoroll(score, "roll.png")
"""

from .audio import RenderError, RenderResult, find_fluidsynth, find_soundfont, render_mp3, render_wav
from .pianoroll import draw_pianoroll

__all__ = ["RenderError", "RenderResult", "find_fluidsynth", "find_soundfont", "render_mp3", "render_wav",
           "draw_pianoroll"]
