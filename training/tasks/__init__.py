"""Each engine family's training task and held-out evaluation, one module per family.

A family module provides
    TASKS: {engine name: args -> TrainTask}              (python -m training.train --engine NAME)
    evaluate_checkpoint(engine, source, data, split="test", max_items=None, **options) -> dict
                                                         (python -m training.evaluate, the report)
The modules are imported on first use, so `--engine transformer` does not import the others.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .base import TrainTask, add_sums, sum_metrics

# engine name -> the module (training.tasks.<family>) that trains and evaluates it
FAMILIES: dict[str, str] = {
    "transformer": "transformer",
    "gru": "recurrent", "lstm": "recurrent", "multi-rnn": "recurrent",
    "style-vae": "style_vae", "style-vae-label": "style_vae",  # the label baseline: a style-vae checkpoint
    "vae-nn": "vae_nn", "cnn": "cnn",
}


def family(engine: str) -> ModuleType:
    if engine not in FAMILIES:
        raise ValueError(f"no training task for engine {engine!r}; choose from {', '.join(FAMILIES)}")
    return importlib.import_module(f"{__name__}.{FAMILIES[engine]}")


def train_task(engine: str, args) -> TrainTask:
    """The TrainTask for `engine`, built from the training command's arguments."""
    return family(engine).TASKS[engine](args)


def evaluate_checkpoint(engine: str, source, data, split: str = "test", max_items: int | None = None,
                        **options) -> dict:
    """Held-out figures of one checkpoint of `engine` on a corpus split (one flat dict)."""
    return family(engine).evaluate_checkpoint(engine, source, data, split, max_items=max_items, **options)


__all__ = ["FAMILIES", "TrainTask", "add_sums", "evaluate_checkpoint", "family", "sum_metrics", "train_task"]
