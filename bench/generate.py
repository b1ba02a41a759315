"""Generation speed: our fast decoder against x-transformers' stock `generate`, same weights, same run.

    python -m bench.generate [--checkpoint checkpoints/transformer] [--tokens 256] [--batches 1,4]

Prints tokens/s for each path at each batch size, the ratio to the stock path, and seconds per
8-bar variant through the whole engine (grammar masks included).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from x_transformers import AutoregressiveWrapper

from model.engine import GenerationRequest
from model.sampling import SamplingParams, sample_token
from model.transformer import FastDecoder, TransformerEngine
from tokenizer import control_prefix


def _prompt(batch: int) -> torch.Tensor:
    return torch.tensor(control_prefix([0, 4], True), dtype=torch.long).expand(batch, -1).clone()


def time_stock(engine: TransformerEngine, batch: int, n: int, seed: int) -> float:
    wrapper = AutoregressiveWrapper(engine.model).eval()
    torch.manual_seed(seed)
    t = time.perf_counter()
    with torch.inference_mode():
        wrapper.generate(_prompt(batch), n, temperature=1.0, cache_kv=True)
    return time.perf_counter() - t


def time_fast(decoder: FastDecoder, batch: int, n: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    params = SamplingParams()
    t = time.perf_counter()
    decoder.reset(batch)
    logits = decoder(_prompt(batch))
    for _ in range(n):
        tok = sample_token(logits, params, gen)
        logits = decoder(tok[:, None])
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kw = {"source": args.checkpoint} if args.checkpoint else {}
    fp32 = TransformerEngine(quantize=False, **kw)
    int8 = TransformerEngine(quantize=True, **kw) if not torch.cuda.is_available() else None
    device = "cpu"
    print(f"model: {fp32.cfg.depth} layers x {fp32.cfg.dim} wide, context {fp32.cfg.max_seq_len}; "
          f"{args.tokens} new tokens; device {device}, {torch.get_num_threads()} threads; best of {args.repeats}")
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        time_stock(fp32, b, 8, 0), time_fast(fp32.decoder, b, 8, 0)  # warm-up
        stock = min(time_stock(fp32, b, args.tokens, s) for s in range(args.repeats))
        fast = min(time_fast(fp32.decoder, b, args.tokens, s) for s in range(args.repeats))
        paths = [("x-transformers generate (stock, KV cache)", stock), ("fast decoder fp32", fast)]
        if int8 is not None:
            q = min(time_fast(int8.decoder, b, args.tokens, s) for s in range(args.repeats))
            paths.append(("fast decoder int8 dynamic", q))
        for name, t in paths:
            rows.append({"batch": b, "path": name, "tokens_per_s": b * args.tokens / t, "ratio": stock / t})
    print(f"{'batch':>5}  {'path':<44}{'tokens/s':>10}{'x stock':>9}")
    for r in rows:
        print(f"{r['batch']:>5}  {r['path']:<44}{r['tokens_per_s']:>10.0f}{r['ratio']:>9.2f}")
    engine = int8 or fp32
    for b in [int(x) for x in args.batches.split(",")]:
        req = GenerationRequest(groups=("piano", "bass"), drums=True, bars=8, variants=b, seed=1)
        engine.generate(req)  # warm
        t = time.perf_counter()
        engine.generate(req)
        dt = time.perf_counter() - t
        st = engine.last_stats
        print(f"engine, 8 bars piano+bass+drums, {b} variant(s): {dt:.2f} s total, {dt / b:.2f} s per variant, "
              f"{st['tokens_per_s']:.0f} tokens/s")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
