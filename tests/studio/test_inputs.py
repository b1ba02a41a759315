"""studio.inputs: page values by name -> a validated request.  The studio only converts types; the checks are
GenerationRequest.validate's, whose messages name the field as the page labels it.  The requests the old
positional studio built for recorded page values (tests/fixtures/seeded/requests.json) are built again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import studio
from model.edits import EDITS
from model.request import LABELS, GenerationRequest, RequestError
from studio import inputs
from tests.conftest import MIDI_FIXTURES
from tokenizer import Score

OPENMSX = sorted(Path("/usr/share/games/openttd/baseset/openmsx").glob("*.mid"))
RECORDED = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "seeded" / "requests.json").read_text())
SONG = next(f for f in MIDI_FIXTURES if f.name.startswith("chemistry_lab"))
WALTZ = next(f for f in MIDI_FIXTURES if f.name.startswith("boogi_marabi"))  # 3/4
PAGE = dict(engine="transformer", groups=["piano"], drums=True, bars=2, variants=1, temperature=1.0,
            top_p=0.95, top_k=0, seed="3", bpm=120)
OLD_EDIT_NAMES = {"infill_first": "first_bar", "infill_last": "last_bar"}  # the old studio's names -> the registry's


def build(**values):
    return studio.generate_request({**PAGE, **values})


def recorded_form(request: GenerationRequest) -> dict:
    """A request as requests.json records it: its JSON fields, the prompt summarized."""
    out = json.loads(json.dumps(request.to_json()))
    if out.get("loop") is False:  # recorded before the loop field, whose default changes nothing
        del out["loop"]
    p = request.prompt
    out["prompt"] = None if p is None else {"notes": len(p.notes), "length": p.length, "bpm": p.bpm,
                                            "time_signature": list(p.time_signature), "groups": list(p.groups)}
    return out


# ---- the recorded requests of the old studio ------------------------------------------------------
@pytest.mark.parametrize("case", sorted(RECORDED["generate"]))
def test_generate_builds_the_recorded_request(checkpoint_root, case):
    rec = RECORDED["generate"][case]
    values = {k: str(WALTZ) if v == "WALTZ" else v for k, v in rec["values"].items()}
    prepared = studio.generate_request(values)
    assert prepared.engine.name == rec["engine"] and not prepared.seed_was_random
    assert recorded_form(prepared.request) == rec["request"]
    assert prepared.prompt_file == (WALTZ if "midi" in values else None)


@pytest.mark.parametrize("case", sorted(RECORDED["edit"]))
def test_edit_builds_the_recorded_request(checkpoint_root, case):
    rec = RECORDED["edit"][case]
    values = {OLD_EDIT_NAMES.get(k, k): v for k, v in rec["values"].items()}
    song = studio.load_upload(SONG, "prompt")
    prepared = studio.edit_request(rec["action"], song, values)
    assert prepared.engine.name == rec["engine"] and not prepared.seed_was_random
    assert recorded_form(prepared.request) == rec["request"]
    assert EDITS[rec["action"]].describe(prepared.request) == rec["what"]


# ---- names: defaults and unknown names --------------------------------------------------------------
def test_defaults_are_the_pages_and_unknown_names_are_refused(checkpoint_root):
    assert list(studio.GENERATE_DEFAULTS) == [
        "engine", "groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm", "style",
        "midi", "prompt_bars", "noise_sd", "alpha", "reference", "reference_midi", "key", "chords", "drum_kit",
        "loop"]
    assert studio.EDIT_COMMON == ("engine", "temperature", "top_p", "top_k", "seed", "key", "chords", "drum_kit")
    assert studio.EDIT_DEFAULTS == {k: studio.GENERATE_DEFAULTS[k] for k in studio.EDIT_COMMON}
    assert {studio.NO_STYLE, studio.NO_REFERENCE, studio.NO_KEY, studio.NO_KIT} == {"none"}
    prepared = studio.generate_request({})
    req = prepared.request
    assert prepared.seed_was_random and (req.groups, req.drums, req.bars, req.variants) == (("piano", "bass"), True, 8, 2)
    assert (req.style, req.key, req.chords, req.drum_kit, req.prompt, req.extra) == (None, None, None, None, None, {})
    with pytest.raises(RequestError, match="unknown field 'lenght'"):
        build(lenght=4)
    song = studio.load_upload(SONG, "prompt")
    with pytest.raises(RequestError, match="unknown field 'part'"):
        studio.edit_request("continue", song, {"part": "bass"})
    with pytest.raises(RequestError, match="^Edit: unknown edit 'remix'"):
        studio.edit_request("remix", song, {})
    req = studio.edit_request("infill", song, {"first_bar": "3", "last_bar": ""}).request
    assert req.infill_bars == (3, 3) and req.bars == 1  # a blank last bar: the first; an edit writes no new bars


def test_an_edit_works_on_the_whole_song_of_any_length(checkpoint_root):
    song = studio.load_upload(SONG, "prompt")
    req = studio.edit_request("continue", song, {"bars": 1, "seed": 1}).request
    assert req.prompt.bars == song.bars and len(req.prompt.notes) == len(song.notes)
    reps = -(-200 // song.bars)  # the song 200 bars long: past the old 64-bar limit
    notes = np.concatenate([song.notes] * reps)
    notes["onset"] += np.repeat(np.arange(reps) * song.first_bars(song.bars).length, len(song.notes))
    long = Score(notes, bpm=song.bpm, time_signature=song.time_signature).first_bars(200)
    req = studio.edit_request("add_part", long, {"part": "strings", "seed": 1}).request
    assert req.prompt.bars == 200 and len(req.prompt.notes) == len(long.notes)
    req = studio.edit_request("infill", long, {"first_bar": 120, "last_bar": 124}).request
    assert req.infill_bars == (120, 124)


# ---- conversion: the studio only converts types -----------------------------------------------
@pytest.mark.parametrize("value, seed", [("42", 42), (" 7 ", 7), (42, 42), (42.0, 42), ("12.0", 12),
                                         (2**32 - 1, 2**32 - 1)])
def test_parse_seed(value, seed):
    assert studio.parse_seed(value) == (seed, False)


def test_blank_seed_is_random():
    seeds = {studio.parse_seed(v)[0] for v in ("", None, "  ", "", "")}
    assert all(0 <= s < 2**32 for s in seeds) and len(seeds) >= 4
    assert studio.parse_seed("")[1] is True


def test_gradio_floats_become_ints_only_when_whole(checkpoint_root):
    req = build(bars=4.0, variants="2", top_k=5.0, seed=9.0, bpm="100").request
    assert (req.bars, req.variants, req.top_k, req.seed, req.bpm) == (4, 2, 5, 9, 100.0)
    assert all(type(v) is int for v in (req.bars, req.variants, req.top_k, req.seed))
    assert studio.to_number(2.5) == 2.5 and studio.to_number("abc") == "abc"


# ---- validation: one place, messages name the field as the page labels it ----------------------
@pytest.mark.parametrize("values, message", [
    (dict(temperature=3), "Temperature must be 0.1 to 2.0 (got 3)"),
    (dict(top_k=2.5), "Top-k must be a whole number from 0 to"),
    (dict(top_k="2.5"), "(got 2.5)"),
    (dict(bars="abc"), "Length (bars) must be a whole number from 1 to 64 (got 'abc')"),
    (dict(bars=0), "Length (bars) must be a whole number from 1 to 64 (got 0)"),
    (dict(variants=9), "Variants must be a whole number from 1 to 8 (got 9)"),
    (dict(bpm=10), "BPM must be 40 to 240 (got 10)"),
    (dict(top_p=0), "Top-p must be above 0.0 and at most 1.0 (got 0)"),
    (dict(seed="abc"), "Seed must be a whole number from 0 to 4294967295 (got 'abc')"),
    (dict(seed="-1"), "Seed must be a whole number"),
    (dict(seed=1.5), "Seed must be a whole number"),
    (dict(seed=2**32), "Seed must be a whole number"),
    (dict(seed=True), "Seed must be a whole number"),
    (dict(groups=["kazoo"]), "Instrument groups: unknown group 'kazoo'"),
    (dict(groups=[], drums=False), "Instrument groups: choose at least one (or turn Drums on"),
    (dict(style="polka"), "Style: unknown style 'polka'"),
    (dict(engine="nope"), "Engine: unknown engine 'nope'"),
])
def test_bad_values_name_the_field(checkpoint_root, values, message):
    with pytest.raises(RequestError) as e:
        build(**values)
    assert message in str(e.value), str(e.value)


def test_validate_is_the_one_place():
    """The request refuses the same values with the same messages without the studio."""
    for kwargs, field in (({"top_k": 2.5}, "top_k"), ({"temperature": 3}, "temperature"), ({"bars": 65}, "bars"),
                          ({"extra": {"noise_sd": 3}}, "noise_sd"), ({"extra": {"alpha": -0.5}}, "alpha"),
                          ({"extra": {"reference": 3}}, "reference"), ({"drums": "maybe"}, "drums")):
        with pytest.raises(RequestError, match=f"^{LABELS[field]}".replace("(", r"\(").replace(")", r"\)")):
            GenerationRequest(**kwargs).validate()
    req = GenerationRequest(extra={"noise_sd": 1, "alpha": 0}).validate()
    assert req.extra == {"noise_sd": 1.0, "alpha": 0.0}
    assert not hasattr(inputs, "as_int") and not hasattr(inputs, "as_float")


@pytest.mark.parametrize("values, message", [
    (dict(noise_sd=3), "Variation (latent noise sd) must be 0.0 to 2.0 (got 3)"),
    (dict(noise_sd="lots"), "Variation (latent noise sd) must be a number from 0.0 to 2.0 (got 'lots')"),
    (dict(alpha=1.5), "Pull towards the reference (alpha) must be 0.0 to 1.0 (got 1.5)"),
])
def test_engine_options_are_checked_by_the_request(checkpoint_root, values, message):
    try:
        inputs.get_engine("vae-nn")
    except FileNotFoundError:
        pytest.skip("no vae-nn checkpoint")
    with pytest.raises(RequestError) as e:
        build(engine="vae-nn", groups=["piano", "bass"], **values)
    assert message in str(e.value)


def test_engine_options_are_dropped_for_engines_without_them(checkpoint_root):
    assert build(noise_sd=99, alpha="x", reference="whatever").request.extra == {}


def test_controls_an_engine_lacks_are_reset_not_reported():
    prepared = build(engine="gru", bpm=110, style="rock")
    assert "drums" not in prepared.engine.controls and prepared.request.drums is False
    assert prepared.request.style is None


def test_prompt_bars_and_upload_messages(checkpoint_root, tmp_path):
    if not OPENMSX:
        pytest.skip("openttd-openmsx MIDI files are not installed")
    with pytest.raises(RequestError, match=r"^Use the first N bars must be a whole number from 1 to 1024 \(got 0\)"):
        build(midi=str(OPENMSX[0]), prompt_bars=0)
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"not midi")
    with pytest.raises(RequestError, match="^MIDI file: "):
        build(midi={"path": str(junk), "meta": {"_type": "gradio.FileData"}})
    with pytest.raises(RequestError, match="^MIDI file must be an uploaded .mid file"):
        build(midi=123)


def test_the_loop_checkbox_reaches_the_request(checkpoint_root):
    assert build().request.loop is False
    for value in (True, "on", "true", 1):
        assert build(loop=value).request.loop is True
    with pytest.raises(RequestError, match="^Seamless loop must be on or off"):
        build(loop="maybe")
    with pytest.raises(RequestError, match="^Seamless loop: engine cnn cannot make seamless loops"):
        build(engine="cnn", loop=True)
    with pytest.raises(RequestError, match="^Seamless loop: a loop is a new piece"):
        build(loop=True, midi=str(WALTZ))
