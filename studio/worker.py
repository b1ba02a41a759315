"""The inference worker: one long-lived thread per lane that runs the generations of this process, with torch's
thread count set in that thread.

Why: torch's intra-op thread count is an OpenMP setting of the calling thread.  A request that decodes in one of
the web server's worker threads gets OpenMP's defaults there (every core, a team of helper threads per calling
thread), not what the main thread set, and small per-token ops ran 2-3x slower than on the main thread
(`python -m bench.threads` measures it).  Here every request's decoding runs in the same thread, whose setting
is measured (`bench.threads`, `bench.page --threads`) and chosen by `MIDI_BANGERS_THREADS` (default: every core
on a machine of at most 2, else half the cores).  The lanes' workers share it: a job takes the default divided
by the lanes busy (both lanes busy on 2 cores: one thread each, not 4 threads on 2 cores), set when a job starts
and again at its progress reports (`rebalance`), so a long job gives a core back while a short one runs.

The serving process starts with OMP_NUM_THREADS=1 (app.py sets it before torch loads, and bench.page's servers
start the same way): otherwise the main thread's OpenMP team (every core, from loading the model) competes with
the worker's (in a one-off in-process run, not kept as a command, the worker with 2 threads decoded 8 bars x 4 at
about half speed without it).

    worker = InferenceWorker()
    scores = worker.run(engine.generate, request, progress)   # blocks the caller until done

The caller's context variables go along with the job (Gradio's progress bar finds its event through them), and
an exception raised in the job (Cancelled from a progress report, a RequestError) comes back to the caller.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

log = logging.getLogger(__name__)
THREADS_ENV = "MIDI_BANGERS_THREADS"


def default_threads() -> int:
    """torch threads for generation: MIDI_BANGERS_THREADS, else every core on up to 2, else half the cores."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            log.warning("%s=%r is not a whole number; using the default", THREADS_ENV, env)
    cores = os.cpu_count() or 1
    return cores if cores <= 2 else cores // 2


_BUSY = [0]  # shared workers running a job now
_BUSY_LOCK = threading.Lock()


class InferenceWorker:
    """A daemon thread that runs submitted jobs one at a time, in submission order, with `threads` torch threads
    (None: `default_threads()` shared with the other lanes' workers, divided by the lanes busy at a job's start)."""

    def __init__(self, threads: int | None = None, name: str = "midi-bangers-inference"):
        self.fixed = threads
        self.threads = threads or default_threads()
        self._share = self.threads  # the torch threads set in the worker's thread now
        self.limit: int | None = None  # the running job's most threads (None: no limit); see `rebalance`
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self.threads)  # this thread's OpenMP setting: the one every job runs with
        while True:
            job = self._jobs.get()
            if job is None:
                return
            context, fn, args, future = job
            if not future.set_running_or_notify_cancel():
                continue
            with _BUSY_LOCK:
                _BUSY[0] += 1
            self.limit = None
            self.rebalance()
            try:
                future.set_result(context.run(fn, *args))
            except BaseException as e:  # noqa: BLE001 - handed to the caller, who raises it
                future.set_exception(e)
            finally:
                with _BUSY_LOCK:
                    _BUSY[0] -= 1

    def rebalance(self, limit: int | None = None) -> None:
        """In this worker's thread: its torch threads re-shared with the lanes busy now, at most `limit` (kept
        for the rest of the job; nothing to do when the share has not changed, or the thread count is fixed)."""
        if limit is not None:
            self.limit = limit
        if self.fixed is None and threading.current_thread() is self._thread:
            share = max(1, self.threads // max(1, _BUSY[0]))
            share = min(share, self.limit) if self.limit else share
            if share != self._share:
                import torch

                torch.set_num_threads(share)
                self._share = share

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue fn(*args) in the caller's context; its Future holds the result or the exception."""
        future: Future = Future()
        self._jobs.put((contextvars.copy_context(), fn, args, future))
        return future

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the worker thread; returns its result or raises its exception."""
        if threading.current_thread() is self._thread:  # a job that generates again (nested): run it here
            return fn(*args)
        return self.submit(fn, *args).result()

    def close(self) -> None:
        self._jobs.put(None)


_SHARED: dict[str, InferenceWorker] = {}
_SHARED_LOCK = threading.Lock()


def shared_worker(lane: str = "short") -> InferenceWorker:
    """The process's inference worker of `lane` (started on first use): every studio of the process shares it,
    so that at most one generation a lane runs at a time."""
    with _SHARED_LOCK:
        if lane not in _SHARED:
            _SHARED[lane] = InferenceWorker(name=f"midi-bangers-inference-{lane}")
        return _SHARED[lane]
