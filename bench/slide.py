"""How the transformer's window slides: dropping cached positions (`FastDecoder.drop`, the decoder's way) against
re-encoding the kept half window (the way it slid before), on long real songs: four held out from training, and
D_ROMERO, which is in the training split.

    python -m bench.slide [--tokens 3600] [--songs 5]
    python -m bench.slide --windows 1024 768 512 [--tokens 5000]     # how long a window decoding needs

Each song (held-out POP909 songs of the realtest split, D_ROMERO of Freedoom, an openmsx song) is read a token at
a time through `model.sampling.decode.Window` with the shipped int8 decoder, as an edit reads kept notes. Printed
per song and policy: the mean negative log-likelihood (nats a token) of the tokens read after the first slide,
and the seconds the reading took; then both over all songs.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np
import torch

from model.sampling.decode import Window

POP909 = "../shared/data/pop909"
OPENMSX = "/usr/share/games/openttd/baseset/openmsx/*.mid"


class Reencode(Window):
    """The earlier slide: the prefix and the kept half window encoded afresh."""

    def slide(self, n_body: int) -> None:
        self.prefill(n_body)


def songs(count: int) -> list[tuple[str, object]]:
    from bench.edit import default_song
    from tokenizer import load_midi
    from training.corpus.pieces import split_of
    from training.corpus.pop909 import read_song

    out = []
    ids = sorted(os.path.basename(p) for p in glob.glob(os.path.join(POP909, "[0-9]*")))
    for i in [i for i in ids if split_of(i, "pop909") == "realtest"][:max(0, count - 2)]:
        out.append((f"POP909 {i}", read_song(os.path.join(POP909, i)).score))
    out.append(("D_ROMERO", load_midi(default_song(tempfile.mkdtemp()))))
    msx = sorted(glob.glob(OPENMSX))
    if msx:
        out.append((os.path.basename(msx[3 % len(msx)]), load_midi(msx[3 % len(msx)])))
    return out[:count]


def read(decoder, window_class, prefix: torch.Tensor, body: np.ndarray) -> tuple[list[float], float]:
    """NLL of each token after the first slide, reading `body` one token at a time; seconds."""
    buf = torch.tensor(body, dtype=torch.long)[None]
    window = window_class(decoder, prefix, buf)
    first_slide = window.ctx - prefix.shape[1]
    nll = []
    t = time.perf_counter()
    logits = window.prefill(1)
    for i in range(1, len(body)):
        if i >= first_slide:
            nll.append(float(-torch.log_softmax(logits.float(), -1)[0, int(body[i])]))
        logits = window.feed(i, i + 1)
    return nll, time.perf_counter() - t


def compare_windows(windows: list[int], count: int, tokens: int) -> int:
    """Per window length: the mean NLL (nats a token) of each song's tokens past the first max(windows), read 64
    tokens a call through a `Window` that keeps that many positions in view, and the seconds it took."""
    from evaluation.reading import token_nll
    from model.engine import get_engine
    from tokenizer import control_prefix, encode_notes
    from tokenizer import vocab as V

    decoder = get_engine("transformer").decoder
    every = torch.arange(V.VOCAB_SIZE)
    picked = songs(count)
    skip = max(windows)
    for length in windows:
        decoder.window = length
        nll, t = [], time.perf_counter()
        for _, s in picked:
            body = encode_notes(s.notes)[:tokens]
            groups = sorted({int(g) for g in s.notes["group"]} - {V.DRUM_GROUP})
            drums = bool((s.notes["group"] == V.DRUM_GROUP).any())
            prefix = torch.tensor(control_prefix(groups, drums, s.style if s.style in V.STYLES else None))[None]
            nll.append(token_nll(decoder, prefix, body, [every] * len(body), chunk=64)[skip:])
        v = np.concatenate(nll)
        print(f"window {length}: {v.mean():.4f} nats a token over {len(v):,} tokens of {len(picked)} songs (past the "
              f"first {skip}); read in {time.perf_counter() - t:.1f} s", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.slide", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=3600, help="tokens read of each song")
    p.add_argument("--songs", type=int, default=5)
    p.add_argument("--windows", type=int, nargs="+", default=None,
                   help="instead: the NLL with each of these window lengths (positions in view), read 64 tokens a call")
    args = p.parse_args(argv)
    if args.windows:
        return compare_windows(args.windows, args.songs, args.tokens)
    from model.engine import get_engine
    from tokenizer import control_prefix, encode_notes
    from tokenizer import vocab as V

    decoder = get_engine("transformer").decoder
    total = {"drop (now)": [], "re-encode (before)": []}
    for name, s in songs(args.songs):
        body = encode_notes(s.notes)[:args.tokens]
        groups = sorted({int(g) for g in s.notes["group"]} - {V.DRUM_GROUP})
        drums = bool((s.notes["group"] == V.DRUM_GROUP).any())
        prefix = torch.tensor(control_prefix(groups, drums, s.style if s.style in V.STYLES else None))[None]
        for policy, cls in zip(total, (Window, Reencode)):
            nll, secs = read(decoder, cls, prefix, body)
            total[policy] += nll
            print(f"{name}: {policy}: {np.mean(nll):.4f} nats a token over the {len(nll)} tokens after the first "
                  f"slide; read in {secs:.1f} s", flush=True)
    for policy, nll in total.items():
        print(f"all songs: {policy}: {np.mean(nll):.4f} nats a token over {len(nll)} tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
