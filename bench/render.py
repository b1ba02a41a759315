"""MP3 preview render speed: seconds of audio made per second of rendering (FluidSynth + trim/normalize +
MP3 encoding, what the studio does per variant), and the piano-roll picture time.

    python -m bench.render [--files N] [--seconds S] [--no-generated]

Files: the first N openttd-openmsx songs (/usr/share/games/openttd/baseset/openmsx/*.mid), each cut to
its first S seconds' worth of bars (the studio renders pieces of 1-64 bars), plus, when an engine
checkpoint loads, one generated 16-bar piece.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

OPENMSX = "/usr/share/games/openttd/baseset/openmsx"


def pieces(n_files: int, seconds: float, generated: bool):
    from tokenizer import MidiError, load_midi

    for path in sorted(glob.glob(os.path.join(OPENMSX, "*.mid")))[:n_files]:
        try:
            score = load_midi(path)
        except MidiError as e:
            print(f"skip {Path(path).name}: {e}", file=sys.stderr)
            continue
        bar_seconds = score.bar_steps / 8 * 60.0 / score.bpm
        yield Path(path).name, score.first_bars(max(1, int(seconds / bar_seconds)))
    if generated:
        try:
            from model import GenerationRequest, get_engine

            eng = get_engine("transformer")
            req = GenerationRequest(groups=("piano", "bass", "guitar"), drums=True, bars=16, seed=1)
            yield "generated (transformer, 16 bars)", eng.generate(req)[0]
        except Exception as e:  # no checkpoint here: the bench still reports the real files
            print(f"no generated piece: {type(e).__name__}: {e}", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30.0, help="cut each file to about this long")
    ap.add_argument("--no-generated", action="store_true")
    args = ap.parse_args(argv)

    from render import RenderError, draw_pianoroll, render_mp3

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'piece':44s} {'notes':>6s} {'audio s':>8s} {'render s':>9s} {'x realtime':>10s} {'roll s':>7s}")
    tot_audio = tot_render = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        for i, (name, score) in enumerate(pieces(args.files, args.seconds, not args.no_generated)):
            try:
                r = render_mp3(score, Path(tmp) / f"{i}.mp3")
            except RenderError as e:
                print(f"{name}: {e}")
                return 1
            t0 = time.perf_counter()
            draw_pianoroll(score, Path(tmp) / f"{i}.png")
            roll = time.perf_counter() - t0
            tot_audio += r.seconds
            tot_render += r.render_seconds
            print(f"{name[:44]:44s} {len(score.notes):6d} {r.seconds:8.1f} {r.render_seconds:9.2f} "
                  f"{r.seconds / r.render_seconds:10.1f} {roll:7.2f}")
    if tot_render:
        print(f"overall: {tot_audio:.1f} s of audio in {tot_render:.2f} s = {tot_audio / tot_render:.1f}x real time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
