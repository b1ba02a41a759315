"""Load test of the studio: N concurrent /generate requests through gradio_client.

    python -m bench.load [--url http://127.0.0.1:7860/] [--requests 16] [--bars 4] [--variants 1]
                         [--timeout 600]

Without --url the app is started in-process on a free loopback port and closed at the end.
Prints completed, failed, p50/p95/max latency and the disk used by the output folders.
Bounded: at most --requests requests (64 at most), and it gives up after --timeout seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import socket
import sys
import tempfile
import time


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--bars", type=int, default=4)
    ap.add_argument("--variants", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    n = max(1, min(args.requests, 64))

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    demo = store = tmp_root = None
    url = args.url
    if url is None:
        import app
        from render.studio import OutputStore

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tmp_root = tempfile.mkdtemp(prefix="bench-load-")
        store = OutputStore(os.path.join(tmp_root, "midi-bangers"))
        demo = app.build_demo(store)
        app.serve(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
    try:
        Client(url, verbose=False)  # the server answers before the clock starts

        def one(i: int) -> float:
            c = Client(url, verbose=False)
            t0 = time.perf_counter()
            out = c.predict("transformer", ["piano", "bass"], True, args.bars, args.variants, 1.0, 0.95, 0, str(i),
                            120, "none", None, 4, api_name="/generate")
            assert out[0] == str(i) and out[5], "no MIDI came back"
            return time.perf_counter() - t0

        lat, errors = [], []
        t0 = time.perf_counter()
        pool = cf.ThreadPoolExecutor(max_workers=n)
        futures = [pool.submit(one, i) for i in range(n)]
        try:
            for f in cf.as_completed(futures, timeout=args.timeout):
                try:
                    lat.append(f.result())
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}")
        except cf.TimeoutError:
            errors.append(f"gave up after {args.timeout:.0f} s")
        pool.shutdown(wait=False, cancel_futures=True)
        wall = time.perf_counter() - t0
        print(f"url: {url}  requests: {n} concurrent, {args.bars} bars x {args.variants} variant(s)")
        print(f"completed: {len(lat)}  failed: {n - len(lat)}  wall: {wall:.1f} s")
        print(f"latency p50: {percentile(lat, 0.5):.2f} s  p95: {percentile(lat, 0.95):.2f} s  "
              f"max: {max(lat, default=float('nan')):.2f} s")
        if store is not None:
            print(f"output folders: {sum(1 for _ in store.root.glob('req-*'))} kept "
                  f"(limit {store.keep}), {store.disk_bytes() / 1e6:.1f} MB")
        for e in errors[:5]:
            print("error:", e)
        return 0 if len(lat) == n else 1
    finally:
        if demo is not None:
            demo.close()
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
