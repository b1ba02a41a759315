"""Disk use bounded in bytes as well as count and age.

Each request writes into its own folder under one root (`OutputStore`, by default inside Gradio's cache so
Gradio serves the files without copying), and the uploads Gradio keeps in its cache (`UploadCache`) are pruned
too, oldest first, after every request and every `PRUNE_EVERY` seconds (`Janitor`).  A folder a running request
uses is never deleted.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from model.request import LABELS, RequestError

log = logging.getLogger(__name__)

OUTPUT_ENV = "MIDI_BANGERS_OUTPUT_DIR"
MB = 1024 * 1024
# Output folders (one per request): the newest KEEP_REQUESTS, none older than OUTPUT_MAX_AGE, at most
# OUTPUT_MAX_BYTES together.  The FLAC stems dominate: a usual request (2 variants x 8 bars, 3 tracks) writes
# about 13 MB (loose and zipped; the screenshot's zip is 6.6 MB); the budget's STEMS_MAX_SECONDS keeps one
# request's stems to about 2 x 140 MB (longer requests get no stems, and a warning says so).
KEEP_REQUESTS = 24
OUTPUT_MAX_AGE = 2 * 3600
OUTPUT_MAX_BYTES = 512 * MB
# Uploads in Gradio's cache (one folder per uploaded file, each at most tokenizer.score.MAX_FILE_BYTES).
KEEP_UPLOADS = 256
UPLOAD_MAX_AGE = 3600
UPLOAD_MAX_BYTES = 256 * MB
TMP_GRACE = 60.0  # seconds before an upload route's leftover tmp file counts as orphaned
PRUNE_EVERY = 60  # seconds between the Janitor's sweeps


def gradio_cache_dir() -> Path:
    """Gradio's cache folder (where it keeps uploads and serves files from), as Gradio computes it."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def default_output_root() -> Path:
    """$MIDI_BANGERS_OUTPUT_DIR, else a folder inside Gradio's cache (so Gradio serves the files as they are)."""
    env = os.environ.get(OUTPUT_ENV)
    return Path(env) if env else gradio_cache_dir() / "midi-bangers"


def _folder_stats(folder: Path) -> tuple[float, int]:
    """(newest modification time, total bytes) of a folder and everything in it."""
    newest, size = folder.stat().st_mtime, 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue  # deleted meanwhile
            newest, size = max(newest, st.st_mtime), size + st.st_size
    return newest, size


