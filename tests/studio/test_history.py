"""studio.history: bounded page-state histories per browser session, and the Stop flags."""

from __future__ import annotations

import studio


def test_history_and_sessions_are_bounded():
    h = studio.History(limit=3)
    states = [object() for _ in range(5)]
    for s in states:
        h.push(s)
    assert h.current is states[-1] and h.undo() is states[-2] and h.undo() is states[-3] and h.undo() is None
    h.push(states[0])
    assert not h.can_redo  # a new state forgets the redo branch
    sessions = studio.Sessions(limit=2, max_age=3600)
    a = sessions.get("a")
    assert sessions.get("a") is a
    sessions.get("b"), sessions.get("c")
    assert len(sessions) == 2 and sessions.get("a") is not a  # the least recently used went first
    sessions = studio.Sessions(limit=10, max_age=0.0)
    old = sessions.get("x")
    old.touched -= 1
    assert sessions.get("x") is not old  # too old: forgotten
    assert sessions.get(None) is not sessions.get(None)  # no session: nothing kept


def test_stop_sets_the_flag_of_its_session_only():
    flags = studio.CancelFlags()
    a, b = flags.start("a"), flags.start("b")
    flags.stop("a")
    assert a() and not b()
    assert not flags.start("a")()  # a new run of the session starts unstopped
    assert not flags.start(None)() and flags.stop(None) is None  # no session: never stopped
