"""Publish a checkpoint to the Hugging Face Hub with a generated model card.

    python -m training.hub push --repo-id OWNER/NAME CHECKPOINT_DIR [--corpus data/corpus] [--private]
    python -m training.hub stage CHECKPOINT_DIR OUT_DIR        # the exact folder that push uploads

The page and `python -m model.generate --checkpoint OWNER/NAME` load such a repo (downloaded once into
the Hugging Face cache by model.checkpoint.resolve).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from model import checkpoint as ckpt


def model_card(config: dict, corpus_stats: dict | None, repo_id: str | None) -> str:
    meta = config.get("meta", {})
    train = meta.get("train", {})
    model = config.get("model", {})
    held = meta.get("test") or {}
    val = meta.get("validation") or {}
    lines = [
        "---",
        "library_name: midi-bangers",
        "tags: [music, midi, symbolic-music, music-generation]",
        "---",
        f"# MIDI Bangers: {config.get('engine', 'engine')} checkpoint",
        "",
        f"Engine `{config.get('engine')}` of MIDI Bangers; weights stored as {config.get('dtype', 'fp32')} "
        "safetensors, with the model config in `config.json`.",
        "",
        "## Model",
        "",
        *(f"- {k}: {v}" for k, v in sorted(model.items())),
        "",
        "## Training",
        "",
        f"- preset: {train.get('preset')}; steps: {train.get('step')}; tokens seen: {train.get('tokens_seen')}",
        f"- optimizer: Adam, learning rate {train.get('lr')}, global batch {train.get('batch')}, "
        f"{train.get('world_size', 1)} process(es) on {train.get('device')}",
        f"- data: {train.get('data')}",
    ]
    if corpus_stats:
        lines += ["", "## Training data", ""]
        for k in ("pieces", "tokens", "styles", "sources", "drums_share"):
            if k in corpus_stats:
                lines.append(f"- {k}: {json.dumps(corpus_stats[k])}")
    lines += ["", "## Held-out figures", ""]
    for name, d in (("validation", val), ("test", held)):
        if d:
            lines.append(f"- {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in d.items() if isinstance(v, float)))
    if repo_id:
        lines += ["", "## Use", "", "```bash",
                  f"python -m model.generate --engine {config.get('engine')} --checkpoint {repo_id} --bars 8", "```"]
    return "\n".join(lines) + "\n"


def stage(checkpoint_dir: str | Path, out_dir: str | Path, corpus: str | Path | None = None,
          repo_id: str | None = None) -> Path:
    src, out = Path(checkpoint_dir), Path(out_dir)
    config = json.loads((src / ckpt.CONFIG_NAME).read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in (ckpt.CONFIG_NAME, ckpt.WEIGHTS_NAME, "metrics.csv", "curves.png"):
        for base in (src, src.parent):
            if (base / name).exists():
                shutil.copy2(base / name, out / name)
                break
    stats = None
    if corpus and (Path(corpus) / "stats.json").exists():
        stats = json.loads((Path(corpus) / "stats.json").read_text())
    (out / "README.md").write_text(model_card(config, stats, repo_id))
    return out


def push(checkpoint_dir: str, repo_id: str, corpus: str | None, private: bool) -> str:
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = stage(checkpoint_dir, tmp, corpus, repo_id)
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload MIDI Bangers checkpoint")
    return str(info)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.hub")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("push")
    a.add_argument("--repo-id", required=True)
    a.add_argument("checkpoint")
    a.add_argument("--corpus", default="data/corpus")
    a.add_argument("--private", action="store_true")
    s = sub.add_parser("stage")
    s.add_argument("checkpoint")
    s.add_argument("out")
    s.add_argument("--corpus", default="data/corpus")
    s.add_argument("--repo-id", default=None)
    args = p.parse_args(argv)
    try:
        result = stage(args.checkpoint, args.out, args.corpus, args.repo_id) if args.cmd == "stage" \
            else push(args.checkpoint, args.repo_id, args.corpus, args.private)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
