"""A budget per request, known before it runs: what a request costs (decoder steps to sample new notes, steps to
force the kept notes of an edit in, tokens to read as context, seconds of audio to render) and how long that
takes here, from the request and the upload alone.

    cost = estimate(request)        # Cost(steps=..., read_tokens=..., audio_seconds=..., seconds=...)
    check(cost)                     # RequestError over MAX_SECONDS, saying what to change
    cost.short                      # the short lane takes it (studio.runner.LaneRunner)

A request over the budget is refused before it starts; one that runs past DEADLINE_FACTOR x its estimate (or
MAX_SECONDS) is stopped at its next progress report (`Deadline`).  The rates are measured on the 2-core
machine the README's figures come from (`python -m bench.fair` prints estimate against actual per request).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from model.request import GenerationRequest, RequestError
from model.sampling.plan import plan_request
from model.sampling.repeats import plan_repeats
from tokenizer import harmony as H
from tokenizer import vocab as V

MAX_SECONDS = 240.0  # the most one request may take to generate and render (a long one runs on its own lane)
SHORT_SECONDS = 30.0  # a request estimated under this goes to the short lane (the page's 8 bars x 4 variants do)
DEADLINE_FACTOR = 3.0  # a request stopped when it runs this many times over its estimate (and past SHORT_SECONDS)
# Measured rates: decoder steps a second of the engine on the inference worker's thread with one torch thread
# (what a job gets while the other lane is busy), by batch: piano+guitar+bass+drums, 4 bars, seed 11, docs/runs/budget.md (bench.budget);
# the kept notes' masks cost per step in proportion to the notes that sound into the edited span; audio rendered
# (MP3 and FLAC stems) per second of music and track.  One thread is what each job gets while both lanes are busy;
# a job alone takes both cores and runs up to about 1.8x faster than its estimate (safe; bench.edit).
STEPS_PER_SECOND = {1: 125.0, 2: 87.0, 4: 68.0, 8: 41.0}
# Variants decode side by side until the longest is done: with more than one, the steps run past one variant's
# estimated notes (measured 1.4-1.8x at batches 2-8, 4 and 8 bars).
VARIANT_SPREAD = 1.6
# Loop mode (model.sampling.loop): per variant, candidate last bars sampled in a batch and scored by the full
# network; measured 13-15 s a variant of 8 bars (docs/runs/loops.md).
LOOP_SECONDS_PER_VARIANT = 4.0
LOOP_SECONDS_PER_BAR = 1.2
SECONDS_PER_STEP_PER_KEPT_NOTE = 2.0e-6
# An edit with kept notes (add or regenerate a part) calls the decoder for each sampled token only: the kept
# notes' forced tokens are fed in one call with the next sampled one (model.sampling.decode).  Measured on
# Freedoom's D_ROMERO (7 parts, 6,879 notes; brass added over 24, 48 and 227 bars: 866, 2,186 and 10,127 calls
# in 12, 34 and 153 s) and the dense 64-bar upload (bench.fair.dense_song, piano regenerated: 7,825 calls,
# 60,044 tokens, 172 s), batch 1, one thread (instrumented runs on the main thread that counted the decoder's
# calls; the whole requests through HTTP: `python -m bench.edit`, docs/runs/bench-edit.log): about 3 calls a new note plus KEPT_CALLS_PER_ONSET a distinct onset
# of the kept notes (1.4 to 3.1: where a new note may come before them), each call EDIT_CALL_STEPS times a
# free-generation step (a deeper window, several tokens a call: 13.4 ms against 8), and FORCED_TOKEN_SECONDS a
# forced token (its mask and bookkeeping).
KEPT_CALLS_PER_ONSET = 2.5
EDIT_CALL_STEPS = 1.9  # through HTTP: D_ROMERO + brass, 169.5 s of generation (bench.edit)
FORCED_TOKEN_SECONDS = 1.0e-3
RENDER_SECONDS_PER_TRACK_SECOND = 0.02  # a stem
MIX_SECONDS_PER_SECOND = 0.045  # the mix's MP3 (every part at once): D_ROMERO's 8.7 minutes in 24.3-24.8 s
OVERHEAD_SECONDS = 1.0
STEMS_MAX_SECONDS = 40 * 60  # stems of one request: at most this much audio (tracks x seconds, all variants)
# a part edit writes every part's stem up to this much audio, past it its new part's only (the song's other parts
# are unchanged, and rendering them alone again was most of a long or dense song's edit: the dense upload's preview
# took 22.3 s with its 12 stems, 7.3 s with the new part's, `python -m bench.render --part-stem`,
# docs/runs/bench-render-part-stem.log)
PART_STEMS_SECONDS = 10 * 60


@dataclass(frozen=True)
class Cost:
    steps: int  # decoder steps (variants decode side by side, so one step serves every variant)
    read_tokens: int  # context tokens read before sampling (prefilled, a window at a time)
    kept_notes: int  # notes of the upload forced in at their places
    audio_seconds: float  # music to render, summed over tracks and variants
    seconds: float  # the estimate of the whole request here
    bars: int = 0  # bars to write (the generated span: the new bars, the infilled ones, or the whole song)
    preview: tuple[int, int] | None = None  # bars (first, last) the audio previews play; None: the whole piece
    stems: tuple[int, ...] | None = None  # the groups whose stems the previews write (None: every group's)
    edited: tuple[int, int] | None = None  # bars (first, last) a continuation or an infill writes, 1-based

    @property
    def short(self) -> bool:
        return self.seconds < SHORT_SECONDS

    def describe(self) -> str:
        return (f"about {self.seconds:.0f} s: {self.steps:,} decoding steps, {self.kept_notes:,} notes of the upload "
                f"to keep in place, {self.audio_seconds / 60:.1f} minutes of audio to render")


PREVIEW_WHOLE_BARS = 32  # a piece of up to this many bars is previewed whole
PREVIEW_LEAD_BARS = 4  # bars before an edited span that its preview plays (how the song comes into it)
PREVIEW_TAIL_BARS = 2  # bars after it (how it leads on)
# notes of the song around the span that a preview plays at most: FluidSynth's time grows with the notes (8 bars
# of the dense 16-track upload, 2,500 notes, took 0.9 s, most of its infill's rendering); a dense song's preview
# keeps fewer bars around the edit, down to one on each side.  A real song's 6 bars hold a few hundred notes.
PREVIEW_NOTES = 1000


def preview_bars(plan) -> tuple[int, int] | None:
    """(first, last) bars, 1-based, of the audio preview of a request that writes a span of a longer piece (a
    continuation, an infill): the span with PREVIEW_LEAD_BARS before and PREVIEW_TAIL_BARS after it, fewer (at
    least one each) where those bars hold more than PREVIEW_NOTES of the song's notes.  None: the whole piece (a
    new piece, one of up to PREVIEW_WHOLE_BARS, or an edit of every bar: an added part).  The MIDI and the roll
    hold the whole song either way; rendering all 8.7 minutes of a 227-bar song took 24 s."""
    bar = plan.bar_steps
    total = -(-plan.limit // bar)
    if total <= PREVIEW_WHOLE_BARS or plan.min_time <= 0:
        return None
    span = edited_bars(plan)
    onsets = plan.song_notes()["onset"].astype(np.int64)
    per_bar = np.bincount(onsets // bar, minlength=total + 1)
    lead, tail = PREVIEW_LEAD_BARS, PREVIEW_TAIL_BARS
    while True:
        first, last = max(1, span[0] - lead), min(total, span[1] + tail)
        around = per_bar[first - 1:span[0] - 1].sum() + per_bar[span[1]:last].sum()
        if around <= PREVIEW_NOTES or lead + tail <= 2:
            break
        lead, tail = (lead - 1, tail) if lead > tail else (lead, tail - 1)
    return None if last - first + 1 > total - PREVIEW_LEAD_BARS else (first, last)


def edited_bars(plan) -> tuple[int, int]:
    """(first, last) bars, 1-based, of the span a request writes (the new bars of a continuation, an infill's)."""
    return plan.min_time // plan.bar_steps + 1, -(-plan.new_end // plan.bar_steps)


def steps_per_second(batch: int) -> float:
    fits = [b for b in STEPS_PER_SECOND if b >= batch]
    return STEPS_PER_SECOND[min(fits)] if fits else STEPS_PER_SECOND[max(STEPS_PER_SECOND)] * max(STEPS_PER_SECOND) / batch


def estimate(request: GenerationRequest) -> Cost:
    """The cost of a validated request (any engine: the transformer's is the one that matters; the others are
    smaller networks, so this over-estimates them)."""
    plan = plan_request(request)
    bar = plan.bar_steps
    span_bars = max(0.0, (plan.new_end - plan.min_time) / bar)
    per_bar = sum(H.PART_DENSITY.get(V.GROUPS[g], 6.0) for g in plan.allowed) * bar / V.STEPS_PER_BAR
    new_notes = per_bar * span_bars
    kept = len(plan.kept)
    shifts = (plan.new_end - plan.min_time) / V.MAX_SHIFT
    rate = steps_per_second(request.variants)
    unit, repeats = plan_repeats(plan)  # an added part's repeats are copied: no decisions there
    copied = [u for targets in repeats.values() for u in targets]
    if copied:
        new_notes *= max(0.0, 1.0 - len(copied) * unit / max(plan.new_end - plan.min_time, 1))
    if kept:  # decoder calls: the sampled tokens (the forced ones ride along)
        free = ~np.isin(plan.kept["onset"].astype(np.int64) // unit, copied)
        onsets = len(np.unique(plan.kept["onset"][free]))
        steps = int(3 * new_notes + KEPT_CALLS_PER_ONSET * onsets + 3 * shifts) + 8
        forced = max(0, 3 * kept - KEPT_CALLS_PER_ONSET * onsets)
    else:
        steps, forced = int(3 * new_notes + 3 * shifts) + 8, 0
    if request.variants > 1:
        steps = int(steps * VARIANT_SPREAD)
    if kept:
        step_seconds = EDIT_CALL_STEPS / rate
    else:  # the notes of the prompt that sound into the generated span cost a little every step
        step_seconds = 1.0 / rate + SECONDS_PER_STEP_PER_KEPT_NOTE * (len(plan.sounding()) + min(len(plan.context), 256))
    generation = steps * step_seconds + forced * FORCED_TOKEN_SECONDS
    preview = preview_bars(plan)
    previewed = plan.limit if preview is None else (preview[1] - preview[0] + 1) * bar
    seconds_of_music = previewed / V.STEPS_PER_QUARTER * 60.0 / plan.bpm
    tracks = max(1, len(set(plan.allowed) | {int(g) for g in plan.song_notes()["group"]}))
    mix = seconds_of_music * request.variants
    groups, _ = stem_groups(request, mix, mix * tracks)
    stems = 0.0 if preview is not None else mix * (tracks if groups is None else len(groups))
    audio = mix + stems
    seconds = OVERHEAD_SECONDS + generation + mix * MIX_SECONDS_PER_SECOND + stems * RENDER_SECONDS_PER_TRACK_SECOND
    if getattr(request, "loop", False):
        seconds += request.variants * (LOOP_SECONDS_PER_VARIANT + LOOP_SECONDS_PER_BAR * plan.limit / bar)
    stems = () if preview is not None else None if groups is None else tuple(groups)
    return Cost(steps, 3 * len(plan.context), kept, audio, seconds, plan.span_bars, preview, stems,
                None if preview is None else edited_bars(plan))


def stem_groups(request: GenerationRequest, seconds: float, every: float) -> tuple[list[int] | None, str | None]:
    """Which stems a request of `seconds` of music (all variants) writes, when every part's would hold `every`
    seconds of audio: None, every part's (up to STEMS_MAX_SECONDS; a part edit up to PART_STEMS_SECONDS); [group],
    a part edit's new part's only; [], none.  And the note that tells the musician (None for every part's)."""
    edit = request.edit_kind
    part_edit = edit is not None and edit.new_part
    if every <= (PART_STEMS_SECONDS if part_edit else STEMS_MAX_SECONDS):
        return None, None
    if part_edit and seconds <= STEMS_MAX_SECONDS:
        return [V.GROUPS.index(request.part)], (
            f"stems: the new {request.part} part's only; every part's would hold {every / 60:.0f} minutes of audio "
            f"(an added or regenerated part writes them up to {PART_STEMS_SECONDS // 60}); the other parts are "
            f"unchanged, and the MIDI holds every part")
    return [], (f"stems left out of the zip: they would hold {every / 60:.0f} minutes of audio (the limit is "
                f"{STEMS_MAX_SECONDS // 60}); ask for fewer variants or bars to get them")


def check(cost: Cost) -> None:
    """RequestError when `cost` is over MAX_SECONDS, naming what to change."""
    if cost.seconds > MAX_SECONDS:
        raise RequestError(f"This request would take {cost.describe()}; one request may take at most "
                           f"{MAX_SECONDS:.0f} s here. Ask for fewer bars or variants, edit fewer bars (Infill), or "
                           f"upload a shorter or lighter song.")


class Deadline:
    """Raises RequestError from `check()` once a request has run DEADLINE_FACTOR x its estimate (at least
    SHORT_SECONDS, at most MAX_SECONDS): a request the estimate got wrong cannot hold the engine for long."""

    def __init__(self, cost: Cost):
        self.cost = cost
        self.limit = min(MAX_SECONDS, max(SHORT_SECONDS, DEADLINE_FACTOR * cost.seconds))
        self.start = time.monotonic()

    def check(self) -> None:
        spent = time.monotonic() - self.start
        if spent > self.limit:
            raise RequestError(f"This request ran {spent:.0f} s, past its budget of {self.limit:.0f} s (estimated "
                               f"{self.cost.describe()}), and was stopped. Ask for fewer bars or variants, edit "
                               f"fewer bars, or upload a shorter or lighter song.")
