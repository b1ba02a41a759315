"""The page's service layer, kept out of app.py: one page request -> MIDI / MP3 / piano roll / zip.

    result = generate(engine="transformer", groups=["piano", "bass"], drums=True, bars=8, variants=2, ...)
    result.variants[0].midi, .mp3, .png; result.zip_path; result.summary; result.seed

The studio converts the page's values to Python types (text to numbers, a whole float to an int, a blank
seed to a random one, "none" to None, an upload to its path) and builds a `GenerationRequest`; the
range checks are the request's own `validate()`, the one place they live.  A person's mistake raises
`RequestError` with a message that names the field; the page shows it as it is.

Disk use is bounded in bytes as well as count and age: each request writes into its own folder under
one root (`OutputStore`, by default inside Gradio's cache so Gradio serves the files without copying),
and the uploads Gradio keeps in its cache (`UploadCache`) are pruned too, oldest first, after every
request and every `PRUNE_EVERY` seconds (`Janitor`).  A folder a running request uses is never deleted.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from model import checkpoint as ckpt
from model.adherence import adherence
from model.engine import engine_names, get_engine
from model.request import (
    EDITS,
    LABELS,
    MAX_BARS,
    MAX_BPM,
    MIN_BPM,
    SEED_LIMIT,
    SESSION_FORMAT,
    GenerationRequest,
    RequestError,
    whole_number,
)
from model.request import prompt_bars as bars_of_prompt
from render.audio import RenderError, Stem, render_preview
from render.pianoroll import draw_pianoroll
from tokenizer import MidiError, Score, load_midi, write_midi
from tokenizer import vocab as V

log = logging.getLogger(__name__)

MAX_PROMPT_NOTES = 20_000  # an uploaded MIDI with more notes than this is refused (memory and time)
NO_STYLE = "none"
NO_REFERENCE = "none"
NO_KEY = "none"  # no key lock (and, for the drum kit, the prompt's kit or the standard one)
OUTPUT_ENV = "MIDI_BANGERS_OUTPUT_DIR"
MB = 1024 * 1024
RENDER_WORKERS = max(2, os.cpu_count() or 2)  # variants rendered at once (FluidSynth and lame are subprocesses)
# Output folders (one per request): the newest KEEP_REQUESTS, none older than OUTPUT_MAX_AGE, at most
# OUTPUT_MAX_BYTES together.  The FLAC stems dominate: a usual request (2 variants x 8 bars, 3 tracks) writes
# about 13 MB (loose and zipped; the screenshot's zip is 6.6 MB); STEMS_MAX_SECONDS keeps one request's stems
# to about 2 x 140 MB (longer requests get no stems, and a warning says so).
KEEP_REQUESTS = 24
STEMS_MAX_SECONDS = 40 * 60  # stems of one request: at most this much audio (tracks x seconds, all variants)
OUTPUT_MAX_AGE = 2 * 3600
OUTPUT_MAX_BYTES = 512 * MB
# Uploads in Gradio's cache (one folder per uploaded file, each at most tokenizer.score.MAX_FILE_BYTES).
KEEP_UPLOADS = 256
UPLOAD_MAX_AGE = 3600
UPLOAD_MAX_BYTES = 256 * MB
PRUNE_EVERY = 60  # seconds between the Janitor's sweeps


class Cancelled(RuntimeError):
    """The person pressed Stop."""


# ---- page values to Python types (the checks are GenerationRequest.validate's) ------------------------
def to_number(value: Any) -> Any:
    """A number typed or sent as text -> int or float; a whole float -> int.  Anything else is returned
    as it is, for validate() to refuse with the field's name."""
    if isinstance(value, str):
        text = value.strip()
        for parse in (int, float):
            try:
                value = parse(text)
                break
            except ValueError:
                pass
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    return value


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_seed(value: Any) -> tuple[Any, bool]:
    """(seed, was_random): blank means a fresh random seed; anything else goes to validate() as a number."""
    if blank(value):
        return secrets.randbelow(SEED_LIMIT), True
    return to_number(value), False


def to_flag(value: Any) -> Any:
    """A checkbox: True/False, also "true"/"false"/"on"/"off" and 1/0; None is off."""
    if value is None or isinstance(value, bool):
        return bool(value)
    words = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    return bool(value) if isinstance(value, numbers.Integral) and value in (0, 1) else value


