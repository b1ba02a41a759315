"""Command line generation with any registered engine.

    python -m model.generate --engine transformer --instruments piano,bass --drums --bars 16 \
        --variants 4 --temperature 1.0 --seed 7 --out DIR

Writes one MIDI file per variant into DIR and prints one JSON line (files, notes per group, bars,
seconds, and the engine's speed in its own unit: tokens, frames, windows or events per second).
`--checkpoint DIR` works for every engine.  Bad arguments or input: exit status 2 and one clear line
on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from tokenizer import MidiError, load_midi, write_midi
from tokenizer import vocab as V

from .engine import get_engine
from .request import MAX_BARS, GenerationRequest


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m model.generate", description="Generate MIDI with a MIDI Bangers engine.")
    p.add_argument("--engine", default="transformer")
    p.add_argument("--checkpoint", default=None,
                   help="the engine's checkpoint: a folder or a Hugging Face Hub repo id (default: the shipped one)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--instruments", default="piano", help="comma-separated groups, e.g. piano,bass,strings")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--drums", dest="drums", action="store_true", default=True)
    d.add_argument("--no-drums", dest="drums", action="store_false")
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--variants", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="default: random (printed back)")
    p.add_argument("--bpm", type=float, default=120.0)
    p.add_argument("--style", default=None)
    p.add_argument("--prompt", default=None, help="a MIDI file to continue")
    p.add_argument("--prompt-bars", type=int, default=4, help="how many bars of the prompt to keep")
    p.add_argument("--noise-sd", type=float, default=None, help="latent noise sd (engines with the noise_sd control)")
    p.add_argument("--alpha", type=float, default=None, help="pull towards --reference, 0 to 1 (engines with it)")
    p.add_argument("--reference", default=None,
                   help="a built-in reference song name, or a MIDI file (engines with the reference control)")
    p.add_argument("--out", default="out", help="output folder")
    return p


def engine_options(args, engine) -> dict:
    """--noise-sd / --alpha / --reference -> request.extra, for engines that declare those controls."""
    extra = {}
    for control, value in (("noise_sd", args.noise_sd), ("alpha", args.alpha), ("reference", args.reference)):
        if value is None:
            continue
        if not engine.supports(control):
            raise ValueError(f"engine {args.engine} has no {control} option")
        if control == "reference" and Path(value).is_file():
            value = load_midi(value)
        extra[control] = value
    return extra


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        engine = get_engine(args.engine, args.checkpoint)
        prompt = None
        if args.prompt:
            if not 1 <= args.prompt_bars <= MAX_BARS:
                raise ValueError(f"--prompt-bars must be 1 to {MAX_BARS}")
            prompt = load_midi(args.prompt).first_bars(args.prompt_bars)
        extra = engine_options(args, engine)
        seed = args.seed if args.seed is not None else int.from_bytes(__import__("os").urandom(4), "little")
        req = GenerationRequest(
            groups=tuple(g for g in args.instruments.split(",") if g.strip()), drums=args.drums, bars=args.bars,
            variants=args.variants, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            seed=seed, bpm=args.bpm, style=args.style, prompt=prompt, extra=extra,
        )
        if args.style is not None and not engine.supports("style"):
            raise ValueError(f"engine {args.engine} has no styles")
        req = engine.restrict(req).validate()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        scores = engine.generate(req)
        seconds = time.perf_counter() - t0
    except (ValueError, MidiError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = []
    for i, s in enumerate(scores):
        path = out / f"{args.engine}_seed{seed}_v{i + 1}.mid"
        write_midi(s, path)
        files.append(str(path))
    per_s, unit = engine.speed()
    print(json.dumps({
        "engine": args.engine, "seed": seed, "files": files,
        "notes_per_group": [s.notes_per_group() for s in scores],
        "bars": [s.length // V.STEPS_PER_BAR if s.length else s.n_bars for s in scores],
        "seconds": round(seconds, 3), f"{unit}_per_s": round(per_s, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
