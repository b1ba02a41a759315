"""What every corpus stage shares: the stable hash behind every deterministic choice, and the two errors."""

from __future__ import annotations

import hashlib


def stable_hash(s: str) -> int:
    """A 64-bit hash of a string that is the same in every process and on every run (unlike hash())."""
    return int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:8], "big")


class Skip(Exception):
    """An item (or one arrangement of it) left out of the corpus, with the reason."""


class CorpusError(ValueError):
    """A build that cannot give a corpus (a missing MIDI folder, nothing to build); says what to do."""
