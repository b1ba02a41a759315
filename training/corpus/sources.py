"""Where the corpus items come from, in their fixed build order, and what `--limit` takes of them.

An item is one unit of work: an ABC tune, a music21 score file, a MIDI file, a POP909 song or a music
lump of a Doom WAD.  Sources, in order: the openttd-openmsx songs, freedoom's level music (the D_* lumps
of its WADs), POP909's songs (a folder), music21's bundled scores (composers interleaved), each ABC
collection of music21's corpus, then each --midi-dir (walked lazily, never listed in memory).  The
package sources a build takes are named (PACKAGE_SOURCES); each piece's licence is its source's
(LICENSES).  The MMA groove table (the grooves the ABC arrangements play, each with its style) is read
here too.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib.util
import itertools
import os
import re
from pathlib import Path
from typing import Callable, Iterator

from tokenizer import vocab as V

from .common import CorpusError, stable_hash

MMA_LIB = Path("/usr/share/mma/lib/stdlib")
OPENMSX_DIR = Path("/usr/share/games/openttd/baseset/openmsx")
FREEDOOM_DIR = Path("/usr/share/games/doom")
FREEDOOM_WADS = ("freedoom1.wad", "freedoom2.wad", "freedm.wad")
MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".smf")

# The sources a build can take by name (besides --midi-dir folders), in build order.  DEFAULT_SOURCES are
# what build() takes unless told otherwise; the command line adds freedoom and POP909 (see __main__).
PACKAGE_SOURCES = ("openmsx", "freedoom", "pop909", "classical", "abc")
DEFAULT_SOURCES = ("openmsx", "classical", "abc")
# Licence of each source's pieces, written into every index row ("license").
LICENSES = {
    "openmsx": "GPL-2.0-only",  # Debian openttd-openmsx
    "freedoom": "BSD-3-Clause",  # Debian freedoom
    "pop909": "MIT",  # POP909's LICENSE
    "classical": "music21-corpus",  # music21/corpus/license.txt: per-work terms, some non-commercial
    "abc": "music21-corpus + GPL-2.0-or-later",  # a music21 corpus tune arranged with MMA's grooves
    "midi": "unknown",  # the user's own folders
}

# ---- MMA grooves ------------------------------------------------------------------------------
# groove file (stem) -> style.  Files not listed are not used.
GROOVE_STYLE: dict[str, str] = {}
for _style, _files in {
    "rock": "50srock 60srock basicrock bubblerock rock-128 softrock twist folkrock rockwaltz",
    "pop": "8beat boneym trance showtune broadway slowbroadway",
    "jazz": "bebop descendingjazz evansish folkyjazz jazzcombo jazzguitar jazzrock lfusion mellowjazz "
            "modernjazz nitejazz slowjazz gypsyjazz ragtime jazzwaltz fastjazzwaltz modernjazzwaltz",
    "swing": "68swing swing easyswing fastswing bigband dixie jive foxtrot quickstep softshoe strut charleston",
    "latin": "afro-cuban beguine bolero slowbolero bossanova calypso chacha cubanguitar jazzrhumba lighttango "
             "mambo merengue rhumba salsa samba son tango latinwaltz",
    "country": "bluegrass countryswing hillcountry slowcountry westernswing zydeco countrywaltz",
    "blues": "blues blues128 blues68 bluefolk countryblues fastblues slowblues boggiewoggie shuffleboggie",
    "waltz": "waltz fastwaltz vienesewaltz frenchwaltz broadwaywaltz arpeggiowaltz",
    "ballad": "ballad ballad128 ballad68 folkballad guitarballad pianoballad popballad rb-ballad rockballad "
              "stringballad lullaby",
    "funk": "bvfunk dsoul rb",
    "march": "march 68march bwmarch dixiemarch",
    "folk": "folk arpeggio44 arpeggio68 hymn spiritual popspiritual slowspiritual",
    "world": "polka desert ska",
}.items():
    for _f in _files.split():
        GROOVE_STYLE[_f] = _style
assert set(GROOVE_STYLE.values()) <= set(V.STYLES)

_SKIP_GROOVE = re.compile(r"intro|end|fill|break|metronome", re.I)


def groove_table() -> list[dict]:
    """Grooves usable for whole songs: name, style, bar length in real quarters (qbar), compound
    (6/8-like) flag and scale (real quarters per MMA beat)."""
    global _GROOVES
    if _GROOVES is not None:
        return _GROOVES
    out = []
    for stem, style in sorted(GROOVE_STYLE.items()):
        path = MMA_LIB / f"{stem}.mma"
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        m = re.search(r"(?im)^\s*time\s+(\d+)", text)
        beats = int(m.group(1)) if m else 4
        m = re.search(r"(?im)^\s*timesig\s+(\d+)\s*/?\s*(\d+)", text)
        sig = (int(m.group(1)), int(m.group(2))) if m else (beats, 4)
        compound = sig[1] == 8 or "128" in stem
        if compound:
            scale = {6: 0.5, 3: 1.0, 2: 1.5, 4: 1.5}.get(beats)
        else:
            scale = 1.0 if beats in (3, 4) else None
        if scale is None:
            continue
        qbar = beats * scale
        for name in re.findall(r"(?im)^\s*defgroove\s+(\S+)", text):
            if _SKIP_GROOVE.search(name):
                continue
            out.append(dict(name=name, file=stem, style=style, qbar=qbar, compound=compound, scale=scale))
    _GROOVES = out
    return out


_GROOVES: list[dict] | None = None


# ---- music21's bundled corpus -------------------------------------------------------------------
def music21_corpus_dir() -> Path:
    spec = importlib.util.find_spec("music21")
    return Path(spec.origin).parent / "corpus"


ABC_DIRS = ("ryansMammoth", "oneills1850", "airdsAirs", "essenFolksong", "miscFolk", "nottingham-dataset")

CLASSICAL_STYLE = {
    "bach": "baroque", "handel": "baroque", "corelli": "baroque", "cpebach": "baroque",
    "palestrina": "renaissance", "monteverdi": "renaissance", "josquin": "renaissance",
    "ciconia": "renaissance", "trecento": "renaissance", "luca": "renaissance", "lusitano": "renaissance",
    "beethoven": "classical", "mozart": "classical", "haydn": "classical", "schubert": "classical",
    "chopin": "classical", "schumann_clara": "classical", "schumann_robert": "classical",
    "weber": "classical", "verdi": "classical", "beach": "classical", "joplin": "classical",
}
CLASSICAL_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc")
# music21 parses Palestrina at ~1 s a mass movement: a deterministic sample keeps the default build
# within its time budget (the corpus is dominated by the ABC arrangements anyway).
CLASSICAL_MAX_PER_COMPOSER = {"palestrina": 450}


def _abc_tunes(text: str) -> Iterator[tuple[str, str]]:
    """(X number, tune text with the file header) for each tune of an ABC file."""
    parts = re.split(r"(?m)^(?=X:)", text)
    header = "" if parts[0].startswith("X:") else parts[0]
    # keep only header fields/directives (not stray music) from the file header
    header = "\n".join(ln for ln in header.splitlines() if re.match(r"^(%%|[A-Za-z]:)", ln))
    seen: collections.Counter = collections.Counter()
    for p in parts:
        if not p.startswith("X:"):
            continue
        x = p.split("\n", 1)[0][2:].strip() or "0"
        seen[x] += 1
        xid = x if seen[x] == 1 else f"{x}.{seen[x]}"
        lines = p.split("\n")
        tune = lines[0] + "\n" + (header + "\n" if header else "") + "\n".join(lines[1:])
        yield xid, tune


def iter_abc_collection(collection: str) -> Iterator[dict]:
    """The tunes of one ABC collection of music21's corpus (a folder of .abc files), in file order."""
    for path in sorted((music21_corpus_dir() / collection).glob("*.abc")):
        text = path.read_text(encoding="latin-1")
        for x, tune in _abc_tunes(text):
            tid = f"abc:{collection}/{path.name}#{x}"
            yield dict(source="abc", id=tid, group=tid, collection=collection, abc=tune)


