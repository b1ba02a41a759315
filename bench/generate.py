"""Generation speed: our fast decoder against x-transformers' stock `generate`, same weights, same run.

    python -m bench.generate [--checkpoint checkpoints/transformer] [--small DIR] [--tokens 256] [--batches 1,4]

Prints the device, tokens/s for each path at each batch size and the ratio to the default model's
stock path (the small model's rows too, against the same stock figure), and seconds per 8-bar variant
through the whole engine (grammar masks included).  Runs on CUDA (bf16) when it is there.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from x_transformers import AutoregressiveWrapper

from model.engine import GenerationRequest
from model.sampling.filters import SamplingParams, sample_token
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


def decoder_rows(label: str, engines: dict, batches: list[int], tokens: int, repeats: int,
                 stock_of: dict[int, float] | None) -> list[dict]:
    """tokens/s of each decoder path of one model at each batch size; ratio against `stock_of[batch]`
    (measured here when None, as this model's stock path)."""
    fp32 = engines["fp32"]
    rows = []
    for b in batches:
        time_fast(fp32.decoder, b, 8, 0)  # warm-up
        paths = []
        if stock_of is None:
            time_stock(fp32, b, 8, 0)
            paths.append(("x-transformers generate (stock, KV cache)", min(time_stock(fp32, b, tokens, s)
                                                                          for s in range(repeats))))
        for kind, eng in engines.items():
            paths.append((f"fast decoder {'fp32' if kind == 'fp32' else 'int8 dynamic'}",
                          min(time_fast(eng.decoder, b, tokens, s) for s in range(repeats))))
        stock = stock_of[b] if stock_of is not None else paths[0][1]
        for name, t in paths:
            rows.append({"model": label, "batch": b, "path": name, "tokens_per_s": b * tokens / t,
                         "ratio": stock / t, "seconds": t})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="the model (default: the shipped transformer)")
    p.add_argument("--small", default=None,
                   help="a second, smaller transformer checkpoint to measure beside it (e.g. the 12 x 256 model)")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(x) for x in args.batches.split(",")]
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"cpu, {torch.get_num_threads()} threads"

    def engines(source) -> dict:
        kw = {"source": source} if source else {}
        out = {"fp32": TransformerEngine(quantize=False, dtype=torch.float32, **kw)}
        if not cuda:
            out["int8"] = TransformerEngine(quantize=True, **kw)
        return out

    big = engines(args.checkpoint)
    cfg = big["fp32"].cfg
    print(f"model: {cfg.depth} layers x {cfg.dim} wide, context {cfg.max_seq_len} ({big['fp32'].source}); "
          f"{args.tokens} new tokens; device {device}; best of {args.repeats}")
    rows = decoder_rows("default", big, batches, args.tokens, args.repeats, None)
    if args.small:
        small = engines(args.small)
        stock = {r["batch"]: r["seconds"] for r in rows if r["path"].startswith("x-transformers")}
        rows += decoder_rows(f"small {small['fp32'].cfg.depth} x {small['fp32'].cfg.dim}", small, batches,
                             args.tokens, args.repeats, stock)
    print(f"{'model':<16}{'batch':>5}  {'path':<44}{'tokens/s':>10}{'x stock':>9}")
    for r in rows:
        print(f"{r['model']:<16}{r['batch']:>5}  {r['path']:<44}{r['tokens_per_s']:>10.0f}{r['ratio']:>9.2f}")
    engine = big.get("int8", big["fp32"])
    for b in batches:
        req = GenerationRequest(groups=("piano", "guitar", "bass"), drums=True, bars=8, variants=b, seed=1)
        engine.generate(req)  # warm
        t = time.perf_counter()
        engine.generate(req)
        dt = time.perf_counter() - t
        print(f"engine, 8 bars piano+guitar+bass+drums, {b} variant(s): {dt:.2f} s total, {dt / b:.2f} s per "
              f"variant, {engine.last_stats['tokens_per_s']:.0f} tokens/s")
    print(json.dumps({"device": device, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
