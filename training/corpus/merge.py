"""Merge built corpus folders into one: each split's token stream, index rows (offsets moved on), piano-roll
windows (piece rows moved on) concatenated in the order given; stats.json sums the splits and sources and
records what was merged.  A mixed training set from separately built parts, for example the real songs
(openmsx, freedoom, POP909) with a sample of the default corpus, without rebuilding either."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .build import _atomic_npy, _atomic_text
from .common import CorpusError
from .pieces import ALL_SPLITS

REQUIRED = ("train", "validation", "test")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def merge(out: str | Path, inputs: list[str | Path]) -> dict:
    """Write the merge of `inputs` (corpus folders) to `out`; its stats.  CorpusError names a missing or
    mismatched input."""
    out, inputs = Path(out), [Path(p) for p in inputs]
    if len(inputs) < 2:
        raise CorpusError("merge needs at least two corpus folders")
    stats_in = []
    for d in inputs:
        if d.resolve() == out.resolve():
            raise CorpusError(f"{d} is the output folder: merge into a new folder")
        missing = [s for s in REQUIRED if not (d / f"{s}.tokens.npy").exists()]
        if missing or not (d / "stats.json").exists():
            raise CorpusError(f"{d} is not a built corpus (no {', '.join(missing) or 'stats.json'}): build it with "
                              f"`python -m training.corpus build --out {d}`")
        stats_in.append(json.loads((d / "stats.json").read_text()))
    vocab = {s.get("vocab_size") for s in stats_in}
    if len(vocab) > 1:
        raise CorpusError(f"the folders were built with different vocabularies ({sorted(vocab)}): rebuild them")
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, dict] = {}
    for split in ALL_SPLITS:
        parts = [d for d in inputs if (d / f"{split}.tokens.npy").exists()]
        if not parts:
            continue
        tokens, rows, rolls, roll_rows = [], [], [], []
        offset = 0
        for d in parts:
            t = np.load(d / f"{split}.tokens.npy", mmap_mode="r")
            piece_rows = _rows(d / f"{split}.index.jsonl")
            for r in piece_rows:
                r["offset"] = int(r["offset"]) + offset
            roll_path, ridx_path = d / f"{split}.pianoroll.npy", d / f"{split}.pianoroll_index.npy"
            if roll_path.exists() and ridx_path.exists():
                rolls.append(np.load(roll_path))
                roll_rows.append(np.load(ridx_path) + len(rows))
            rows.extend(piece_rows)
            tokens.append(np.asarray(t))
            offset += len(t)
        _atomic_npy(out / f"{split}.tokens.npy", np.concatenate(tokens).astype(np.uint16))
        _atomic_text(out / f"{split}.index.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        if len(rolls) == len(parts):
            _atomic_npy(out / f"{split}.pianoroll.npy", np.concatenate(rolls))
            _atomic_npy(out / f"{split}.pianoroll_index.npy", np.concatenate(roll_rows).astype(np.int32))
        splits[split] = {"pieces": len(rows), "tokens": int(offset),
                         "notes": int(sum(int(r.get("n_notes", 0)) for r in rows)),
                         "windows": int(sum(len(r) for r in roll_rows)) if len(rolls) == len(parts) else 0}
    per_source: dict[str, dict] = {}
    for s in stats_in:
        for src, c in s.get("per_source", {}).items():
            acc = per_source.setdefault(src, {})
            for k, v in c.items():
                if isinstance(v, (int, float)):
                    acc[k] = acc.get(k, 0) + v
    stats = {"builder_version": stats_in[0].get("builder_version"), "vocab_size": stats_in[0].get("vocab_size"),
             "merged_from": [str(d) for d in inputs], "pieces": sum(v["pieces"] for v in splits.values()),
             "tokens": sum(v["tokens"] for v in splits.values()), "splits": splits, "per_source": per_source}
    _atomic_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    lines = [f"# Merged corpus\n\nFrom {', '.join(str(d) for d in inputs)}, in that order.\n",
             "| split | pieces | notes | tokens |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['pieces']:,} | {v['notes']:,} | {v['tokens']:,} |" for k, v in splits.items()]
    lines += ["", "| source | pieces | notes | tokens |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v.get('pieces', 0):,} | {v.get('notes', 0):,} | {v.get('tokens', 0):,} |"
              for k, v in sorted(per_source.items())]
    _atomic_text(out / "report.md", "\n".join(lines) + "\n")
    return stats