def iter_abc() -> Iterator[dict]:
    """The tunes of every ABC collection, collection after collection."""
    for d in ABC_DIRS:
        yield from iter_abc_collection(d)


def _classical_files(root: Path, comp: str) -> list[Path]:
    """One score file per work of a composer (sampled where CLASSICAL_MAX_PER_COMPOSER caps it)."""
    files = sorted(p for p in (root / comp).rglob("*") if p.suffix.lower() in CLASSICAL_SUFFIXES) \
        if (root / comp).exists() else []
    if comp == "bach":  # prefer the chorale; skip "-sc" duplicates
        files = [p for p in files if "-sc" not in p.stem]
    # one file per work: the same movement often ships as both .krn and .mxl
    best: dict[tuple[str, str], Path] = {}
    for p in files:
        key = (str(p.parent), p.stem)
        if key not in best or CLASSICAL_SUFFIXES.index(p.suffix.lower()) < \
                CLASSICAL_SUFFIXES.index(best[key].suffix.lower()):
            best[key] = p
    files = sorted(best.values())
    cap = CLASSICAL_MAX_PER_COMPOSER.get(comp)
    if cap and len(files) > cap:
        files = sorted(files, key=lambda p: stable_hash(p.name))[:cap]
    return files


def iter_classical() -> Iterator[dict]:
    """music21's bundled scores, composers interleaved (a prefix of it sees several styles)."""
    root = music21_corpus_dir()
    lists = [(comp, _classical_files(root, comp)) for comp in sorted(CLASSICAL_STYLE)]
    for rnd in itertools.count():
        any_left = False
        for comp, files in lists:
            if rnd >= len(files):
                continue
            any_left = True
            p = files[rnd]
            rel = p.relative_to(root).as_posix()
            yield dict(source="classical", id=f"m21:{rel}", group=f"m21:{rel}", path=str(p),
                       style=CLASSICAL_STYLE[comp], composer=comp)
        if not any_left:
            return


