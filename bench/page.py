"""The page's time for one request, split into generation and rendering (median of N runs).

    python -m bench.page [--engine transformer] [--bars 8] [--variants 4] [--instruments piano,guitar,bass]
                         [--threads 0,1,2] [--runs 3]

Runs the page's own service layer (studio.Studio.generate: the engine, then MIDI, MP3 and piano roll of every
variant and the zip, exactly as a click on Generate does, without the HTTP round trip) with drums on and
a fixed seed per run.  With several --threads values each is measured in turn, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time


def run_once(engine: str, groups: list[str], bars: int, variants: int, seed: int, service) -> dict:
    t0 = time.perf_counter()
    r = service.generate({"engine": engine, "groups": groups, "drums": True, "bars": bars, "variants": variants,
                          "seed": str(seed)})
    total = time.perf_counter() - t0
    gen = float(r.stats.get("seconds", 0.0))
    return {"total": total, "generation": gen, "rendering": r.render_seconds,
            "other": total - gen - r.render_seconds, "mp3s": sum(v.mp3 is not None for v in r.variants)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="transformer")
    p.add_argument("--instruments", default="piano,guitar,bass")
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--variants", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", default="0", help="comma-separated torch thread counts; 0 = torch's default")
    args = p.parse_args(argv)
    import torch

    import studio
    from model import engine as E

    default_threads = torch.get_num_threads()
    groups = [g for g in args.instruments.split(",") if g]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        service = studio.Studio(studio.OutputStore(tmp))
        E.get_engine(args.engine)  # loading is not part of a request
        run_once(args.engine, groups, 1, 1, 0, service)  # warm-up: first-call costs are not part of a request
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads or default_threads)
            runs = [run_once(args.engine, groups, args.bars, args.variants, 1000 + i, service) for i in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in ("total", "generation", "rendering", "other")}
            rows.append({"threads": torch.get_num_threads(), **{k: round(v, 2) for k, v in med.items()},
                         "runs": [round(r["total"], 2) for r in runs], "mp3s": runs[0]["mp3s"]})
    print(f"{args.engine} ({E.get_engine(args.engine).source}): {args.bars} bars x {args.variants} variants, "
          f"{'+'.join(groups)}+drums; {platform.machine()}, {os.cpu_count()} CPU cores; median of {args.runs}")
    print(f"{'threads':>7} {'total s':>8} {'generation s':>13} {'rendering s':>12} {'other s':>8}  runs")
    for r in rows:
        print(f"{r['threads']:>7} {r['total']:>8.2f} {r['generation']:>13.2f} {r['rendering']:>12.2f} "
              f"{r['other']:>8.2f}  {r['runs']}")
    print(json.dumps({"engine": args.engine, "bars": args.bars, "variants": args.variants, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
