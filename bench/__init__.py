"""Benchmarks (each a `python -m bench.NAME` command that prints its results)."""
