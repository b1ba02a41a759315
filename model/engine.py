"""The one interface every engine implements, and the registry that maps names to engines.

    engine = get_engine("transformer")          # loads its shipped checkpoint on first use
    scores = engine.generate(GenerationRequest(groups=("piano", "bass"), drums=True, bars=8))

Each engine declares the controls it supports (`Engine.controls`); the page and the CLI show only
those.  `GenerationRequest.validate()` gives one clear ValueError for out-of-range input.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar

from tokenizer import Score
from tokenizer import vocab as V

log = logging.getLogger(__name__)

# Limits shared by the page, the CLI and the API.
MAX_BARS = 64
MAX_VARIANTS = 8
MIN_BPM, MAX_BPM = 40, 240
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 2.0
MAX_TOP_K = V.VOCAB_SIZE

# Control names an engine may declare.  The last three are engine options carried in
# GenerationRequest.extra: "noise_sd" (float, latent noise), "alpha" (float 0..1, pull towards the
# reference), "reference" (a built-in reference name from Engine.references, or an uploaded Score).
ALL_CONTROLS = ("groups", "drums", "bars", "variants", "temperature", "top_p", "top_k", "seed", "bpm",
                "style", "prompt", "noise_sd", "alpha", "reference")
MAX_NOISE_SD = 2.0


@dataclass(frozen=True)
class GenerationRequest:
    groups: tuple[str, ...] = ("piano",)  # pitched group names (vocab.PITCHED_GROUPS)
    drums: bool = True
    bars: int = 8
    variants: int = 1
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0  # 0 = off
    seed: int = 0
    bpm: float = 120.0
    style: str | None = None
    prompt: Score | None = None  # continue this score (already cut to the bars to keep)
    extra: dict = field(default_factory=dict)  # engine-specific controls

    def validate(self) -> "GenerationRequest":
        """Return a normalized copy or raise ValueError with a message for a person."""
        groups = tuple(dict.fromkeys(g.strip().lower() for g in self.groups if g and g.strip()))
        groups = tuple(g for g in groups if g != "drums")  # drums are their own switch
        for g in groups:
            if g not in V.PITCHED_GROUPS:
                raise ValueError(f"unknown instrument group {g!r}; choose from {', '.join(V.PITCHED_GROUPS)}")
        if not groups and not self.drums:
            raise ValueError("choose at least one instrument group or turn drums on")
        if not (isinstance(self.bars, int) and 1 <= self.bars <= MAX_BARS):
            raise ValueError(f"length must be 1 to {MAX_BARS} bars (got {self.bars})")
        if not (isinstance(self.variants, int) and 1 <= self.variants <= MAX_VARIANTS):
            raise ValueError(f"variants must be 1 to {MAX_VARIANTS} (got {self.variants})")
        if not (MIN_TEMPERATURE <= float(self.temperature) <= MAX_TEMPERATURE):
            raise ValueError(f"temperature must be {MIN_TEMPERATURE} to {MAX_TEMPERATURE} (got {self.temperature})")
        if not (0.0 < float(self.top_p) <= 1.0):
            raise ValueError(f"top-p must be above 0 and at most 1 (got {self.top_p})")
        if not (isinstance(self.top_k, int) and 0 <= self.top_k <= MAX_TOP_K):
            raise ValueError(f"top-k must be 0 (off) to {MAX_TOP_K} (got {self.top_k})")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise ValueError(f"seed must be a whole number from 0 to {2**32 - 1} (got {self.seed})")
        if not (MIN_BPM <= float(self.bpm) <= MAX_BPM):
            raise ValueError(f"BPM must be {MIN_BPM} to {MAX_BPM} (got {self.bpm})")
        if self.style is not None and self.style not in V.STYLES:
            raise ValueError(f"unknown style {self.style!r}; choose from {', '.join(V.STYLES)}")
        return replace(self, groups=groups, temperature=float(self.temperature), top_p=float(self.top_p),
                       bpm=float(self.bpm))

    @property
    def group_ids(self) -> list[int]:
        return [V.GROUPS.index(g) for g in self.groups]


class Engine:
    """Base class.  Subclasses set `name`, `description`, `controls` and implement `generate`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    controls: ClassVar[frozenset[str]] = frozenset()
    styles: tuple[str, ...] = ()  # styles this engine knows (subset of vocab.STYLES)
    references: tuple[str, ...] = ()  # built-in reference songs (engines with the "reference" control)
    prompt_use: ClassVar[str] = "continuing"  # what the engine does with an uploaded MIDI (for summaries)

    def generate(self, request: GenerationRequest, progress: Callable[[float], None] | None = None) -> list[Score]:
        raise NotImplementedError

    def supports(self, control: str) -> bool:
        return control in self.controls

    def restrict(self, request: GenerationRequest) -> GenerationRequest:
        """The request as this engine will serve it: controls it lacks are reset (no style, no drums),
        a prompt it cannot continue is refused.  Call before validate(); the page and the CLI both do."""
        if request.prompt is not None and not self.supports("prompt"):
            raise ValueError(f"engine {self.name} cannot continue an uploaded MIDI")
        return replace(request, style=request.style if self.supports("style") else None,
                       drums=request.drums and self.supports("drums"))


# ---- registry -------------------------------------------------------------------------------
_FACTORIES: dict[str, Callable[[], Engine]] = {}
_INSTANCES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def register(name: str, factory: Callable[[], Engine]) -> None:
    """Register an engine factory (called once, lazily, on first use)."""
    _FACTORIES[name] = factory


def engine_names() -> list[str]:
    _load_builtin()
    return list(_FACTORIES)


def get_engine(name: str) -> Engine:
    _load_builtin()
    if name not in _FACTORIES:
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(_FACTORIES)}")
    with _LOCK:
        if name not in _INSTANCES:
            _INSTANCES[name] = _FACTORIES[name]()
        return _INSTANCES[name]


def _load_builtin() -> None:
    # Importing an engine module registers it (one file per engine family).
    from . import registry  # noqa: F401
