"""Note events, the style-conditioned VAE's representation: a piece cut into segments of a fixed number of
steps, each segment a sequence of events (onset shift, duration level, group * 128 + pitch) in the corpus
order (by onset, then group, then pitch).

- shift: steps (1/32 notes) from the previous event's onset (the first: from the segment start);
- duration: the vocabulary's duration level (vocab.DURATION_LEVELS);
- pitch: group * 128 + MIDI pitch, so an event also says which instrument group plays it (drums
  included): a segment is a whole arrangement, not one line.

Inverse pairs: `notes_to_events` / `events_to_notes` (one segment) and `segments_to_notes` (all of
them; exact for notes whose durations are duration levels, velocities become one level);
`pack_segment` / `unpack_segment` (a segment as a fixed-size int16 array with a header row, as the
training data stores it).
"""

from __future__ import annotations

import numpy as np

from . import vocab as V
from .score import make_notes

N_PITCH = V.N_GROUPS * 128  # the event's instrument-pitch classes: group * 128 + pitch
DEFAULT_VELOCITY = V.velocity_level(96)  # events carry no velocity; notes made from them get this level
HEADER = 1  # row 0 of a packed segment: (style, n events kept, truncated?)

_DUR_LEVEL = np.asarray([V.duration_level(d) for d in range(V.MAX_DURATION + 1)], np.int64)


def notes_to_events(notes: np.ndarray, seg_steps: int) -> list[np.ndarray]:
    """Notes -> per segment an int64 array (n, 3) of (shift, duration level, group*128+pitch),
    sorted by onset, group, pitch.  Segment k covers steps [k*seg_steps, (k+1)*seg_steps); a segment
    with no onset in it is an empty (0, 3) array."""
    if not len(notes):
        return []
    order = np.lexsort((notes["pitch"], notes["group"], notes["onset"]))
    n = notes[order]
    on = n["onset"].astype(np.int64)
    seg = on // seg_steps
    dur = _DUR_LEVEL[np.clip(n["duration"].astype(np.int64), 1, V.MAX_DURATION)]
    pitch = n["group"].astype(np.int64) * 128 + n["pitch"].astype(np.int64)
    out = []
    for k in range(int(seg.max()) + 1):
        m = seg == k
        o = on[m] - k * seg_steps
        shift = np.diff(o, prepend=0)
        out.append(np.stack([shift, dur[m], pitch[m]], 1))
    return out


def events_to_notes(events, start: int = 0, velocity_level: int = DEFAULT_VELOCITY) -> np.ndarray:
    """One segment's (n, 3) events -> notes, the segment starting at step `start`."""
    e = np.asarray(events, np.int64).reshape(-1, 3)
    onset = start + np.cumsum(e[:, 0])
    dur = np.asarray(V.DURATION_LEVELS, np.int64)[e[:, 1]]
    return make_notes(onset, dur, velocity_level, e[:, 2] // 128, e[:, 2] % 128)


def segments_to_notes(segments, seg_steps: int, velocity_level: int = DEFAULT_VELOCITY) -> np.ndarray:
    """The inverse of `notes_to_events`: consecutive segments' events -> one piece's notes."""
    parts = [events_to_notes(e, k * seg_steps, velocity_level) for k, e in enumerate(segments)]
    return np.concatenate(parts) if parts else make_notes([], [], velocity_level, [], [])


def pack_segment(events: np.ndarray, style: int, max_events: int) -> np.ndarray:
    """(max_events + 1, 3) int16: row 0 = (style, n events kept, truncated?), then the events, 0-padded.
    A segment longer than `max_events` is cut (and marked truncated)."""
    n = min(len(events), max_events)
    out = np.zeros((max_events + HEADER, 3), np.int16)
    out[0] = (style, n, int(len(events) > max_events))
    out[HEADER:HEADER + n] = events[:n]
    return out


def unpack_segment(packed: np.ndarray) -> tuple[int, np.ndarray, bool]:
    """The inverse of `pack_segment`: (style, the kept events (n, 3) int64, truncated?)."""
    p = np.asarray(packed, np.int64)
    style, n, truncated = (int(v) for v in p[0])
    return style, p[HEADER:HEADER + n].copy(), bool(truncated)


__all__ = ["DEFAULT_VELOCITY", "HEADER", "N_PITCH", "events_to_notes", "notes_to_events", "pack_segment",
           "segments_to_notes", "unpack_segment"]
