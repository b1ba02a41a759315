"""The build's account of itself: what the assembled corpus holds (per split, style, instrument group
and source: pieces, segments, notes, tokens) and what was skipped and why, as stats and as report.md."""

from __future__ import annotations

import collections
import re

from .pieces import ALL_SPLITS, REAL_SPLITS, SPLITS
from .sources import LICENSES


class Tally:
    """What the assembled corpus holds (per split, style, group, source) and what was skipped, and why."""

    def __init__(self):
        self.skipped: collections.Counter = collections.Counter()
        self.skip_examples: dict[str, list[str]] = collections.defaultdict(list)
        self.per_split = {s: collections.Counter() for s in ALL_SPLITS}
        self.styles = {s: collections.Counter() for s in ALL_SPLITS}
        self.per_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.source_skips: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.groups: collections.Counter = collections.Counter()
        self.sources: collections.Counter = collections.Counter()
        self.style_all: collections.Counter = collections.Counter()
        self.chords: collections.Counter = collections.Counter()
        self.drums = 0

    def skip(self, pid: str, reason: str, source: str = "") -> None:
        key = re.sub(r"\d+(\.\d+)?", "N", reason) if reason.startswith("error") else reason
        self.skipped[key] += 1
        self.source_skips[source][key] += 1
        if len(self.skip_examples[key]) < 3:
            self.skip_examples[key].append(pid)

    def piece(self, split: str, meta: dict, n_windows: int) -> None:
        c = self.per_split[split]
        c["pieces"] += 1
        c["tokens"] += meta["length"]
        c["notes"] += meta["n_notes"]
        c["windows"] += n_windows
        self.styles[split][meta["style"] or "none"] += 1
        self.style_all[meta["style"] or "none"] += 1
        for g in meta["groups"] + (["drums"] if meta["drums"] else []):
            self.groups[g] += 1
        self.sources[meta["source"]] += 1
        src = self.per_source[meta["source"]]
        src["pieces"] += meta.get("segment", 0) == 0
        src["segments"] += 1
        src["notes"] += meta["n_notes"]
        src["tokens"] += meta["length"]
        src[split] += 1
        self.drums += bool(meta["drums"])
        if "chords" in meta:
            self.chords[meta["chords"]] += 1

    def total(self, key: str) -> int:
        """The in-domain splits' total (train, validation, test: what the figures always counted)."""
        return sum(self.per_split[s][key] for s in SPLITS)

    def source_table(self) -> dict:
        """Per source: pieces, segments, notes, tokens, segments per split, skipped (reason -> count)."""
        out = {}
        for src in sorted(set(self.per_source) | {s for s in self.source_skips if s}):
            out[src] = dict(self.per_source.get(src, {}), skipped=dict(self.source_skips[src].most_common()))
        return out


def render_report(s: dict) -> str:
    """report.md: the stats as a page (splits, styles, sources, instrument groups, skip reasons)."""
    L = ["# Training corpus report", ""]
    L.append(f"Builder version {s['builder_version']}, vocabulary {s['vocab_size']}. "
             f"Built in {s['build_seconds']} s ({s['items_processed']} items processed, {s['items_cached']} "
             f"from cache, {s['workers']} workers, {s['items_per_second']} items/s).")
    L += ["", "| split | pieces | notes | tokens | pianoroll windows |", "|---|---:|---:|---:|---:|"]
    for sp in SPLITS:
        c = s["splits"][sp]
        L.append(f"| {sp} | {c.get('pieces', 0)} | {c.get('notes', 0)} | {c.get('tokens', 0)} | {c.get('windows', 0)} |")
    L.append(f"| total | {s['pieces']} | {s['notes']} | {s['tokens']} | |")
    for sp in REAL_SPLITS:  # the real-songs yardstick, never trained on ("pieces" counts segments)
        c = s["splits"].get(sp, {})
        L.append(f"| {sp} (held out) | {c.get('pieces', 0)} | {c.get('notes', 0)} | {c.get('tokens', 0)} | "
                 f"{c.get('windows', 0)} |")
    if s.get("per_source"):
        L += ["", "## Per source", "", "Pieces are whole pieces (songs, tunes' arrangements, lumps), segments the "
              "rows they became (a long piece is cut at bar lines).", "",
              "| source | licence | pieces | segments | notes | tokens | train/val/test | realdev/realtest | skipped |",
              "|---|---|---:|---:|---:|---:|---|---|---|"]
        for src, c in s["per_source"].items():
            skipped = "; ".join(f"{v} x {k}" for k, v in c.get("skipped", {}).items()) or "none"
            L.append(f"| {src} | {LICENSES.get(src, 'unknown')} | {c.get('pieces', 0)} | {c.get('segments', 0)} | "
                     f"{c.get('notes', 0)} | {c.get('tokens', 0)} | {c.get('train', 0)}/{c.get('validation', 0)}/"
                     f"{c.get('test', 0)} | {c.get('realdev', 0)}/{c.get('realtest', 0)} | {skipped} |")
    if s.get("left_out"):
        L += ["", "## Sources left out", ""] + [f"- {line}" for line in s["left_out"]]
    L += ["", f"Drums in {100 * s['drums_share']:.1f}% of pieces.", "", "## Styles", ""]
    L += [f"- {k}: {v}" for k, v in s["styles"].items()]
    L += ["", "## Sources", ""] + [f"- {k}: {v}" for k, v in s["sources"].items()]
    if s.get("abc_chords"):
        L += ["", "ABC arrangements' chords: " + ", ".join(f"{k} {v}" for k, v in s["abc_chords"].items())]
    L += ["", "## Instrument groups (pieces using each)", ""] + [f"- {k}: {v}" for k, v in s["groups"].items()]
    L += ["", f"## Skipped ({s['skipped_total']})", ""]
    for k, v in s["skipped"].items():
        ex = ", ".join(s["skipped_examples"].get(k, []))
        L.append(f"- {v} x {k} (e.g. {ex})")
    return "\n".join(L) + "\n"
