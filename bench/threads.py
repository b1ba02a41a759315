"""Why decoding in a server's thread ran at half the main thread's speed, measured: one decoder step (batch 4, the
engine's int8 CPU decoder) and one vocabulary softmax, on the main thread and on fresh threads as the inference
workers run their jobs (studio/worker.py), alone, beside another thread that ran one big op (as a web server's
or render thread does), and two at once (both lanes busy).

    python -m bench.threads [--steps 200] [--repeats 3]

The process starts as app.py starts the page (OMP_NUM_THREADS=1 before torch loads).  The finding: PyTorch's
libgomp spins while a team waits only while the process holds no more OpenMP threads than cores.
`torch.set_num_threads(2)` in the job's thread is also every later thread's default, so a bystander thread that
runs one big op keeps a 2-thread team of its own and the decoder's team stops spinning (the last row);
`set_own_threads(2)` sets the job's thread alone.  Prints microseconds per call (median of the repeats).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as app.py serves the page

import torch  # noqa: E402 - after the OpenMP setting

from model.transformer import TransformerEngine  # noqa: E402
from studio.worker import set_own_threads  # noqa: E402
from tokenizer import control_prefix  # noqa: E402


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


def in_thread(fn, threads: int, rival: bool = False, bystander: bool = False, torch_wide: bool = False) -> dict:
    """fn() in a fresh thread with `threads` torch threads set in it (`set_own_threads`, or with `torch_wide`
    torch.set_num_threads, put back to 1 after); with `rival`, a second such thread runs fn() at the same time;
    with `bystander`, a thread started after the setting runs one big op and stays alive while fn() runs."""
    out: dict = {}
    done = threading.Event()

    def idle_after_a_big_op() -> None:
        torch.randn(1 << 20).exp_()
        done.wait()

    def work(store: bool) -> None:
        (torch.set_num_threads if torch_wide else set_own_threads)(threads)
        side = threading.Thread(target=idle_after_a_big_op) if bystander else None
        if side is not None:
            side.start()
            time.sleep(0.2)
        r = fn()
        done.set()
        if side is not None:
            side.join()
        if torch_wide:
            torch.set_num_threads(1)
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
        "job thread, 1 thread": lambda: in_thread(fn, 1),
        "job thread, 2 threads": lambda: in_thread(fn, 2),
        "job thread, 2 threads, beside a bystander": lambda: in_thread(fn, 2, bystander=True),
        "2 job threads at once, 1 thread each": lambda: in_thread(fn, 1, rival=True),
        "job thread, torch.set_num_threads(2), bystander": lambda: in_thread(fn, 2, bystander=True, torch_wide=True),
    }
    fn()  # warm-up
    runs: dict[str, list[dict]] = {k: [] for k in cases}
    for _ in range(args.repeats):  # interleaved, so that a busy moment hits every case alike
        for name, case in cases.items():
            runs[name].append(case())
    print(f"one decoder step, batch 4, int8 CPU decoder ({engine.cfg.depth} x {engine.cfg.dim}); median of "
          f"{args.repeats} x {args.steps} calls")
    print(f"{'where':<50}{'step us':>10}{'softmax us':>12}")
    for name, rs in runs.items():
        print(f"{name:<50}{statistics.median(r['step_us'] for r in rs):>10.0f}"
              f"{statistics.median(r['softmax_us'] for r in rs):>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
