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

from render.audio import decode_audio
from tokenizer import load_midi

SLOTS = 8
OPENMSX = sorted(Path("/usr/share/games/openttd/baseset/openmsx").glob("*.mid"))


def call(client, *, engine="transformer", groups=("piano", "bass"), drums=True, bars=4, variants=2,
         temperature=1.0, top_p=0.95, top_k=0, seed="1234", bpm=120, style="none", midi=None, prompt_bars=4,
         noise_sd=0.75, alpha=0.5, reference="none", reference_midi=None):
    return client.predict(engine, list(groups), drums, bars, variants, temperature, top_p, top_k, seed, bpm, style,
                          handle_file(str(midi)) if midi else None, prompt_bars, noise_sd, alpha, reference,
                          handle_file(str(reference_midi)) if reference_midi else None, api_name="/generate")


def test_api_lists_generate(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert "/generate" in api["named_endpoints"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/generate"]["parameters"]]
    assert len(params) == 17


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
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(z.namelist())
        assert names == sorted([Path(s[i]).name for s in slots[:2] for i in (1, 2)])
        mido.MidiFile(file=io.BytesIO(z.read([n for n in names if n.endswith(".mid")][0])))


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
    "huge": (lambda: b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk" + b"\x00" * (5 * 1024 * 1024), "limit"),
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
    assert expected in msg and "Traceback" not in msg, msg
    # the server still answers
    ok = call(client, variants=1, bars=1, seed="5")
    assert ok[0] == "5" and Path(ok[5]).is_file()


@pytest.mark.parametrize("kwargs, expected", [
    ({"bars": 0}, "minimum"),
    ({"bars": 65}, "maximum"),
    ({"variants": 9}, "maximum"),
    ({"temperature": 5.0}, "maximum"),
    ({"bpm": 10}, "minimum"),
    ({"seed": "abc"}, "seed must be a whole number"),
    ({"seed": "-3"}, "seed must be a whole number"),
    ({"groups": ["kazoo"]}, "kazoo.*not in the list of choices"),
    ({"groups": [], "drums": False}, "at least one instrument group"),
    ({"engine": "nope"}, "nope.*not in the list of choices"),
    ({"style": "polka"}, "polka.*not in the list of choices"),
    ({"top_k": -1}, "minimum"),
])
def test_out_of_range_inputs_give_messages(client, kwargs, expected):
    with pytest.raises(AppError, match=expected):
        call(client, **{"variants": 1, "bars": 2, **kwargs})


def test_output_folders_stay_bounded(client, app_server):
    _, store = app_server
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
