"""Fairness on a shared Space, measured through HTTP against a server this benchmark starts: a short request's
latency alone and while a long edit runs, how fast an over-budget upload is refused, and how soon a cancelled
job frees the engine.

    python -m bench.fair [--song FILE.mid] [--runs 3]

1. a 1-bar /generate alone (idle latency, median of --runs);
2. the same while /add_part adds a part to every bar of --song (default: the longest openmsx song, whole) in
   another client: the short request's latency, and the edit's own wall time;
3. /regenerate_part on a dense 256-bar, 16-track, 20,000-note upload (over the budget): the time until it is
   refused;
4. a 32-bar x 4 /generate cancelled after 3 s: the time until a 1-bar request sent right after returns.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the server in this process starts as app.py starts it

import argparse
import glob
import json
import statistics
import tempfile
import threading
import time

from bench.page import start_server


def dense_song(notes: int = 20_000, bars: int = 64, tracks: int = 16):
    """A `bars`-bar upload with `notes` notes over `tracks` tracks (every pitched group and drums), seeded."""
    import numpy as np

    from tokenizer import NOTE_DTYPE, Score
    from tokenizer import vocab as V

    rng = np.random.default_rng(0)
    n = np.zeros(notes, NOTE_DTYPE)
    n["onset"] = np.sort(rng.integers(0, bars * V.STEPS_PER_BAR, notes))
    n["group"] = rng.integers(0, min(tracks, V.N_GROUPS), notes)
    n["pitch"] = rng.integers(40, 80, notes)
    n["duration"] = 4
    n["velocity"] = 4
    order = np.lexsort((n["pitch"], n["group"], n["onset"]))
    return Score(n[order], length=bars * V.STEPS_PER_BAR)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def short_request(client, seed: int) -> float:
    return timed(lambda: client.predict(groups=["piano"], drums=False, bars=1, variants=1, seed=str(seed),
                                        api_name="/generate"))


def longest_openmsx() -> str | None:
    from tokenizer import load_midi

    files = glob.glob("/usr/share/games/openttd/baseset/openmsx/*.mid")
    return max(files, key=lambda f: load_midi(f).n_bars, default=None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fair", description=__doc__.split("\n\n")[0])
    p.add_argument("--song", default=None, help="the song the long edit adds a part to (default: longest openmsx)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    from gradio_client import Client, handle_file

    from tokenizer import load_midi, write_midi

    with tempfile.TemporaryDirectory() as tmp:
        url, demo, _ = start_server(tmp)
        client = Client(url, verbose=False, download_files=os.path.join(tmp, "dl"))
        song_path = args.song or longest_openmsx()
        song = load_midi(song_path)
        song_file = write_midi(song, os.path.join(tmp, "song.mid"))
        dense_file = write_midi(dense_song(bars=256), os.path.join(tmp, "dense.mid"))
        short_request(client, 0)  # warm-up
        idle = [short_request(client, i) for i in range(1, args.runs + 1)]

        from tokenizer import vocab as V

        has = {V.GROUPS[int(g)] for g in set(song.notes["group"].tolist())}
        part = next(g for g in ("strings", "brass", "organ", "guitar", "piano", "bass") if g not in has)
        edit = {}

        def long_edit() -> None:
            c = Client(url, verbose=False, download_files=os.path.join(tmp, "dl2"))
            t = time.perf_counter()
            out = c.predict(midi=handle_file(str(song_file)), part=part, seed="3", api_name="/add_part")
            edit.update(seconds=time.perf_counter() - t, summary=f"added {part}: " + out[3].splitlines()[0])

        th = threading.Thread(target=long_edit)
        th.start()
        time.sleep(3.0)  # the edit is decoding
        busy = [short_request(client, 10 + i) for i in range(args.runs) if th.is_alive()]
        th.join()

        t = time.perf_counter()
        try:
            client.predict(midi=handle_file(str(dense_file)), part="piano", api_name="/regenerate_part")
            refused = None
        except Exception as e:  # noqa: BLE001 - the refusal is the figure
            refused = (time.perf_counter() - t, str(e)[:160])

        job = client.submit(groups=["piano", "guitar", "bass"], bars=32, variants=4, seed="9", api_name="/generate")
        time.sleep(3.0)
        job.cancel()
        freed = short_request(client, 99)
        demo.close()

    rows = {
        "idle 1-bar /generate s (median)": round(statistics.median(idle), 2),
        "1-bar /generate during the long edit s (median)": round(statistics.median(busy), 2) if busy else None,
        "ratio busy / idle": round(statistics.median(busy) / statistics.median(idle), 2) if busy else None,
        "long edit s": round(edit.get("seconds", float("nan")), 1),
        "long edit": f"{os.path.basename(song_path)}: {song.bars} bars, {len(song.notes)} notes; {edit.get('summary')}",
        "dense upload refused after s": round(refused[0], 2) if refused else None,
        "refusal": refused[1] if refused else "not refused",
        "1-bar request after a cancel s": round(freed, 2),
    }
    for k, v in rows.items():
        print(f"{k:<50} {v}")
    print(json.dumps({**rows, "idle": idle, "busy": busy}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
