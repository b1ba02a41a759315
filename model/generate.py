"""Command line generation with any registered engine.

    python -m model.generate --engine transformer --instruments piano,bass --drums --bars 16 \
        --variants 4 --temperature 1.0 --seed 7 --out DIR

    python -m model.generate --key "D minor" --chords "Dm Bb F C" --instruments piano,bass --bars 8
    python -m model.generate --instruments piano,bass --bars 8 --loop          # a seamless loop (transformer)
    python -m model.generate --prompt song.mid --prompt-bars 8 --bars 8            # continue (metre, tempo kept)
    python -m model.generate --prompt song.mid --prompt-bars 8 --add-part piano     # a new part over 8 bars
    python -m model.generate --prompt song.mid --prompt-bars 8 --regenerate-part bass
    python -m model.generate --prompt song.mid --prompt-bars 8 --infill-bars 3-4
    python -m model.generate --session session.json --out DIR   # the studio zip's variants, made again

Writes one MIDI file per variant into DIR and prints one JSON line (files, notes per group, bars, the
prompt bars and the new bars, seconds, the engine's speed in its own unit: tokens, frames, windows or events
per second, and per result the adherence figures of model/adherence.py).
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

from .adherence import adherence
from .edits import EDITS
from .engine import get_engine
from .request import MAX_PROMPT_BARS, GenerationRequest
from .session import read_session


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
    p.add_argument("--prompt", default=None, help="a MIDI file to continue or edit")
    p.add_argument("--prompt-bars", type=int, default=4, help="how many bars of the prompt to keep (or edit)")
    p.add_argument("--key", default=None, help="key and scale lock, e.g. 'D minor', 'A dorian', 'E blues'")
    p.add_argument("--chords", default=None, help="one chord a bar from bar 1, repeating, e.g. 'Dm Bb F C'")
    p.add_argument("--chord-bias", type=float, default=2.0, help="pull of the non-bass parts to chord tones")
    e = p.add_mutually_exclusive_group()
    for edit in EDITS.values():
        if edit.flag:
            e.add_argument(edit.flag, default=None, dest=_dest(edit), metavar=edit.metavar, help=edit.flag_help)
    p.add_argument("--loop", action="store_true",
                   help="a seamless loop: the last bar leads back into the first (transformer; not with --prompt)")
    p.add_argument("--drum-kit", default=None, help="General MIDI drum kit: " + ", ".join(V.DRUM_KITS))
    p.add_argument("--session", default=None, metavar="SESSION_JSON",
                   help="make the variants of a studio zip's session.json again (other generation options ignored)")
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


def _dest(edit) -> str:
    return "edit_" + edit.name


def edit_fields(args) -> dict:
    """The edit's CLI option (--add-part, --regenerate-part, --infill-bars: `Edit.flag`) -> the request's edit
    and the edit's fields (part, infill_bars); {} without one."""
    for edit in EDITS.values():
        text = getattr(args, _dest(edit), None) if edit.flag else None
        if text is not None:
            return edit.parse_flag(text)
    return {}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.session:
        return replay(args.session, Path(args.out), args.checkpoint)
    try:
        engine = get_engine(args.engine, args.checkpoint)
        prompt = None
        if args.prompt:
            if not 1 <= args.prompt_bars <= MAX_PROMPT_BARS:
                raise ValueError(f"--prompt-bars must be 1 to {MAX_PROMPT_BARS}")
            prompt = load_midi(args.prompt).first_bars(args.prompt_bars)
        extra = engine_options(args, engine)
        seed = args.seed if args.seed is not None else int.from_bytes(__import__("os").urandom(4), "little")
        fields = dict(
            groups=tuple(g for g in args.instruments.split(",") if g.strip()), drums=args.drums, bars=args.bars,
            variants=args.variants, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            seed=seed, bpm=args.bpm, style=args.style, prompt=prompt, extra=extra, key=args.key,
            chords=args.chords, chord_bias=args.chord_bias, drum_kit=args.drum_kit, loop=args.loop,
        )
        req = GenerationRequest(**{**fields, **edit_fields(args)})  # an edit's flag may set a field (bars)
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
    bars = [s.bars for s in scores]
    kept = req.prompt.bars if req.prompt is not None else 0
    extends = req.edit_kind is None or req.edit_kind.extends
    new = [b - kept if extends else 0 for b in bars]
    print(json.dumps({
        "engine": args.engine, "seed": seed, "files": files,
        "notes_per_group": [s.notes_per_group() for s in scores],
        "bars": bars, "prompt_bars": kept, "new_bars": new, "loop": req.loop,
        "summary": summary(req, scores[0], kept), "time_signature": list(scores[0].time_signature),
        "bpm": round(scores[0].bpm, 2), "adherence": [adherence(req, s) for s in scores],
        "seconds": round(seconds, 3), f"{unit}_per_s": round(per_s, 1),
    }))
    return 0


def replay(session_file: str, out: Path, checkpoint: str | None = None) -> int:
    """Make every variant of a session.json (the studio's zip) again: each distinct request once, with its
    engine, checkpoint (or `checkpoint`), prompt and seed; writes variant-N.mid into `out` and prints one JSON
    line naming them."""
    try:
        entries = read_session(session_file)
        out.mkdir(parents=True, exist_ok=True)
        made: dict[str, list] = {}
        files = []
        for entry in entries:
            key = entry.recipe_key()
            if key not in made:
                engine = get_engine(entry.engine, checkpoint or entry.checkpoint)
                made[key] = engine.generate(engine.restrict(entry.request).validate())
            path = out / f"variant-{entry.variant}.mid"
            write_midi(made[key][entry.result_index], path)
            files.append(str(path))
    except IndexError as e:
        print(f"error: {session_file}: a session entry lacks or mistypes {e}", file=sys.stderr)
        return 2
    except (ValueError, MidiError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"session": session_file, "files": files, "requests": len(made)}))
    return 0


def summary(req, score, kept_bars: int) -> str:
    """One line: what was made, e.g. "8 prompt bars + 8 new bars (3/4, 153 BPM)" (the edit's `summary`)."""
    bars = score.bars
    meter = f"({score.time_signature[0]}/{score.time_signature[1]}, {score.bpm:g} BPM)"
    edit = req.edit_kind
    made = f"{bars} new bars" if edit is None else edit.summary(req, bars, kept_bars)
    return f"{made} {meter}"


if __name__ == "__main__":
    sys.exit(main())