def iter_openmsx() -> Iterator[dict]:
    """The openttd-openmsx songs (Debian openttd-openmsx), style "game"; none where it is not installed."""
    if not OPENMSX_DIR.exists():
        return
    files = sorted(p for p in OPENMSX_DIR.iterdir() if p.suffix.lower() == ".mid")
    for p in files:
        yield dict(source="openmsx", id=f"openmsx:{p.name}", group=f"openmsx:{p.name}", path=str(p), style="game")


def freedoom_wads() -> list[Path]:
    """freedoom's WAD files in FREEDOOM_DIR (Debian freedoom), in FREEDOOM_WADS order; none where the
    package is not installed."""
    return [FREEDOOM_DIR / w for w in FREEDOOM_WADS if (FREEDOOM_DIR / w).is_file()]


def iter_freedoom() -> Iterator[dict]:
    """The music lumps (D_*, MUS or MIDI) of freedoom's WADs, style "game"; a lump whose bytes an earlier
    lump already had is left out (the same song used for two levels)."""
    from .doom import DoomError, music_lumps

    seen: set[str] = set()
    for path in freedoom_wads():
        wad = path.name
        try:
            lumps = music_lumps(path)
        except (OSError, DoomError):
            continue
        for name, blob in lumps:
            digest = hashlib.sha1(blob).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            pid = f"freedoom:{wad}/{name}"
            yield dict(source="freedoom", id=pid, group=pid, path=str(path), lump=name, style="game",
                       cache_key=f"{pid}|{digest}")


def iter_pop909(root: str | Path) -> Iterator[dict]:
    """POP909's songs under `root` (one folder NNN/ per song), in song order, style "pop"."""
    from .pop909 import song_dirs

    for d in song_dirs(root):
        pid = f"pop909:{d.name}"
        yield dict(source="pop909", id=pid, group=pid, path=str(d), style="pop")


