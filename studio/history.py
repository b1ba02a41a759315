"""Per browser session: the page states (undo and redo through them) and the Stop flag.

`Sessions` keeps a bounded `History` per browser session; `CancelFlags` holds each session's Stop request,
which the running generation checks at every progress report (it then raises `Cancelled`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .results import Result

MAX_HISTORY = 16  # page states kept per browser session (undo goes back this far)
MAX_SESSIONS = 256  # browser sessions with a history; the least recently used is forgotten first
SESSION_MAX_AGE = 2 * 3600  # a history untouched this long is forgotten


class History:
    """One browser session's page states, newest last: `push` after a generation or an edit, `undo` and
    `redo` move through them.  At most `limit` states are kept (the oldest go first)."""

    def __init__(self, limit: int = MAX_HISTORY):
        self.limit = limit
        self._past: list[Result] = []
        self._future: list[Result] = []
        self.touched = time.time()

    @property
    def current(self) -> Result | None:
        return self._past[-1] if self._past else None

    @property
    def can_undo(self) -> bool:
        return len(self._past) > 1

    @property
    def can_redo(self) -> bool:
        return bool(self._future)

    def push(self, state: Result) -> None:
        self._past.append(state)
        del self._past[:-self.limit]
        self._future.clear()

    def replace(self, state: Result) -> None:
        """Swap the current state for `state` (the same music with its files made again)."""
        self._past[-1] = state

    def undo(self) -> Result | None:
        if not self.can_undo:
            return None
        self._future.append(self._past.pop())
        return self.current

    def redo(self) -> Result | None:
        if not self._future:
            return None
        self._past.append(self._future.pop())
        return self.current


class Sessions:
    """The histories of the browser sessions, bounded in count (least recently used forgotten first) and
    age; each history is bounded by History.limit, and its files by the OutputStore's caps (a state whose
    files were pruned is rendered again from its notes when it comes back: `pipeline.restore`)."""

    def __init__(self, limit: int = MAX_SESSIONS, max_age: float = SESSION_MAX_AGE, history: int = MAX_HISTORY):
        self.limit, self.max_age, self.history_limit = limit, max_age, history
        self._histories: dict[str, History] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._histories)

    def get(self, session: str | None) -> History:
        """The session's history (a fresh, unkept one for a caller without a session)."""
        if not session:
            return History(self.history_limit)
        now = time.time()
        with self._lock:
            for k in [k for k, h in self._histories.items() if now - h.touched > self.max_age]:
                del self._histories[k]
            h = self._histories.pop(session, None) or History(self.history_limit)
            self._histories[session] = h  # most recently used last
            while len(self._histories) > self.limit:
                del self._histories[next(iter(self._histories))]
            h.touched = now
            return h


class Cancelled(RuntimeError):
    """The person pressed Stop."""


class CancelFlags:
    """Stop requests per browser session: Stop sets the flag, the running generation checks it at every
    progress report and ends early (freeing the engine for the next request)."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str | None) -> Callable[[], bool]:
        if not session:
            return lambda: False
        with self._lock:
            ev = self._flags[session] = threading.Event()
            if len(self._flags) > 10_000:  # bounded: forget the oldest sessions
                for k in list(self._flags)[: len(self._flags) - 10_000]:
                    self._flags.pop(k, None)
        return ev.is_set

    def stop(self, session: str | None) -> None:
        if session:
            with self._lock:
                ev = self._flags.get(session)
            if ev is not None:
                ev.set()
