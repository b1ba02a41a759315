"""Engines: one file per family, the shared Engine interface and registry (engine.py) and sampling (sampling/)."""

from .engine import Engine, GenerationRequest, engine_names, get_engine, register

__all__ = ["Engine", "GenerationRequest", "engine_names", "get_engine", "register"]
