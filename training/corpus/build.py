"""Items -> pieces -> the corpus shards: per-item processing (in worker processes), the per-item cache,
assembly into split shards in item order, stats.json and report.md.

Each source item is processed once and cached under OUT/cache/ (keyed by item id + BUILDER_VERSION);
a re-run only processes new items, and an interrupted build resumes.  Assembly then walks the items
again in their fixed order and writes

  {split}.tokens.npy           one flat uint16 token stream per split (pieces = encode(score))
  {split}.index.jsonl          one JSON row per piece or segment (id, group, source, license, style,
                               groups, drums, offset, length, n_notes, bars, segment, segments,
                               start_step, and the source's own fields)
  {split}.pianoroll.npy        (N, 5, 32, 16) uint8 = packbits of (N, 5, 32, 128) windows, 2 steps/beat
  {split}.pianoroll_index.npy  (N,) int32: row of each window's piece in {split}.index.jsonl
  stats.json, report.md

for each split of pieces.ALL_SPLITS: train / validation / test by piece group, by hash (90 / 5 / 5), and
realdev / realtest, the held-out real songs (pieces.split_of).  Long pieces are cut into segments
(pieces.segment_piece).  All outputs are written to a temp name and renamed.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

import tokenizer
from tokenizer import vocab as V
from tokenizer.pianoroll import score_to_pianoroll, windows

from . import sources as _src
from .arrangement import arrange_abc
from .classical import classical_scores
from .common import CorpusError, Skip
from .doom import DoomError, lump_bytes, lump_to_midi
from .pieces import ALL_SPLITS, MAX_NOTES, MAX_SECONDS, REAL_SPLITS, SPLITS, check_score, segment_piece, split_of
from .pop909 import song_pieces
from .report import Tally, render_report
from .sources import DEFAULT_SOURCES, LICENSES, check_midi_dirs, check_sources, iter_items

log = logging.getLogger(__name__)

BUILDER_VERSION = "1"
# the names of pieces and report stay importable from here, where they were first defined
__all__ = ["ALL_SPLITS", "BUILDER_VERSION", "MAX_NOTES", "MAX_SECONDS", "REAL_SPLITS", "SPLITS", "Tally", "build",
           "cache_path", "check_score", "left_out", "load_cache", "piece_record", "process_item", "render_report",
           "save_cache", "split_of"]
PR_STEPS_PER_BEAT = 2
PR_LENGTH = 32
PR_MAX_WINDOWS = 16


# ---- per-item processing ----------------------------------------------------------------------------
def piece_record(p: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """A piece dict (id, group, source, style, score, extra) -> (index row, tokens, packed pianoroll windows)."""
    score = p["score"]
    toks = tokenizer.encode(score)
    roll = score_to_pianoroll(score, steps_per_beat=PR_STEPS_PER_BEAT)
    w = windows(roll, PR_LENGTH)
    if len(w) > PR_MAX_WINDOWS:
        idx = np.unique(np.linspace(0, len(w) - 1, PR_MAX_WINDOWS).round().astype(int))
        w = w[idx]
    packed = np.packbits(w, axis=-1) if len(w) else np.zeros((0, 5, PR_LENGTH, 16), np.uint8)
    meta = dict(id=p["id"], group=p["group"], source=p["source"], style=p["style"],
                groups=[V.GROUPS[g] for g in score.groups if g != V.DRUM_GROUP], drums=score.has_drums,
                n_notes=int(len(score.notes)), bars=score.n_bars, length=int(len(toks)),
                bpm=round(score.bpm, 2), time_signature=list(score.time_signature), **p.get("extra", {}))
    return meta, toks.astype(np.uint16), packed


_WORKDIR: str | None = None


def _init_worker(quiet: bool = True) -> None:
    """Worker process set-up: its own scratch folder, silenced output, Ctrl-C left to the parent."""
    global _WORKDIR
    _WORKDIR = tempfile.mkdtemp(prefix="corpus-worker-")
    if quiet:  # abc2midi's C parser prints its warnings straight to fds 1 and 2
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _fd1_silenced() -> Iterator[None]:
    """Sends fd 1 to /dev/null meanwhile (abc2midi's warnings when items are processed in this process),
    so that the CLI's stdout holds only its JSON; stderr keeps the progress bar and the log."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def process_item(item: dict) -> dict:
    """One item -> its pieces (a long piece as its segments) and what was left out, never raising:
    {"id", "pieces": [(meta, tokens, packed)], "skipped": [(id, reason)], "seconds"}"""
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = tempfile.mkdtemp(prefix="corpus-worker-")
    t0 = time.time()
    pieces, skipped = [], []
    try:
        if item["source"] == "abc":
            raw = arrange_abc(item, _WORKDIR)
        elif item["source"] == "classical":
            raw = classical_scores(item)
        elif item["source"] == "pop909":
            raw = song_pieces(item)
        else:
            try:
                src = lump_to_midi(lump_bytes(item["path"], item["lump"])) if item["source"] == "freedoom" \
                    else item["path"]
                score = tokenizer.load_midi(src, style=item.get("style"))
            except (tokenizer.MidiError, DoomError) as e:
                raise Skip(f"broken: {e}") from None
            raw = [dict(id=item["id"], group=item["group"], source=item["source"], style=item.get("style"),
                        score=score)]
        for p in raw:
            try:
                pieces += [piece_record(seg) for seg in segment_piece(p, MAX_NOTES, MAX_SECONDS)]
            except Skip as e:
                skipped.append((p["id"], str(e)))
    except Skip as e:
        skipped.append((item["id"], str(e)))
    except Exception as e:  # a bug or an unexpected file: never kill the build
        skipped.append((item["id"], f"error: {type(e).__name__}: {str(e)[:80]}"))
    return dict(id=item["id"], pieces=pieces, skipped=skipped, seconds=time.time() - t0)


# ---- cache --------------------------------------------------------------------------------------------
# bump a source's version to rebuild only that source's items
SOURCE_VERSION = {"abc": "2"}


def cache_path(out: Path, item_id: str) -> Path:
    """Cache file of an item (its id, or its cache_key: MIDI files add path, size and mtime)."""
    v = SOURCE_VERSION.get(item_id.split(":", 1)[0], "")
    h = hashlib.sha1((f"{BUILDER_VERSION}|{item_id}" + (f"|{v}" if v else "")).encode()).hexdigest()
    return out / "cache" / h[:2] / f"{h}.npz"


def save_cache(path: Path, res: dict) -> None:
    """Writes process_item's result as one .npz (tokens, packed windows, windows per piece, JSON info)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metas = [m for m, _, _ in res["pieces"]]
    toks = np.concatenate([t for _, t, _ in res["pieces"]]) if res["pieces"] else np.zeros(0, np.uint16)
    prs = np.concatenate([p for _, _, p in res["pieces"]]) if res["pieces"] else np.zeros((0, 5, PR_LENGTH, 16), np.uint8)
    n_pr = np.asarray([len(p) for _, _, p in res["pieces"]], np.int32)
    info = json.dumps(dict(id=res["id"], pieces=metas, skipped=res["skipped"], seconds=res["seconds"]))
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, tokens=toks.astype(np.uint16), pr=prs, n_pr=n_pr, info=np.frombuffer(info.encode(), np.uint8))
    os.replace(tmp, path)


def load_cache(path: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(info: id, pieces, skipped, seconds; tokens; packed windows; windows per piece) of a cache file."""
    with np.load(path) as z:
        info = json.loads(bytes(z["info"]).decode())
        return info, z["tokens"], z["pr"], z["n_pr"]


def _process_and_cache(args: tuple[dict, str]) -> tuple[str, int, int, float]:
    item, out = args
    res = process_item(item)
    save_cache(cache_path(Path(out), item.get("cache_key", item["id"])), res)
    return item["source"], len(res["pieces"]), len(res["skipped"]), res["seconds"]


# ---- shards --------------------------------------------------------------------------------------------
class _SplitWriter:
    """Appends pieces to one split's raw token / window files and index, then turns them into .npy."""

    def __init__(self, out: Path, split: str):
        self.out, self.split = out, split
        self.tok_tmp = out / f".{split}.tokens.raw.tmp"
        self.pr_tmp = out / f".{split}.pianoroll.raw.tmp"
        self.idx_tmp = out / f".{split}.index.jsonl.tmp"
        self.tok_f = open(self.tok_tmp, "wb")
        self.pr_f = open(self.pr_tmp, "wb")
        self.idx_f = open(self.idx_tmp, "w")
        self.n_tokens = 0
        self.n_pieces = 0
        self.n_windows = 0
        self.pr_rows: list[np.ndarray] = []

    def add(self, meta: dict, toks: np.ndarray, pr: np.ndarray) -> None:
        row = dict(meta)
        row["license"] = LICENSES.get(meta["source"], "unknown")
        for k, v in (("segment", 0), ("segments", 1), ("start_step", 0)):  # items cached before segments
            row.setdefault(k, v)
        row["offset"] = self.n_tokens
        row["length"] = int(len(toks))
        row["split"] = self.split
        self.tok_f.write(np.ascontiguousarray(toks, np.uint16).tobytes())
        self.pr_f.write(np.ascontiguousarray(pr, np.uint8).tobytes())
        self.pr_rows.append(np.full(len(pr), self.n_pieces, np.int32))
        self.idx_f.write(json.dumps(row) + "\n")
        self.n_tokens += len(toks)
        self.n_windows += len(pr)
        self.n_pieces += 1

    def finish(self) -> None:
        for f in (self.tok_f, self.pr_f, self.idx_f):
            f.close()
        _raw_to_npy(self.tok_tmp, self.out / f"{self.split}.tokens.npy", np.uint16, (self.n_tokens,))
        _raw_to_npy(self.pr_tmp, self.out / f"{self.split}.pianoroll.npy", np.uint8,
                    (self.n_windows, 5, PR_LENGTH, 16))
        rows = np.concatenate(self.pr_rows) if self.pr_rows else np.zeros(0, np.int32)
        _atomic_npy(self.out / f"{self.split}.pianoroll_index.npy", rows)
        os.replace(self.idx_tmp, self.out / f"{self.split}.index.jsonl")


def _raw_to_npy(raw: Path, dst: Path, dtype, shape) -> None:
    """Copies a raw binary file into an .npy of that dtype and shape, in chunks (never all in memory)."""
    tmp = dst.with_name(dst.name + ".tmp")
    header_arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    flat = header_arr.reshape(-1) if header_arr.size else header_arr
    n = int(np.prod(shape))
    with open(raw, "rb") as f:
        pos, chunk = 0, 1 << 24
        itemsize = np.dtype(dtype).itemsize
        while pos < n:
            buf = f.read(min(chunk, n - pos) * itemsize)
            if not buf:
                raise IOError(f"{raw} is shorter than expected")
            a = np.frombuffer(buf, dtype)
            flat[pos:pos + len(a)] = a
            pos += len(a)
    header_arr.flush()
    del header_arr, flat
    os.replace(tmp, dst)
    os.unlink(raw)


def _atomic_npy(dst: Path, arr: np.ndarray) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, dst)


