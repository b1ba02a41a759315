"""Piano-roll pictures: the file exists, has the asked size, and draws what the score holds."""

from __future__ import annotations

import numpy as np
from PIL import Image

from render import draw_pianoroll
from tokenizer import Score, make_notes
from tokenizer import vocab as V


def test_pianoroll_png_size(tmp_path, small_score):
    path = draw_pianoroll(small_score(), tmp_path / "roll.png", width=800, height=360)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.size == (800, 360)
    with Image.open(draw_pianoroll(small_score(), tmp_path / "default.png")) as im:
        assert im.size == (1000, 420)


def _coloured_pixels(path, hex_colour: str, tol: int = 30, alpha: float = 0.85) -> int:
    """Pixels of `hex_colour` drawn at `alpha` over white."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    target = alpha * np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) + (1 - alpha) * 255
    return int((np.abs(rgb - target).sum(-1) < tol).sum())


def test_groups_get_their_colours(tmp_path, small_score):
    from render.pianoroll import GROUP_COLORS

    path = draw_pianoroll(small_score(), tmp_path / "roll.png")
    assert _coloured_pixels(path, GROUP_COLORS["piano"]) > 500
    assert _coloured_pixels(path, GROUP_COLORS["bass"]) > 200
    assert _coloured_pixels(path, GROUP_COLORS["guitar"]) < 50  # not in the score: not drawn


def test_empty_and_drums_only_scores(tmp_path):
    empty = Score(length=4 * V.STEPS_PER_BAR)
    with Image.open(draw_pianoroll(empty, tmp_path / "empty.png")) as im:
        assert im.size == (1000, 420)
    drums = Score(make_notes([0, 8, 16], [1, 1, 1], [5, 5, 5], [V.DRUM_GROUP] * 3, [36, 38, 42]))
    with Image.open(draw_pianoroll(drums, tmp_path / "drums.png", width=600, height=300)) as im:
        assert im.size == (600, 300)