def to_names(value: Any) -> Any:
    """A multi-select: a list of names; text is split at commas and spaces; None is no names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(g for g in re.split(r"[,\s]+", value) if g)
    return tuple(value) if isinstance(value, list) else value


def to_choice(value: Any, none_word: str) -> Any:
    """A dropdown value; blank or `none_word` means no choice (None)."""
    if blank(value) or (isinstance(value, str) and value.strip().lower() == none_word):
        return None
    return value.strip() if isinstance(value, str) else value


def file_path(value: Any, name: str) -> Path | None:
    """An upload as Gradio passes it (a path, or a FileData dict/object with a path) -> its path."""
    if blank(value):
        return None
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", value)
    if isinstance(path, (str, os.PathLike)) and str(path).strip():
        return Path(path)
    raise RequestError(f"{LABELS[name]} must be an uploaded .mid file (got {type(value).__name__})")


def load_upload(path: Path, name: str) -> Score:
    """The whole uploaded MIDI (its size is checked by load_midi against tokenizer.score.MAX_FILE_BYTES)."""
    if not path.is_file():
        raise RequestError(f"{LABELS[name]}: the upload is no longer on the server (uploads are kept for a "
                           "while); please upload it again")
    try:
        score = load_midi(path)
    except MidiError as e:
        raise RequestError(f"{LABELS[name]}: {e}") from None
    if len(score.notes) > MAX_PROMPT_NOTES:
        raise RequestError(f"{LABELS[name]}: the file has {len(score.notes):,} notes; the limit is "
                           f"{MAX_PROMPT_NOTES:,}")
    if not len(score.notes):
        raise RequestError(f"{LABELS[name]}: the file contains no notes")
    if tuple(score.time_signature) != (4, 4):
        log.info("upload in %s/%s; generation works in 4/4", *score.time_signature)
    return score


def engine_options(engine: Any, noise_sd: Any = None, alpha: Any = None, reference: Any = None,
                   reference_midi: Any = None) -> dict[str, Any]:
    """The engine options (GenerationRequest.extra) the engine has; the page sends them all, the others
    are dropped.  Blank means the engine's default."""
    ctl, extra = engine.controls, {}
    for key, value in (("noise_sd", noise_sd), ("alpha", alpha)):
        if key in ctl and not blank(value):
            extra[key] = to_number(value)
    if "reference" in ctl:
        ref_path = file_path(reference_midi, "reference_midi")
        ref = load_upload(ref_path, "reference_midi") if ref_path else to_choice(reference, NO_REFERENCE)
        if ref is not None:
            extra["reference"] = ref
    return extra


def build_request(engine_name: Any, groups: Any, drums: Any, bars: Any, variants: Any, temperature: Any,
                  top_p: Any, top_k: Any, seed: Any, bpm: Any, style: Any = None, midi: Any = None,
                  prompt_bars: Any = 4, noise_sd: Any = None, alpha: Any = None, reference: Any = None,
                  reference_midi: Any = None, key: Any = None, chords: Any = None, drum_kit: Any = None,
                  **edit: Any) -> tuple[Any, GenerationRequest, bool]:
    """The page's values -> (engine, validated request, seed_was_random), or RequestError.  `edit`: the
    request's edit fields (edit, part, infill_bars) for the editing actions."""
    names = engine_names()
    if not isinstance(engine_name, str) or engine_name not in names:
        raise RequestError(f"{LABELS['engine']}: unknown engine {engine_name!r}; choose from {', '.join(names)}")
    try:
        engine = get_engine(engine_name)
    except (OSError, ValueError) as e:  # e.g. a missing checkpoint
        log.exception("engine %s unavailable", engine_name)
        raise RequestError(f"{LABELS['engine']}: {engine_name} is not available ({e}); choose another") from None
    seed_value, was_random = parse_seed(seed)
    prompt_path = file_path(midi, "prompt")
    prompt = None
    if prompt_path is not None:
        n_bars = whole_number(to_number(prompt_bars), "prompt_bars", 1, MAX_BARS)
        prompt = load_upload(prompt_path, "prompt").first_bars(n_bars)
    request = GenerationRequest(
        groups=to_names(groups), drums=to_flag(drums), bars=to_number(bars), variants=to_number(variants),
        temperature=to_number(temperature), top_p=to_number(top_p),
        top_k=0 if blank(top_k) else to_number(top_k), seed=seed_value, bpm=to_number(bpm),
        style=to_choice(style, NO_STYLE), prompt=prompt,
        extra=engine_options(engine, noise_sd, alpha, reference, reference_midi),
        key=to_choice(key, NO_KEY), chords=None if blank(chords) else chords,
        drum_kit=to_choice(drum_kit, NO_KEY), **edit)
    try:
        request = engine.restrict(request)  # controls the engine lacks are reset
    except RequestError:  # a refusal that already names its field (key, chords, edit)
        raise
    except ValueError as e:  # an upload the engine cannot use
        raise RequestError(f"{LABELS['prompt']}: {e}; choose another engine or remove the file") from None
    return engine, request.validate(), was_random


