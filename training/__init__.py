"""Corpus building, datasets, the shared training loop, presets, Hub publishing."""
