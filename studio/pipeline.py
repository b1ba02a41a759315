"""The pipeline of one request: engine -> variants -> rendered files (MIDI, piano roll, MP3, stems) -> zip, into
a new folder of the OutputStore; and `restore`, which makes a page state's pruned files again from its notes.

    result = run(prepared, store, runner, reporter(progress, cancelled))
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable

from model import checkpoint as ckpt
from model.adherence import adherence
from model.request import GenerationRequest, RequestError
from render.ahead import Backing
from render.audio import CORES, RenderError, render_preview
from render.pianoroll import draw_pianoroll
from tokenizer import Score, write_midi
from tokenizer import vocab as V

from .archive import write_zip
from .budget import Cost, Deadline, check, estimate, stem_groups
from .history import Cancelled
from .inputs import Prepared
from .results import Recipe, Result, Variant, missing_parts
from .runner import Runner
from .stores import OutputStore
from .worker import taking_a_core

log = logging.getLogger(__name__)

RENDER_WORKERS = max(2, os.cpu_count() or 2)  # variants rendered at once (FluidSynth and lame are subprocesses)
GENERATING = 0.85  # the share of the progress bar generation takes; rendering takes the rest

Reporter = Callable[[float, str], None]
# A part edit renders the song's other parts while the model writes only for a song longer than this: generation runs
# on one thread meanwhile, which paid on D_ROMERO (8.7 minutes: 85.7 s with, 91.3 s without) and not on the dense
# 2.1-minute upload, whose arrangement FluidSynth plays slowly and whose generation gains most from two threads (piano
# regenerated: 77.3 s with, 73.6 s without; `python -m bench.edit --ahead 2 [--dense --regenerate]`,
# docs/runs/bench-edit-epyc-ahead.log, bench-edit-epyc-ahead-regenerate.log, second round)
AHEAD_PART_SECONDS = 5 * 60.0


REPORT_EVERY = 0.25  # seconds: the page's progress bar is updated at most this often while its text stays the same


def reporter(progress: Callable[[float, str], None] | None, cancelled: Callable[[], bool] | None) -> Reporter:
    """report(fraction, what): raises Cancelled once `cancelled()` is true, else passes the fraction (clamped
    to 0..1) on to `progress` when its text changed, it is the end, or REPORT_EVERY seconds have passed (the
    engine reports at every note: each report is a message the server sends and the page's client parses)."""
    last = {"what": None, "at": 0.0}

    def report(frac: float, what: str) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("stopped")
        now = time.monotonic()
        if progress is not None and (what != last["what"] or frac >= 1.0 or now - last["at"] >= REPORT_EVERY):
            last.update(what=what, at=now)
            progress(min(max(frac, 0.0), 1.0), what)
    return report


def make_recipe(prepared: Prepared) -> Recipe:
    """How `prepared`'s variants are made: engine, checkpoint (None when shipped), request and its files."""
    eng, req = prepared.engine, prepared.request
    shipped = getattr(eng, "source", None) is None or ckpt.is_shipped(eng.source)
    prompt = req.prompt is not None
    return Recipe(eng.name, None if shipped else str(eng.source), req, prepared.prompt_file if prompt else None,
                  req.prompt.bars if prompt else None, prepared.reference_file)


def keep_copies(recipe: Recipe, out: Path) -> Recipe:
    """The recipe with its prompt and reference files copied into `out` (an upload Gradio may prune; the zip's
    session needs them)."""
    copies = {}
    for attr, name in (("prompt_file", "prompt.mid"), ("reference_file", "reference.mid")):
        src = getattr(recipe, attr)
        if src is not None:
            copies[attr] = Path(shutil.copyfile(src, out / name))
    return replace(recipe, **copies)


def run(prepared: Prepared, store: OutputStore, runner: Runner, report: Reporter, action: str | None = None,
        on_partial: Callable[[Result], None] | None = None) -> Result:
    """Generate `prepared`'s variants with `runner`, render each, zip them.  Raises RequestError (a request
    the engine cannot serve) or Cancelled (from `report`).  `on_partial` gets a Result with the variants rendered
    so far (and no zip) each time one more is ready, so that a page can play the first before the last is done."""
    eng, request = prepared.engine, prepared.request
    recipe = make_recipe(prepared)
    cost = estimate(request)
    check(cost)  # over the budget: refused before it starts
    deadline = Deadline(cost)

    def generating(f: float) -> None:  # "generating: 120 of 227 bars"
        deadline.check()
        report(GENERATING * float(f), f"generating: {min(cost.bars, int(float(f) * cost.bars))} of {cost.bars} bars")

    generating(0.0)
    with render_ahead(request, cost) as backing:
        try:
            scores, stats = runner(eng, recipe.checkpoint, request, generating, short=cost.short)
        except ValueError as e:  # a request this engine cannot serve (drums alone for a melody engine, an
            log.info("engine %s refused the request: %s", eng.name, e)  # unknown reference song, ...)
            raise RequestError(str(e)) from None
        with store.request_dir() as out:
            recipe = keep_copies(recipe, out)
            t0 = time.perf_counter()
            report(GENERATING, "rendering")
            def finish(v: Variant) -> Variant:
                return replace(v, recipe=recipe, adherence=adherence(request, v.score),
                               missing=missing_parts(eng, request, v.score))

            def partial(done: list[Variant], warnings: list[str]) -> None:
                if on_partial is not None:
                    on_partial(Result(sorted(map(finish, done), key=lambda v: v.index), None, request.seed,
                                      prepared.seed_was_random, request, eng.name, stats, time.perf_counter() - t0,
                                      list(warnings), getattr(eng, "prompt_use", "continuing"), eng.controls, action))

            variants, warnings = render_all(scores, request, out, report, partial, cost.preview, backing)
            variants = [finish(v) for v in variants]
            zip_path = write_zip(variants, out, request.seed)
            render_seconds = time.perf_counter() - t0
        report(1.0, "done")
        return Result(variants, zip_path, request.seed, prepared.seed_was_random, request, eng.name, stats,
                      render_seconds, warnings, getattr(eng, "prompt_use", "continuing"), eng.controls, action)


def render_ahead(request: GenerationRequest, cost: Cost) -> AbstractContextManager[Backing | None]:
    """The notes an edit keeps, rendered while the model writes the new ones (`render.ahead.Backing`, one FluidSynth
    taking a core from generation meanwhile), or nothing:
    - a part edit of a song over AHEAD_PART_SECONDS whose previews write the new part's stem alone: the song's
      other parts, most of its rendering (D_ROMERO's six took 17.8 s of FluidSynth, its brass alone 3.1 s, in a
      one-off timing);
    - a continuation or an infill previewed in part: the bars around the span it writes, in the preview's window.
    Nothing either when it cannot start: the preview then renders everything after generation, as without it."""
    edit, song = request.edit_kind, request.prompt
    if edit is None or song is None:
        return nullcontext(None)
    try:
        if cost.preview is not None and cost.edited is not None:
            first, last = cost.preview
            lo, hi = ((b - first) * song.bar_steps for b in (cost.edited[0], cost.edited[1] + 1))
            return Backing.outside(song.window(first, last), lo, hi, claim=taking_a_core)
        kept = [g for g in song.groups if g not in (cost.stems or ())]
        if edit.new_part and cost.preview is None and cost.stems and kept and song.seconds() > AHEAD_PART_SECONDS:
            return Backing.of_groups(song, kept, claim=taking_a_core)
    except Exception:  # noqa: BLE001 - a speed-up, never a reason to fail the request
        log.exception("the kept notes could not be rendered ahead")
    return nullcontext(None)


def render_all(scores: list[Score], request: GenerationRequest, out: Path, report: Reporter,
               on_done: Callable[[list[Variant], list[str]], None] | None = None,
               preview: tuple[int, int] | None = None,
               backing: Backing | None = None) -> tuple[list[Variant], list[str]]:
    """(a Variant per score with its files in `out`, in order; warnings).  FluidSynth and lame run as
    subprocesses, the pictures on matplotlib's thread-safe Agg canvas: the variants render side by side, and
    `on_done(the variants ready so far, warnings)` is called as each one is.  `preview`: the bars the audio
    plays (budget.preview_bars; no stems then), None: the whole piece.  `backing`: parts rendered ahead."""
    warnings: list[str] = []
    with ThreadPoolExecutor(max_workers=RENDER_WORKERS) as pool:
        if preview is not None:  # a musician looking for stems in the zip learns why there are none
            groups, note = [], (f"stems left out of the zip: an edit of a long song previews bars {preview[0]}-"
                                f"{preview[1]} only; the MIDI holds every part of the whole song")
        else:
            groups, note = stem_groups(request, sum(s.seconds() for s in scores),
                                       sum(s.seconds() * len(s.groups) for s in scores))
        if note is not None:
            warnings.append(note)
        processes = max(1, CORES // min(len(scores), RENDER_WORKERS))  # the variants share the cores
        futures = {pool.submit(render_variant, i, score, request, out, warnings, groups, preview, processes,
                               backing): i - 1
                   for i, score in enumerate(scores, 1)}
        done: list[Variant] = []
        for f in as_completed(futures):
            done.append(replace(f.result(), result_index=futures[f]))
            report(GENERATING + (1 - GENERATING) * len(done) / len(futures), f"rendered variant {done[-1].index}")
            if on_done is not None:
                on_done(list(done), warnings)
    return sorted(done, key=lambda v: v.index), warnings


def render_variant(i: int, score: Score, request: GenerationRequest, out: Path, warnings: list[str],
                   stem_groups: list[int] | None = None, preview: tuple[int, int] | None = None,
                   processes: int | None = None, backing: Backing | None = None) -> Variant:
    """MIDI, piano roll and MP3 (and the stems of `stem_groups`, None: of every group) of one variant, the MP3 of
    bars `preview` (first, last) only when given; a preview that cannot be made is a warning, not a failure."""
    stem = f"midi-bangers-{request.seed}-v{i}"
    midi_path = write_midi(score, out / f"{stem}.mid")
    bars = -(-max(score.length or 0, score.end_step) // score.bar_steps)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the picture is drawn while FluidSynth renders
        png = pool.submit(draw_pianoroll, score, out / f"{stem}.png",
                          title=f"variant {i} · {bars} bars · {score.bpm:g} BPM · {len(score.notes)} notes")
        try:
            if preview is not None:  # the variant's own end: a continuation may ring past the planned bars
                preview = (preview[0], max(preview[0], min(preview[1], -(-score.span_steps // score.bar_steps))))
            clip = score if preview is None else score.window(*preview)
            r, tracks = render_preview(clip, out, stem, stems=stem_groups != [] and preview is None,
                                       processes=processes, stem_groups=stem_groups, backing=backing)
        except RenderError as e:
            if str(e) not in warnings:
                warnings.append(str(e))
            return Variant(i, score, midi_path, png.result(), None, str(e))
    return Variant(i, score, midi_path, png.result(), r.path, None, r.seconds, stems=tracks, preview_bars=preview)


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
            groups = [V.GROUPS.index(s.group) for s in v.stems]  # the stems it had
            nv = render_variant(v.index, v.score, state.request, out, warnings, groups, v.preview_bars)
            variants.append(replace(nv, recipe=v.recipe, result_index=v.result_index, adherence=v.adherence,
                                    missing=v.missing))
        with ExitStack() as stack:
            for v in variants:
                stack.enter_context(store.hold(v.midi))
            zip_path = write_zip(variants, out, state.seed)
    return replace(state, variants=variants, zip_path=zip_path)
