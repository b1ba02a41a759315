"""The offline training corpus: real music from installed packages and data folders (plus any MIDI
folders), normalized, tokenized, split by piece and written as shards.  Build it with
`python -m training.corpus build`.

Stages, one module each:
  sources      the items, in their fixed order: openttd-openmsx songs (style "game"), freedoom's level
               music (style "game"), POP909's songs (style "pop"), music21's bundled scores, the ABC
               tunes of music21's folk collections, any --midi-dir (style None); `--limit`, each
               source's licence and the MMA groove table
  doom         WAD lumps and MUS (Doom's music format) -> MIDI
  pop909       a POP909 song -> its Score (parts on instrument groups), chords on the step grid, key
  arrangement  an ABC tune -> 1-3 full arrangements: chords per bar (the tune's own chord symbols where
               present, else the diatonic triad that best covers the bar) + an MMA groove -> drums,
               bass, chords, lead.  Style = the groove's family
  classical    a music21 score file -> pieces (style by composer: baroque / renaissance / classical)
  pieces       checks, segments of long pieces, the splits (train / validation / test and the held-out
               real songs, realdev / realtest)
  build        per-item processing and cache, assembly into split shards
  report       stats.json and report.md: per split and per source, what was skipped and why

The readers of the built corpus (load_split, load_pianoroll, piece_tokens) are in training.data.
"""

from .build import (
    BUILDER_VERSION,
    build,
    cache_path,
    load_cache,
    piece_record,
    process_item,
)
from .common import CorpusError, Skip
from .doom import DoomError, lump_to_midi, mus_to_midi, music_lumps
from .pieces import ALL_SPLITS, REAL_HOLDOUT, REAL_SPLITS, SPLITS, check_score, segment_piece, split_of
from .pop909 import Song, read_song
from .report import render_report
from .sources import (
    ABC_DIRS,
    DEFAULT_SOURCES,
    GROOVE_STYLE,
    LICENSES,
    MIDI_SUFFIXES,
    PACKAGE_SOURCES,
    groove_table,
    iter_abc,
    iter_classical,
    iter_freedoom,
    iter_items,
    iter_midi_dir,
    iter_openmsx,
    iter_pop909,
    music21_corpus_dir,
    walk_midi,
)

__all__ = [
    "BUILDER_VERSION", "build", "cache_path", "load_cache", "piece_record", "process_item", "CorpusError", "Skip",
    "DoomError", "lump_to_midi", "mus_to_midi", "music_lumps", "ALL_SPLITS", "REAL_HOLDOUT", "REAL_SPLITS",
    "SPLITS", "check_score", "segment_piece", "split_of", "Song", "read_song", "render_report", "ABC_DIRS",
    "DEFAULT_SOURCES", "GROOVE_STYLE", "LICENSES", "MIDI_SUFFIXES", "PACKAGE_SOURCES", "groove_table", "iter_abc",
    "iter_classical", "iter_freedoom", "iter_items", "iter_midi_dir", "iter_openmsx", "iter_pop909",
    "music21_corpus_dir", "walk_midi",
]
