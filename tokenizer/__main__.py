"""Command line: `python -m tokenizer {encode,decode,roundtrip,vocab}`.

    python -m tokenizer encode IN.mid [--describe]   tokens as JSON (names with --describe)
    python -m tokenizer decode TOKENS.json OUT.mid   a JSON list of ints -> MIDI
    python -m tokenizer roundtrip IN.mid OUT.mid     one JSON line: notes in/out, equal or not
    python -m tokenizer vocab                        the vocabulary layout

Bad input exits with status 2 and one line on stderr (no traceback); a written file that does not read
back (a bug, never bad input) raises RoundTripError.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import vocab as V
from .codec import decode, encode
from .score import MidiError, load_midi, write_midi


class UsageError(Exception):
    """Bad input from the command line; the message is printed as one line."""


def _read_tokens(path: str) -> list[int]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a UTF-8 text file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in data):
        raise UsageError(f"{path} must hold a JSON list of integer token ids")
    bad = [t for t in data if not 0 <= t < V.VOCAB_SIZE]
    if bad:
        raise UsageError(f"token {bad[0]} is outside the vocabulary (0..{V.VOCAB_SIZE - 1})")
    return data


def _counts(notes: np.ndarray) -> tuple[int, int]:
    drums = int((notes["group"] == V.DRUM_GROUP).sum())
    return len(notes) - drums, drums


def cmd_encode(args) -> None:
    tokens = encode(load_midi(args.input))
    if args.describe:
        print(json.dumps([V.describe(int(t)) for t in tokens]))
    else:
        print(json.dumps([int(t) for t in tokens]))


def cmd_decode(args) -> None:
    tokens = _read_tokens(args.tokens)
    try:
        score = decode(tokens)
    except ValueError as e:
        raise UsageError(f"cannot decode {args.tokens}: {e}") from None
    _write(score, args.output)


def _write(score, out: str) -> None:
    try:
        write_midi(score, out)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None


class RoundTripError(RuntimeError):
    """The file this program wrote does not read back: a bug in the writer, never bad input."""


def roundtrip(src, out) -> dict:
    """load -> encode -> decode -> write -> re-read: what `roundtrip` prints (bench.fuzz runs this too).
    MidiError on bad input; RoundTripError if the written file does not read back."""
    score = load_midi(src)
    tokens = encode(score)
    back = decode(tokens, bpm=score.bpm, time_signature=score.time_signature)
    _write(back, out)
    try:
        reread = load_midi(out)
    except MidiError as e:
        raise RoundTripError(f"the file written to {out} does not read back: {e}") from None
    n_in, d_in = _counts(score.notes)
    n_out, d_out = _counts(reread.notes)
    return {
        "notes_in": n_in, "drum_notes_in": d_in, "notes_out": n_out, "drum_notes_out": d_out,
        "tokens": int(len(tokens)),
        "equal": bool(np.array_equal(score.notes, back.notes) and np.array_equal(score.notes, reread.notes)),
    }


def cmd_roundtrip(args) -> None:
    print(json.dumps(roundtrip(args.input, args.output)))


def cmd_vocab(args) -> None:
    print(V.layout())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tokenizer", description="MIDI <-> 3-token sequences.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="print a MIDI file's tokens as JSON")
    e.add_argument("input")
    e.add_argument("--describe", action="store_true", help="print token names instead of ids")
    e.set_defaults(func=cmd_encode)
    d = sub.add_parser("decode", help="write a JSON list of tokens as MIDI")
    d.add_argument("tokens")
    d.add_argument("output")
    d.set_defaults(func=cmd_decode)
    r = sub.add_parser("roundtrip", help="encode, decode, write, re-read; print one JSON line")
    r.add_argument("input")
    r.add_argument("output")
    r.set_defaults(func=cmd_roundtrip)
    v = sub.add_parser("vocab", help="print the vocabulary layout")
    v.set_defaults(func=cmd_vocab)
    args = p.parse_args(argv)
    try:
        args.func(args)
    except (MidiError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
