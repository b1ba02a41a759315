"""Generation speed, every path in one run, interleaved (each repeat times every path once), medians.

    python -m bench.generate [--checkpoint DIR] [--small DIR] [--tokens 256] [--batches 1,4] [--repeats 3]
                             [--threads N] [--engine-batch 4] [--no-engine] [--nll-songs 4]

1. Decoders, `--tokens` new tokens after a control prefix at each batch size: x-transformers' stock `generate`
   (KV cache), our fast decoder in fp32 and in int8 (`FastDecoder.quantize`: the kernels `pick_kernels` picks,
   the engine's default on a CPU; beside it, where that is FBGEMM, the same without it; and the bf16 cache and
   bf16 dense matmul past 4 rows that were fixed before `pick_kernels`), and, while torch still ships it, the int8 path it replaced
   (torch.ao `quantize_dynamic`, deprecated), with the ratio to stock (the small model's rows against the same
   stock figure).
2. The engine against the raw decoder at the same batch (`--engine-batch`): the 8-bar request for piano, guitar,
   bass and drums (seed 11, one variant per stream) through the whole engine (grammar masks, soft rules,
   sampling, the loop), the engine's decoder alone over the same positions (the same prefix, as many steps,
   sliding at the context as the engine does, a plain softmax draw per token), and stock `generate` on the same
   weights over as many positions as its context holds; tokens/s, engine / raw and each against stock.
3. With --nll-songs, what the kernels cost in quality: each decoder's mean NLL on held-out real songs.
Runs on CUDA (bf16) when it is there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from dataclasses import replace

import torch
import torch.nn as nn
from x_transformers import AutoregressiveWrapper

from model.engine import GenerationRequest
from model.sampling.decode import Window
from model.sampling.filters import SamplingParams, sample_token
from model.transformer import FastDecoder, Kernels, TransformerEngine
from tokenizer import control_prefix, encode_notes
from tokenizer import vocab as V

ENGINE_REQUEST = dict(groups=("piano", "guitar", "bass"), drums=True, bars=8, seed=11)


def _prompt(batch: int, groups=(0, 4), drums=True) -> torch.Tensor:
    return torch.tensor(control_prefix(list(groups), drums), dtype=torch.long).expand(batch, -1).clone()


def time_stock(model, prompt: torch.Tensor, n: int, seed: int) -> float:
    wrapper = AutoregressiveWrapper(model).eval()
    torch.manual_seed(seed)
    t = time.perf_counter()
    with torch.inference_mode():
        wrapper.generate(prompt, n, temperature=1.0, cache_kv=True)
    return time.perf_counter() - t


def time_fast(decoder, prompt: torch.Tensor, n: int, seed: int) -> float:
    """n tokens after `prompt`, one softmax draw each, sliding at the context as the engine does."""
    gen = torch.Generator(device=prompt.device).manual_seed(seed)
    params = SamplingParams()
    buf = torch.zeros(prompt.shape[0], n + 3, dtype=torch.long, device=prompt.device)
    window = Window(decoder, prompt, buf)
    t = time.perf_counter()
    logits = window.prefill(0)
    for i in range(n):
        buf[:, i] = sample_token(logits, params, gen)
        logits = window.feed(i, i + 1)
    return time.perf_counter() - t


def legacy_int8(engine: TransformerEngine):
    """The int8 path `FastDecoder.quantize` replaced: torch.ao dynamic quantization (deprecated; None once torch
    no longer has it)."""
    try:
        quantize = torch.ao.quantization.quantize_dynamic
    except AttributeError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize(FastDecoder.from_model(engine.cfg, engine.model).eval(), {nn.Linear}, dtype=torch.qint8)


def interleaved(paths: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each path (name -> fn(repeat) -> seconds), every path once per repeat."""
    times = {k: [] for k in paths}
    for r in range(repeats):
        for k, fn in paths.items():
            times[k].append(fn(r))
    return {k: statistics.median(v) for k, v in times.items()}


