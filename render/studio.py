"""The studio's logic, kept out of app.py: input checking, the upload to continue, generation,
rendering every variant (MIDI, MP3, piano roll), the zip, the summary, and the output folders.

    result = generate(engine="transformer", groups=["piano", "bass"], drums=True, bars=8, variants=2, ...)
    result.variants[0].midi, .mp3, .png; result.zip_path; result.summary; result.seed

Every mistake a person can make raises `StudioError` with a message meant for them; the page turns it
into a gr.Error.  Output files live in one folder per request under one root (by default inside
Gradio's cache, so Gradio serves them without copying); old folders are deleted after each request,
so the disk does not grow with the number of requests.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from model.engine import (
    MAX_BARS,
    MAX_BPM,
    MAX_NOISE_SD,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MAX_VARIANTS,
    MIN_BPM,
    MIN_TEMPERATURE,
    GenerationRequest,
    engine_names,
    get_engine,
)
from tokenizer import MidiError, Score, load_midi, write_midi
from tokenizer import vocab as V
from tokenizer.score import MAX_FILE_BYTES

from .audio import RenderError, render_mp3
from .pianoroll import draw_pianoroll

log = logging.getLogger(__name__)

MAX_PROMPT_NOTES = 20_000  # an upload with more notes than this is refused (memory and time)
OUTPUT_ENV = "MIDI_BANGERS_OUTPUT_DIR"
KEEP_REQUESTS = 24  # newest request folders kept; older ones are deleted
MAX_AGE_SECONDS = 2 * 3600  # and none is kept longer than this
NO_STYLE = "none"
NO_REFERENCE = "none"
SEED_LIMIT = 2**32


class StudioError(ValueError):
    """A mistake in the input; the message is for the person who made it."""


class Cancelled(RuntimeError):
    """The person pressed Stop."""


# ---- input checking -------------------------------------------------------------------------
def parse_seed(value: Any) -> tuple[int, bool]:
    """(seed, was_random): blank / None means a fresh random seed."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return secrets.randbelow(SEED_LIMIT), True
    if isinstance(value, bool):
        raise StudioError("the seed must be a whole number (or blank for a random one)")
    if isinstance(value, float):
        if not value.is_integer():
            raise StudioError(f"the seed must be a whole number (got {value})")
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+]?\d+(\.0*)?", text):
            raise StudioError(f"the seed must be a whole number from 0 to {SEED_LIMIT - 1}, or blank (got {text[:40]!r})")
        value = int(text.split(".")[0])
    if not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise StudioError(f"the seed must be from 0 to {SEED_LIMIT - 1} (got {value})")
    return value, False


