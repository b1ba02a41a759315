"""The offline training corpus: real music from installed packages (plus any MIDI folders), normalized,
tokenized, split by piece and written as shards.  Build it with `python -m training.corpus build`.

Stages, one module each:
  sources      the items, in their fixed order: openttd-openmsx songs (style "game"), music21's bundled
               scores, the ABC tunes of music21's folk collections, any --midi-dir (style None);
               `--limit` and the MMA groove table
  arrangement  an ABC tune -> 1-3 full arrangements: chords per bar (the tune's own chord symbols where
               present, else the diatonic triad that best covers the bar) + an MMA groove -> drums,
               bass, chords, lead.  Style = the groove's family
  classical    a music21 score file -> pieces (style by composer: baroque / renaissance / classical)
  build        per-item processing and cache, assembly into split shards, stats.json and report.md

The readers of the built corpus (load_split, load_pianoroll, piece_tokens) are in training.data.
"""

from .build import (
    BUILDER_VERSION,
    SPLITS,
    build,
    cache_path,
    check_score,
    load_cache,
    piece_record,
    process_item,
    render_report,
    split_of,
)
from .common import CorpusError, Skip
from .sources import (
    ABC_DIRS,
    GROOVE_STYLE,
    MIDI_SUFFIXES,
    groove_table,
    iter_abc,
    iter_classical,
    iter_items,
    iter_midi_dir,
    iter_openmsx,
    music21_corpus_dir,
    walk_midi,
)

__all__ = [
    "BUILDER_VERSION", "SPLITS", "build", "cache_path", "check_score", "load_cache", "piece_record",
    "process_item", "render_report", "split_of", "CorpusError", "Skip", "ABC_DIRS", "GROOVE_STYLE",
    "MIDI_SUFFIXES", "groove_table", "iter_abc", "iter_classical", "iter_items", "iter_midi_dir",
    "iter_openmsx", "music21_corpus_dir", "walk_midi",
]
