"""The inference workers: one per lane, each running its jobs one at a time, each job on a fresh thread with
torch's intra-op thread count set for that thread only.

Why, measured (`python -m bench.threads`): PyTorch's CPU wheels run their ops on GNU OpenMP, and libgomp spins
while a team waits only while the process holds no more OpenMP threads than cores; past that ("throttled") it
parks every waiting thread at once, and a 2-thread decoder step on 2 cores takes twice as long (batch 4: about 7 ms
a step against 15 ms).  Two things put the process past that point, and this module avoids both:

- `torch.set_num_threads(n)` is also a process-wide default: every thread started later takes n at its first
  parallel op.  A server thread that then runs one big op (a web server's worker, a render thread) keeps a team
  of n threads for its life.  Here a job's thread count is set for the job's thread alone (`set_own_threads`:
  OpenMP's own per-thread setting, after torch's per-thread set-up), and every other thread keeps the serving
  process's OMP_NUM_THREADS=1 (app.py sets it before torch loads: the main thread's team stays one thread too).
- An OpenMP team lives as long as the thread that made it.  A lane that once ran 2 threads kept its helper thread
  when the other lane took 2 threads in turn (3 threads on 2 cores: both throttled).  Each job runs on a thread
  of its own, so its team ends with it.

The lanes share the cores: a job takes the default (MIDI_BANGERS_THREADS, else every core on a machine of at most
2, else half the cores) divided by the lanes busy (both lanes busy on 2 cores: one thread each), set when a job
starts and again at its progress reports (`rebalance`), so a long job gives a core back while a short one runs.

    worker = InferenceWorker()
    scores = worker.run(engine.generate, request, progress)   # blocks the caller until done

The caller's context variables go along with the job (Gradio's progress bar finds its event through them), and
an exception raised in the job (Cancelled from a progress report, a RequestError) comes back to the caller.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import logging
import os
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterator

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


@functools.cache
def _openmp():
    """torch's OpenMP runtime (libgomp in PyTorch's Linux wheels) as a ctypes library, or None where torch has
    none (another parallel backend) or it cannot be found."""
    import ctypes

    import torch

    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    names = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "lib*omp*.so*")))
    for name in names + ["libgomp.so.1", "libiomp5.so"]:
        try:
            lib = ctypes.CDLL(name)
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            return lib
        except (OSError, AttributeError):
            continue
    return None


def set_own_threads(n: int) -> None:
    """torch's intra-op threads for the calling thread only (see the module): torch's per-thread set-up first
    (its first parallel op in a thread applies the process default), then OpenMP's per-thread setting.  Falls
    back to `torch.set_num_threads` where torch's OpenMP runtime is not found."""
    import torch

    lib = _openmp()
    torch.zeros(1 << 16).exp_()  # a parallel op: torch's once-per-thread set-up happens before the setting
    if lib is not None:
        lib.omp_set_num_threads(int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


_BUSY = [0]  # shared workers running a job now, and programs running beside them (`taking_a_core`)
_BUSY_LOCK = threading.Lock()


@contextlib.contextmanager
def taking_a_core() -> Iterator[None]:
    """While inside, a program running beside generation (FluidSynth rendering the parts an edit keeps) counts as
    a lane busy: a job rebalanced meanwhile (at its next progress report) takes a core less, and takes it back at
    its first report after.  Measured on 2 cores: D_ROMERO + brass generated in 77.3 s with one torch thread alone
    and 78.1 s with FluidSynth rendering beside it (13.2 s); with two threads, a FluidSynth at nice 19 beside it
    waited until generation was done (81 s) (one-off runs, docs/runs/edit-decoding-experiments.md)."""
    with _BUSY_LOCK:
        _BUSY[0] += 1
    try:
        yield
    finally:
        with _BUSY_LOCK:
            _BUSY[0] -= 1


class InferenceWorker:
    """A daemon thread that runs submitted jobs one at a time, in submission order, with `threads` torch threads
    (None: `default_threads()` shared with the other lanes' workers, divided by the lanes busy at a job's start)."""

    def __init__(self, threads: int | None = None, name: str = "midi-bangers-inference"):
        self.fixed = threads
        self.threads = threads or default_threads()
        self._share = 0  # the torch threads set in the running job's thread (0: none yet)
        self.name = name
        self._job_thread: threading.Thread | None = None  # the running job's thread
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not job[3].set_running_or_notify_cancel():
                continue
            runner = threading.Thread(target=self._run_job, args=job, name=f"{self.name}-job", daemon=True)
            runner.start()
            runner.join()  # its OpenMP team ends with it (see the module)

    def _run_job(self, context: contextvars.Context, fn: Callable[..., Any], args: tuple, future: Future) -> None:
        self._job_thread = threading.current_thread()
        with _BUSY_LOCK:
            _BUSY[0] += 1
        self._share = 0
        self.rebalance()
        try:
            future.set_result(context.run(fn, *args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who raises it
            future.set_exception(e)
        finally:
            with _BUSY_LOCK:
                _BUSY[0] -= 1

    def rebalance(self) -> None:
        """In the running job's thread: its torch threads re-shared with the lanes busy now (a fixed count stays);
        nothing to do when the share has not changed."""
        if threading.current_thread() is self._job_thread:
            share = self.fixed or max(1, self.threads // max(1, _BUSY[0]))
            if share != self._share:
                set_own_threads(share)
                self._share = share

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue fn(*args) in the caller's context; its Future holds the result or the exception."""
        future: Future = Future()
        self._jobs.put((contextvars.copy_context(), fn, args, future))
        return future

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the worker thread; returns its result or raises its exception."""
        if threading.current_thread() is self._job_thread:  # a job that generates again (nested): run it here
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
