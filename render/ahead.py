"""The notes an edit keeps, rendered ahead while the model writes the new ones, so that only the new notes are left
to render after generation (studio.pipeline.render_ahead starts one; render.audio.render_preview takes it).

    with Backing.of_groups(song, kept_groups) as backing:   # FluidSynth starts now, on a thread of its own
        ...                                                  # the model writes the new part
        render_preview(edited, folder, "v1", stem_groups=[new_group], backing=backing)
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Callable

import numpy as np

from tokenizer import Score

from . import audio

log = logging.getLogger(__name__)


class Backing:
    """The notes of a song that an edit keeps, rendered ahead while the model writes the new ones: FluidSynth's
    output for the notes `known(notes)` picks of `score` (one process, started at once on a thread of its own;
    `claim()` is held while it runs, so that the caller can give the generation a core less meanwhile).

    - `Backing.of_groups(song, groups)`: a part edit's other parts.  Its preview, whose other parts turn out to be
      exactly these (the same MIDI file), takes this audio beside the new part's stem.
    - `Backing.outside(window, lo, hi)`: the notes of an infill's or a continuation's preview window with onsets
      outside steps [lo, hi).  Its preview renders the new notes alone and adds this audio.

    (`render_preview(..., backing=)`.)  A preview whose known notes are not exactly these renders as before."""

    def __init__(self, score: Score, known: Callable[[np.ndarray], np.ndarray],
                 soundfont: str | os.PathLike | None = None, rate: int = audio.SAMPLE_RATE, timeout: float = 120.0,
                 claim: Callable[[], AbstractContextManager] = nullcontext):
        self.known, self.rate = known, rate
        self.midi = audio._midi_bytes(self.split(score)[0])
        self._audio: Future = Future()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._cancelled = False
        threading.Thread(target=self._work, args=(soundfont, timeout, claim), name="render-backing",
                         daemon=True).start()

    @classmethod
    def of_groups(cls, score: Score, groups: list[int], **kw) -> "Backing":
        return cls(score, lambda notes: np.isin(notes["group"], groups), **kw)

    @classmethod
    def outside(cls, score: Score, lo: int, hi: int, **kw) -> "Backing":
        return cls(score, lambda notes: (notes["onset"] < lo) | (notes["onset"] >= hi), **kw)

    def split(self, score: Score) -> tuple[Score, Score]:
        """(the notes of `score` this backing renders, the others), each lasting as long as the whole piece."""
        mine = self.known(score.notes)
        return audio._stem_score(score, mask=mine), audio._stem_score(score, mask=~mine)

    def _work(self, soundfont, timeout: float, claim) -> None:
        try:
            with claim(), tempfile.TemporaryDirectory(prefix="render-") as tmp:
                raw = np.array(audio._synthesize(self.midi, Path(tmp) / "backing.f32", soundfont, self.rate, timeout,
                                           self._started))  # in memory: the file goes with the folder
        except BaseException as e:  # noqa: BLE001 - the preview renders these parts itself then
            self._audio.set_exception(e)
            return
        self._audio.set_result(raw)  # once the claim is given back

    def _started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._proc = proc
            if self._cancelled:
                proc.kill()

    def __enter__(self) -> "Backing":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Stop rendering (the edit was stopped or failed; nothing happens once it is done).  Leaving a `with`
        block of the backing cancels it."""
        with self._lock:
            self._cancelled = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def audio(self, midi: bytes, rate: int) -> np.ndarray | None:
        """FluidSynth's output (frames, 2) when `midi` at `rate` is what was rendered (waiting for it), else None;
        None too when the render failed or was cancelled."""
        if midi != self.midi or rate != self.rate:
            return None
        try:
            return self._audio.result()
        except Exception as e:  # noqa: BLE001 - a speed-up: the preview renders these notes itself
            log.warning("the notes rendered ahead are rendered again: %s", e)
            return None