def decoder_rows(label: str, engines: dict, batches: list[int], tokens: int, repeats: int,
                 stock_of: dict[int, float] | None) -> list[dict]:
    """tokens/s of each decoder path of one model at each batch size; ratio against `stock_of[batch]` (measured
    here when None, as this model's stock path)."""
    fp32 = engines["fp32"]
    rows = []
    for b in batches:
        prompt = _prompt(b).to(fp32.device)
        paths = {}
        if stock_of is None:
            paths["x-transformers generate (stock, KV cache)"] = lambda r, p=prompt: time_stock(fp32.model, p, tokens, r)
        for name, dec in engines["decoders"].items():
            time_fast(dec, prompt, 8, 0)  # warm-up
            paths[name] = lambda r, dec=dec, p=prompt: time_fast(dec, p, tokens, r)
        secs = interleaved(paths, repeats)
        stock = stock_of[b] if stock_of is not None else secs["x-transformers generate (stock, KV cache)"]
        for name, t in secs.items():
            rows.append({"model": label, "batch": b, "path": name, "tokens_per_s": b * tokens / t,
                         "ratio": stock / t, "seconds": t})
    return rows


def controls_hold(score, req) -> bool:
    """The request's controls in one result: only the requested groups (drums as asked), every one heard,
    exactly the bars asked for, no note past the end."""
    asked = set(req.groups) | ({"drums"} if req.drums else set())
    played = {V.GROUPS[g] for g in score.groups}
    notes = score.notes
    return played == asked and score.length == req.bars * V.STEPS_PER_BAR \
        and bool((notes["onset"] + notes["duration"] <= score.length).all())


def engine_rows(engine: TransformerEngine, batch: int, repeats: int) -> dict:
    """The engine on ENGINE_REQUEST with `batch` variants, its decoder alone over the same positions and stock
    generate over as many as its context holds (see the module docstring)."""
    req = engine.restrict(GenerationRequest(variants=batch, **ENGINE_REQUEST)).validate()
    held = sum(map(controls_hold, engine.generate(req), [req] * batch))  # warm; fixes the step count (seeded)
    steps = engine.last_stats["tokens"] // batch
    groups = [V.GROUPS.index(g) for g in ENGINE_REQUEST["groups"]]
    prompt = _prompt(batch, groups, True).to(engine.device)
    styled = torch.cat([prompt, torch.full((batch, 1), V.STYLE_OFFSET, device=engine.device)], 1)
    stock_n = min(steps, engine.cfg.max_seq_len - prompt.shape[1])

    def run_engine(r):
        t = time.perf_counter()
        engine.generate(req)
        return time.perf_counter() - t

    secs = interleaved({"engine": run_engine,
                        "raw": lambda r: time_fast(engine.decoder, styled, steps - 1, r),
                        "stock": lambda r: time_stock(engine.model, prompt, stock_n, r)}, repeats)
    tps = {"engine": batch * steps / secs["engine"], "raw": batch * (steps - 1) / secs["raw"],
           "stock": batch * stock_n / secs["stock"]}
    return {"batch": batch, "steps": steps, "controls_held": held, "stock_steps": stock_n, "seconds": secs, "tokens_per_s": tps,
            "engine_over_raw": tps["engine"] / tps["raw"], "engine_over_stock": tps["engine"] / tps["stock"],
            "raw_over_stock": tps["raw"] / tps["stock"]}


