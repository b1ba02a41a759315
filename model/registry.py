"""Imports each engine family's module; each registers its engines with model.engine.register."""

from . import transformer  # noqa: F401