def as_int(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{name} must be a whole number from {lo} to {hi} (got {value!r})") from None
    if not math.isfinite(f) or not f.is_integer() or not lo <= f <= hi:
        raise StudioError(f"{name} must be a whole number from {lo} to {hi} (got {value})")
    return int(f)


def as_float(value: Any, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{name} must be a number from {lo} to {hi} (got {value!r})") from None
    if not math.isfinite(f) or f > hi or f < lo or (lo_open and f <= lo):
        raise StudioError(f"{name} must be {'above' if lo_open else 'from'} {lo} {'and at most' if lo_open else 'to'} "
                          f"{hi} (got {value})")
    return f


def load_prompt(path: str | os.PathLike | None, bars: Any, what: str = "uploaded MIDI") -> Score | None:
    """The uploaded MIDI (a temporary file Gradio made) cut to its first `bars` bars, or None."""
    if path is None or (isinstance(path, str) and not path.strip()):
        return None
    n_bars = as_int(bars, "'use the first N bars'", 1, MAX_BARS)
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError:
        raise StudioError(f"the {what} could not be read; please upload it again") from None
    if size > MAX_FILE_BYTES:
        raise StudioError(f"the {what} is {size / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB")
    try:
        score = load_midi(p)
    except MidiError as e:
        raise StudioError(f"cannot use the {what}: {e}") from None
    if len(score.notes) > MAX_PROMPT_NOTES:
        raise StudioError(f"the {what} has {len(score.notes):,} notes; the limit is {MAX_PROMPT_NOTES:,}")
    if not len(score.notes):
        raise StudioError(f"the {what} contains no notes")
    if tuple(score.time_signature) != (4, 4):
        log.info("upload in %s/%s; generation works in 4/4", *score.time_signature)
    prompt = score.first_bars(n_bars)
    if not len(prompt.notes):
        raise StudioError(f"the first {n_bars} bar(s) of the upload contain no notes; use more bars")
    return prompt


def engine_options(engine: Any, noise_sd: Any = None, alpha: Any = None, reference: Any = None,
                   reference_midi: Any = None) -> dict[str, Any]:
    """The engine options (GenerationRequest.extra) the engine supports; the others are ignored."""
    ctl, extra = engine.controls, {}
    if "noise_sd" in ctl and noise_sd not in (None, ""):
        extra["noise_sd"] = as_float(noise_sd, "noise", 0.0, MAX_NOISE_SD)
    if "alpha" in ctl and alpha not in (None, ""):
        extra["alpha"] = as_float(alpha, "reference pull (alpha)", 0.0, 1.0)
    if "reference" in ctl:
        if reference_midi:
            extra["reference"] = load_prompt(reference_midi, MAX_BARS, what="reference MIDI")
        elif reference not in (None, "", NO_REFERENCE):
            if not isinstance(reference, str) or reference not in engine.references:
                raise StudioError(f"unknown reference song {reference!r}; pick one from the list or upload a MIDI")
            extra["reference"] = reference
    return extra


def build_request(engine_name: str, groups: Any, drums: Any, bars: Any, variants: Any, temperature: Any,
                  top_p: Any, top_k: Any, seed: Any, bpm: Any, style: Any, midi: Any, prompt_bars: Any,
                  noise_sd: Any = None, alpha: Any = None, reference: Any = None, reference_midi: Any = None,
                  ) -> tuple[Any, GenerationRequest, bool]:
    """Check every input; returns (engine, validated request, seed_was_random)."""
    names = engine_names()
    if not isinstance(engine_name, str) or engine_name not in names:
        raise StudioError(f"unknown engine {engine_name!r}; choose from {', '.join(names)}")
    if groups is None:
        groups = []
    if isinstance(groups, str):
        groups = [g for g in re.split(r"[,\s]+", groups) if g]
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, str) for g in groups):
        raise StudioError("instrument groups must be a list of names")
    if len(groups) > len(V.GROUPS):
        raise StudioError("too many instrument groups")
    try:
        engine = get_engine(engine_name)
    except (OSError, ValueError) as e:  # e.g. a missing checkpoint
        raise StudioError(f"engine {engine_name!r} is not available: {e}") from None
    ctl = engine.controls
    seed_value, was_random = parse_seed(seed)
    style_name = None if style in (None, "", NO_STYLE) else str(style)
    if style_name is not None and "style" in ctl and style_name not in engine.styles:
        raise StudioError(f"unknown style {style_name!r}; choose from {', '.join(engine.styles)} or {NO_STYLE}")
    kwargs: dict[str, Any] = dict(
        groups=tuple(groups),
        drums=bool(drums),
        bars=as_int(bars, "length", 1, MAX_BARS),
        variants=as_int(variants, "variants", 1, MAX_VARIANTS),
        temperature=as_float(temperature, "temperature", MIN_TEMPERATURE, MAX_TEMPERATURE),
        top_p=as_float(top_p, "top-p", 0.0, 1.0, lo_open=True),
        top_k=as_int(0 if top_k in (None, "") else top_k, "top-k", 0, MAX_TOP_K),
        seed=seed_value,
        bpm=as_float(bpm, "BPM", MIN_BPM, MAX_BPM),
        style=style_name,
        extra=engine_options(engine, noise_sd, alpha, reference, reference_midi),
    )
    if midi:
        if "prompt" not in ctl:
            raise StudioError(f"engine {engine_name!r} cannot continue an uploaded MIDI")
        kwargs["prompt"] = load_prompt(midi, prompt_bars)
    try:
        request = engine.restrict(GenerationRequest(**kwargs)).validate()
    except ValueError as e:
        raise StudioError(str(e)) from None
    return engine, request, was_random


