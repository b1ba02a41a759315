"""evaluation.edits: an added and a regenerated part measured over a whole song (tiny transformer), with the
song-scale figures (local scale, repeats with the song) beside the original part's."""

from __future__ import annotations

import pytest

from evaluation import edits as E
from tests.conftest import MIDI_FIXTURES
from tokenizer import load_midi, write_midi

pytestmark = pytest.mark.usefixtures("one_thread")


def test_whole_song_edits_are_measured_with_the_song_scale_figures(tiny_engine, tmp_path):
    song = write_midi(load_midi(MIDI_FIXTURES[0]).first_bars(12), tmp_path / "song.mid")
    rows = E.measure(tiny_engine, [song], bars=0, seeds=[0], variants=1)  # bars=0: the whole song
    assert {r["edit"] for r in rows} == {"add_part", "regenerate_part"}
    for r in rows:
        assert set(E.FIGURES) <= set(r) and r["results"] == 1
        assert 0.9 <= r["heard_in_bars"] <= 1.0
        assert r["in_local_scale"] is None or 0.0 <= r["in_local_scale"] <= 1.0
        assert r["repeats_with_song"] is None or -1.0 <= r["repeats_with_song"] <= 1.0
    original = next(r for r in rows if r["edit"] == "regenerate_part")["original"]
    assert set(E.FIGURES) <= set(original)
    text = E.render(rows, None)
    assert "rep." in text and "repeats with the song" in text
