"""studio.stores: output folders and uploads bounded in count, age and bytes; held folders and the newest are
never pruned; the Janitor sweeps on a timer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import studio
from model.request import RequestError


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


def test_only_a_file_in_the_upload_cache_is_held_as_an_upload(tmp_path):
    uploads = studio.UploadCache(tmp_path / "cache", keep=1, max_age=3600, max_bytes=10**9)
    mine = _fill(tmp_path / "cache" / ("a" * 40), 10, age=60)
    _fill(tmp_path / "cache" / ("b" * 40), 10)
    with uploads.hold_upload(mine / "x.bin", "prompt"):
        uploads.prune()
        assert mine.exists()  # held while it is read
    with pytest.raises(RequestError, match="^MIDI file: only a file uploaded to this page can be used"):
        uploads.hold_upload(tmp_path / "elsewhere.mid", "prompt")


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