# ---- output folders -------------------------------------------------------------------------
def default_output_root() -> Path:
    env = os.environ.get(OUTPUT_ENV)
    if env:
        return Path(env)
    # Inside Gradio's cache folder, so that Gradio serves the files without copying them.
    base = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return Path(base).resolve() / "midi-bangers"


class OutputStore:
    """One folder per request under `root`; keeps the newest `keep` folders, none older than `max_age`."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_REQUESTS,
                 max_age: float = MAX_AGE_SECONDS):
        self.root = Path(root) if root is not None else default_output_root()
        self.keep, self.max_age = keep, max_age
        self._lock = threading.Lock()

    def new_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.prune()
        return Path(tempfile.mkdtemp(prefix=time.strftime("req-%Y%m%d-%H%M%S-"), dir=self.root))

    def prune(self, keep: int | None = None) -> int:
        """Delete old request folders; returns how many were deleted."""
        keep = self.keep if keep is None else keep
        with self._lock:
            try:
                dirs = [d for d in self.root.iterdir() if d.is_dir() and d.name.startswith("req-")]
            except FileNotFoundError:
                return 0
            dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
            now = time.time()
            old = [d for i, d in enumerate(dirs) if i >= keep or now - d.stat().st_mtime > self.max_age]
            for d in old:
                shutil.rmtree(d, ignore_errors=True)
            return len(old)

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file()) if self.root.exists() else 0


# ---- generation -----------------------------------------------------------------------------
@dataclass
class Variant:
    index: int  # 1-based
    score: Score
    midi: Path
    png: Path
    mp3: Path | None  # None when no preview could be made (see preview_error)
    preview_error: str | None = None
    audio_seconds: float = 0.0


@dataclass
class Result:
    variants: list[Variant]
    zip_path: Path
    seed: int
    seed_was_random: bool
    request: GenerationRequest
    engine: str
    stats: dict = field(default_factory=dict)
    render_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    prompt_use: str = "continuing"  # what the engine does with an upload (Engine.prompt_use)
    controls: frozenset = frozenset({"temperature", "top_p", "top_k"})  # the engine's (Engine.controls)

    @property
    def summary(self) -> str:
        r = self.request
        s = self.stats
        sampling = [text for c, text in (("temperature", f"temperature {r.temperature:g}"),
                                          ("top_p", f"top-p {r.top_p:g}"), ("top_k", f"top-k {r.top_k or 'off'}"))
                    if c in self.controls]  # only what this engine uses
        lines = [
            f"**{len(self.variants)} variant{'s' if len(self.variants) != 1 else ''}** · engine `{self.engine}` · "
            f"{r.bars} bars at {r.bpm:g} BPM · seed **{self.seed}**{' (random)' if self.seed_was_random else ''}",
            f"generation: {s.get('seconds', 0.0):.2f} s, {s.get('tokens', 0)} tokens, "
            f"{s.get('tokens_per_s', 0.0):.0f} tokens/s · rendering: {self.render_seconds:.2f} s",
            f"groups: {', '.join(r.groups) or '—'}; drums {'on' if r.drums else 'off'}"
            + (f"; {', '.join(sampling)}" if sampling else "")
            + (f"; style {r.style}" if r.style else "")
            + (f"; {self.prompt_use} {len(r.prompt.notes)} uploaded notes" if r.prompt is not None else ""),
        ]
        if r.extra:
            ref = r.extra.get("reference")
            opts = [f"{k.replace('_', ' ')} {v:g}" for k, v in r.extra.items() if isinstance(v, float)]
            if ref is not None:
                opts.append(f"reference {ref if isinstance(ref, str) else f'upload ({len(ref.notes)} notes)'}")
            lines[2] += "; " + ", ".join(opts)
        for v in self.variants:
            per = ", ".join(f"{g} {n}" for g, n in v.score.notes_per_group().items()) or "no notes"
            bars = -(-max(v.score.length or 0, v.score.end_step) // v.score.bar_steps)
            style = f", style {v.score.style}" if v.score.style and v.score.style != r.style else ""
            lines.append(f"- variant {v.index}: {bars} bars{style}, {len(v.score.notes)} notes ({per})"
                         + (f" — {v.preview_error}" if v.preview_error else ""))
        return "  \n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:])


def generate(engine: str, groups: Any, drums: Any, bars: Any, variants: Any, temperature: Any, top_p: Any,
             top_k: Any, seed: Any, bpm: Any, style: Any = None, midi: Any = None, prompt_bars: Any = 4,
             noise_sd: Any = None, alpha: Any = None, reference: Any = None, reference_midi: Any = None,
             progress: Callable[[float, str], None] | None = None, store: OutputStore | None = None,
             cancelled: Callable[[], bool] | None = None) -> Result:
    """Check the inputs, generate, render every variant, zip them.  Raises StudioError or Cancelled."""
    eng, request, was_random = build_request(engine, groups, drums, bars, variants, temperature, top_p, top_k,
                                             seed, bpm, style, midi, prompt_bars, noise_sd, alpha, reference,
                                             reference_midi)
    store = store or OutputStore()

    def report(frac: float, what: str) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("stopped")
        if progress is not None:
            progress(min(max(frac, 0.0), 1.0), what)

    report(0.0, "generating")
    with _engine_lock(eng.name):  # an engine instance keeps decoding state: one generation at a time
        try:
            scores = eng.generate(request, progress=lambda f: report(0.85 * float(f), "generating"))
        except ValueError as e:  # a request this engine cannot serve (e.g. drums alone for a melody engine)
            raise StudioError(str(e)) from None
        stats = dict(getattr(eng, "last_stats", {}) or {})
    out = store.new_dir()
    result_variants: list[Variant] = []
    warnings: list[str] = []
    t0 = time.perf_counter()
    for i, score in enumerate(scores, 1):
        report(0.85 + 0.15 * (i - 1) / len(scores), f"rendering variant {i}")
        stem = f"midi-bangers-{request.seed}-v{i}"
        midi_path = write_midi(score, out / f"{stem}.mid")
        png = draw_pianoroll(score, out / f"{stem}.png",
                             title=f"variant {i} · {request.bars} bars · {request.bpm:g} BPM · {len(score.notes)} notes")
        mp3, err, secs = None, None, 0.0
        try:
            r = render_mp3(score, out / f"{stem}.mp3")
            mp3, secs = r.path, r.seconds
        except RenderError as e:
            err = str(e)
            if err not in warnings:
                warnings.append(err)
        result_variants.append(Variant(i, score, midi_path, png, mp3, err, secs))
    zip_path = out / f"midi-bangers-{request.seed}.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for v in result_variants:
            z.write(v.midi, v.midi.name)
            if v.mp3 is not None:
                z.write(v.mp3, v.mp3.name)
    report(1.0, "done")
    return Result(result_variants, zip_path, request.seed, was_random, request, eng.name, stats,
                  time.perf_counter() - t0, warnings, getattr(eng, "prompt_use", "continuing"), eng.controls)


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _engine_lock(name: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(name, threading.Lock())


class CancelFlags:
    """Stop requests per browser session: Stop sets the flag, the running generation checks it at every
    progress report and ends early (freeing the engine for the next request)."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str | None) -> Callable[[], bool]:
        if not session:
            return lambda: False
        with self._lock:
            ev = self._flags[session] = threading.Event()
            if len(self._flags) > 10_000:  # bounded: forget the oldest sessions
                for k in list(self._flags)[: len(self._flags) - 10_000]:
                    self._flags.pop(k, None)
        return ev.is_set

    def stop(self, session: str | None) -> None:
        if session:
            with self._lock:
                ev = self._flags.get(session)
            if ev is not None:
                ev.set()
