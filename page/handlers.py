"""The page's handlers, at module level so that tests call them without a browser: each takes the `Studio`
(the service layer), values by name and the browser session, and returns plain values; page/layout.py wires
them to the widgets.  A person's mistake becomes the page's message as it is; anything else an apology, with the
traceback in the server log.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gradio as gr

from model import request as R
from model.engine import get_engine
from render.roll import roll_data
from studio import Cancelled, History, Result, Studio

log = logging.getLogger("page")

SLOTS = R.MAX_VARIANTS  # variant slots on the page
SORRY = ("Sorry, something went wrong on our side while generating. Please try again; if it keeps happening, "
         "the server log has the details.")
OPTION_CONTROLS = ("noise_sd", "alpha", "reference")  # engine options, shown only for engines that have them
NOT_ON_PAGE = ("edit",)  # the per-variant edit buttons say so themselves when an engine cannot edit
Progress = Callable[[float, str], None]


def error(e: Exception) -> gr.Error:
    """The message a person sees: theirs as it is, ours as an apology (the traceback goes to the log)."""
    if isinstance(e, R.RequestError):
        return gr.Error(str(e), print_exception=False)
    if isinstance(e, Cancelled):
        return gr.Error("Stopped.", print_exception=False)
    log.error("generation failed", exc_info=e)
    return gr.Error(SORRY, print_exception=False)


def session_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def progress_of(progress: gr.Progress | None) -> Progress | None:
    return None if progress is None else (lambda f, what: progress(f, desc=what))


@dataclass(frozen=True)
class EngineView:
    """What the page shows for an engine: its controls, styles, built-in references and a note."""
    controls: frozenset
    styles: tuple
    references: tuple
    note: str


def engine_view(name: str) -> EngineView:
    """The view of engine `name`; a broken engine gives no controls and a note saying why."""
    try:
        eng = get_engine(name)
    except Exception as e:  # a missing or broken checkpoint must not take the page down
        log.exception("engine %s unavailable", name)
        return EngineView(frozenset(), (), (), f"⚠️ engine `{name}` is not available: {e}")
    missing = [c for c in R.ALL_CONTROLS if c not in eng.controls and c not in OPTION_CONTROLS + NOT_ON_PAGE]
    disabled = ", ".join(R.LABELS.get(c, c) for c in missing)
    note = eng.description + (f"  \nNot supported by this engine (disabled): {disabled}." if missing else "")
    return EngineView(eng.controls, tuple(eng.styles), tuple(getattr(eng, "references", ())), note)


RENDERING = "\n\n_The other variants are still rendering…_"


def result_outputs(result: Result) -> list:
    """/generate's outputs for a page state: seed, summary, zip, then per slot its roll PNG, MP3 and MIDI as
    plain paths (None for unused slots), so API clients get files.  A partial result (no zip yet) fills the slots
    of the variants rendered so far."""
    partial = result.zip_path is None
    out = [str(result.seed), result.summary + (RENDERING if partial else ""), None if partial else str(result.zip_path)]
    by_slot = {v.index: v for v in result.variants}
    for i in range(1, SLOTS + 1):
        v = by_slot.get(i)
        out += [str(v.png), str(v.mp3) if v.mp3 else None, str(v.midi)] if v else [None] * 3
    return out


def warn(result: Result) -> Result:
    for w in result.warnings:
        gr.Warning(f"{w} (the MIDI is still available)")
    return result


POLL = 0.5  # seconds between the points where Gradio may stop a cancelled job


def streamed(work: Callable[[Callable[[Result], None], Callable[[], bool]], Result],
             outputs: Callable[[Result], Any], skip: Any) -> Iterator[Any]:
    """Run `work(on_partial, cancelled)` (a studio call) in a helper thread, in this request's context (for the
    progress bar), and yield `outputs(partial)` for each partial result and `outputs(final)` at the end.  Every
    POLL seconds without news it yields `skip` (no change), so that Gradio can stop the job when its client
    cancels or goes away; then, or whenever this generator ends early, `cancelled()` turns true and the studio
    stops generating and rendering at its next progress report, freeing the engine."""
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            results.put(("done", work(lambda r: results.put(("partial", r)), stop.is_set)))
        except Exception as e:  # noqa: BLE001 - raised again below, in the request's thread
            results.put(("error", e))

    threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True, name="midi-bangers-job").start()
    try:
        while True:
            try:
                kind, item = results.get(timeout=POLL)
            except queue.Empty:
                yield skip
                continue
            if kind == "error":
                raise error(item) from None
            if kind == "done":
                yield outputs(item)
                return
            yield outputs(item)
    finally:
        stop.set()  # finished, failed, or closed by Gradio for a cancelled job: nothing more to compute


SKIP = gr.skip()  # {"__type__": "update"}: no change


def skips(n: int) -> tuple:
    return tuple(dict(SKIP) for _ in range(n))


class PageBlocks(gr.Blocks):
    """gr.Blocks with one shortcut: a streamed handler's "no news" yield (every output skipped, every POLL
    seconds) goes to the client as it is.  Gradio would rebuild each output's component and its config for a skip
    (about 60 ms on the event loop for /generate's 15 outputs, holding the GIL the decoder needs between ops:
    about 12% of a request's decoding, measured with bench.page); the result is the same "no change" per output
    (tests/page/test_handlers.py compares them)."""

    async def postprocess_data(self, block_fn, predictions, state):
        outs = block_fn.outputs
        if (isinstance(predictions, (list, tuple)) and len(predictions) == len(outs) > 0
                and all(p == SKIP for p in predictions) and not block_fn.is_validator_function
                and not any(b.stateful for b in outs)):
            return [dict(SKIP) for _ in outs]
        return await super().postprocess_data(block_fn, predictions, state)


def generate(studio: Studio, values: dict[str, Any], session: str | None, progress: Progress | None) -> Iterator[list]:
    """/generate: each variant as soon as it is rendered (playable), then the whole result."""
    def work(on_partial, cancelled):
        return studio.generate(values, session=session, progress=progress, on_partial=on_partial, cancelled=cancelled)

    return streamed(work, lambda r: result_outputs(warn(r) if r.zip_path else r), skips(3 + 3 * SLOTS))


def edit_variant(studio: Studio, session: str | None, index: int, kind: str, values: dict[str, Any],
                 progress: Progress | None) -> Iterator[list]:
    """Edit variant `index` of the session's page state with the edit `kind` (model.edits)."""
    def work(on_partial, cancelled):
        return studio.edit_variant(session, index, kind, values, progress=progress, cancelled=cancelled)

    return streamed(work, lambda r: result_outputs(warn(r)), skips(3 + 3 * SLOTS))


def step(studio: Studio, session: str | None, direction: str) -> list:
    """Undo or redo: the page state before or after."""
    try:
        result = studio.undo(session) if direction == "undo" else studio.redo(session)
    except Exception as e:
        raise error(e) from None
    return result_outputs(result)


def keep(studio: Studio, session: str | None, index: int) -> tuple[str, int]:
    """Variant `index` as the upload Generate continues: (its MIDI, the bars to use)."""
    try:
        kept = studio.keep(session, index)
    except Exception as e:
        raise error(e) from None
    gr.Info(f"Variant {index} is the new starting point: Generate continues it.")
    return str(kept.midi), kept.bars


def edit_upload(studio: Studio, kind: str, values: dict[str, Any], progress: Progress | None) -> Iterator[tuple]:
    """A named editing endpoint: (the edited MIDI, its MP3, its roll PNG, the summary)."""
    def work(on_partial, cancelled):
        return studio.edit_upload(kind, values, progress=progress, cancelled=cancelled)

    def outputs(result: Result) -> tuple:
        v = result.variants[0]
        return str(v.midi), str(v.mp3) if v.mp3 else None, str(v.png), result.summary

    return streamed(work, outputs, skips(4))


@dataclass(frozen=True)
class PageView:
    """What the result side shows after any change of the page state."""
    shown: bool  # a state exists: the result bar and the edit panel are visible
    variants: int
    rolls: list  # roll_data per slot (None for unused slots)
    can_undo: bool
    can_redo: bool


def page_view(history: History) -> PageView:
    state = history.current
    n = len(state.variants) if state else 0
    rolls = [roll_data(state.variants[i].score, state.variants[i].audio_seconds or None, state.variants[i].audio_start)
             if i < n else None for i in range(SLOTS)]
    return PageView(state is not None, n, rolls, history.can_undo, history.can_redo)


def selected_bars(index: Any) -> tuple[int, int] | None:
    """Bars dragged (or shift-clicked) on a roll -> (first, last) to infill; None when cleared."""
    return (int(index[0]), int(index[1])) if index else None
