"""Whole-song edits through HTTP, against a server this benchmark starts in its own process (the app's own
runner: its short and long inference lanes), as a musician's song arrives: the whole file, no "first N bars".

    python -m bench.edit [--song FILE.mid] [--part strings] [--bars 4] [--infill FIRST-LAST] [--dense]

Rows, each with its wall time through HTTP, the generation and rendering times and tokens/s the summary reports,
and the checks a musician cares about:
- /add_part of --part over the whole song: the share of the song's notes that come back exactly, notes outside
  the new part that are not the song's (should be 0), the share of the song's bars where the new part plays, and
  whether it repeats where the song repeats (`tokenizer.harmony.repeats_with_song`);
- /continue by --bars: the song kept, the new notes' bars after the song's end;
- /infill of --infill (default: 4 bars in the middle): every note outside those bars kept note for note;
- with --dense, the same three edits (and /regenerate_part) on a dense 64-bar, 16-track, 20,000-note upload.
With --ahead N, instead: the /add_part of each song (with --dense, the dense upload's continue and infill, and
the add_part of each --song given; --regenerate adds its piano regenerated) N times with the notes it keeps
rendered while the model writes (`studio.pipeline.render_ahead`) and N times without, interleaved, in this process through the Studio and its inference lanes (no HTTP), side by side.
The default songs: the longest level music of Freedoom (D_ROMERO of freedoom2.wad, BSD-3: 227 bars of 4/4, 6,879
notes, 7 parts, 8.7 minutes), read from the Debian package's WAD, and POP909 song 023 (MIT; 4.3 minutes, 1,655
notes, piano; 258 bars of 1/4 as the file is annotated) where ../shared/data/pop909 holds it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np

DEFAULT_WAD, DEFAULT_LUMP = "/usr/share/games/doom/freedoom2.wad", "D_ROMERO"
DEFAULT_POP909 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                              "pop909", "023", "023.mid")
FIELDS = ("onset", "group", "pitch", "duration", "velocity")


def default_song(tmp: str) -> str:
    """D_ROMERO of Freedoom as a MIDI file in `tmp`."""
    from training.corpus.doom import lump_bytes, lump_to_midi

    path = os.path.join(tmp, DEFAULT_LUMP.lower() + ".mid")
    with open(path, "wb") as f:
        f.write(lump_to_midi(lump_bytes(DEFAULT_WAD, DEFAULT_LUMP)))
    return path


def note_keys(notes: np.ndarray) -> collections.Counter:
    return collections.Counter(zip(*(notes[f].tolist() for f in FIELDS)))


def kept_share(song: np.ndarray, result: np.ndarray) -> tuple[float, int]:
    """(share of `song`'s notes found in `result`, notes of `result` not in `song`)."""
    a, b = note_keys(song), note_keys(result)
    same = sum((a & b).values())
    return same / max(1, sum(a.values())), sum((b - a).values())


def checks(kind: str, song, result, part: str | None, infill: tuple[int, int] | None) -> dict:
    """What the edit kept and made, from the uploaded song and the returned MIDI (both read by load_midi)."""
    from model.edits import EDITS
    from tokenizer import vocab as V
    from tokenizer.harmony import part_fit

    bar = song.bar_steps
    edit = EDITS[kind]
    if edit.new_part:
        g = V.GROUPS.index(part)
        old, new = song.notes[song.notes["group"] != g], result.notes[result.notes["group"] == g]
        share, extra = kept_share(old, result.notes[result.notes["group"] != g])
        bars = len(np.unique(new["onset"] // bar))
        fit = part_fit(new, old, bar, song.bars)["repeats_with_song"]
        return {"kept": round(share, 4), "extra": extra, "new notes": len(new),
                "part plays in bars": round(bars / song.bars, 3),
                "repeats with the song": None if fit is None else round(fit, 3)}
    if edit.extends:
        end = song.span_steps
        share, extra = kept_share(song.notes, result.notes[result.notes["onset"] < end])
        new = result.notes[result.notes["onset"] >= end]
        return {"kept": round(share, 4), "extra": extra, "new notes": len(new),
                "new bars": len(np.unique((new["onset"] - end) // bar)), "first new onset bar": (
                    int(new["onset"].min()) // bar + 1 if len(new) else None), "song bars": song.bars}
    lo, hi = (infill[0] - 1) * bar, infill[1] * bar
    outside = lambda n: n[(n["onset"] < lo) | (n["onset"] >= hi)]  # noqa: E731
    share, extra = kept_share(outside(song.notes), outside(result.notes))
    inside = result.notes[(result.notes["onset"] >= lo) & (result.notes["onset"] < hi)]
    return {"kept outside": round(share, 4), "extra outside": extra, "new notes": len(inside)}


def run_edit(client, kind: str, midi: str, fields: dict) -> dict:
    """One edit through HTTP: its times from the summary, and the returned MIDI's path."""
    from gradio_client import handle_file

    from bench.page import parse

    t = time.perf_counter()
    out = client.predict(midi=handle_file(midi), seed="5", **fields, api_name=f"/{kind}")
    wall = time.perf_counter() - t
    gen, tokens, render = parse(out[3])
    return {"wall s": round(wall, 1), "generation s": round(gen, 1), "tokens": tokens,
            "tokens/s": round(tokens / max(gen, 1e-9), 1), "render s": round(render, 1), "midi": out[0],
            "summary": out[3].splitlines()[0][:120]}


def edit_rows(client, name: str, path: str, part: str | None, bars: int, infill: tuple[int, int] | None,
              regenerate: str | None = None) -> list[dict]:
    from model.edits import AddPart, Continue, Infill, RegeneratePart
    from tokenizer import load_midi
    from tokenizer import vocab as V

    song = load_midi(path)
    if infill is None:
        mid = song.bars // 2
        infill = (max(1, mid - 1), min(song.bars, mid + 2))
    jobs = [(Continue.name, {"bars": bars}, None), (Infill.name, {"first_bar": infill[0], "last_bar": infill[1]}, None)]
    has = {V.GROUPS[g] for g in song.groups}
    part = part or next((g for g in ("strings", "brass", "organ", "lead", "reed") if g not in has), None)
    if part and part not in has:
        jobs.insert(0, (AddPart.name, {"part": part}, part))
    if regenerate:
        jobs.append((RegeneratePart.name, {"part": regenerate}, regenerate))
    rows = []
    for kind, fields, p in jobs:
        print(f"{name}: {kind} {fields} ...", flush=True)
        row = {"song": name, "edit": kind, **{k: v for k, v in fields.items()}}
        try:
            res = run_edit(client, kind, path, fields)
        except Exception as e:  # noqa: BLE001 - a refusal is a figure too
            rows.append({**row, "refused": str(e)[:200]})
            continue
        result = load_midi(res.pop("midi"))
        rows.append({**row, **res, **checks(kind, song, result, p, infill)})
    return rows


def ahead_rows(name: str, path: str, jobs: list[tuple[str, dict]], rounds: int, tmp: str) -> list[dict]:
    """Each edit (kind, fields) of the song at `path`, with and without the notes it keeps rendered ahead,
    interleaved `rounds` times, in this process through a Studio (the app's runner and lanes)."""
    from contextlib import nullcontext

    import studio
    from studio import pipeline
    from studio.runner import LocalRunner

    st = studio.Studio(studio.OutputStore(os.path.join(tmp, "ahead")), runner=LocalRunner())
    st.generate({"groups": ["piano"], "drums": False, "bars": 1, "variants": 1, "seed": "1"})  # warm-up
    ahead, rows = pipeline.render_ahead, []
    try:
        for _ in range(rounds):
            for kind, fields in jobs:
                for on in (True, False):
                    pipeline.render_ahead = ahead if on else (lambda request, cost: nullcontext(None))
                    print(f"{name}: {kind} {fields}, rendered ahead: {on} ...", flush=True)
                    t = time.perf_counter()
                    res = st.edit_upload(kind, {"midi": path, "seed": "5", **fields})
                    rows.append({"song": name, "edit": kind, **fields, "rendered ahead": on,
                                 "wall s": round(time.perf_counter() - t, 2),
                                 "generation s": round(res.stats["seconds"], 2),
                                 "render s": round(res.render_seconds, 2),
                                 "stems": [s.group for s in res.variants[0].stems]})
    finally:
        pipeline.render_ahead = ahead
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.edit", description=__doc__.split("\n\n")[0])
    p.add_argument("--song", action="append", default=None,
                   help=f"a MIDI file, repeatable (default: {DEFAULT_LUMP} of {DEFAULT_WAD} and POP909 023)")
    p.add_argument("--part", default=None, help="the part /add_part adds (default: the first of strings, brass, "
                                                "organ, lead, reed the song lacks)")
    p.add_argument("--bars", type=int, default=4, help="bars /continue adds")
    p.add_argument("--infill", default=None, help="FIRST-LAST bars /infill writes anew (default: 4 in the middle)")
    p.add_argument("--dense", action="store_true", help="also edit a dense 64-bar, 16-track, 20,000-note upload")
    p.add_argument("--ahead", type=int, default=0, metavar="N",
                   help="instead: each edit in-process N times with the notes it keeps rendered ahead and N times "
                        "without, interleaved (/add_part of each song; with --dense, the dense upload's continue "
                        "and infill)")
    p.add_argument("--regenerate", action="store_true", help="with --ahead and --dense: also the dense upload's "
                                                             "piano regenerated")
    args = p.parse_args(argv)
    if args.ahead:
        return main_ahead(args)
    from gradio_client import Client

    from bench.fair import dense_song
    from bench.page import server_process
    from tokenizer import load_midi, write_midi

    infill = tuple(int(x) for x in args.infill.split("-")) if args.infill else None
    with tempfile.TemporaryDirectory() as tmp, server_process("app") as url:
        client = Client(url, verbose=False, download_files=os.path.join(tmp, "dl"))
        client.predict(groups=["piano"], drums=False, bars=1, variants=1, seed="1", api_name="/generate")  # warm-up
        rows = []
        songs = args.song or [default_song(tmp)] + ([DEFAULT_POP909] if os.path.isfile(DEFAULT_POP909) else [])
        for song in songs:
            s = load_midi(song)
            print(f"{os.path.basename(song)}: {s.bars} bars, {len(s.notes):,} notes, {len(s.groups)} parts, "
                  f"{s.bpm:.0f} BPM, {s.seconds() / 60:.1f} minutes", flush=True)
            rows += edit_rows(client, os.path.basename(song), song, args.part, args.bars, infill)
        if args.dense:
            dense = write_midi(dense_song(), os.path.join(tmp, "dense.mid"))
            rows += edit_rows(client, "dense 64 bars, 20,000 notes", str(dense), args.part, 2, (30, 31),
                              regenerate="piano")
    for r in rows:
        print(" | ".join(f"{k}: {v}" for k, v in r.items()))
    print(json.dumps(rows))
    return 0


def main_ahead(args) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as app.py sets it before torch loads (studio/worker.py)
    from bench.fair import dense_song
    from model.edits import AddPart, Continue, Infill, RegeneratePart
    from tokenizer import load_midi, write_midi
    from tokenizer import vocab as V

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for song in args.song or ([] if args.dense else [default_song(tmp)]):
            has = {V.GROUPS[g] for g in load_midi(song).groups}
            part = args.part or next(g for g in ("strings", "brass", "organ", "lead", "reed") if g not in has)
            rows += ahead_rows(os.path.basename(song), song, [(AddPart.name, {"part": part})], args.ahead, tmp)
        if args.dense:
            dense = str(write_midi(dense_song(), os.path.join(tmp, "dense.mid")))
            rows += ahead_rows("dense 64 bars, 20,000 notes", dense, [
                (Continue.name, {"bars": 2}), (Infill.name, {"first_bar": 30, "last_bar": 31}),
                *([(RegeneratePart.name, {"part": "piano"})] if args.regenerate else [])], args.ahead, tmp)
    for r in rows:
        print(" | ".join(f"{k}: {v}" for k, v in r.items()))
    for key in sorted({(r["song"], r["edit"]) for r in rows}):
        for on in (True, False):
            mine = [r for r in rows if (r["song"], r["edit"]) == key and r["rendered ahead"] == on]
            wall, render = (sum(r[k] for r in mine) / len(mine) for k in ("wall s", "render s"))
            print(f"{key[0]}, {key[1]}, rendered ahead: {on}: wall {wall:.2f} s, generation "
                  f"{sum(r['generation s'] for r in mine) / len(mine):.2f} s, rendering {render:.2f} s "
                  f"({render / wall:.0%} of the wall)")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