def nll_rows(decoders: dict, count: int, tokens: int = 4000, chunk: int = 64) -> dict[str, float]:
    """Each decoder's mean negative log-likelihood (nats a token) of the first `tokens` tokens of `count` held-out
    real songs (`evaluation.reading.songs`), read `chunk` tokens a call through a sliding window, and its largest
    distance from the first decoder's on one token; printed side by side."""
    import numpy as np

    from evaluation.reading import songs, token_nll

    every = torch.arange(V.VOCAB_SIZE)
    nll: dict[str, list] = {name: [] for name in decoders}
    picked = songs(count)
    for _, song in picked:
        body = encode_notes(song.notes)[:tokens]
        groups = sorted({int(g) for g in song.notes["group"]} - {V.DRUM_GROUP})
        prefix = torch.tensor(control_prefix(groups, bool((song.notes["group"] == V.DRUM_GROUP).any()), "game"))[None]
        for name, dec in decoders.items():
            nll[name].append(token_nll(dec, prefix, body, [every] * len(body), chunk=chunk))
    first = np.concatenate(next(iter(nll.values())))
    print(f"NLL of {len(first):,} tokens of {len(picked)} held-out real songs ({', '.join(n for n, _ in picked)}), "
          f"read {chunk} tokens a call:")
    out = {}
    for name, values in nll.items():
        v = np.concatenate(values)
        out[name] = float(v.mean())
        print(f"  {name:<90}{v.mean():.4f} nats a token; at most {np.abs(v - first).max():.3f} from the first")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="the model (default: the shipped transformer)")
    p.add_argument("--small", default=None,
                   help="a second, smaller transformer checkpoint to measure beside it (e.g. the 12 x 256 model)")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batches", default="1,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--engine-batch", type=int, default=4)
    p.add_argument("--no-engine", action="store_true", help="only the decoders")
    p.add_argument("--nll-songs", type=int, default=0,
                   help="also each decoder's mean NLL on this many held-out real songs (evaluation.reading)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(x) for x in args.batches.split(",")]
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"cpu, {torch.get_num_threads()} threads"

    def engines(source) -> dict:
        kw = {"source": source} if source else {}
        fp32 = TransformerEngine(quantize=False, dtype=torch.float32, **kw)
        out = {"fp32": fp32, "decoders": {"fast decoder fp32": fp32.decoder}}
        if not cuda:
            out["int8"] = TransformerEngine(quantize=True, **kw)
            picked = out["int8"].decoder.kernels
            forms = {"": out["int8"].decoder}  # as pick_kernels measured this CPU, without FBGEMM, and as fixed before
            if picked.fbgemm:
                forms[", without FBGEMM"] = replace(picked, fbgemm=False)
            forms[", fixed before pick_kernels"] = Kernels()
            for note, dec in forms.items():
                if isinstance(dec, Kernels):
                    dec = FastDecoder.from_model(fp32.cfg, fp32.model).eval().quantize(dec)
                k = dec.kernels
                how = "FBGEMM every row, fp32 KV" if k.fbgemm else \
                    f"{str(k.cache)[6:]} KV, {str(k.dense)[6:]} dense past {k.int8_rows} rows"
                out["decoders"][f"fast decoder int8 ({how}{note})"] = dec
            legacy = legacy_int8(fp32)
            if legacy is not None:
                out["decoders"]["fast decoder int8 legacy (torch.ao dynamic)"] = legacy
        return out

    big = engines(args.checkpoint)
    cfg = big["fp32"].cfg
    print(f"model: {cfg.depth} layers x {cfg.dim} wide, context {cfg.max_seq_len} ({big['fp32'].source}); "
          f"{args.tokens} new tokens; device {device}; median of {args.repeats}, interleaved")
    rows = decoder_rows("default", big, batches, args.tokens, args.repeats, None)
    if args.small:
        small = engines(args.small)
        stock = {r["batch"]: r["seconds"] for r in rows if r["path"].startswith("x-transformers")}
        rows += decoder_rows(f"small {small['fp32'].cfg.depth} x {small['fp32'].cfg.dim}", small, batches,
                             args.tokens, args.repeats, stock)
    print(f"{'model':<16}{'batch':>5}  {'path':<46}{'tokens/s':>10}{'x stock':>9}")
    for r in rows:
        print(f"{r['model']:<16}{r['batch']:>5}  {r['path']:<46}{r['tokens_per_s']:>10.0f}{r['ratio']:>9.2f}")
    result = {"device": device, "rows": rows}
    if args.nll_songs:
        result["nll"] = nll_rows(big["decoders"], args.nll_songs)
    if not args.no_engine:
        engine = big.get("int8", big["fp32"])
        e = engine_rows(engine, args.engine_batch, args.repeats)
        tps = e["tokens_per_s"]
        kind = "int8" if engine.quantize else str(engine.dtype).removeprefix("torch.")
        print(f"engine vs raw decoder ({kind}), batch {e['batch']}: 8 bars piano+guitar+bass+drums, seed 11, "
              f"{e['steps']} steps a stream (stock: {e['stock_steps']}); controls held in {e['controls_held']} of "
              f"{e['batch']} variants")
        print(f"  raw decoder      {tps['raw']:>7.0f} tokens/s  ({e['seconds']['raw']:.2f} s)")
        print(f"  engine           {tps['engine']:>7.0f} tokens/s  ({e['seconds']['engine']:.2f} s)  "
              f"engine / raw {e['engine_over_raw']:.3f}")
        print(f"  stock generate   {tps['stock']:>7.0f} tokens/s  ({e['seconds']['stock']:.2f} s)  "
              f"engine / stock {e['engine_over_stock']:.2f}, raw / stock {e['raw_over_stock']:.2f}")
        result["engine"] = e
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
