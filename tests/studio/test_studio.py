"""The studio without the page: value conversion, the one-place validation, the disk caps, a missing
soundfont, progress and stop."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import studio
from model.request import LABELS, GenerationRequest, RequestError
from render import audio

OPENMSX = sorted(Path("/usr/share/games/openttd/baseset/openmsx").glob("*.mid"))
PAGE = dict(engine_name="transformer", groups=["piano"], drums=True, bars=2, variants=1, temperature=1.0,
            top_p=0.95, top_k=0, seed="3", bpm=120)


def build(**kwargs):
    return studio.build_request(**{**PAGE, **kwargs})


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
    _, req, _ = build(bars=4.0, variants="2", top_k=5.0, seed=9.0, bpm="100")
    assert (req.bars, req.variants, req.top_k, req.seed, req.bpm) == (4, 2, 5, 9, 100.0)
    assert all(type(v) is int for v in (req.bars, req.variants, req.top_k, req.seed))
    assert studio.to_number(2.5) == 2.5 and studio.to_number("abc") == "abc"


# ---- validation: one place, messages name the field as the page labels it ----------------------
@pytest.mark.parametrize("kwargs, message", [
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
    (dict(engine_name="nope"), "Engine: unknown engine 'nope'"),
])
def test_bad_values_name_the_field(checkpoint_root, kwargs, message):
    with pytest.raises(RequestError) as e:
        build(**kwargs)
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
    assert not hasattr(studio, "as_int") and not hasattr(studio, "as_float")


@pytest.mark.parametrize("kwargs, message", [
    (dict(noise_sd=3), "Variation (latent noise sd) must be 0.0 to 2.0 (got 3)"),
    (dict(noise_sd="lots"), "Variation (latent noise sd) must be a number from 0.0 to 2.0 (got 'lots')"),
    (dict(alpha=1.5), "Pull towards the reference (alpha) must be 0.0 to 1.0 (got 1.5)"),
])
def test_engine_options_are_checked_by_the_request(checkpoint_root, kwargs, message):
    try:
        studio.get_engine("vae-nn")
    except FileNotFoundError:
        pytest.skip("no vae-nn checkpoint")
    with pytest.raises(RequestError) as e:
        build(engine_name="vae-nn", groups=["piano", "bass"], **kwargs)
    assert message in str(e.value)


def test_engine_options_are_dropped_for_engines_without_them(checkpoint_root):
    _, req, _ = build(noise_sd=99, alpha="x", reference="whatever")
    assert req.extra == {}


def test_prompt_bars_and_upload_messages(checkpoint_root, tmp_path):
    if not OPENMSX:
        pytest.skip("openttd-openmsx MIDI files are not installed")
    with pytest.raises(RequestError, match=r"^Use the first N bars must be a whole number from 1 to 64 \(got 0\)"):
        build(midi=str(OPENMSX[0]), prompt_bars=0)
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"not midi")
    with pytest.raises(RequestError, match="^MIDI file: "):
        build(midi={"path": str(junk), "meta": {"_type": "gradio.FileData"}})
    with pytest.raises(RequestError, match="^MIDI file must be an uploaded .mid file"):
        build(midi=123)


def test_only_files_in_the_upload_cache_are_read(checkpoint_root, tmp_path):
    if not OPENMSX:
        pytest.skip("openttd-openmsx MIDI files are not installed")
    uploads = studio.UploadCache(tmp_path / "cache")
    with pytest.raises(RequestError, match="only a file uploaded to this page"):
        studio.generate("transformer", ["piano"], True, 2, 1, 1.0, 0.95, 0, "3", 120, midi=str(OPENMSX[0]),
                        store=studio.OutputStore(tmp_path / "out"), uploads=uploads)


# ---- disk: count, age and bytes -------------------------------------------------------------------
def _fill(folder: Path, n_bytes: int, age: float = 0.0) -> Path:
    folder.mkdir(parents=True)
    (folder / "x.bin").write_bytes(b"0" * n_bytes)
    t = time.time() - age
    for p in (folder / "x.bin", folder):
        os.utime(p, (t, t))
    return folder


def test_output_store_prunes_by_count_age_and_bytes(tmp_path):
    store = studio.OutputStore(tmp_path, keep=3, max_age=3600, max_bytes=10**9)
    made = []
    for _ in range(6):
        with store.request_dir() as d:
            (d / "x.mid").write_bytes(b"0" * 1000)
            made.append(d)
        time.sleep(0.02)
    assert sorted(tmp_path.iterdir()) == sorted(made[-3:])  # by count
    t = time.time() - 7200
    os.utime(made[-1], (t, t)), os.utime(made[-1] / "x.mid", (t, t))
    store.prune()
    assert not made[-1].exists()  # by age
    store = studio.OutputStore(tmp_path / "b", keep=100, max_age=3600, max_bytes=2500)
    dirs = [_fill(tmp_path / "b" / f"req-{i}", 1000, age=100 - i) for i in range(5)]
    assert store.disk_bytes() == 5000
    store.prune()
    assert [d.exists() for d in dirs] == [False, False, False, True, True]  # oldest first, by bytes
    assert store.disk_bytes() <= 2500


def test_a_folder_in_use_and_the_newest_are_never_pruned(tmp_path):
    store = studio.OutputStore(tmp_path, keep=1, max_age=3600, max_bytes=500)
    older = _fill(tmp_path / "req-older", 10, age=60)
    with store.request_dir() as d:
        (d / "big.mp3").write_bytes(b"0" * 2000)  # alone over the byte cap
        newer = _fill(tmp_path / "req-newer", 10)
        store.prune()
        assert d.exists() and (d / "big.mp3").exists()  # held while the request writes it
        assert newer.exists() and not older.exists()  # the newest is kept too
    store.prune()
    assert not d.exists() and newer.exists() and store.disk_bytes() <= 500
    with store.request_dir() as big:
        (big / "big.mp3").write_bytes(b"0" * 2000)
    assert (big / "big.mp3").exists()  # a request bigger than the cap still gets its files


def test_upload_cache_prunes_oldest_first_beyond_its_byte_cap(tmp_path):
    cache = tmp_path / "gradio"
    uploads = studio.UploadCache(cache, keep=100, max_age=3600, max_bytes=3000)
    files = [_fill(cache / (f"{i:x}" * 64)[:64], 1000, age=100 - i) for i in range(6)]
    ours = _fill(cache / "midi-bangers" / "req-1", 5000)  # the output store's: not an upload
    other = _fill(cache / "deep_links", 5000, age=99999)
    assert uploads.disk_bytes() == 6000
    with uploads.hold(files[0] / "x.bin"):  # a request is reading the oldest upload
        assert uploads.prune() == 3
    assert [f.exists() for f in files] == [True, False, False, False, True, True]
    assert ours.exists() and other.exists()
    _fill(cache / ("9" * 64), 1000)  # one more upload: now the oldest goes
    assert uploads.prune() == 1 and not files[0].exists() and uploads.disk_bytes() == 3000
    assert uploads.top_folder(files[4] / "x.bin") == files[4] and uploads.top_folder(tmp_path / "elsewhere") is None


def test_upload_cache_prunes_by_age_and_count(tmp_path):
    uploads = studio.UploadCache(tmp_path, keep=2, max_age=60, max_bytes=10**9)
    files = [_fill(tmp_path / (f"{i:x}" * 40)[:40], 10, age=10 - i) for i in range(4)]
    old = _fill(tmp_path / ("f" * 40), 10, age=120)
    uploads.prune()
    assert [f.exists() for f in files] == [False, False, True, True] and not old.exists()


def test_janitor_sweeps_on_a_timer_until_the_server_stops(tmp_path):
    store = studio.OutputStore(tmp_path, keep=1, max_age=3600, max_bytes=10**9)
    running = [True]
    janitor = studio.Janitor(store, every=0.05)
    thread = janitor.start(running=lambda: running[0])
    _fill(tmp_path / "req-a", 10, age=10), _fill(tmp_path / "req-b", 10)
    deadline = time.time() + 5
    while (tmp_path / "req-a").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not (tmp_path / "req-a").exists() and (tmp_path / "req-b").exists()
    running[0] = False
    thread.join(timeout=5)
    assert not thread.is_alive()


# ---- generation ----------------------------------------------------------------------------------
def test_missing_soundfont_still_delivers_midi(checkpoint_root, tmp_path, monkeypatch):
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    res = studio.generate("transformer", ["piano"], True, 2, 2, 1.0, 0.95, 0, "3", 120,
                          store=studio.OutputStore(tmp_path / "out"))
    assert len(res.variants) == 2
    for v in res.variants:
        assert v.midi.is_file() and v.png.is_file() and v.mp3 is None
        assert v.preview_error.startswith("no preview: soundfont")
    assert res.warnings and "no preview" in res.summary
    assert res.zip_path.is_file()


def test_progress_and_stop(checkpoint_root, tmp_path):
    seen = []
    studio.generate("transformer", ["piano"], False, 2, 1, 1.0, 0.95, 0, "3", 120,
                    progress=lambda f, what: seen.append((f, what)), store=studio.OutputStore(tmp_path))
    fracs = [f for f, _ in seen]
    assert fracs[0] == 0.0 and fracs[-1] == 1.0 and fracs == sorted(fracs)
    calls = []

    def stop_after_first():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(studio.Cancelled):
        studio.generate("transformer", ["piano"], False, 8, 1, 1.0, 0.95, 0, "3", 120,
                        store=studio.OutputStore(tmp_path), cancelled=stop_after_first)
    # the engine is free again after a stop
    assert studio.generate("transformer", ["piano"], False, 1, 1, 1.0, 0.95, 0, "4", 120,
                           store=studio.OutputStore(tmp_path)).variants


def test_request_an_engine_cannot_serve_is_a_clear_message(tmp_path):
    with pytest.raises(RequestError, match="^Instrument groups: choose at least one"):
        studio.generate("lstm", [], True, 2, 1, 1.0, 0.95, 0, "3", 110, "none", None, 4,
                        store=studio.OutputStore(tmp_path))


def test_controls_an_engine_lacks_are_reset_not_reported():
    eng, req, _ = studio.build_request("gru", ["piano"], True, 2, 1, 1.0, 0.95, 0, "3", 110, "rock", None, 4)
    assert "drums" not in eng.controls and req.drums is False and req.style is None


def test_summary_of_a_continuation_counts_prompt_and_new_bars_at_the_uploads_tempo(checkpoint_root, tmp_path):
    """A 3/4 upload at 153 BPM used to be summarized as '8 bars at 120 BPM' while the variant held 12."""
    import mido

    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr += [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(153)), mido.MetaMessage("time_signature", numerator=3)]
    for i in range(12):  # 4 bars of 3/4, a note a beat
        tr += [mido.Message("note_on", note=60 + i % 5, velocity=90, time=0),
               mido.Message("note_off", note=60 + i % 5, velocity=0, time=480)]
    mf.tracks.append(tr)
    path = tmp_path / "waltz.mid"
    mf.save(path)
    res = studio.generate("transformer", ["piano"], False, 2, 1, 1.0, 0.95, 0, "3", 120, midi=str(path),
                          prompt_bars=4, store=studio.OutputStore(tmp_path / "out"))
    assert "4 prompt bars + 2 new bars at 153 BPM in 3/4" in res.summary, res.summary
    assert "- variant 1: 6 bars" in res.summary


def test_summary_counts_the_engines_own_unit(checkpoint_root, tmp_path):
    res = studio.generate("multi-rnn", ["piano"], False, 1, 1, 1.0, 0.95, 0, "3", 120,
                          store=studio.OutputStore(tmp_path / "out"))
    assert "frames/s" in res.summary and "tokens/s" not in res.summary
