"""The budget's rates, measured where requests run: `Studio.generate` with its default runner (the inference
worker's thread and its torch threads), per batch size, the budget's estimate beside what happened: decoding
steps (the longest variant's tokens), generation seconds and rendering seconds.  studio/budget.py's
STEPS_PER_SECOND, VARIANT_SPREAD and RENDER_SECONDS_PER_TRACK_SECOND come from this table.

    python -m bench.budget [--bars 4] [--batches 1,2,4,8] [--instruments piano,guitar,bass] [--threads N]

Drums on, seed 11.  A ratio over 1 means the request took longer than estimated; the deadline stops a request
at DEADLINE_FACTOR x its estimate, so the ratios must stay well under that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from bench.page import parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--bars", type=int, default=4)
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--instruments", default="piano,guitar,bass")
    p.add_argument("--threads", type=int, default=None, help="inference-worker torch threads (default: its own)")
    args = p.parse_args(argv)
    import studio
    from studio import budget as B
    from studio.inputs import generate_request
    from studio.runner import LocalRunner
    from studio.worker import InferenceWorker

    groups = [g for g in args.instruments.split(",") if g]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        service = studio.Studio(studio.OutputStore(os.path.join(tmp, "out")), studio.UploadCache())
        worker = InferenceWorker(args.threads)
        service.runner = LocalRunner(worker)
        service.generate({"groups": ["piano"], "drums": False, "bars": 1, "variants": 1, "seed": "1"})  # warm-up
        for b in [int(x) for x in args.batches.split(",") if x]:
            values = {"groups": groups, "drums": True, "bars": args.bars, "variants": b, "seed": "11"}
            cost = B.estimate(generate_request(values).request)
            step_s = cost.steps / B.steps_per_second(b)
            t = time.perf_counter()
            r = service.generate(values)
            wall = time.perf_counter() - t
            gen, tokens, render = parse(r.summary)
            steps = tokens / b
            rows.append({"batch": b, "est_steps": cost.steps, "steps": round(steps), "est_gen_s": round(step_s, 2),
                         "gen_s": round(gen, 2), "steps_per_s": round(steps / gen, 1),
                         "est_render_s": round(cost.audio_seconds * B.RENDER_SECONDS_PER_TRACK_SECOND, 2),
                         "render_s": round(render, 2), "est_s": round(cost.seconds, 2), "wall_s": round(wall, 2),
                         "wall_over_est": round(wall / cost.seconds, 2), "short": cost.short})
    print(f"Studio.generate, {args.bars} bars, {'+'.join(groups)}+drums, seed 11; inference worker with "
          f"{worker.threads} torch threads; {platform.machine()}, {os.cpu_count()} cores")
    print(f"{'batch':>5}{'steps est':>10}{'steps':>7}{'steps/s':>9}{'gen est':>9}{'gen s':>7}{'render est':>11}"
          f"{'render s':>9}{'est s':>7}{'wall s':>8}{'wall/est':>9}  lane")
    for r in rows:
        print(f"{r['batch']:>5}{r['est_steps']:>10}{r['steps']:>7}{r['steps_per_s']:>9.1f}{r['est_gen_s']:>9.2f}"
              f"{r['gen_s']:>7.2f}{r['est_render_s']:>11.2f}{r['render_s']:>9.2f}{r['est_s']:>7.2f}{r['wall_s']:>8.2f}"
              f"{r['wall_over_est']:>9.2f}  {'short' if r['short'] else 'long'}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
