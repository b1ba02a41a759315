"""The page's speed where musicians use it: `/generate` through HTTP (gradio_client against a server this
benchmark starts on a loopback port, so the request runs in the server's threads), beside the same request
called in-process on the main thread, and beside x-transformers' stock `generate` on the same weights at the
same batch: all in one run.

    python -m bench.page [--bars 8] [--variants 4] [--instruments piano,guitar,bass] [--runs 3]
                         [--threads 1,2] [--url http://host:7860/]

Per path: wall seconds of the request, its generation seconds and tokens/s (the engine's own count, from the
summary), tokens/s as a multiple of stock, rendering seconds, and for HTTP the time until the first variant's
MIDI and MP3 reached the client (the page streams variants as they are rendered).  Drums on, seeds 11, 12, ...
Rows: HTTP with decoding in the server thread that took the request (how the page ran before its inference
worker), HTTP through the inference worker (each --threads value in turn), and in-process on the main thread.
Each server runs in a process of its own, as a deployment does: gradio_client waits for a streamed job by
polling every millisecond, and in the server's process that polling took the GIL from the decoder (measured
before this change: the engine alone in the worker thread ran 8 bars x 4 in 19-21 s, through a server in the
benchmark's process in 26 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SUMMARY = re.compile(r"generation: ([\d.]+) s, (\d+) tokens, [\d.]+ tokens/s · rendering: ([\d.]+) s")


def stock_tokens_per_s(batch: int, tokens: int) -> tuple[float, int]:
    """x-transformers' own `generate` (KV cache) on the shipped weights, main thread, over as many positions as
    the request decoded per variant (at most what its context holds): (tokens/s, positions)."""
    import torch
    from x_transformers import AutoregressiveWrapper

    from bench.generate import time_stock
    from model.engine import get_engine
    from tokenizer import control_prefix

    engine = get_engine("transformer")
    prompt = torch.tensor(control_prefix([0, 4], True), dtype=torch.long).expand(batch, -1).clone()
    n = max(8, min(tokens, engine.cfg.max_seq_len - prompt.shape[1]))
    with torch.inference_mode():
        AutoregressiveWrapper(engine.model).eval().generate(prompt, 8, cache_kv=True)  # warm-up
    return batch * n / time_stock(engine.model, prompt, n, 0), n


def parse(summary: str) -> tuple[float, int, float]:
    """(generation seconds, tokens, rendering seconds) from a result's summary."""
    m = SUMMARY.search(summary)
    if not m:
        raise RuntimeError(f"no timing in the summary: {summary[:300]!r}")
    return float(m.group(1)), int(m.group(2)), float(m.group(3))


def shown_value(x):
    """An output's value as streamed: None for "no change" (the page sends a skip while it waits)."""
    return None if isinstance(x, dict) and x.get("__type__") == "update" and "value" not in x else x


def http_run(client, values: dict) -> dict:
    """One /generate through HTTP; the first streamed output with a variant's MIDI and MP3 marks the first
    playable variant (to within the 0.1 s between looks).  The outputs are looked at every 100 ms: iterating over
    the job, gradio_client polls every millisecond, and a busy client on the server's machine takes CPU from the
    server's two decoding threads (a benchmark artifact: a browser is on another machine).  Measured on 2 cores:
    looking every 20 ms, 287 tokens/s through the worker; every 100 ms, 366 (one-off runs of --url)."""
    t0 = time.perf_counter()
    job = client.submit(**values, api_name="/generate")
    first = None
    while True:
        done = job.done()
        if first is None and any(shown_value(o[4]) and shown_value(o[5]) for o in job.outputs()):  # slot 1
            first = time.perf_counter() - t0
        if done:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    summaries = [s for s in (shown_value(o[1]) for o in reversed(job.outputs())) if isinstance(s, str) and SUMMARY.search(s)]
    if not summaries:
        job.result()  # raises the server's error, if that is why
        raise RuntimeError(f"no result with timings; the last outputs: {[o[:4] for o in job.outputs()[-2:]]!r}"[:2000])
    summary = summaries[0]
    gen, tokens, render = parse(summary)
    return {"wall": wall, "generation": gen, "tokens": tokens, "rendering": render, "first": first or wall}


def direct(engine, checkpoint, request, progress=None, short=True):  # noqa: ARG001 (the Runner signature)
    """A runner that decodes in the calling thread (what the studio did before its inference worker)."""
    scores = engine.generate(request, progress=progress)
    return scores, dict(engine.last_stats)


def local_run(service, values: dict) -> dict:
    t0 = time.perf_counter()
    r = service.generate(values)
    wall = time.perf_counter() - t0
    gen, tokens, render = parse(r.summary)
    return {"wall": wall, "generation": gen, "tokens": tokens, "rendering": render, "first": wall}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: str, port: int | None = None):
    """(url, demo, studio): the page served in-process on a loopback port (outputs in `tmp`)."""
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(tmp, "gradio")
    import page
    import studio

    service = studio.Studio(studio.OutputStore(os.path.join(tmp, "out")), studio.UploadCache())
    demo = page.build_demo(service)
    port = port or free_port()
    page.serve(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True, mcp_server=False)
    return f"http://127.0.0.1:{port}/", demo, service


