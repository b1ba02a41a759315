"""The one interface every engine implements, and the registry that maps names to engines.

    engine = get_engine("transformer")          # loads its shipped checkpoint on first use
    engine = get_engine("cnn", "runs/cnn/best")  # or any checkpoint folder / Hub repo id
    scores = engine.generate(GenerationRequest(groups=("piano", "bass"), drums=True, bars=8))

Each engine declares the controls it supports (`Engine.controls`); the page and the CLI show only
those.  `GenerationRequest.validate()` gives one clear ValueError for out-of-range input.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Callable, ClassVar

from tokenizer import Score

from . import checkpoint as ckpt
from .fields import shown
from .request import LABELS, GenerationRequest, RequestError

log = logging.getLogger(__name__)


_CANNOT = {"key": "keep to a key", "chords": "follow a chord progression",
           "edit": "add, regenerate or infill parts of an uploaded MIDI", "loop": "make seamless loops"}


class Engine:
    """Base class of every engine: loads its checkpoint, checks the engine name, locks and times generation.

    A subclass sets `name`, `description`, `controls`, `config_class`, `build` (config -> network) and
    implements `_generate(request, progress) -> (scores, stats)`, where `stats["count"]` is how many
    `unit`s (tokens, frames, windows, events) it produced.  `load()` may be extended (the transformer
    builds its fast decoder there)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    controls: ClassVar[frozenset[str]] = frozenset()
    styles: tuple[str, ...] = ()  # styles this engine knows (subset of vocab.STYLES)
    references: tuple[str, ...] = ()  # built-in reference songs (engines with the "reference" control)
    plays: ClassVar[frozenset[str] | None] = None  # the groups (vocab.GROUPS names) it can play; None: all
    prompt_use: ClassVar[str] = "continuing"  # what the engine does with an uploaded MIDI (for summaries)
    unit: ClassVar[str] = "tokens"  # what `last_stats` counts
    config_class: ClassVar[type | None] = None  # the model config dataclass (a checkpoint.Config)
    build: ClassVar[Callable | None] = None  # config -> nn.Module (set as staticmethod)

    def __init__(self, source: str | os.PathLike | None = None):
        """`source`: a checkpoint folder or a Hugging Face Hub repo id; None: the shipped checkpoint.
        A folder that does not exist is a FileNotFoundError; another engine's checkpoint a ValueError."""
        source = ckpt.shipped(self.name, source)
        state, config = ckpt.load_checkpoint(source, engine=self.name)
        self.source = str(source)
        self.config = config
        self.meta = config.get("meta", {})
        self.last_stats: dict = {}
        self._lock = threading.Lock()  # one generation at a time per engine (caches, generators)
        self.load(state, config)

    def load(self, state: dict, config: dict) -> None:
        """Build the network from the stored config and load the weights (eval mode)."""
        self.cfg = self.config_class.from_dict(config["model"])
        self.model = type(self).build(self.cfg)
        self.model.load_state_dict(state)
        self.model.eval()

    def generate(self, request: GenerationRequest, progress: Callable[[float], None] | None = None) -> list[Score]:
        req = request.validate()
        with self._lock:
            t0 = time.perf_counter()
            scores, stats = self._generate(req, progress)
            dt = time.perf_counter() - t0
        scores = [replace(s, drum_kit=req.drum_program) for s in scores]  # the kit is a program change
        n = stats.pop("count")
        self.last_stats = {"seconds": dt, self.unit: n, f"{self.unit}_per_s": n / max(dt, 1e-9), **stats}
        return scores

    def _generate(self, req: GenerationRequest, progress: Callable[[float], None] | None) -> tuple[list[Score], dict]:
        raise NotImplementedError

    def speed(self) -> tuple[float, str]:
        """(units per second of the last generation, the unit), e.g. (412.0, "tokens")."""
        return float(self.last_stats.get(f"{self.unit}_per_s", 0.0)), self.unit

    def groups_written(self, req: GenerationRequest) -> tuple[str, ...]:
        """The groups (vocab.GROUPS names) this engine writes for `req`: the requested ones (and drums when
        asked), less those it cannot play.  Engines that write fewer (one melody part, one group per track)
        say so by overriding it."""
        wanted = (*req.groups, *(("drums",) if req.drums and self.supports("drums") else ()))
        return tuple(g for g in wanted if self.plays is None or g in self.plays)

    def supports(self, control: str) -> bool:
        return control in self.controls

    def restrict(self, request: GenerationRequest) -> GenerationRequest:
        """The request as this engine will serve it: controls it lacks are reset (no style, no drums),
        a prompt it cannot continue and editing controls it lacks (key, chords, edit) are refused with a
        RequestError that names the field.  Call before validate(); the page and the CLI both do."""
        if request.prompt is not None and not self.supports("prompt"):
            raise ValueError(f"engine {self.name} cannot continue an uploaded MIDI")
        lacking = sorted(request.controls_used() - set(self.controls))
        if lacking:
            raise RequestError(f"{LABELS[lacking[0]]}: engine {self.name} cannot {_CANNOT[lacking[0]]}; choose "
                               f"the transformer engine or clear {LABELS[lacking[0]]}")
        return replace(request, style=request.style if self.supports("style") else None,
                       drums=request.drums if self.supports("drums") else False)  # validate() checks the type


# ---- registry -------------------------------------------------------------------------------
# The engine families, one module each in this package; importing one registers its engines.  They are
# imported by name when the registry is first asked (they import this module, so this one cannot import them).
FAMILIES = ("transformer", "recurrent", "style_vae", "vae_nn", "cnn")
ORDER = ("transformer", "style-vae", "vae-nn", "cnn", "gru", "lstm", "multi-rnn")  # as listed; the first is the default
_CLASSES: dict[str, type[Engine]] = {}
_INSTANCES: dict[tuple[str, str | None], Engine] = {}
_LOCK = threading.Lock()


def register(engine_class: type[Engine]) -> type[Engine]:
    """Register an engine class under its `name` (usable as a class decorator); it is built lazily."""
    _CLASSES[engine_class.name] = engine_class
    return engine_class


def engine_names() -> list[str]:
    """Registered engine names, the default (transformer) first, in ORDER."""
    _load_builtin()
    return sorted(_CLASSES, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def engine_class(name: str) -> type[Engine]:
    _load_builtin()
    if name not in _CLASSES:
        raise ValueError(f"unknown engine {shown(name)}; available: {', '.join(engine_names())}")
    return _CLASSES[name]


def get_engine(name: str, checkpoint: str | os.PathLike | None = None) -> Engine:
    """The engine `name` with its shipped checkpoint, or with `checkpoint` (a folder or a Hub repo id).
    Instances are built once and kept."""
    cls = engine_class(name)
    key = (name, None if checkpoint is None else str(checkpoint))
    with _LOCK:
        if key not in _INSTANCES:
            _INSTANCES[key] = cls(checkpoint)
        return _INSTANCES[key]


def _load_builtin() -> None:
    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")
