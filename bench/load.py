"""Load test of the studio: N concurrent /generate requests through gradio_client.

    python -m bench.load [--url http://127.0.0.1:7860/] [--requests 16] [--bars 4] [--variants 1]
                         [--midi FILE.mid] [--timeout 600]

Without --url the app is started in-process on a free loopback port (its Gradio cache and output
folders in a temporary folder) and closed at the end.  --midi: every request uploads this file and
continues its first 4 bars.  Prints completed, failed, p50/p95/max latency and, in-process, the disk
used by uploads (Gradio's cache) and output folders before and after the run, with their caps.
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


def disk_report(stores: dict) -> str:
    """'uploads 3 folders 0.1 MiB (caps 256 folders, 256 MiB, 3600 s), outputs ...' for the studio's FolderCaps."""
    return ", ".join(f"{name} {len(s.folders())} folders {s.disk_bytes() / 2**20:.1f} MiB "
                     f"(caps {s.keep} folders, {s.max_bytes / 2**20:.0f} MiB, {s.max_age:.0f} s)"
                     for name, s in stores.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--bars", type=int, default=4)
    ap.add_argument("--variants", type=int, default=1)
    ap.add_argument("--midi", default=None, help="a MIDI file each request uploads and continues")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    n = max(1, min(args.requests, 64))

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = stores = tmp_root = None
    url = args.url
    if url is None:
        tmp_root = tempfile.mkdtemp(prefix="bench-load-")
        os.environ["GRADIO_TEMP_DIR"] = os.path.join(tmp_root, "gradio")  # before gradio is imported
        import page
        import studio

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        stores = {"uploads": studio.UploadCache(), "outputs": studio.OutputStore()}
        demo = page.build_demo(studio.Studio(stores["outputs"], stores["uploads"]))
        page.serve(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
    from gradio_client import Client, handle_file

    # the client's downloads stay out of the server's Gradio cache, whose disk use is measured
    downloads = os.path.join(tmp_root, "downloads") if tmp_root else tempfile.mkdtemp(prefix="bench-load-dl-")
    try:
        Client(url, verbose=False)  # the server answers before the clock starts
        if stores is not None:
            print("disk before:", disk_report(stores))

        def one(i: int) -> float:
            c = Client(url, verbose=False, download_files=downloads)
            t0 = time.perf_counter()
            midi = handle_file(args.midi) if args.midi else None
            out = c.predict(groups=["piano", "bass"], drums=True, bars=args.bars, variants=args.variants, seed=str(i),
                            midi=midi, prompt_bars=4, api_name="/generate")
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
        if stores is not None:
            print("disk after: ", disk_report(stores))
        for e in errors[:5]:
            print("error:", e)
        return 0 if len(lat) == n else 1
    finally:
        if demo is not None:
            demo.close()
        shutil.rmtree(downloads, ignore_errors=True)
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
