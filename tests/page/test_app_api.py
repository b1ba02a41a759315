"""The studio served in-process, driven through gradio_client exactly as an API user would."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import mido
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from model.request import LABELS
from render.audio import decode_audio
from tokenizer import load_midi
from tokenizer.score import MAX_FILE_BYTES

SLOTS = 8
OPENMSX = sorted(Path("/usr/share/games/openttd/baseset/openmsx").glob("*.mid"))


def call(client, **values):
    """/generate with page values by name (the rest take the API's defaults); files are uploaded first."""
    values = {"seed": "1234", "bars": 4, "variants": 2, **values}
    for name in ("midi", "reference_midi"):
        if values.get(name):
            values[name] = handle_file(str(values[name]))
    if isinstance(values.get("groups"), tuple):  # other values are sent as they are
        values["groups"] = list(values["groups"])
    return client.predict(**values, api_name="/generate")


def test_api_lists_generate(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert "/generate" in api["named_endpoints"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/generate"]["parameters"]]
    assert len(params) == 21  # ..., reference_midi, key, chords, drum_kit, loop
    assert params[-1] == "loop"


def test_two_variants_of_four_bars(client):
    out = call(client, variants=2, bars=4, seed="1234")
    seed_used, summary, zip_path = out[:3]
    assert seed_used == "1234"
    assert "seed **1234**" in summary and "tokens/s" in summary
    slots = [out[3 + 3 * i: 6 + 3 * i] for i in range(SLOTS)]
    for png, mp3, mid in slots[:2]:
        midi = load_midi(mid)  # opens with symusic (through the tokenizer) ...
        mf = mido.MidiFile(mid)  # ... and with mido
        assert mf.type == 1 and mf.ticks_per_beat > 0
        assert midi.end_step <= 4 * 32 and midi.length in (None, 4 * 32) or midi.n_bars <= 4
        assert set(midi.notes_per_group()) <= {"piano", "bass", "drums"}
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size == (1000, 420)
        pcm = decode_audio(mp3)
        assert len(pcm) > 0.5 * 44100  # 4 bars at 120 BPM = 8 s, minus trimmed silence
        if len(midi.notes):
            assert float(np.sqrt(np.mean(pcm ** 2))) > 1e-3, "MP3 of a variant with notes is silent"
    for slot in slots[2:]:
        assert slot == [None, None, None] or tuple(slot) == (None, None, None)
    with zipfile.ZipFile(zip_path) as z:  # per variant: mix MIDI, MP3, roll, stems; the session
        names = set(z.namelist())
        assert "session.json" in names
        for k, (png, mp3, mid) in enumerate(slots[:2], 1):
            base = f"variant-{k}/variant-{k}"
            assert {f"{base}.mid", f"{base}.mp3", f"{base}.png"} <= names
            for ext, path in (("mid", mid), ("mp3", mp3), ("png", png)):  # the same files the slots hold
                assert z.read(f"{base}.{ext}") == Path(path).read_bytes()
            for group in load_midi(mid).notes_per_group():
                assert {f"variant-{k}/stems/{group}.mid", f"variant-{k}/stems/{group}.flac"} <= names
        mido.MidiFile(file=io.BytesIO(z.read("variant-1/variant-1.mid")))


def test_same_seed_same_music_and_blank_seed_is_shown(client):
    a = call(client, variants=1, bars=2, seed="77")
    b = call(client, variants=1, bars=2, seed="77")
    assert Path(a[5]).read_bytes() == Path(b[5]).read_bytes()
    c = call(client, variants=1, bars=2, seed="")
    assert c[0].isdigit() and f"seed **{c[0]}** (random)" in c[1]


def test_continue_an_upload(client):
    if not OPENMSX:
        pytest.skip("openttd-openmsx MIDI files are not installed")
    out = call(client, variants=1, bars=2, midi=OPENMSX[0], prompt_bars=2, style="rock")
    assert "continuing" in out[1]
    cont = load_midi(out[5])
    prompt = load_midi(OPENMSX[0]).first_bars(2)
    assert len(cont.notes) >= len(prompt.notes)


def _truncated_midi() -> bytes:
    data = Path(OPENMSX[0]).read_bytes() if OPENMSX else mido_bytes()
    return data[: len(data) // 3]


def mido_bytes(n_notes: int = 8) -> bytes:
    mf = mido.MidiFile(type=1, ticks_per_beat=96)
    tr = mido.MidiTrack()
    for i in range(n_notes):
        tr.append(mido.Message("note_on", note=40 + i % 40, velocity=90, time=0 if i == 0 else 12))
        tr.append(mido.Message("note_off", note=40 + i % 40, velocity=0, time=12))
    mf.tracks.append(tr)
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


BAD_UPLOADS = {
    "random": (lambda: np.random.default_rng(0).bytes(4096), "not a MIDI file"),
    "truncated": (_truncated_midi, "MIDI"),
    "empty": (lambda: b"", "empty"),
    "too_many_notes": (lambda: mido_bytes(25_000), "notes; the limit is"),
    "header_only": (lambda: b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0", "MIDI"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_uploads_give_messages_not_crashes(client, tmp_path, kind):
    make, expected = BAD_UPLOADS[kind]
    path = tmp_path / f"{kind}.mid"
    path.write_bytes(make())
    with pytest.raises(AppError) as e:
        call(client, variants=1, bars=2, midi=path, prompt_bars=2)
    msg = str(e.value)
    assert msg.startswith("MIDI file: ") and expected in msg and "Traceback" not in msg, msg
    # the server still answers
    ok = call(client, variants=1, bars=1, seed="5")
    assert ok[0] == "5" and Path(ok[5]).is_file()


@pytest.mark.parametrize("kwargs, expected", [
    ({"bars": 65}, "Length (bars) must be a whole number from 1 to 64 (got 65)"),
    ({"temperature": 5.0}, "Temperature must be 0.1 to 2.0 (got 5)"),
    ({"groups": ["kazoo"]}, "Instrument groups: unknown group 'kazoo'; choose from piano"),
    ({"engine": "nope"}, "Engine: unknown engine 'nope'; choose from transformer"),
    ({"style": "polka"}, "Style: unknown style 'polka'; choose from"),
])
def test_out_of_range_inputs_give_messages(client, kwargs, expected):
    with pytest.raises(AppError) as e:
        call(client, **{"variants": 1, "bars": 2, **kwargs})
    assert str(e.value).startswith(expected), str(e.value)


@pytest.mark.parametrize("kwargs, expected", [
    ({"bars": "eight"}, "Length (bars) must be a whole number from 1 to 64 (got 'eight')"),
    ({"top_p": "high"}, "Top-p must be a number above 0.0 and at most 1.0 (got 'high')"),
    ({"groups": None, "drums": False}, "Instrument groups: choose at least one"),
    ({"noise_sd": "lots", "engine": "vae-nn"}, "Variation (latent noise sd) must be a number from 0.0 to 2.0"),
    ({"top_k": 2.5}, "Top-k must be a whole number from 0 to"),  # Gradio rounded it to 2 without a word
])
def test_wrong_types_reach_our_messages_not_gradios(client, kwargs, expected):
    """Values Gradio used to refuse itself ("Could not preprocess input component ...", "Value ... is not in
    the list of choices", or rounding) reach the studio, whose message names the field."""
    with pytest.raises(AppError) as e:
        call(client, **{"variants": 1, "bars": 2, **kwargs})
    msg = str(e.value)
    assert msg.startswith(expected) and "preprocess" not in msg and "list of choices" not in msg, msg


def test_page_labels_are_the_names_in_messages(client):
    labels = {c.get("props", {}).get("label") for c in client.config["components"]}
    for name in ("engine", "groups", "drums", "bars", "variants", "temperature", "top_p", "bpm", "style",
                 "prompt_bars", "noise_sd", "alpha", "reference"):
        assert LABELS[name] in labels, name
    for name in ("top_k", "seed", "prompt", "reference_midi"):  # label plus a hint: "Seed (blank = random)"
        assert any(str(label).startswith(LABELS[name]) or LABELS[name] in str(label) for label in labels), name


def test_an_internal_failure_is_an_apology_and_a_log_line(client, monkeypatch, caplog):
    from studio import pipeline

    def broken(*args, **kwargs):
        raise ValueError("secret internals")

    monkeypatch.setattr(pipeline, "draw_pianoroll", broken)
    with caplog.at_level("ERROR", logger="page"), pytest.raises(AppError) as e:
        call(client, variants=1, bars=1)
    msg = str(e.value)
    assert msg.startswith("Sorry, something went wrong") and "secret" not in msg and "ValueError" not in msg, msg
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


def test_upload_limit_is_the_tokenizers(client, app_server):
    """Gradio refuses an upload over tokenizer.score.MAX_FILE_BYTES, the size the studio accepts."""
    import httpx

    assert client.config["max_file_size"] == MAX_FILE_BYTES
    url = app_server[0] + "gradio_api/upload"
    r = httpx.post(url, files={"files": ("big.mid", b"MThd" + b"\0" * MAX_FILE_BYTES)}, timeout=60)
    assert r.status_code == 413, r.text
    r = httpx.post(url, files={"files": ("ok.mid", b"MThd" + b"\0" * (MAX_FILE_BYTES - 1024))}, timeout=60)
    assert r.status_code == 200, r.text


def test_uploads_stay_bounded_in_bytes(client, app_server, tmp_path):
    _, _, uploads = app_server
    rng = np.random.default_rng(1)
    size = uploads.max_bytes // 3
    for i in range(6):  # twice the cap: each request is refused (not a MIDI file) but prunes
        path = tmp_path / f"junk{i}.mid"
        path.write_bytes(rng.bytes(size))
        with pytest.raises(AppError, match="^MIDI file: "):
            call(client, variants=1, bars=1, midi=path)
        assert uploads.disk_bytes() <= uploads.max_bytes
    assert any(p.name == "junk5.mid" for d in uploads.folders() for p in d.iterdir())  # the newest stays


def test_output_folders_stay_bounded(client, app_server):
    _, store, _ = app_server
    for i in range(store.keep + 3):
        call(client, variants=1, bars=1, seed=str(i))
    dirs = [d for d in store.root.iterdir() if d.name.startswith("req-")]
    assert len(dirs) <= store.keep + 1


def test_engine_options_reach_vae_nn_and_bad_ones_are_messages(client):
    from model.engine import get_engine

    try:
        refs = get_engine("vae-nn").references
    except FileNotFoundError:
        pytest.skip("no vae-nn checkpoint")
    out = call(client, engine="vae-nn", groups=("piano", "bass"), bars=4, variants=1, noise_sd=0.5, alpha=0.5,
               reference=refs[0])
    assert "noise sd 0.5" in out[1] and f"reference {refs[0]}" in out[1] and out[3]
    assert "temperature" not in out[1] and "top-p" not in out[1]  # vae-nn has no sampling controls
    with pytest.raises(AppError, match="reference song"):
        call(client, engine="vae-nn", reference="no such song")
    out = call(client, engine="style-vae", style="latin", bars=2, variants=1)
    assert "style latin" in out[1]
    # no style chosen: each variant gets one, named in its line of the summary
    out = call(client, engine="style-vae", bars=2, variants=2)
    named = re.findall(r"variant \d: 2 bars, style (\w+),", out[1])
    assert len(named) == 2 and set(named) <= set(get_engine("style-vae").styles), out[1]


def test_generate_with_all_defaults(client):
    """`client.predict(api_name="/generate")` with no arguments: the page's defaults, one variant."""
    seed, summary, zip_path, *slots = client.predict(api_name="/generate")
    assert int(seed) >= 0 and "variant" in summary and zip_path
    png, mp3, midi = slots[:3]
    assert midi and Path(midi["value"] if isinstance(midi, dict) else midi).suffix == ".mid"


def _notes(path) -> set:
    s = load_midi(path)
    return {tuple(r) for r in zip(s.notes["onset"].tolist(), s.notes["group"].tolist(), s.notes["pitch"].tolist())}


def test_named_edit_endpoints_take_a_midi_and_return_midi_mp3_roll(client):
    """/add_part, /regenerate_part, /continue and /infill: a MIDI file in; MIDI, MP3, roll and summary out."""
    out = call(client, groups=("piano", "bass"), drums=True, bars=2, variants=1, seed="21")
    song = out[5]
    mid, mp3, png, summary = client.predict(midi=handle_file(song), part="strings", seed="3", api_name="/add_part")
    assert "strings part added" in summary and _notes(song) <= _notes(mid)
    assert "strings" in load_midi(mid).notes_per_group() and len(decode_audio(mp3)) > 0
    with Image.open(png) as im:
        assert im.format == "PNG"
    mid2, _, _, summary = client.predict(midi=handle_file(mid), part="bass", seed="4", api_name="/regenerate_part")
    others = {n for n in _notes(mid) if n[1] != 4}  # every note but the bass (group 4) stays
    assert "bass part regenerated" in summary and others <= _notes(mid2)
    mid3, _, _, summary = client.predict(midi=handle_file(song), bars=1, seed="5", api_name="/continue")
    assert "continued by 1 bars" in summary and load_midi(mid3).n_bars <= 3 and _notes(song) <= _notes(mid3)
    mid4, _, _, summary = client.predict(midi=handle_file(song), first_bar=2, last_bar=2, seed="6", api_name="/infill")
    assert "bars 2-2 infilled" in summary
    bar1 = {n for n in _notes(song) if n[0] < 32}
    assert bar1 <= _notes(mid4)  # bar 1 stays note for note
    with pytest.raises(AppError, match="^Part: the MIDI file already has a piano part"):
        client.predict(midi=handle_file(song), part="piano", api_name="/add_part")
    with pytest.raises(AppError, match="^Infill bars must be"):
        client.predict(midi=handle_file(song), first_bar=2, last_bar=9, api_name="/infill")


def test_key_chords_and_drum_kit_through_generate(client):
    from tokenizer import harmony as H

    out = call(client, groups=["piano", "bass"], bars=2, variants=1, seed="8", key="D minor", chords="Dm Bb",
               drum_kit="tr-808")
    s = load_midi(out[5])
    pitched = s.notes[s.notes["group"] != 11]
    assert len(pitched) and H.in_key_share(pitched, H.parse_key("D minor")) == 1.0
    assert s.drum_kit == 25 and "in key 100%" in out[1] and "tr-808 kit" in out[1]
    with pytest.raises(AppError, match="^Key: "):
        call(client, groups=["piano"], bars=1, variants=1, key="H lydian")
    with pytest.raises(AppError, match="^Drum kit: unknown kit"):
        call(client, groups=["piano"], bars=1, variants=1, drum_kit="cowbell")


def test_a_seamless_loop_through_generate(client):
    out = call(client, groups=["piano", "bass"], bars=2, variants=1, seed="6", loop=True)
    s = load_midi(out[5])
    assert s.n_bars == 2 and len(s.notes) and (s.notes["onset"] + s.notes["duration"] <= 2 * s.bar_steps).all()
    assert "seamless loop" in out[1]
    with pytest.raises(AppError, match="^Seamless loop must be on or off"):
        call(client, groups=["piano"], bars=1, variants=1, loop="maybe")
    with pytest.raises(AppError, match="^Seamless loop: engine cnn cannot make seamless loops"):
        call(client, engine="cnn", groups=["piano"], bars=1, variants=1, loop=True)


def test_mcp_server_lists_the_tools(app_server):
    """The MCP endpoint answers a real MCP client (streamable HTTP) with the named endpoints as tools."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def tools():
        async with streamable_http_client(app_server[0] + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return (await session.list_tools()).tools

    listed = {t.name: t for t in asyncio.run(asyncio.wait_for(tools(), 60))}
    for name in ("generate", "continue_midi", "add_part", "regenerate_part", "infill"):
        assert any(n.endswith(name) for n in listed), sorted(listed)
    add = next(t for n, t in listed.items() if n.endswith("add_part"))
    assert "Add a part to a MIDI song" in add.description and "part" in add.inputSchema["properties"]


def test_variants_stream_to_the_client_before_the_zip(client):
    """/generate sends each variant as soon as it is rendered (MIDI and MP3 playable), then the whole result."""
    job = client.submit(groups=["piano"], drums=False, bars=1, variants=3, seed="3", api_name="/generate")
    for _ in job:
        pass
    outputs = job.outputs()
    final, partial = outputs[-1], [o for o in outputs[:-1] if o[2] is None]
    assert final[2] and all(final[3 + 3 * i + 2] for i in range(3))
    assert partial and "still rendering" in partial[0][1]
    first = partial[0]
    ready = [i for i in range(SLOTS) if first[3 + 3 * i + 2]]
    assert ready and all(first[3 + 3 * i + 1] for i in ready)  # a streamed variant comes with its MP3


def test_a_cancelled_job_stops_and_frees_the_engine(client, app_server):
    """gradio_client's cancel ends the server's generation (no zip is made for it) and the next request runs at
    once instead of waiting for the cancelled one to finish."""
    import time

    _, store, _ = app_server
    job = client.submit(groups=["piano", "guitar", "bass"], bars=32, variants=4, seed="424242", api_name="/generate")
    t0 = time.perf_counter()
    while job.status().code.name not in ("PROCESSING", "ITERATING") and time.perf_counter() - t0 < 60:
        time.sleep(0.2)
    time.sleep(2.0)  # decoding
    assert job.cancel() or job.done()
    t1 = time.perf_counter()
    out = call(client, groups=["piano"], drums=False, bars=1, variants=1, seed="5")
    waited = time.perf_counter() - t1
    assert out[0] == "5" and waited < 30, f"the next request waited {waited:.0f} s"
    time.sleep(2.0)
    assert not list(store.root.rglob("midi-bangers-424242*")), "the cancelled job went on to render"


SONG = Path(__file__).resolve().parents[1] / "fixtures" / "midi" / "chemistry_lab.mid"
WRONG = [  # (endpoint, fields, the message's start)
    ("/continue", {"bars": "abc"}, "Length (bars) must be a whole number"),
    ("/continue", {"bars": 2.7}, "Length (bars) must be a whole number"),
    ("/infill", {"first_bar": "x"}, "Infill bars must be"),
    ("/add_part", {"part": 3}, "Part must be one of"),
    ("/regenerate_part", {"engine": "gpt-9"}, "Engine: unknown engine 'gpt-9'"),
    ("/add_part", {"part": "strings", "drum_kit": "cowbell"}, "Drum kit: unknown kit"),
    ("/infill", {"key": "H lydian"}, "Key: "),
    ("/continue", {"top_k": 2.5}, "Top-k must be a whole number"),
    ("/regenerate_part", {"part": "organ", "temperature": "hot"}, "Temperature must be a number"),
    ("/continue", {"seed": "seven"}, "Seed must be a whole number"),
]


@pytest.mark.parametrize("endpoint, fields, expected", WRONG)
def test_every_editing_endpoint_names_the_field_of_a_wrong_value(client, endpoint, fields, expected):
    with pytest.raises(AppError) as e:
        client.predict(midi=handle_file(str(SONG)), **fields, api_name=endpoint)
    msg = str(e.value)
    assert msg.startswith(expected) and "preprocess" not in msg and "list of choices" not in msg, msg


@pytest.mark.parametrize("endpoint, field", [("/continue", "key"), ("/add_part", "chords"), ("/generate", "chords"),
                                             ("/generate", "engine"), ("/infill", "drum_kit")])
def test_a_huge_value_is_quoted_in_a_few_dozen_characters(client, endpoint, field):
    fields = {field: "Q" * 100_000} if endpoint == "/generate" else {"midi": handle_file(str(SONG)), field: "Q" * 100_000}
    with pytest.raises(AppError) as e:
        client.predict(**fields, api_name=endpoint)
    assert len(str(e.value)) < 250 and str(e.value).count("Q") <= 40, str(e.value)[:300]


def test_a_refused_upload_leaves_nothing_behind(client, app_server):
    """An upload named '..' is refused by Gradio's upload route, which leaves its body in the cache as a tmp file:
    the pass after each upload removes it once it is orphaned (here: aged past the grace at once)."""
    import os
    import time

    import httpx

    _, _, uploads = app_server
    before = set(uploads.root.glob("tmp*"))
    r = httpx.post(app_server[0] + "gradio_api/upload", files={"files": ("..", b"MThd" + b"\0" * 200_000)}, timeout=60)
    assert r.status_code >= 400, r.text
    left = [p for p in uploads.root.glob("tmp*") if p not in before and p.is_file()]
    assert left, "the refused upload left no tmp file: nothing to test"
    for p in left:  # aged past the grace: what the next pass would find an hour later
        old = time.time() - uploads.tmp_grace - 1
        os.utime(p, (old, old))
    httpx.post(app_server[0] + "gradio_api/upload", files={"files": ("ok.mid", b"MThd")}, timeout=60)
    for _ in range(50):  # the pass runs once the response is sent: give it a moment on a busy machine
        if not [p for p in left if p.exists()]:
            break
        time.sleep(0.1)
    assert not [p for p in left if p.exists()], left
    assert not [p for p in uploads.root.glob("tmp*") if p.is_file() and time.time() - p.stat().st_mtime > uploads.tmp_grace]


def test_an_mcp_client_edits_a_song_passed_as_base64_with_every_editing_tool(app_server):
    """A real MCP client (streamable HTTP) sends the song as a base64 data URI, as assistants send files, to
    continue_midi, add_part, regenerate_part and infill; each answers with the edited MIDI."""
    import asyncio
    import base64

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    uri = "data:audio/midi;base64," + base64.b64encode(SONG.read_bytes()).decode()
    calls = {"continue_midi": {"bars": 1}, "add_part": {"part": "strings"}, "regenerate_part": {"part": "organ"},
             "infill": {"first_bar": 2, "last_bar": 2}}

    async def edit_all():
        async with streamable_http_client(app_server[0] + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                names = [t.name for t in (await session.list_tools()).tools]
                out = {}
                for tool, args in calls.items():
                    name = next(n for n in names if n.endswith(tool))
                    out[tool] = await session.call_tool(name, {"midi": uri, "seed": "3", **args})
                return out

    results = asyncio.run(asyncio.wait_for(edit_all(), 600))
    for tool, res in results.items():
        text = " ".join(getattr(c, "text", "") for c in res.content)
        assert not res.isError and ".mid" in text, (tool, text[:300])
