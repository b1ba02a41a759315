"""How an engine's generation runs: here, on the inference worker's thread (`LocalRunner`), or on a GPU a ZeroGPU Space lends per call
(`ZeroGPURunner`: `spaces.GPU` with a duration sized to each request).  `default_runner()` picks the ZeroGPU one
where the `spaces` package is installed (Hugging Face Spaces), else the local one; the studio asks for it when
it is built, not at import.

A runner is called as `runner(engine, checkpoint, request, progress) -> (scores, stats)`: `engine` is the loaded
engine, `checkpoint` its source (None: the shipped one), `progress(fraction)` is called while it generates (the
ZeroGPU runner cannot report progress), `stats` is the engine's `last_stats`.  `Engine.generate` holds the
engine's own lock, so one engine serves one generation at a time.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Protocol

from model.edits import EDITS
from model.engine import get_engine
from model.request import GenerationRequest
from tokenizer import Score

from .worker import InferenceWorker, shared_worker

GPU_SECONDS_BASE = 20  # loading onto the lent GPU and starting up
GPU_SECONDS_PER_BAR = 1.5  # per bar of one batch of variants, generous: ZeroGPU ends a call that overruns
GPU_BATCH = 4  # variants decoded together


class Runner(Protocol):
    def __call__(self, engine: Any, checkpoint: str | None, request: GenerationRequest,
                 progress: Callable[[float], None] | None = None, short: bool = True) -> tuple[list[Score], dict]: ...


class LocalRunner:
    """Generate in this process, with progress, on an inference worker's thread (studio/worker.py: long-lived
    threads with measured torch settings, not whichever server thread took the request).  Two lanes: a request
    the budget calls short (`short`, studio/budget.py) runs on the short lane with the registry's engine, a long
    one on the long lane with an engine instance of its own, so that a long edit never makes a short request
    wait for it; each lane runs its requests one at a time.  `worker`: one worker for both lanes instead."""

    def __init__(self, worker: InferenceWorker | None = None):
        self.worker = worker
        self._long_engines: dict[tuple[type, str], Any] = {}
        self._lock = threading.Lock()

    def long_engine(self, engine: Any) -> Any:
        """The long lane's own instance of `engine` (its own caches and lock), loaded once."""
        key = (type(engine), str(getattr(engine, "source", "")))
        with self._lock:
            if key not in self._long_engines:
                self._long_engines[key] = type(engine)(getattr(engine, "source", None))
            return self._long_engines[key]

    def __call__(self, engine: Any, checkpoint: str | None, request: GenerationRequest,
                 progress: Callable[[float], None] | None = None, short: bool = True) -> tuple[list[Score], dict]:
        eng = engine if short or self.worker is not None else self.long_engine(engine)
        worker = self.worker or shared_worker("short" if short else "long")

        def report(fraction: float) -> None:  # the cores re-shared with the other lane at each report
            worker.rebalance()
            if progress is not None:
                progress(fraction)

        def job() -> tuple[list[Score], dict]:
            scores = eng.generate(request, progress=report)
            return scores, dict(getattr(eng, "last_stats", {}) or {})

        return worker.run(job)


def gpu_seconds(engine: str, checkpoint: str | None, request: GenerationRequest) -> int:
    """The GPU time to ask ZeroGPU for: sized to the request (bars to write, prompt bars to read)."""
    bars = EDITS[request.edit].new_bars(request) if request.edit else request.bars
    if request.prompt is not None:
        bars += request.prompt.bars
    return int(GPU_SECONDS_BASE + GPU_SECONDS_PER_BAR * bars * -(-request.variants // GPU_BATCH))


def engine_generate(engine: str, checkpoint: str | None, request: GenerationRequest) -> tuple[list[Score], dict]:
    """Generate with the engine `engine` (its `checkpoint`, None: the shipped one): picklable arguments and
    results, as a function run on a lent GPU needs."""
    eng = get_engine(engine, checkpoint)
    scores = eng.generate(request)
    return scores, dict(eng.last_stats)


class ZeroGPURunner:
    """Generate under `spaces_module.GPU` (a ZeroGPU Space lends a GPU for each call), the duration sized to
    each request by `gpu_seconds`; plain arguments in, scores out, no progress."""

    def __init__(self, spaces_module: Any):
        self.call = spaces_module.GPU(duration=gpu_seconds)(engine_generate)

    def __call__(self, engine: Any, checkpoint: str | None, request: GenerationRequest,
                 progress: Callable[[float], None] | None = None, short: bool = True) -> tuple[list[Score], dict]:
        return self.call(engine.name, checkpoint, request)


def import_spaces() -> Any:
    """The `spaces` package (present on Hugging Face Spaces), or None."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def default_runner() -> Runner:
    """The ZeroGPU runner where `spaces` is installed, else the local one."""
    spaces = import_spaces()
    return LocalRunner() if spaces is None else ZeroGPURunner(spaces)
