"""Adding an edit kind is one class: a new Edit registered in model/edits.py reaches the request, the sampler,
the CLI, the studio and the page (its button, its named endpoint and MCP tool) with nothing else changed."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import tokenizer as T
from model.edits import EDITS, Edit, EditField, register_edit
from model.request import GenerationRequest, RequestError
from tests.conftest import MIDI_FIXTURES

SONG = next(f for f in MIDI_FIXTURES if f.name.startswith("chemistry_lab"))


class RewriteEnding(Edit):
    """The song's last `bars` bars written anew (an infill that ends with the song)."""
    name = "rewrite_ending"
    tool = "rewrite_ending"
    button = "Rewrite ending"
    flag, metavar, flag_help = "--rewrite-ending", "BARS", "write the prompt's last BARS bars anew"
    help = "Rewrite the ending of a MIDI song: its last `bars` bars are written anew, every other bar stays."
    returns = "the MIDI with a new ending"
    fields = (EditField("bars", "bars", 1, "Bars to rewrite", "how many of the last bars to write anew."),)

    def request_fields(self, values: dict[str, Any]) -> dict[str, Any]:
        return {"edit": self.name, "bars": values.get("bars", 1)}

    def parse_flag(self, text: str) -> dict[str, Any]:
        return {"edit": self.name, "bars": int(text)}

    def check(self, req: Any) -> dict[str, Any]:
        if req.bars > req.prompt.bars:
            raise RequestError(f"Length (bars): the song has {req.prompt.bars} bars (got {req.bars})")
        return {"part": None, "infill_bars": None}

    def span(self, req: Any) -> tuple[int, int]:
        return req.prompt.bars - req.bars + 1, req.prompt.bars

    def plan(self, req: Any):
        return EDITS["infill"].plan(replace(req, infill_bars=self.span(req)))

    def describe(self, req: Any) -> str:
        return f"last {req.bars} bars rewritten"

    def summary(self, req: Any, bars: int, kept_bars: int) -> str:
        return f"last {req.bars} of {bars} prompt bars rewritten"


@pytest.fixture
def new_kind():
    register_edit(RewriteEnding)
    try:
        yield EDITS[RewriteEnding.name]
    finally:
        EDITS.pop(RewriteEnding.name, None)


def song(bars: int = 3) -> T.Score:
    return T.load_midi(SONG).first_bars(bars)


def test_a_new_edit_class_is_a_request_the_sampler_serves(new_kind, tiny_engine):
    req = GenerationRequest(groups=(), drums=True, bars=1, seed=4, prompt=song(), edit="rewrite_ending").validate()
    assert req.edit == "rewrite_ending" and new_kind.describe(req) == "last 1 bars rewritten"
    out = tiny_engine.generate(req)[0]
    before = song().notes
    keep = before[before["onset"] < 2 * 32]
    got = out.notes[out.notes["onset"] < 2 * 32]
    assert np.array_equal(np.sort(keep, order=["onset", "group", "pitch"]), np.sort(got, order=["onset", "group", "pitch"]))
    assert out.bars == 3
    with pytest.raises(RequestError, match="the song has 3 bars"):
        GenerationRequest(bars=5, prompt=song(), edit="rewrite_ending").validate()


def test_a_new_edit_class_is_a_cli_flag(new_kind, tiny_run, tmp_path, capsys):
    from model.generate import main

    rc = main(["--checkpoint", str(tiny_run / "best"), "--prompt", str(SONG), "--prompt-bars", "3",
               "--rewrite-ending", "1", "--seed", "5", "--out", str(tmp_path)])
    line = json.loads(capsys.readouterr().out)
    assert rc == 0 and "last 1 of 3 prompt bars rewritten" in line["summary"]


def test_a_new_edit_class_is_a_studio_request_a_button_and_an_endpoint(new_kind, tmp_path, checkpoint_root):
    from page import build_demo
    from studio import OutputStore, Studio, UploadCache
    from studio.inputs import edit_request

    prepared = edit_request("rewrite_ending", song(), {"bars": 2, "seed": 3})
    assert prepared.request.edit == "rewrite_ending" and prepared.request.bars == 2
    demo = build_demo(Studio(OutputStore(tmp_path / "out"), UploadCache(tmp_path / "cache")))
    try:
        config = demo.get_config_file()
        names = {d.get("api_name") for d in config["dependencies"]}
        assert "rewrite_ending" in names
        buttons = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert {"rewrite-ending-1", "rewrite-ending-8"} <= buttons
    finally:
        demo.close()
