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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from model.engine import engine_names, get_engine
from model.request import LABELS, MAX_BARS, SEED_LIMIT, GenerationRequest, RequestError, whole_number
from render.audio import RenderError, render_mp3
from render.pianoroll import draw_pianoroll
from tokenizer import MidiError, Score, load_midi, write_midi

log = logging.getLogger(__name__)

MAX_PROMPT_NOTES = 20_000  # an uploaded MIDI with more notes than this is refused (memory and time)
NO_STYLE = "none"
NO_REFERENCE = "none"
OUTPUT_ENV = "MIDI_BANGERS_OUTPUT_DIR"
MB = 1024 * 1024
RENDER_WORKERS = max(2, os.cpu_count() or 2)  # variants rendered at once (FluidSynth and lame are subprocesses)
# Output folders (one per request): the newest KEEP_REQUESTS, none older than OUTPUT_MAX_AGE, at most
# OUTPUT_MAX_BYTES together.  A request of 8 variants x 64 bars at 40 BPM writes about 100 MB (MP3s twice,
# loose and zipped); a usual one (2 x 8 bars) well under 1 MB.
KEEP_REQUESTS = 24
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
                  reference_midi: Any = None) -> tuple[Any, GenerationRequest, bool]:
    """The page's values -> (engine, validated request, seed_was_random), or RequestError."""
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
        extra=engine_options(engine, noise_sd, alpha, reference, reference_midi))
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
        unit = next((k[: -len("_per_s")] for k in s if k.endswith("_per_s")), "tokens")  # the engine's own unit
        first = self.variants[0].score if self.variants else None
        bpm = first.bpm if first is not None else r.bpm  # a continuation keeps the upload's tempo and metre
        metre = f" in {first.time_signature[0]}/{first.time_signature[1]}" if first is not None else ""
        if r.prompt is not None and r.prompt.length and r.edit in (None, "continue"):
            length = f"{-(-r.prompt.length // r.prompt.bar_steps)} prompt bars + {r.bars} new bars"
        else:
            length = f"{r.bars} bars"
        lines = [
            f"**{len(self.variants)} variant{'s' if len(self.variants) != 1 else ''}** · engine `{self.engine}` · "
            f"{length} at {bpm:g} BPM{metre} · seed **{self.seed}**{' (random)' if self.seed_was_random else ''}",
            f"generation: {s.get('seconds', 0.0):.2f} s, {s.get(unit, 0)} {unit}, "
            f"{s.get(f'{unit}_per_s', 0.0):.0f} {unit}/s · rendering: {self.render_seconds:.2f} s",
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


def generate(engine: Any, groups: Any, drums: Any, bars: Any, variants: Any, temperature: Any, top_p: Any,
             top_k: Any, seed: Any, bpm: Any, style: Any = None, midi: Any = None, prompt_bars: Any = 4,
             noise_sd: Any = None, alpha: Any = None, reference: Any = None, reference_midi: Any = None,
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
                                                     reference, reference_midi)
        return _generate(eng, request, was_random, store, progress, cancelled)
    finally:
        if uploads is not None:
            uploads.prune()


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
              progress: Callable[[float, str], None] | None, cancelled: Callable[[], bool] | None) -> Result:
    def report(frac: float, what: str) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("stopped")
        if progress is not None:
            progress(min(max(frac, 0.0), 1.0), what)

    report(0.0, "generating")
    with _engine_lock(eng.name):  # an engine instance keeps decoding state: one generation at a time
        try:
            scores = eng.generate(request, progress=lambda f: report(0.85 * float(f), "generating"))
        except ValueError as e:  # a request this engine cannot serve (drums alone for a melody engine, an
            log.info("engine %s refused the request: %s", eng.name, e)  # unknown reference song, ...)
            raise RequestError(str(e)) from None
        stats = dict(getattr(eng, "last_stats", {}) or {})
    with store.request_dir() as out:
        result_variants: list[Variant] = []
        warnings: list[str] = []
        t0 = time.perf_counter()
        report(0.85, "rendering")
        # FluidSynth and lame run as subprocesses, the pictures on matplotlib's thread-safe Agg canvas:
        # the variants render side by side
        with ThreadPoolExecutor(max_workers=RENDER_WORKERS) as pool:
            futures = [pool.submit(_render_variant, i, score, request, out, warnings)
                       for i, score in enumerate(scores, 1)]
            for k, f in enumerate(futures, 1):
                result_variants.append(f.result())
                report(0.85 + 0.15 * k / len(futures), f"rendered variant {k}")
        zip_path = out / f"midi-bangers-{request.seed}.zip"
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
            for v in result_variants:
                z.write(v.midi, v.midi.name)
                if v.mp3 is not None:
                    z.write(v.mp3, v.mp3.name)
        render_seconds = time.perf_counter() - t0
    report(1.0, "done")
    return Result(result_variants, zip_path, request.seed, was_random, request, eng.name, stats,
                  render_seconds, warnings, getattr(eng, "prompt_use", "continuing"), eng.controls)


def _render_variant(i: int, score: Score, request: GenerationRequest, out: Path, warnings: list[str]) -> Variant:
    """MIDI, piano roll and MP3 of one variant; a preview that cannot be made is a warning, not a failure."""
    stem = f"midi-bangers-{request.seed}-v{i}"
    midi_path = write_midi(score, out / f"{stem}.mid")
    png = draw_pianoroll(score, out / f"{stem}.png",
                         title=f"variant {i} · {request.bars} bars · {request.bpm:g} BPM · {len(score.notes)} notes")
    try:
        r = render_mp3(score, out / f"{stem}.mp3")
    except RenderError as e:
        if str(e) not in warnings:
            warnings.append(str(e))
        return Variant(i, score, midi_path, png, None, str(e))
    return Variant(i, score, midi_path, png, r.path, None, r.seconds)


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
