"""Rendering: MIDI to loudness-normalized MP3 previews and per-instrument stems (FluidSynth + a GM
soundfont) and piano-roll pictures; audio and pictures only (the page's service layer is the top-level
studio.py: render <- studio <- app).

    from render import render_mp3, render_preview, draw_pianoroll
    info = render_mp3(score, "out.mp3")       # raises RenderError("no preview: ...") when it cannot
    info, stems = render_preview(score, "outdir", "v1")   # v1.mp3, v1-piano.flac, v1-piano.mid, ...
    draw_pianoroll(score, "roll.png")
"""

from .audio import (
                    RenderError,
                    RenderResult,
                    Stem,
                    find_fluidsynth,
                    find_soundfont,
                    render_mp3,
                    render_preview,
                    render_stems,
                    render_wav,
)
from .loudness import integrated_loudness
from .pianoroll import draw_pianoroll

__all__ = ["RenderError", "RenderResult", "Stem", "find_fluidsynth", "find_soundfont", "integrated_loudness",
           "render_mp3", "render_preview", "render_stems", "render_wav", "draw_pianoroll"]
