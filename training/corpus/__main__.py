"""Build the offline training corpus (or add MIDI folders to it), resumable and cached per item.

    python -m training.corpus build --out data/corpus [--midi-dir DIR ...] [--limit N] [--workers N]
                                    [--sources openmsx,freedoom,pop909,classical,abc] [--pop909 DIR]
                                    [--no-default] [--quiet]
    python -m training.corpus merge --out data/corpus-mix data/corpus-real data/corpus-indomain

The command line takes every package source by default, POP909 from ../shared/data/pop909 beside the
repository where that folder exists (a source this machine lacks is left out, and the figures say so).
Prints the main figures as JSON; exits with status 2 and one line on stderr when a --midi-dir or a
--pop909 folder is missing, a --midi-dir holds no MIDI file, a --sources name is unknown, or the build
ends with no pieces.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .build import build
from .common import CorpusError
from .merge import merge
from .sources import ABC_DIRS, PACKAGE_SOURCES

PROG = "python -m training.corpus"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POP909 = ROOT.parent / "shared" / "data" / "pop909"


def _positive_int(s: str) -> int:
    n = int(s)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or resume the corpus")
    b.add_argument("--out", required=True, help="the corpus folder (its cache/ makes a re-run resume)")
    b.add_argument("--midi-dir", action="append", default=[], metavar="DIR",
                   help="a folder of MIDI files, searched recursively (repeatable)")
    b.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help=f"quick builds: at most N items in all (an item is an ABC tune, a score file or a MIDI "
                        f"file), taken in turn from each source: openmsx, classical, each of the {len(ABC_DIRS)} "
                        f"ABC collections, each --midi-dir; an ABC tune gives 1-3 pieces")
    b.add_argument("--workers", type=_positive_int, default=None, metavar="N", help="processes (default: one per core)")
    b.add_argument("--sources", default=",".join(PACKAGE_SOURCES), metavar="LIST",
                   help=f"the package sources to take, comma-separated (default: all of {','.join(PACKAGE_SOURCES)})")
    b.add_argument("--pop909", default=None, metavar="DIR",
                   help=f"the POP909 folder (NNN/NNN.mid, chord_midi.txt, key_audio.txt); default {DEFAULT_POP909} "
                        f"where it exists, else POP909 is left out")
    b.add_argument("--no-default", action="store_true", help="only the --midi-dir folders")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    m = sub.add_parser("merge", help="merge built corpus folders into one (splits concatenated in order)")
    m.add_argument("--out", required=True, help="the merged corpus folder")
    m.add_argument("inputs", nargs="+", metavar="DIR", help="built corpus folders")
    args = ap.parse_args(argv)
    if args.cmd == "merge":
        try:
            stats = merge(args.out, args.inputs)
        except CorpusError as e:
            return _error(str(e))
        print(json.dumps({k: stats[k] for k in ("merged_from", "pieces", "tokens", "splits")}, indent=1))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [n.strip() for n in args.sources.split(",") if n.strip()]
    if args.pop909 is not None and not Path(args.pop909).is_dir():
        return _error(f"POP909 folder {args.pop909} does not exist: give --pop909 the folder that holds the song "
                      f"folders (001/001.mid, ...), or leave pop909 out of --sources")
    pop909 = args.pop909 if args.pop909 is not None else (str(DEFAULT_POP909) if DEFAULT_POP909.is_dir() else None)
    try:
        stats = build(args.out, args.midi_dir, args.limit, args.workers, default=not args.no_default,
                      progress=not args.quiet, sources=names, pop909=pop909)
    except CorpusError as e:
        return _error(str(e))
    if stats["pieces"] == 0:
        return _error(f"the build in {args.out} ended with 0 pieces ({stats['items']} items, "
                      f"{stats['skipped_total']} skipped): see why in {Path(args.out) / 'report.md'}")
    summary = {k: stats[k] for k in ("pieces", "tokens", "real", "drums_share", "styles", "skipped_total",
                                     "left_out", "build_seconds")}
    summary["per_source"] = {src: {k: c.get(k, 0) for k in ("pieces", "segments", "notes", "tokens")}
                             for src, c in stats["per_source"].items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
