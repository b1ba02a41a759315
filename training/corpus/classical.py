"""music21's bundled scores (Bach chorales, Palestrina, Monteverdi, the quartets, ...) -> pieces, via
music21's MIDI export; all-piano scores get an ensemble that suits the period.
"""

from __future__ import annotations

import signal

from tokenizer.score import from_symusic

from .common import Skip, stable_hash

CLASSICAL_TIMEOUT_S = 30  # seconds music21 may take over one score file


def _alarm(signum, frame):
    raise TimeoutError


def classical_scores(item: dict) -> list[dict]:
    """A score file (one work, or an opus of several) -> one piece dict per work, with its Score."""
    import music21
    from symusic import Score as SymScore

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CLASSICAL_TIMEOUT_S)
    try:
        parsed = music21.converter.parse(item["path"])
        works = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
        blobs = []
        for w in works:
            mf = music21.midi.translate.streamToMidiFile(w)
            blobs.append(mf.writestr())
    except TimeoutError:
        raise Skip(f"music21 took more than {CLASSICAL_TIMEOUT_S} s") from None
    except Skip:
        raise
    except Exception as e:
        raise Skip(f"music21 could not read it ({type(e).__name__})") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out = []
    for i, data in enumerate(blobs):
        try:
            sym = SymScore.from_midi(data)
        except Exception:
            continue
        tracks = [t for t in sym.tracks if len(t.notes)]
        if tracks and all(int(t.program) == 0 for t in tracks):
            h = stable_hash(item["id"])
            comp = item["composer"]
            if comp == "bach":
                choice = (19, 48, 0, 52)[h % 4]  # church organ, strings, piano, choir
                progs = [choice] * len(tracks)
            elif item["style"] == "renaissance":
                choice = (52, 19, 74, 48)[h % 4]  # choir, organ, recorders, strings
                progs = [choice] * len(tracks)
            else:
                progs = [0] * len(tracks)
            for t, p in zip(tracks, progs):
                t.program = p
        score = from_symusic(sym, style=item["style"])
        suffix = f"#{i}" if len(blobs) > 1 else ""
        out.append(dict(id=item["id"] + suffix, group=item["group"] + suffix, source="classical",
                        style=item["style"], score=score, extra=dict(composer=item["composer"])))
    return out
