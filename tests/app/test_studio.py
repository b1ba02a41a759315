"""The studio logic without the page: seeds, input checks, output folders, a missing soundfont."""

from __future__ import annotations

import os
import time

import pytest

from render import audio, studio


@pytest.mark.parametrize("value, seed", [("42", 42), (" 7 ", 7), (42, 42), (42.0, 42), ("12.0", 12),
                                         (2**32 - 1, 2**32 - 1)])
def test_parse_seed(value, seed):
    assert studio.parse_seed(value) == (seed, False)


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", 1.5, 2**32, True, "9" * 40])
def test_parse_seed_rejects(value):
    with pytest.raises(studio.StudioError, match="seed"):
        studio.parse_seed(value)


def test_blank_seed_is_random():
    seeds = {studio.parse_seed(v)[0] for v in ("", None, "  ", "", "")}
    assert all(0 <= s < 2**32 for s in seeds) and len(seeds) >= 4
    assert studio.parse_seed("")[1] is True


def test_output_store_prunes_old_folders(tmp_path):
    store = studio.OutputStore(tmp_path, keep=3, max_age=3600)
    made = []
    for _ in range(10):
        d = store.new_dir()
        (d / "x.mid").write_bytes(b"0" * 1000)
        made.append(d)
        time.sleep(0.01)
    store.prune()
    left = sorted(p for p in tmp_path.iterdir())
    assert len(left) == 3 and set(left) == set(made[-3:])
    old = made[-1]
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    store.prune()
    assert not old.exists()
    assert store.disk_bytes() <= 2 * 1000


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


def test_request_an_engine_cannot_serve_is_a_clear_message():
    from render import studio

    with pytest.raises(studio.StudioError, match="instrument group"):
        studio.generate("lstm", [], True, 2, 1, 1.0, 0.95, 0, "3", 110, "none", None, 4,
                        store=studio.OutputStore())


def test_controls_an_engine_lacks_are_reset_not_reported():
    from render import studio

    eng, req, _ = studio.build_request("gru", ["piano"], True, 2, 1, 1.0, 0.95, 0, "3", 110, "rock", None, 4)
    assert "drums" not in eng.controls and req.drums is False and req.style is None