def _atomic_text(dst: Path, text: str) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, dst)


# ---- build ----------------------------------------------------------------------------------------------
def _cache_key(item: dict) -> str:
    return item.get("cache_key", item["id"])


def _process(out: Path, items: Iterator[dict], n_items: int, n_todo: int, workers: int, progress: bool):
    """Processes and caches the items not cached yet (streaming, in bounded batches); the progress bar
    counts all n_items, the cached ones done from the start.
    -> (items processed, items found cached, processing seconds by source)."""
    from tqdm import tqdm

    n_cached = n_done = 0
    proc_seconds: collections.Counter = collections.Counter()

    def todo() -> Iterator[tuple[dict, str]]:
        nonlocal n_cached
        for it in items:
            if cache_path(out, _cache_key(it)).exists():
                n_cached += 1
                continue
            yield it, str(out)

    bar = tqdm(total=n_items, initial=n_items - n_todo, desc="processing", unit="item", disable=not progress,
               smoothing=0.05)
    pending = todo()
    if workers <= 1:
        results: Iterator = map(_process_and_cache, pending)
    else:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(workers, initializer=_init_worker)
        batches = iter(lambda: list(itertools.islice(pending, 256 * workers)), [])
        results = itertools.chain.from_iterable(
            pool.imap_unordered(_process_and_cache, batch, chunksize=2) for batch in batches)
    try:
        with _fd1_silenced() if workers <= 1 else contextlib.nullcontext():
            for src, _, _, sec in results:
                proc_seconds[src] += sec
                n_done += 1
                bar.update()
    finally:
        if workers > 1:
            pool.terminate()
            pool.join()
        bar.close()
    return n_done, n_cached, proc_seconds


