"""Tokenizer throughput: our encoder (load_midi + encode) against miditok's REMI, same files, same run.

    python -m bench.tokenize [--files N] [--repeats R] [--midi-dir DIR]

Files: the openttd-openmsx songs (/usr/share/games/openttd/baseset/openmsx/*.mid), plus the MIDI
files of a corpus at data/corpus if one exists (or --midi-dir).  Every file is read into memory
once; both tokenizers then start from the same bytes (parse + tokenize is what is timed, no disk).
Each tokenizer runs over the whole set R times; the best pass counts.  notes/s counts the notes in
the MIDI files (as symusic parses them), the same figure for both.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import platform
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

OPENMSX = "/usr/share/games/openttd/baseset/openmsx"
CORPUS = Path("data/corpus")


def find_files(midi_dir: str | None, limit: int | None) -> list[str]:
    files = sorted(glob.glob(os.path.join(OPENMSX, "*.mid")))
    extra = Path(midi_dir) if midi_dir else CORPUS
    if extra.is_dir():
        files += sorted(str(p) for p in extra.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    return files[:limit] if limit else files


def best_time(fn, blobs, repeats: int) -> tuple[float, int]:
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = sum(fn(b) for b in blobs)
        best = min(best, time.perf_counter() - t0)
    return best, tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tokenize", description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=None, help="use at most N files")
    p.add_argument("--repeats", type=int, default=5, help="passes per tokenizer; the best counts")
    p.add_argument("--midi-dir", default=None, help=f"extra MIDI folder (default: {CORPUS} if present)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import miditok
    from symusic import Score as SymScore

    from tokenizer import MidiError, encode, load_midi

    files = find_files(args.midi_dir, args.files)
    blobs, n_notes, skipped = [], 0, 0
    for f in files:
        data = Path(f).read_bytes()
        try:
            load_midi(data)
            sym = SymScore.from_midi(data)
        except (MidiError, RuntimeError, ValueError) as e:
            log.warning("skipping %s: %s", f, e)
            skipped += 1
            continue
        blobs.append(data)
        n_notes += sum(len(t.notes) for t in sym.tracks)
    if not blobs:
        print("no MIDI files found (install Debian openttd-openmsx or pass --midi-dir)", file=sys.stderr)
        return 2

    remi = miditok.REMI(miditok.TokenizerConfig())

    def ours(data: bytes) -> int:
        return len(encode(load_midi(data)))

    def remi_encode(data: bytes) -> int:
        seqs = remi.encode(SymScore.from_midi(data))
        seqs = seqs if isinstance(seqs, list) else [seqs]
        return sum(len(s.ids) for s in seqs)

    ours(blobs[0]), remi_encode(blobs[0])  # warm up (imports, caches)
    rows = []
    for name, fn in (("ours (load_midi+encode)", ours), ("miditok REMI (default)", remi_encode)):
        secs, tokens = best_time(fn, blobs, args.repeats)
        rows.append((name, secs, len(blobs) / secs, n_notes / secs, tokens))

    print(f"{len(blobs)} files ({skipped} skipped), {n_notes} notes, best of {args.repeats} passes; "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"{'tokenizer':<26}{'seconds':>9}{'files/s':>10}{'notes/s':>12}{'tokens':>10}")
    for name, secs, fps, nps, tokens in rows:
        print(f"{name:<26}{secs:>9.4f}{fps:>10.1f}{nps:>12.0f}{tokens:>10}")
    print(f"speed ratio ours / REMI: {rows[0][2] / rows[1][2]:.2f}x "
          f"(tokens: {rows[0][4] / rows[1][4]:.2f}x as many)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