# ---- disk: folders bounded in count, age and bytes ------------------------------------------------------
def gradio_cache_dir() -> Path:
    """Gradio's cache folder (where it keeps uploads and serves files from), as Gradio computes it."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def default_output_root() -> Path:
    env = os.environ.get(OUTPUT_ENV)
    return Path(env) if env else gradio_cache_dir() / "midi-bangers"


def _folder_stats(folder: Path) -> tuple[float, int]:
    """(newest modification time, total bytes) of a folder and everything in it."""
    newest, size = folder.stat().st_mtime, 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue  # deleted meanwhile
            newest, size = max(newest, st.st_mtime), size + st.st_size
    return newest, size


class FolderCap:
    """The folders under `root` that `counts()` selects, kept to the newest `keep`, none older than
    `max_age` seconds and at most `max_bytes` together: `prune()` deletes the oldest first.  Never deleted:
    a folder held with `hold()` (a running request reads or writes it; it counts towards the total) and
    the newest folder (so that one request bigger than the cap still gets its files)."""

    def __init__(self, root: str | os.PathLike, keep: int, max_age: float, max_bytes: int):
        self.root = Path(root)
        self.keep, self.max_age, self.max_bytes = keep, max_age, max_bytes
        self._lock = threading.Lock()
        self._held: dict[Path, int] = {}

    def counts(self, folder: Path) -> bool:
        return True

    def folders(self) -> list[Path]:
        try:
            return [d for d in self.root.iterdir() if d.is_dir() and not d.is_symlink() and self.counts(d)]
        except FileNotFoundError:
            return []

    @contextmanager
    def hold(self, path: str | os.PathLike | None) -> Iterator[None]:
        """Keep the folder holding `path` (a folder under root, or a file in one) while the block runs."""
        top = self.top_folder(path)
        if top is None:
            yield
            return
        with self._lock:
            self._held[top] = self._held.get(top, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._held[top] -= 1
                if not self._held[top]:
                    del self._held[top]

    def top_folder(self, path: str | os.PathLike | None) -> Path | None:
        """The folder right under root that holds `path`, or None when `path` is not under root."""
        if path is None:
            return None
        try:
            rel = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        return self.root / rel.parts[0] if rel.parts else None

    def prune(self) -> int:
        """Delete folders beyond the count, the age or the byte cap, oldest first; returns how many."""
        with self._lock:
            stats = []
            for d in self.folders():
                try:
                    stats.append((*_folder_stats(d), d))
                except OSError:
                    continue
            stats.sort(key=lambda s: s[0])  # oldest first
            now, count, total, deleted = time.time(), len(stats), sum(s[1] for s in stats), 0
            for mtime, size, d in stats[:-1]:  # the newest is kept: a request bigger than the cap gets its files
                if d in self._held or not (count > self.keep or total > self.max_bytes or now - mtime > self.max_age):
                    continue
                shutil.rmtree(d, ignore_errors=True)
                count, total, deleted = count - 1, total - size, deleted + 1
            return deleted

    def disk_bytes(self) -> int:
        """Bytes in the folders this cap counts."""
        total = 0
        for d in self.folders():
            try:
                total += _folder_stats(d)[1]
            except OSError:
                continue
        return total


class OutputStore(FolderCap):
    """One folder per request (`req-*`) under `root`."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_REQUESTS,
                 max_age: float = OUTPUT_MAX_AGE, max_bytes: int = OUTPUT_MAX_BYTES):
        super().__init__(default_output_root() if root is None else root, keep, max_age, max_bytes)

    def counts(self, folder: Path) -> bool:
        return folder.name.startswith("req-")

    @contextmanager
    def request_dir(self) -> Iterator[Path]:
        """A new folder for one request, held while the block runs; the store is pruned before and after."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.prune()
        out = Path(tempfile.mkdtemp(prefix=time.strftime("req-%Y%m%d-%H%M%S-"), dir=self.root))
        with self.hold(out):
            yield out
        self.prune()


class UploadCache(FolderCap):
    """The uploads in Gradio's cache: one folder per file, named by its content hash (`<cache>/<sha>/name`).
    Other folders there (the OutputStore's, Gradio's own) are not touched."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_UPLOADS,
                 max_age: float = UPLOAD_MAX_AGE, max_bytes: int = UPLOAD_MAX_BYTES):
        super().__init__(gradio_cache_dir() if root is None else root, keep, max_age, max_bytes)

    def counts(self, folder: Path) -> bool:
        return re.fullmatch(r"[0-9a-f]{32,128}", folder.name) is not None


