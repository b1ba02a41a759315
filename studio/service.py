"""`Studio`: the one object the page holds.  Values arrive by name; each action returns a `Result` (or `Keep`)
or raises RequestError (a person's mistake, its message names the field) or Cancelled (Stop).

    studio = Studio(OutputStore(), UploadCache())
    result = studio.generate({"groups": ["piano"], "bars": 4, "seed": "7"}, session="abc", progress=print)
    result = studio.edit_variant("abc", 1, "add_part", {"part": "strings"})
    result = studio.undo("abc")
    result = studio.edit_upload("continue", {"midi": "song.mid", "bars": 4})   # the named API endpoints
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from model.edits import get_edit
from model.request import LABELS, RequestError, whole_number

from .archive import write_zip
from .history import CancelFlags, History, Sessions
from .inputs import edit_request, file_path, generate_request, load_upload, to_number, without_other_edits_fields
from .pipeline import reporter, restore, run
from .results import Result, Variant
from .runner import Runner, default_runner
from .stores import Janitor, OutputStore, UploadCache

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]


@dataclass(frozen=True)
class Keep:
    """A variant kept as the start of the next generation: its MIDI and the bars to continue (all of them)."""
    midi: Path
    bars: int


class Studio:
    """Generate, edit a variant or an uploaded song, undo and redo, keep, stop: per browser session, with the
    outputs in `store`, uploads accepted only from `uploads` (when set), and generation run by `runner`
    (default: ZeroGPU where the `spaces` package is installed, else here)."""

    def __init__(self, store: OutputStore | None = None, uploads: UploadCache | None = None,
                 sessions: Sessions | None = None, runner: Runner | None = None):
        self.store = store or OutputStore()
        self.uploads = uploads
        self.sessions = sessions or Sessions()
        self.runner = runner or default_runner()
        self.cancel = CancelFlags()
        self.janitor = Janitor(self.store, *([uploads] if uploads is not None else []))

    # ---- generating -----------------------------------------------------------------------------
    def generate(self, values: Mapping[str, Any], session: str | None = None, progress: Progress | None = None,
                 on_partial: Callable[[Result], None] | None = None, cancelled: Cancel | None = None) -> Result:
        """New variants from the page's values by name (studio.GENERATE_DEFAULTS); with a session, the result
        becomes its current page state.  `on_partial`: see pipeline.run (variants as they are rendered);
        `cancelled()` true (the client went away) stops it like the session's Stop."""
        report = reporter(progress, self._cancelled(session, cancelled))
        try:
            with ExitStack() as stack:
                for field, name in (("midi", "prompt"), ("reference_midi", "reference_midi")):
                    stack.enter_context(self._hold_upload(values.get(field), name))
                result = run(generate_request(values), self.store, self.runner, report, on_partial=on_partial)
        finally:
            self._prune_uploads()
        if session:
            self.sessions.get(session).push(result)
        return result

    def edit_upload(self, kind: str, values: Mapping[str, Any], progress: Progress | None = None,
                    cancelled: Cancel | None = None) -> Result:
        """Edit `kind` of an uploaded song (values["midi"]: a path or Gradio FileData; the edit's own fields and
        EDIT_COMMON by name): one variant.  No history."""
        edit = get_edit(kind)
        values = dict(values)
        upload = values.pop("midi", None)
        path = file_path(upload, "prompt")
        if path is None:
            raise RequestError(f"{LABELS['prompt']}: {edit.name.replace('_', ' ')} needs a MIDI file")
        try:
            with self._hold_upload(upload, "prompt"):
                prepared = edit_request(edit.name, load_upload(path, "prompt"), values)
                return run(replace(prepared, prompt_file=path), self.store, self.runner, reporter(progress, cancelled),
                           edit.describe(prepared.request))
        finally:
            self._prune_uploads()

    def edit_variant(self, session: str | None, index: Any, kind: str, values: Mapping[str, Any],
                     progress: Progress | None = None, cancelled: Cancel | None = None) -> Result:
        """Edit `kind` of variant `index` (1-based) of the session's current page state, from its notes; the
        new state (that variant replaced, the others kept) becomes the current one.  `values`: the page's edit
        panel by name (EDIT_COMMON and the edits' own fields; those of other edit kinds are ignored)."""
        report = reporter(progress, self._cancelled(session, cancelled))
        history = self.sessions.get(session)
        if history.current is None:
            raise RequestError("Generate first: there is no variant to edit yet")
        n = whole_number(to_number(index), "variants", 1, len(history.current.variants))
        state = restore(history.current, self.store)
        history.replace(state)
        with ExitStack() as stack:
            for v in state.variants:  # the other variants' files stay while the new zip is written
                stack.enter_context(self.store.hold(v.midi))
            old = state.variants[n - 1]
            prepared = edit_request(kind, old.song, without_other_edits_fields(kind, values))
            res = run(replace(prepared, prompt_file=old.midi), self.store, self.runner, report,
                      get_edit(kind).describe(prepared.request))
            new = replace(res.variants[0], index=n)
            variants = [new if v.index == n else v for v in state.variants]
            with self.store.hold(new.midi):
                zip_path = write_zip(variants, new.midi.parent, res.seed)
        out = replace(res, variants=variants, zip_path=zip_path, action=f"variant {n}: {res.action}")
        history.push(out)
        return out

    # ---- moving through the page states ---------------------------------------------------------------
    def undo(self, session: str | None) -> Result:
        """The page state before the current one, its files made again where pruned."""
        return self._step(session, "undo")

    def redo(self, session: str | None) -> Result:
        """The page state undone last, its files made again where pruned."""
        return self._step(session, "redo")

    def _step(self, session: str | None, direction: str) -> Result:
        history = self.sessions.get(session)
        state = history.undo() if direction == "undo" else history.redo()
        if state is None:
            raise RequestError(f"Nothing to {direction}.")
        state = restore(state, self.store)
        history.replace(state)
        return state

    def keep(self, session: str | None, index: Any) -> Keep:
        """Variant `index` (1-based) of the current page state as the start of the next generation: its MIDI
        and bars (all of them: Generate continues the whole variant)."""
        history = self.sessions.get(session)
        state = history.current
        n = to_number(index)
        if state is None or not isinstance(n, int) or not 1 <= n <= len(state.variants):
            raise RequestError("Generate first: there is no variant to keep yet.")
        state = restore(state, self.store)
        history.replace(state)
        v: Variant = state.variants[n - 1]
        return Keep(v.midi, v.bars)

    def stop(self, session: str | None) -> None:
        """Stop the session's running generation or edit (it raises Cancelled at its next progress report)."""
        self.cancel.stop(session)

    def _cancelled(self, session: str | None, cancelled: Cancel | None) -> Cancel:
        """Stop pressed in the session, or `cancelled()` (the job's own flag)."""
        stopped = self.cancel.start(session)
        return stopped if cancelled is None else (lambda: stopped() or cancelled())

    def history(self, session: str | None) -> History:
        """The session's page states (a fresh, unkept one without a session)."""
        return self.sessions.get(session)

    # ---- uploads ---------------------------------------------------------------------------------
    def _hold_upload(self, value: Any, name: str) -> AbstractContextManager:
        """Hold an upload while it is read; with `uploads` set, only a file in that cache is accepted."""
        path = file_path(value, name)
        if self.uploads is None or path is None:
            return nullcontext()
        return self.uploads.hold_upload(path, name)

    def _prune_uploads(self) -> None:
        if self.uploads is not None:
            self.uploads.prune()