class FolderCap:
    """The folders under `root` that `counts()` selects, kept to the newest `keep`, none older than
    `max_age` seconds and at most `max_bytes` together: `prune()` deletes the oldest first.  Never deleted:
    a folder held with `hold()` (a running request reads or writes it; it counts towards the total) and
    the newest folder (so that one request bigger than the cap still gets its files)."""

    def __init__(self, root: str | os.PathLike, keep: int, max_age: float, max_bytes: int):
        self.root = Path(root)
        self.keep, self.max_age, self.max_bytes = keep, max_age, max_bytes
        self._lock = threading.Lock()
        self._held: dict[Path, int] = {}

    def counts(self, folder: Path) -> bool:
        """Whether `folder` (right under root) is one of this cap's."""
        return True

    def folders(self) -> list[Path]:
        try:
            return [d for d in self.root.iterdir() if d.is_dir() and not d.is_symlink() and self.counts(d)]
        except FileNotFoundError:
            return []

    @contextmanager
    def hold(self, path: str | os.PathLike | None) -> Iterator[None]:
        """Keep the folder holding `path` (a folder under root, or a file in one) while the block runs."""
        top = self.top_folder(path)
        if top is None:
            yield
            return
        with self._lock:
            self._held[top] = self._held.get(top, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._held[top] -= 1
                if not self._held[top]:
                    del self._held[top]

    def top_folder(self, path: str | os.PathLike | None) -> Path | None:
        """The folder right under root that holds `path`, or None when `path` is not under root."""
        if path is None:
            return None
        try:
            rel = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        return self.root / rel.parts[0] if rel.parts else None

    def prune(self) -> int:
        """Delete folders beyond the count, the age or the byte cap, oldest first; returns how many."""
        with self._lock:
            stats = []
            for d in self.folders():
                try:
                    stats.append((*_folder_stats(d), d))
                except OSError:
                    continue
            stats.sort(key=lambda s: s[0])  # oldest first
            now, count, total, deleted = time.time(), len(stats), sum(s[1] for s in stats), 0
            for mtime, size, d in stats[:-1]:  # the newest is kept: a request bigger than the cap gets its files
                if d in self._held or not (count > self.keep or total > self.max_bytes or now - mtime > self.max_age):
                    continue
                shutil.rmtree(d, ignore_errors=True)
                count, total, deleted = count - 1, total - size, deleted + 1
            return deleted

    def disk_bytes(self) -> int:
        """Bytes in the folders this cap counts."""
        total = 0
        for d in self.folders():
            try:
                total += _folder_stats(d)[1]
            except OSError:
                continue
        return total


class OutputStore(FolderCap):
    """One folder per request (`req-*`) under `root`."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_REQUESTS,
                 max_age: float = OUTPUT_MAX_AGE, max_bytes: int = OUTPUT_MAX_BYTES):
        super().__init__(default_output_root() if root is None else root, keep, max_age, max_bytes)

    def counts(self, folder: Path) -> bool:
        return folder.name.startswith("req-")

    @contextmanager
    def request_dir(self) -> Iterator[Path]:
        """A new folder for one request, held while the block runs; the store is pruned before and after."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.prune()
        out = Path(tempfile.mkdtemp(prefix=time.strftime("req-%Y%m%d-%H%M%S-"), dir=self.root))
        with self.hold(out):
            yield out
        self.prune()


class UploadCache(FolderCap):
    """The uploads in Gradio's cache: one folder per file, named by its content hash (`<cache>/<sha>/name`).
    Other folders there (the OutputStore's, Gradio's own) are not touched.  The upload route first streams a body
    into a `tmp*` file in the cache's root; a refused upload (a bad file name, a body over the size limit) leaves
    it there, so `prune()` also removes such files once they are `tmp_grace` seconds old (a body still arriving
    is younger)."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_UPLOADS,
                 max_age: float = UPLOAD_MAX_AGE, max_bytes: int = UPLOAD_MAX_BYTES, tmp_grace: float = TMP_GRACE):
        super().__init__(gradio_cache_dir() if root is None else root, keep, max_age, max_bytes)
        self.tmp_grace = tmp_grace

    def counts(self, folder: Path) -> bool:
        return re.fullmatch(r"[0-9a-f]{32,128}", folder.name) is not None

    def leftovers(self) -> list[Path]:
        """The upload route's `tmp*` files in the cache's root older than `tmp_grace` seconds."""
        now, old = time.time(), []
        try:
            for p in self.root.iterdir():
                try:
                    if p.name.startswith("tmp") and p.is_file() and not p.is_symlink() \
                            and now - p.stat().st_mtime >= self.tmp_grace:
                        old.append(p)
                except OSError:
                    continue  # gone meanwhile
        except FileNotFoundError:
            pass
        return old

    def prune(self) -> int:
        """Folders beyond the caps (FolderCap.prune), then the route's leftovers; returns how many went."""
        deleted = super().prune()
        for p in self.leftovers():
            try:
                p.unlink()
                deleted += 1
            except OSError:
                continue
        return deleted

    def hold_upload(self, path: Path, name: str) -> AbstractContextManager:
        """Hold an uploaded file while it is read.  Only a file in this cache is accepted: an API caller must
        not name any other file on the server (`name`: the field, for the message)."""
        if self.top_folder(path) is None:
            raise RequestError(f"{LABELS[name]}: only a file uploaded to this page can be used; please upload it")
        return self.hold(path)


class Janitor:
    """Prunes the stores after each request (`sweep()`) and every `every` seconds on a daemon thread."""

    def __init__(self, *stores: FolderCap, every: float = PRUNE_EVERY):
        self.stores, self.every = stores, every
        self._stop = threading.Event()

    def sweep(self) -> None:
        for s in self.stores:
            try:
                s.prune()
            except OSError:  # a disk problem must not fail a request; the next sweep tries again
                log.exception("pruning %s failed", s.root)

    def start(self, running: Callable[[], bool] = lambda: True) -> threading.Thread:
        """Sweep every `every` seconds until stop(), or until `running()` turns False after being True."""
        def loop() -> None:
            was_running = False
            while not self._stop.wait(self.every):
                now_running = running()
                if was_running and not now_running:
                    return
                was_running = was_running or now_running
                self.sweep()

        thread = threading.Thread(target=loop, name="midi-bangers-janitor", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