class Janitor:
    """Prunes the stores after each request (`sweep()`) and every `every` seconds on a daemon thread."""

    def __init__(self, *stores: FolderCap, every: float = PRUNE_EVERY):
        self.stores, self.every = stores, every
        self._stop = threading.Event()

    def sweep(self) -> None:
        for s in self.stores:
            try:
                s.prune()
            except OSError:  # a disk problem must not fail a request; the next sweep tries again
                log.exception("pruning %s failed", s.root)

    def start(self, running: Callable[[], bool] = lambda: True) -> threading.Thread:
        """Sweep every `every` seconds until stop(), or until `running()` turns False after being True."""
        def loop() -> None:
            was_running = False
            while not self._stop.wait(self.every):
                now_running = running()
                if was_running and not now_running:
                    return
                was_running = was_running or now_running
                self.sweep()

        thread = threading.Thread(target=loop, name="midi-bangers-janitor", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


# ---- generation -----------------------------------------------------------------------------
@dataclass
class Recipe:
    """How one request's variants were made, enough to make them again (the zip's session.json):
    `python -m model.generate --session session.json` gives the same MIDI."""
    engine: str
    checkpoint: str | None  # None: the shipped checkpoint
    request: GenerationRequest
    prompt_file: Path | None = None  # the MIDI file the prompt was cut from (its first `prompt_bars` bars)
    prompt_bars: int | None = None
    reference_file: Path | None = None  # an uploaded reference song (engines with the reference control)


@dataclass
class Variant:
    index: int  # 1-based slot on the page
    score: Score
    midi: Path
    png: Path
    mp3: Path | None  # None when no preview could be made (see preview_error)
    preview_error: str | None = None
    audio_seconds: float = 0.0
    recipe: Recipe | None = None
    result_index: int = 0  # which of its request's variants it is (0-based)
    adherence: dict = field(default_factory=dict)  # model.adherence figures for its request
    missing: str | None = None  # a requested part this variant does not play, and why, in words
    stems: list[Stem] = field(default_factory=list)  # per track: audio (FLAC, the mix's gain) and MIDI

    @property
    def bars(self) -> int:
        s = self.score
        return -(-max(s.length or 0, s.end_step) // s.bar_steps)

    def files(self) -> list[Path]:
        return [p for p in (self.midi, self.png, self.mp3) if p is not None] + [
            p for st in self.stems for p in (st.audio, st.midi)]


@dataclass
class Result:
    """What the page shows: the variants (after a generation or an edit) and how the last action went."""
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
    action: str | None = None  # an edit of one variant, in words ("variant 2: bass part added"); None: generated

    @property
    def summary(self) -> str:
        r = self.request
        s = self.stats
        sampling = [text for c, text in (("temperature", f"temperature {r.temperature:g}"),
                                          ("top_p", f"top-p {r.top_p:g}"), ("top_k", f"top-k {r.top_k or 'off'}"))
                    if c in self.controls]  # only what this engine uses
        unit = next((k[: -len("_per_s")] for k in s if k.endswith("_per_s")), "tokens")  # the engine's own unit
        first = self.variants[0].score if self.variants else None
        bpm = first.bpm if first is not None else r.bpm  # a continuation keeps the upload's tempo and metre
        metre = f" in {first.time_signature[0]}/{first.time_signature[1]}" if first is not None else ""
        if r.prompt is not None and r.prompt.length and r.edit in (None, "continue"):
            length = f"{-(-r.prompt.length // r.prompt.bar_steps)} prompt bars + {r.bars} new bars"
        elif r.prompt is not None:
            length = f"{bars_of_prompt(r.prompt)} bars"
        else:
            length = f"{r.bars} bars"
        what = (f"**{self.action}**" if self.action else
                f"**{len(self.variants)} variant{'s' if len(self.variants) != 1 else ''}**")
        lines = [
            f"{what} · engine `{self.engine}` · "
            f"{length} at {bpm:g} BPM{metre} · seed **{self.seed}**{' (random)' if self.seed_was_random else ''}",
            f"generation: {s.get('seconds', 0.0):.2f} s, {s.get(unit, 0)} {unit}, "
            f"{s.get(f'{unit}_per_s', 0.0):.0f} {unit}/s · rendering: {self.render_seconds:.2f} s",
            f"groups: {', '.join(r.groups) or '—'}; drums {'on' if r.drums else 'off'}"
            + (f" ({r.drum_kit} kit)" if r.drum_kit else "")
            + (f"; {', '.join(sampling)}" if sampling else "")
            + (f"; style {r.style}" if r.style else "")
            + (f"; key {r.key}" if r.key else "") + (f"; chords {r.chords}" if r.chords else "")
            + (f"; {self.prompt_use} {len(r.prompt.notes)} uploaded notes"
               if r.prompt is not None and not self.action else ""),
        ]
        if r.extra:
            ref = r.extra.get("reference")
            opts = [f"{k.replace('_', ' ')} {v:g}" for k, v in r.extra.items() if isinstance(v, float)]
            if ref is not None:
                opts.append(f"reference {ref if isinstance(ref, str) else f'upload ({len(ref.notes)} notes)'}")
            lines[2] += "; " + ", ".join(opts)
        for v in self.variants:
            per = ", ".join(f"{g} {n}" for g, n in v.score.notes_per_group().items()) or "no notes"
            style = f", style {v.score.style}" if v.score.style and v.score.style != r.style else ""
            fit = adherence_text(v.adherence)
            lines.append(f"- variant {v.index}: {v.bars} bars{style}, {len(v.score.notes)} notes ({per})"
                         + (f" · {fit}" if fit else "") + (f" — ⚠️ {v.missing}" if v.missing else "")
                         + (f" — {v.preview_error}" if v.preview_error else ""))
        return "  \n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:])


def adherence_text(fig: dict) -> str:
    """A variant's adherence figures in words: "in key 100% · chord tones on strong beats 81% · ..."."""
    parts = []
    for k, label in (("in_key", "in key"), ("chord_tones_on_strong_beats", "chord tones on strong beats"),
                     ("bass_on_chord_tones", "bass on chord tones"), ("part_heard_in_bars", "new part heard in"),
                     ("prompt_notes_kept", "prompt notes kept")):
        if fig.get(k) is not None:
            parts.append(f"{label} {fig[k]:.0%}" + (" of bars" if k == "part_heard_in_bars" else ""))
    ppb = fig.get("parts_per_bar")
    if ppb:
        parts.append(f"parts heard per bar {sum(map(len, ppb)) / len(ppb):.1f}")
    return " · ".join(parts)


def missing_parts(engine: Any, request: GenerationRequest, score: Score) -> str | None:
    """A plain sentence when the variant lacks a part the request asked for (None when it has them all):
    whether the engine does not write it for such a request (`Engine.groups_written`) or the model left it
    out this time."""
    wanted = list(request.groups) + (["drums"] if request.drums else [])
    if request.edit in ("add_part", "regenerate_part"):
        wanted = [request.part]
    have = set(score.notes_per_group())
    lacking = [g for g in wanted if g not in have]
    if not lacking:
        return None
    written = set(engine.groups_written(request))
    cannot = [g for g in lacking if g not in written]
    said = []
    if cannot:
        said.append(f"engine {engine.name} does not play {', '.join(cannot)} (for this request it writes only "
                    f"{', '.join(g for g in V.GROUPS if g in written) or 'nothing'}), so "
                    f"{'it was' if len(cannot) == 1 else 'they were'} left out")
    silent = [g for g in lacking if g not in cannot]
    if silent:
        said.append(f"no {', '.join(silent)} notes in this variant (the model left {'it' if len(silent) == 1 else 'them'}"
                    " out; try another seed)")
    return "; ".join(said)


def generate(engine: Any, groups: Any, drums: Any, bars: Any, variants: Any, temperature: Any, top_p: Any,
             top_k: Any, seed: Any, bpm: Any, style: Any = None, midi: Any = None, prompt_bars: Any = 4,
             noise_sd: Any = None, alpha: Any = None, reference: Any = None, reference_midi: Any = None,
             key: Any = None, chords: Any = None, drum_kit: Any = None,
             progress: Callable[[float, str], None] | None = None, store: OutputStore | None = None,
             uploads: UploadCache | None = None, cancelled: Callable[[], bool] | None = None) -> Result:
    """Build the request, generate, render every variant, zip them.  Raises RequestError or Cancelled.
    The uploads are held while they are read, and `uploads` is pruned at the end."""
    store = store or OutputStore()
    try:
        with ExitStack() as stack:
            for name, upload in (("prompt", midi), ("reference_midi", reference_midi)):
                stack.enter_context(_hold_upload(uploads, upload, name))
            eng, request, was_random = build_request(engine, groups, drums, bars, variants, temperature, top_p,
                                                     top_k, seed, bpm, style, midi, prompt_bars, noise_sd, alpha,
                                                     reference, reference_midi, key, chords, drum_kit)
            recipe = _recipe(eng, request, file_path(midi, "prompt"), file_path(reference_midi, "reference_midi"))
            return _generate(eng, request, was_random, store, progress, cancelled, recipe)
    finally:
        if uploads is not None:
            uploads.prune()


def edit(action: Any, midi: Any, engine: Any = "transformer", part: Any = None, bars: Any = 4,
         infill_first: Any = None, infill_last: Any = None, prompt_bars: Any = None, temperature: Any = 1.0,
         top_p: Any = 0.95, top_k: Any = 0, seed: Any = None, key: Any = None, chords: Any = None,
         drum_kit: Any = None, progress: Callable[[float, str], None] | None = None,
         store: OutputStore | None = None, uploads: UploadCache | None = None,
         cancelled: Callable[[], bool] | None = None, own_file: bool = False) -> Result:
    """One editing action on a MIDI file: "continue" (+`bars` new bars), "add_part" / "regenerate_part"
    (`part`), "infill" (bars `infill_first`..`infill_last`), over the file's first `prompt_bars` bars (blank:
    all of them, at most MAX_BARS).  One variant, at the file's tempo and metre, with its groups.
    `own_file`: the file is one of this studio's outputs (a page edit), not an upload."""
    store = store or OutputStore()
    if action not in EDITS:
        raise RequestError(f"{LABELS['edit']}: unknown edit {action!r}; choose from {', '.join(EDITS)}")
    try:
        with ExitStack() as stack:
            path = file_path(midi, "prompt")
            if path is None:
                raise RequestError(f"{LABELS['prompt']}: {action.replace('_', ' ')} needs a MIDI file")
            stack.enter_context(store.hold(path) if own_file else _hold_upload(uploads, midi, "prompt"))
            whole = load_upload(path, "prompt")
            if blank(prompt_bars):
                n = whole.n_bars
                if n > MAX_BARS:
                    raise RequestError(f"{LABELS['prompt']}: the file has {n} bars; edits work on at most {MAX_BARS}: "
                                       f"set '{LABELS['prompt_bars']}'")
            else:
                n = whole_number(to_number(prompt_bars), "prompt_bars", 1, MAX_BARS)
            cut = whole.first_bars(n)
            pitched = [V.GROUPS[g] for g in cut.groups if g != V.DRUM_GROUP]
            fields_ = {"edit": action}
            if action in ("add_part", "regenerate_part"):
                fields_["part"] = part.strip().lower() if isinstance(part, str) else part
            if action == "infill":
                first = to_number(infill_first)
                fields_["infill_bars"] = (first, to_number(infill_last) if not blank(infill_last) else first)
            bpm = min(max(round(whole.bpm), MIN_BPM), MAX_BPM)  # the engine keeps the file's own tempo
            eng, request, was_random = build_request(
                engine, pitched, cut.has_drums, bars if action == "continue" else 1, 1, temperature, top_p, top_k,
                seed, bpm, None, path, n, key=key, chords=chords, drum_kit=drum_kit, **fields_)
            recipe = _recipe(eng, request, path)
            what = {"continue": f"continued by {request.bars} bars", "add_part": f"{request.part} part added",
                    "regenerate_part": f"{request.part} part regenerated",
                    "infill": "bars {}-{} infilled".format(*request.infill_bars or (0, 0))}[action]
            return _generate(eng, request, was_random, store, progress, cancelled, recipe, what)
    finally:
        if uploads is not None and not own_file:
            uploads.prune()


def _recipe(eng: Any, request: GenerationRequest, prompt_file: Path | None,
            reference_file: Path | None = None) -> Recipe:
    shipped = getattr(eng, "source", None) is None or ckpt.is_shipped(eng.source)
    return Recipe(eng.name, None if shipped else str(eng.source), request,
                  prompt_file if request.prompt is not None else None,
                  bars_of_prompt(request.prompt) if request.prompt is not None else None,
                  reference_file if not isinstance(request.extra.get("reference"), (str, type(None))) else None)


def _hold_upload(uploads: UploadCache | None, value: Any, name: str) -> AbstractContextManager:
    """Hold an upload while it is read.  With `uploads` (the page), only a file in Gradio's cache is
    accepted: an API caller must not name any other file on the server."""
    path = file_path(value, name)
    if uploads is None or path is None:
        return nullcontext()
    if uploads.top_folder(path) is None:
        raise RequestError(f"{LABELS[name]}: only a file uploaded to this page can be used; please upload it")
    return uploads.hold(path)


def _generate(eng: Any, request: GenerationRequest, was_random: bool, store: OutputStore,
              progress: Callable[[float, str], None] | None, cancelled: Callable[[], bool] | None,
              recipe: Recipe, action: str | None = None) -> Result:
    def report(frac: float, what: str) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("stopped")
        if progress is not None:
            progress(min(max(frac, 0.0), 1.0), what)

    report(0.0, "generating")
    with _engine_lock(eng.name):  # an engine instance keeps decoding state: one generation at a time
        try:
            if ON_GPU_CALL is not None:  # a ZeroGPU Space: plain arguments in, scores out (no progress)
                scores, stats = ON_GPU_CALL(eng.name, recipe.checkpoint, request)
            else:
                scores = eng.generate(request, progress=lambda f: report(0.85 * float(f), "generating"))
                stats = dict(getattr(eng, "last_stats", {}) or {})
        except ValueError as e:  # a request this engine cannot serve (drums alone for a melody engine, an
            log.info("engine %s refused the request: %s", eng.name, e)  # unknown reference song, ...)
            raise RequestError(str(e)) from None
    with store.request_dir() as out:
        for attr in ("prompt_file", "reference_file"):  # kept beside the variants, for the zip's session
            src = getattr(recipe, attr)
            if src is not None:
                setattr(recipe, attr, Path(shutil.copyfile(src, out / f"{attr.split('_')[0]}.mid")))
        warnings: list[str] = []
        t0 = time.perf_counter()
        report(0.85, "rendering")
        # FluidSynth and lame run as subprocesses, the pictures on matplotlib's thread-safe Agg canvas:
        # the variants render side by side
        with ThreadPoolExecutor(max_workers=RENDER_WORKERS) as pool:
            stems = stems_fit(scores, warnings)
            futures = [pool.submit(_render_variant, i, score, request, out, warnings, stems)
                       for i, score in enumerate(scores, 1)]
            result_variants = []
            for k, f in enumerate(futures, 1):
                v = f.result()
                v.recipe, v.result_index = recipe, k - 1
                v.adherence = adherence(request, v.score)
                v.missing = missing_parts(eng, request, v.score)
                result_variants.append(v)
                report(0.85 + 0.15 * k / len(futures), f"rendered variant {k}")
        zip_path = write_zip(result_variants, out, request.seed)
        render_seconds = time.perf_counter() - t0
    report(1.0, "done")
    return Result(result_variants, zip_path, request.seed, was_random, request, eng.name, stats,
                  render_seconds, warnings, getattr(eng, "prompt_use", "continuing"), eng.controls, action)


def stems_fit(scores: list[Score], warnings: list[str]) -> bool:
    """Whether the request's stems stay within STEMS_MAX_SECONDS of audio (tracks x seconds over all variants;
    FLAC takes about 57 kB a second); if not, a warning says they were left out and what to change."""
    seconds = sum(s.seconds() * len(s.groups) for s in scores)
    if seconds <= STEMS_MAX_SECONDS:
        return True
    warnings.append(f"stems left out of the zip: they would hold {seconds / 60:.0f} minutes of audio (the limit is "
                    f"{STEMS_MAX_SECONDS // 60}); ask for fewer variants or bars to get them")
    return False


def _render_variant(i: int, score: Score, request: GenerationRequest, out: Path, warnings: list[str],
                    stems: bool = True) -> Variant:
    """MIDI, piano roll and MP3 (and with `stems` the per-track files) of one variant; a preview that cannot
    be made is a warning, not a failure."""
    stem = f"midi-bangers-{request.seed}-v{i}"
    midi_path = write_midi(score, out / f"{stem}.mid")
    bars = -(-max(score.length or 0, score.end_step) // score.bar_steps)
    png = draw_pianoroll(score, out / f"{stem}.png",
                         title=f"variant {i} · {bars} bars · {score.bpm:g} BPM · {len(score.notes)} notes")
    try:
        r, tracks = render_preview(score, out, stem, stems=stems)
    except RenderError as e:
        if str(e) not in warnings:
            warnings.append(str(e))
        return Variant(i, score, midi_path, png, None, str(e))
    return Variant(i, score, midi_path, png, r.path, None, r.seconds, stems=tracks)


# ---- Spaces on GPUs: with the `spaces` package (a ZeroGPU Space) generation runs under spaces.GPU ----------
GPU_SECONDS_BASE = 20  # loading onto the lent GPU and starting up
GPU_SECONDS_PER_BAR = 1.5  # per bar of one batch of variants, generous: ZeroGPU ends a call that overruns


def gpu_seconds(engine: str, checkpoint: str | None, request: GenerationRequest) -> int:
    """The GPU time to ask ZeroGPU for: sized to the request (bars to write, prompt bars to read)."""
    bars = request.bars if request.edit in (None, "continue") else 0
    if request.prompt is not None:
        bars += bars_of_prompt(request.prompt)
    return int(GPU_SECONDS_BASE + GPU_SECONDS_PER_BAR * bars * -(-request.variants // 4))


def engine_generate(engine: str, checkpoint: str | None, request: GenerationRequest) -> tuple[list[Score], dict]:
    """Generate with the engine `engine` (its `checkpoint`, None: the shipped one): picklable arguments and
    results, as a function run on a lent GPU needs."""
    eng = get_engine(engine, checkpoint)
    scores = eng.generate(request)
    return scores, dict(eng.last_stats)


def gpu_call(spaces_module: Any) -> Callable | None:
    """engine_generate under `spaces_module.GPU` with a duration sized to each request, or None without it."""
    if spaces_module is None:
        return None
    return spaces_module.GPU(duration=gpu_seconds)(engine_generate)


def _import_spaces() -> Any:
    try:
        import spaces  # present on Hugging Face Spaces; a ZeroGPU Space lends a GPU per decorated call
    except ImportError:
        return None
    return spaces


ON_GPU_CALL = gpu_call(_import_spaces())


# ---- the zip: every variant's files and the session that makes them again ----------------------
def session_json(variants: list[Variant], folder: str = "prompts") -> tuple[dict, dict[str, Path]]:
    """(session.json's content, {name in the zip: file}) for the variants: per variant its engine,
    checkpoint, every request field, seed, and its prompt / reference MIDI (copied into `folder`)."""
    files: dict[str, Path] = {}
    entries = []
    for v in variants:
        r = v.recipe
        if r is None:
            continue
        entry = {"variant": v.index, "midi": f"variant-{v.index}/variant-{v.index}.mid", "engine": r.engine,
                 "checkpoint": r.checkpoint, "request": r.request.to_json(), "result_index": v.result_index,
                 "prompt": None, "reference": None}
        for kind, path, bars in (("prompt", r.prompt_file, r.prompt_bars), ("reference", r.reference_file, None)):
            if path is not None:
                name = f"{folder}/variant-{v.index}-{kind}.mid"
                files[name] = path
                entry[kind] = {"file": name, "bars": bars} if kind == "prompt" else {"file": name}
        entries.append(entry)
    return {"format": SESSION_FORMAT, "version": 1, "variants": entries}, files


def write_zip(variants: list[Variant], out: Path, seed: int) -> Path:
    """The zip of a page state: per variant its MIDI, MP3, piano roll and stems (per track a MIDI and a FLAC
    with the mix's gain), and session.json (with the
    prompts it needs) from which `python -m model.generate --session session.json` makes the same MIDI."""
    zip_path = out / f"midi-bangers-{seed}.zip"
    session, extra = session_json(variants)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for v in variants:
            base = f"variant-{v.index}/variant-{v.index}"
            z.write(v.midi, f"{base}.mid")
            z.write(v.png, f"{base}.png")
            if v.mp3 is not None:
                z.write(v.mp3, f"{base}.mp3")
            for st in v.stems:  # one MIDI and one audio file per track; the audio sums to the mix
                z.write(st.midi, f"variant-{v.index}/stems/{st.group}.mid")
                z.write(st.audio, f"variant-{v.index}/stems/{st.group}{st.audio.suffix}")
        for name, path in extra.items():
            z.write(path, name)
        z.writestr("session.json", json.dumps(session, indent=2))
    return zip_path


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


# ---- the editing loop: a page state per step, undo and redo per browser session -------------------
MAX_HISTORY = 16  # page states kept per browser session (undo goes back this far)
MAX_SESSIONS = 256  # browser sessions with a history; the least recently used is forgotten first
SESSION_MAX_AGE = 2 * 3600  # a history untouched this long is forgotten


class History:
    """One browser session's page states, newest last: `push` after a generation or an edit, `undo` and
    `redo` move through them.  At most `limit` states are kept (the oldest go first)."""

    def __init__(self, limit: int = MAX_HISTORY):
        self.limit = limit
        self._past: list[Result] = []
        self._future: list[Result] = []
        self.touched = time.time()

    @property
    def current(self) -> Result | None:
        return self._past[-1] if self._past else None

    @property
    def can_undo(self) -> bool:
        return len(self._past) > 1

    @property
    def can_redo(self) -> bool:
        return bool(self._future)

    def push(self, state: Result) -> None:
        self._past.append(state)
        del self._past[:-self.limit]
        self._future.clear()

    def replace(self, state: Result) -> None:
        """Swap the current state for `state` (the same music with its files made again)."""
        self._past[-1] = state

    def undo(self) -> Result | None:
        if not self.can_undo:
            return None
        self._future.append(self._past.pop())
        return self.current

    def redo(self) -> Result | None:
        if not self._future:
            return None
        self._past.append(self._future.pop())
        return self.current


class Sessions:
    """The histories of the browser sessions, bounded in count (least recently used forgotten first) and
    age; each history is bounded by History.limit, and its files by the OutputStore's caps (a state whose
    files were pruned is rendered again from its notes when it comes back: `restore`)."""

    def __init__(self, limit: int = MAX_SESSIONS, max_age: float = SESSION_MAX_AGE, history: int = MAX_HISTORY):
        self.limit, self.max_age, self.history_limit = limit, max_age, history
        self._histories: dict[str, History] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._histories)

    def get(self, session: str | None) -> History:
        """The session's history (a fresh, unkept one for a caller without a session)."""
        if not session:
            return History(self.history_limit)
        now = time.time()
        with self._lock:
            for k in [k for k, h in self._histories.items() if now - h.touched > self.max_age]:
                del self._histories[k]
            h = self._histories.pop(session, None) or History(self.history_limit)
            self._histories[session] = h  # most recently used last
            while len(self._histories) > self.limit:
                del self._histories[next(iter(self._histories))]
            h.touched = now
            return h


def restore(state: Result, store: OutputStore) -> Result:
    """`state` with every file on disk: variants whose files the store pruned meanwhile are rendered again
    from their notes (same MIDI, roll and preview) into a new folder, and the zip is made again."""
    if all(p.exists() for v in state.variants for p in v.files()) and state.zip_path.exists():
        return state
    with store.request_dir() as out:
        warnings: list[str] = []
        variants = []
        for v in state.variants:
            if all(p.exists() for p in v.files()):
                variants.append(v)
                continue
            nv = _render_variant(v.index, v.score, state.request, out, warnings, bool(v.stems))
            variants.append(replace(nv, recipe=v.recipe, result_index=v.result_index, adherence=v.adherence,
                                     missing=v.missing))
        with ExitStack() as stack:
            for v in variants:
                stack.enter_context(store.hold(v.midi))
            zip_path = write_zip(variants, out, state.seed)
    return replace(state, variants=variants, zip_path=zip_path)


def edit_variant(history: History, index: Any, action: str, store: OutputStore, **settings: Any) -> Result:
    """Edit variant `index` (1-based) of the session's current page state with `edit(action, ...)`; the
    new state (that variant replaced, the others kept) is pushed onto the history and returned."""
    state = history.current
    if state is None:
        raise RequestError("Generate first: there is no variant to edit yet")
    n = whole_number(to_number(index), "variants", 1, len(state.variants))
    state = restore(state, store)
    history.replace(state)
    with ExitStack() as stack:
        for v in state.variants:
            stack.enter_context(store.hold(v.midi))
        old = state.variants[n - 1]
        if old.bars > MAX_BARS:
            raise RequestError(f"Variant {n} has {old.bars} bars; editing works on at most {MAX_BARS}: download it, "
                               f"or undo to a shorter version")
        res = edit(action, str(old.midi), prompt_bars=old.bars, store=store, own_file=True, **settings)
        new = replace(res.variants[0], index=n)
        variants = [new if v.index == n else v for v in state.variants]
        with store.hold(new.midi):
            zip_path = write_zip(variants, new.midi.parent, res.seed)
    out = replace(res, variants=variants, zip_path=zip_path, action=f"variant {n}: {res.action}")
    history.push(out)
    return out