def _assemble(out: Path, items: Iterator[dict], n_items: int, progress: bool) -> tuple[Tally, int]:
    """Writes the split shards from the cache, in item order. -> (tally, items walked)."""
    from tqdm import tqdm

    writers = {s: _SplitWriter(out, s) for s in ALL_SPLITS}
    tally = Tally()
    n = 0
    for it in tqdm(items, total=n_items, desc="assembling", unit="item", disable=not progress):
        n += 1
        path = cache_path(out, _cache_key(it))
        if not path.exists():  # cannot happen unless the cache was deleted meanwhile
            tally.skip(it["id"], "missing from cache", it["source"])
            continue
        info, toks, pr, n_pr = load_cache(path)
        if any(reason.startswith("too long") for _, reason in info["skipped"]):
            # cached by a builder that skipped long pieces: processed again, now cut into segments
            with _fd1_silenced():
                save_cache(path, process_item(it))
            info, toks, pr, n_pr = load_cache(path)
        for pid, reason in info["skipped"]:
            tally.skip(pid, reason, it["source"])
        t_off, p_off = 0, 0
        for meta, npr in zip(info["pieces"], n_pr):
            t = toks[t_off:t_off + meta["length"]]
            p = pr[p_off:p_off + int(npr)]
            t_off += meta["length"]
            p_off += int(npr)
            split = split_of(meta["group"], meta["source"])
            writers[split].add(meta, t, p)
            tally.piece(split, meta, int(npr))
    for w in writers.values():
        w.finish()
    return tally, n