def serve(runner: str, port: int) -> int:
    """`--serve RUNNER`: the page in this process with `runner` ("server-thread": decoding in the server thread
    that took the request; "worker:N": the inference worker with N torch threads, "worker": its default; "app":
    the app's own runner, its short and long lanes), until killed; prints READY once it answers."""
    with tempfile.TemporaryDirectory() as tmp:
        _, _, service = start_server(tmp, port)
        if runner == "app":
            pass
        elif runner == "server-thread":
            service.runner = direct
        else:
            from studio.runner import LocalRunner
            from studio.worker import InferenceWorker

            threads = runner.partition(":")[2]
            service.runner = LocalRunner(InferenceWorker(int(threads) if threads else None))
        print("READY", flush=True)
        while True:
            time.sleep(3600)


@contextlib.contextmanager
def server_process(runner: str):
    """A page server in its own process, started as app.py starts it (as a deployment runs it: the browser is
    elsewhere), its URL."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as app.py starts the page (see studio/worker.py)
    proc = subprocess.Popen([sys.executable, "-m", "bench.page", "--serve", runner, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        else:
            raise RuntimeError(f"the page server ({runner}) exited with status {proc.wait()}")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(30)


def median_row(name: str, runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "generation", "tokens", "rendering", "first")}
    tps = med["tokens"] / med["generation"] if med["generation"] else 0.0
    return {"path": name, **{k: round(v, 2) for k, v in med.items()}, "tokens_per_s": round(tps, 1),
            "walls": [round(r["wall"], 2) for r in runs]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__.split("\n\n")[0])
    p.add_argument("--instruments", default="piano,guitar,bass")
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--variants", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", default="", help="comma-separated inference-worker thread counts (default: its own)")
    p.add_argument("--url", default=None, help="measure a running server instead of starting one (HTTP only)")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # a server process of this benchmark
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port)
    groups = [g for g in args.instruments.split(",") if g]
    values = {"groups": groups, "drums": True, "bars": args.bars, "variants": args.variants}
    from gradio_client import Client

    def http_rows(label: str, url: str, tmp: str) -> dict:
        client = Client(url, verbose=False, download_files=os.path.join(tmp, "downloads"))
        client.predict(**{**values, "bars": 1, "variants": 1, "seed": "1"}, api_name="/generate")  # warm-up
        return median_row(label, [http_run(client, {**values, "seed": str(11 + i)}) for i in range(args.runs)])

    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if args.url:
            rows.append(http_rows(f"HTTP /generate at {args.url}", args.url, tmp))
        else:  # each server in its own process, started afresh
            with server_process("server-thread") as url:
                rows.append(http_rows("HTTP /generate, decoding in the server thread", url, tmp))
            for threads in [int(t) for t in args.threads.split(",") if t] or [None]:
                with server_process(f"worker:{threads or ''}") as url:
                    rows.append(http_rows(f"HTTP /generate, inference worker {threads or 'default'} threads", url, tmp))
            import studio

            service = studio.Studio(studio.OutputStore(os.path.join(tmp, "out")), studio.UploadCache())
            service.runner = direct
            local_run(service, {**values, "bars": 1, "variants": 1, "seed": "1"})  # warm-up
            runs = [local_run(service, {**values, "seed": str(11 + i)}) for i in range(args.runs)]
            rows.append(median_row("in-process Studio.generate, main thread", runs))
        per_variant = int(statistics.median(r["tokens"] for r in rows)) // args.variants
        stock, stock_n = stock_tokens_per_s(args.variants, per_variant)
        for r in rows:
            r["x_stock"] = round(r["tokens_per_s"] / stock, 2)
    print(f"/generate: {args.bars} bars x {args.variants} variants, {'+'.join(groups)}+drums, seeds 11..; "
          f"{platform.machine()}, {os.cpu_count()} cores; median of {args.runs}; stock x-transformers generate "
          f"at batch {args.variants} over {stock_n} positions (the request's own, up to the context): {stock:.0f} "
          f"tokens/s (same weights, same run)")
    print(f"{'path':<46}{'wall s':>8}{'first s':>9}{'gen s':>8}{'tokens/s':>10}{'x stock':>9}{'render s':>10}")
    for r in rows:
        print(f"{r['path']:<46}{r['wall']:>8.2f}{r['first']:>9.2f}{r['generation']:>8.2f}{r['tokens_per_s']:>10.0f}"
              f"{r['x_stock']:>9.2f}{r['rendering']:>10.2f}")
    print(json.dumps({"stock_tokens_per_s": round(stock, 1), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
