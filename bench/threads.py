"""Why a request served in a server thread decodes slower than on the main thread, measured: one decoder step
(batch 4, the engine's CPU decoder) and one softmax over the vocabulary, timed on the main thread and in fresh
threads with torch's thread settings as they come and as set in that thread, alone and with a second thread
decoding at the same time (two requests at once, as the page's queue allows).

    python -m bench.threads [--steps 200] [--repeats 3]

torch's intra-op thread count is an OpenMP setting of the calling thread: `torch.set_num_threads` on the main
thread does not reach a thread the server starts later, which gets OpenMP's own default (every core) and a
team of helper threads of its own.  Prints microseconds per call (median of the repeats) side by side.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from model.transformer import TransformerEngine
from tokenizer import control_prefix


def step_timer(engine: TransformerEngine, steps: int) -> dict[str, float]:
    """Microseconds per decoder step (batch 4, after a 128-token prefill) and per vocabulary softmax."""
    dec = engine.decoder
    prompt = torch.tensor(control_prefix([0, 4], True), dtype=torch.long).expand(4, -1)
    dec.reset(4)
    logits = dec(torch.cat([prompt, torch.randint(1, 200, (4, 128 - prompt.shape[1]))], 1))
    tok = torch.zeros(4, 1, dtype=torch.long)
    t = time.perf_counter()
    for _ in range(steps):
        if dec.pos + 1 >= dec.cfg.max_seq_len:
            dec.pos = 128
        dec(tok)
    step = (time.perf_counter() - t) / steps * 1e6
    t = time.perf_counter()
    for _ in range(steps):
        torch.softmax(logits, -1)
    return {"step_us": step, "softmax_us": (time.perf_counter() - t) / steps * 1e6}


def in_thread(fn, threads: int | None, rival: bool) -> dict[str, float]:
    """fn() in a fresh thread (torch.set_num_threads(threads) there first unless None); with `rival`, a second
    fresh thread runs fn() at the same time."""
    out: dict = {}

    def work(store: bool) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        r = fn()
        if store:
            out.update(r)

    ts = [threading.Thread(target=work, args=(True,))] + ([threading.Thread(target=work, args=(False,))] if rival else [])
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    engine = TransformerEngine()  # the CPU engine as the page runs it (int8)
    main_threads = torch.get_num_threads()

    def fn():
        return step_timer(engine, args.steps)

    cases = {
        f"main thread ({main_threads} threads)": lambda: fn(),
        "server-like thread, torch as it comes": lambda: in_thread(fn, None, False),
        "thread, set_num_threads(1) in it": lambda: in_thread(fn, 1, False),
        "thread, set_num_threads(2) in it": lambda: in_thread(fn, 2, False),
        "2 threads at once, as they come": lambda: in_thread(fn, None, True),
        "2 threads at once, 1 thread each": lambda: in_thread(fn, 1, True),
    }
    fn()  # warm-up
    runs: dict[str, list[dict]] = {k: [] for k in cases}
    for _ in range(args.repeats):  # interleaved, so that a busy moment hits every case alike
        for name, case in cases.items():
            runs[name].append(case())
    print(f"one decoder step, batch 4, int8 CPU decoder ({engine.cfg.depth} x {engine.cfg.dim}); median of "
          f"{args.repeats} x {args.steps} calls")
    print(f"{'where':<42}{'step us':>10}{'softmax us':>12}")
    for name, rs in runs.items():
        print(f"{name:<42}{statistics.median(r['step_us'] for r in rs):>10.0f}"
              f"{statistics.median(r['softmax_us'] for r in rs):>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