# ---- MIDI folders ---------------------------------------------------------------------------------
def walk_midi(root: str) -> Iterator[str]:
    """Lazily yields MIDI paths under root, sorted per directory (deterministic), never listing all."""
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                yield from walk_midi(e.path)
            elif e.is_file() and e.name.lower().endswith(MIDI_SUFFIXES):
                yield e.path
        except OSError:
            continue


def iter_midi_dir(root: str) -> Iterator[dict]:
    """The MIDI files under a folder (style None); the cache key adds path, size and mtime, so an
    edited file is processed again."""
    root = os.path.abspath(root)
    tag = Path(root).name
    for path in walk_midi(root):
        rel = os.path.relpath(path, root)
        pid = f"midi:{tag}/{rel}"
        try:
            st = os.stat(path)
            key = f"{pid}|{path}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            key = f"{pid}|{path}"
        yield dict(source="midi", id=pid, group=pid, path=path, style=None, cache_key=key)


def check_midi_dirs(midi_dirs) -> None:
    """Raises CorpusError for a MIDI folder that does not exist or holds no MIDI file."""
    for d in midi_dirs:
        if not os.path.isdir(d):
            raise CorpusError(f"MIDI folder {d} does not exist (or is not a folder): give --midi-dir a folder "
                              f"that holds MIDI files ({' '.join(MIDI_SUFFIXES)})")
        if next(walk_midi(d), None) is None:
            raise CorpusError(f"MIDI folder {d} holds no MIDI files ({' '.join(MIDI_SUFFIXES)}, searched "
                              f"recursively): give --midi-dir a folder that holds some")


# ---- all items --------------------------------------------------------------------------------------
def check_sources(names) -> tuple[str, ...]:
    """The named package sources in build order; CorpusError for a name that is not one."""
    names = tuple(names)
    bad = [n for n in names if n not in PACKAGE_SOURCES]
    if bad:
        raise CorpusError(f"unknown source {', '.join(bad)}: choose from {', '.join(PACKAGE_SOURCES)}")
    return tuple(n for n in PACKAGE_SOURCES if n in names)


def sources(midi_dirs=(), default: bool = True, names=None, pop909=None) -> list[Callable[[], Iterator[dict]]]:
    """The item sources in build order, each a function that starts its iteration afresh: the named
    package sources (`names`, default DEFAULT_SOURCES: openmsx, classical, each ABC collection) unless
    default=False, then each MIDI folder.  "pop909" needs the folder `pop909`."""
    out: list[Callable[[], Iterator[dict]]] = []
    if default:
        for name in check_sources(DEFAULT_SOURCES if names is None else names):
            if name == "abc":
                out += [functools.partial(iter_abc_collection, d) for d in ABC_DIRS]
            elif name == "pop909":
                if pop909 is not None:
                    out.append(functools.partial(iter_pop909, pop909))
            else:
                out.append({"openmsx": iter_openmsx, "freedoom": iter_freedoom, "classical": iter_classical}[name])
    return out + [functools.partial(iter_midi_dir, d) for d in midi_dirs]


def limit_quotas(available: list[int], limit: int) -> list[int]:
    """How many items each source gives to a build of `limit` items in all: one each in turn, so every
    source is seen, and what a short source cannot give goes to the others."""
    quota = [0] * len(available)
    left = limit
    while left > 0:
        open_ = [i for i, a in enumerate(available) if quota[i] < a]
        if not open_:
            break
        for i in open_[:left]:
            quota[i] += 1
        left -= min(left, len(open_))
    return quota


def iter_items(midi_dirs=(), limit: int | None = None, default: bool = True, names=None,
               pop909=None) -> Iterator[dict]:
    """Every item in build order (sources() says which); with `limit`, at most `limit` items in all (see
    limit_quotas), each source giving the first items of its own order, so a limited build is a subset of
    the full one."""
    streams = sources(midi_dirs, default, names, pop909)
    if limit is None:
        for s in streams:
            yield from s()
        return
    available = [sum(1 for _ in itertools.islice(s(), limit)) for s in streams]
    for s, q in zip(streams, limit_quotas(available, limit)):
        yield from itertools.islice(s(), q)