def left_out(names, pop909) -> tuple[list[str], object]:
    """What of the named sources this machine cannot give, one line each (a missing package or folder),
    and the POP909 folder to use (None when it is left out)."""
    lines = []
    if "openmsx" in names and not _src.OPENMSX_DIR.is_dir():
        lines.append(f"openmsx: {_src.OPENMSX_DIR} not found (apt-get install openttd-openmsx)")
    if "freedoom" in names and not _src.freedoom_wads():
        lines.append(f"freedoom: no WAD in {_src.FREEDOOM_DIR} (apt-get install freedoom)")
    if "pop909" in names and (pop909 is None or not Path(pop909).is_dir()):
        lines.append(f"pop909: folder {pop909} not found (give --pop909 DIR, the POP909 song folders)")
        pop909 = None
    return lines, pop909


def build(out, midi_dirs=(), limit: int | None = None, workers: int | None = None, default: bool = True,
          progress: bool = True, sources=None, pop909=None) -> dict:
    """Build (or resume) the corpus in `out`; returns the stats dict.

    midi_dirs: folders of MIDI files, added after the named sources (default=False: only these).
    sources: the package sources to take (sources.PACKAGE_SOURCES names; None: DEFAULT_SOURCES, which
    leave out freedoom and POP909).  pop909: the POP909 folder ("pop909" in sources needs it).  A source
    this machine cannot give is left out with a log line and a line in stats["left_out"].
    limit: at most this many items in all (tunes, score files, MIDI files, songs, lumps), taken in turn
    from each source (sources.iter_items).  Raises CorpusError, before writing anything, for an unknown
    source name, a MIDI folder that does not exist or holds no MIDI file, or when there is nothing to
    build."""
    midi_dirs = [str(d) for d in midi_dirs]
    if not default and not midi_dirs:
        raise CorpusError("nothing to build: the default sources are off and no MIDI folder is given; "
                          "add --midi-dir FOLDER or drop --no-default")
    if limit is not None and limit < 1:
        raise CorpusError(f"limit must be at least 1 (got {limit})")
    check_midi_dirs(midi_dirs)
    names = check_sources(DEFAULT_SOURCES if sources is None else sources) if default else ()
    missing, pop909 = left_out(names, pop909)
    for line in missing:
        log.warning("left out: %s", line)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    t0 = time.time()

    def items() -> Iterator[dict]:
        return iter_items(midi_dirs, limit, default, names, pop909)

    # a cheap first walk gives the progress bars their totals
    n_listed = n_todo = 0
    for it in items():
        n_listed += 1
        n_todo += not cache_path(out, _cache_key(it)).exists()
    # phase 1: process uncached items; phase 2: assemble in item order
    n_done, n_cached, proc_seconds = _process(out, items(), n_listed, n_todo, workers, progress)
    t_proc = time.time() - t0
    log.info("processed %d items (%d cached) in %.0f s", n_done, n_cached, t_proc)
    tally, n_items = _assemble(out, items(), n_listed, progress)
    total = tally.total("pieces")
    seconds = time.time() - t0
    stats = dict(
        builder_version=BUILDER_VERSION, vocab_size=V.VOCAB_SIZE, items=n_items,
        items_processed=n_done, items_cached=n_cached,
        pieces=total, tokens=tally.total("tokens"), notes=tally.total("notes"),
        splits={s: dict(tally.per_split[s]) for s in ALL_SPLITS},
        real={k: tally.per_split["realdev"][k] + tally.per_split["realtest"][k] for k in ("pieces", "notes", "tokens")},
        per_source=tally.source_table(), sources_used=list(names), left_out=missing,
        licenses={k: LICENSES.get(k, "unknown") for k in tally.sources},
        pop909=str(pop909) if pop909 is not None else None,
        styles=dict(tally.style_all.most_common()), styles_per_split={s: dict(tally.styles[s]) for s in ALL_SPLITS},
        groups=dict(tally.groups.most_common()), drums_share=round(tally.drums / total, 4) if total else 0.0,
        sources=dict(tally.sources.most_common()), abc_chords=dict(tally.chords),
        skipped=dict(tally.skipped.most_common()), skipped_total=sum(tally.skipped.values()),
        skipped_examples=dict(tally.skip_examples),
        build_seconds=round(seconds, 1), processing_seconds=round(t_proc, 1),
        processing_cpu_seconds_by_source={k: round(v, 1) for k, v in proc_seconds.items()},
        items_per_second=round(n_done / t_proc, 2) if t_proc > 0 and n_done else None,
        workers=workers, limit=limit, midi_dirs=midi_dirs, default_sources=default,
    )
    _atomic_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    _atomic_text(out / "report.md", render_report(stats))
    log.info("corpus: %d pieces, %d tokens, %d skipped, %.0f s", total, stats["tokens"], stats["skipped_total"],
             seconds)
    return stats
