"""Preview and stem render figures, side by side: seconds per variant for the mix only (render_mp3) and for
the mix with its stems (render_preview), the loudness of every MP3 before (the old pipeline: trim at -60 dB,
peak-normalize to -1 dBFS, 128 kbps) and after (TARGET_LUFS), the spread in LU of each set, the length error
of every new MP3 against the piece + RELEASE_TAIL, and what one stem costs as FLAC, WAV and MP3.

    python -m bench.render [--files N] [--bars B] [--engine NAME] [--variants V] [--no-generated]
    python -m bench.render --processes     # long and dense previews: one FluidSynth against one per core
    python -m bench.render --voices        # FluidSynth's default 256 voices against POLYPHONY, real and dense
    python -m bench.render --part-stem     # a part edit's preview: every part's stems against the new part's
    python -m bench.render --loudness      # the loudness measure of an 8.7-minute mix on 1 thread and 2
    python -m bench.render --mp3           # LAME's algorithm qualities on an 8.7-minute mix: time, size, fidelity

Sets: the first N openttd-openmsx songs (/usr/share/games/openttd/baseset/openmsx/*.mid), each cut to its
first B bars (different songs: quiet and loud ones), and, when the engine loads, the V variants of one
request (piano, guitar, bass, drums; B bars at 120 BPM; seed 1), which is what the page renders.  Every
loudness is measured on the MP3 decoded by ffmpeg (stereo, ITU-R BS.1770-4, render.integrated_loudness).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OPENMSX = "/usr/share/games/openttd/baseset/openmsx"
OLD_SILENCE_DB, OLD_TAIL, OLD_PEAK_DB, OLD_BITRATE = -60.0, 0.3, -1.0, 128


def old_preview(score, mp3_path: Path, tmp: Path) -> Path:
    """The preview as it was made before loudness normalization: FluidSynth, trailing silence cut after the
    last sample above -60 dBFS plus 0.3 s, peak-normalized to -1 dBFS, 128 kbps CBR."""
    from render.audio import encode_mp3, read_wav, render_wav, write_wav

    x, rate = read_wav(render_wav(score, tmp / "old-raw.wav"))
    loud = np.flatnonzero(np.abs(x).max(axis=1) > 10 ** (OLD_SILENCE_DB / 20))
    end = int(loud[-1]) + 1 + int(rate * OLD_TAIL) if len(loud) else int(rate * OLD_TAIL)
    x = x[:min(len(x), end)]
    m = float(np.abs(x).max()) if len(x) else 0.0
    if m > 1e-6:
        x = x * (10 ** (OLD_PEAK_DB / 20) / m)
    write_wav(tmp / "old.wav", x, rate)
    return encode_mp3(tmp / "old.wav", mp3_path, bitrate=OLD_BITRATE)


def openmsx_pieces(n_files: int, bars: int):
    from tokenizer import MidiError, load_midi

    for path in sorted(glob.glob(os.path.join(OPENMSX, "*.mid")))[:n_files]:
        try:
            yield Path(path).stem, load_midi(path).first_bars(bars)
        except MidiError as e:
            print(f"skip {Path(path).name}: {e}", file=sys.stderr)


def generated_variants(engine: str, n: int, bars: int):
    try:
        from model import GenerationRequest, get_engine

        req = GenerationRequest(groups=("piano", "guitar", "bass"), drums=True, bars=bars, variants=n, seed=1)
        t0 = time.perf_counter()
        scores = get_engine(engine).generate(req)
        print(f"(generated {n} variants with {engine} in {time.perf_counter() - t0:.0f} s)")
        return [(f"{engine} v{i}", s) for i, s in enumerate(scores, 1)]
    except Exception as e:  # no checkpoint here: the bench still reports the real files
        print(f"no generated variants: {type(e).__name__}: {e}", file=sys.stderr)
        return []


def bench_set(title: str, pieces, tmp: Path) -> None:
    from render import draw_pianoroll, integrated_loudness, render_mp3, render_preview
    from render.audio import RELEASE_TAIL, SAMPLE_RATE, decode_audio, piece_seconds

    print(f"\n== {title}")
    print(f"{'piece':24s} {'groups':>6s} {'audio s':>7s} {'mix s':>6s} {'+stems s':>8s} {'old LUFS':>8s} "
          f"{'new LUFS':>8s} {'gain dB':>7s} {'limited':>7s} {'len err ms':>10s} {'roll s':>6s}")
    rows = []
    for i, (name, score) in enumerate(pieces):
        old = old_preview(score, tmp / f"old{i}.mp3", tmp)
        old_lufs = integrated_loudness(decode_audio(old, channels=2), SAMPLE_RATE)
        mix = render_mp3(score, tmp / f"mix{i}.mp3")
        res, stems = render_preview(score, tmp, f"v{i}")
        pcm = decode_audio(res.path, channels=2)
        new_lufs = integrated_loudness(pcm, SAMPLE_RATE)
        err_ms = (len(pcm) / SAMPLE_RATE - (piece_seconds(score) + RELEASE_TAIL)) * 1000
        t0 = time.perf_counter()
        draw_pianoroll(score, tmp / f"{i}.png")
        roll = time.perf_counter() - t0
        rows.append((old_lufs, new_lufs, mix.render_seconds, res.render_seconds, len(stems), res.seconds))
        print(f"{name[:24]:24s} {len(stems):6d} {res.seconds:7.1f} {mix.render_seconds:6.2f} {res.render_seconds:8.2f} "
              f"{old_lufs:8.2f} {new_lufs:8.2f} {res.gain_db:7.2f} {str(res.peak_limited):>7s} {err_ms:10.2f} "
              f"{roll:6.2f}")
    if not rows:
        return
    old, new, t_mix, t_stems, n_stems, secs = (np.array(c, float) for c in zip(*rows))
    print(f"loudness spread (max - min): before {old.max() - old.min():.2f} LU (from {old.min():.2f} to "
          f"{old.max():.2f} LUFS), after {new.max() - new.min():.2f} LU (from {new.min():.2f} to {new.max():.2f})")
    print(f"seconds per variant: mix only {t_mix.mean():.2f}, mix + stems {t_stems.mean():.2f} "
          f"({n_stems.mean():.1f} stems, {secs.mean():.1f} s of audio each)")


def stem_formats(tmp: Path) -> None:
    """One stem (each group of an 8-bar, 120 BPM piece) encoded as FLAC, WAV and MP3: seconds and size."""
    from render import render_preview
    from render.audio import MP3_VBR_QUALITY, _write_pcm, decode_audio, encode_flacs
    from tokenizer import Score, make_notes
    from tokenizer import vocab as V

    on, dur, vel, grp, pit = [], [], [], [], []
    for beat in range(32):
        t = beat * V.STEPS_PER_QUARTER
        for p in (60, 64, 67):
            on.append(t), dur.append(6), vel.append(5), grp.append(0), pit.append(p + (beat // 8) % 2 * 5)
        on.append(t), dur.append(8), vel.append(6), grp.append(4), pit.append(36 + beat % 4)
        on.append(t), dur.append(2), vel.append(6), grp.append(V.DRUM_GROUP), pit.append(36 if beat % 2 == 0 else 38)
        on.append(t + 4), dur.append(2), vel.append(4), grp.append(V.DRUM_GROUP), pit.append(42)
    score = Score(make_notes(on, dur, vel, grp, pit), bpm=120.0, length=8 * V.STEPS_PER_BAR)
    _, stems = render_preview(score, tmp, "fmt")
    pcms = [(decode_audio(s.audio, channels=2) * 32768).astype("<i2") for s in stems]
    n = len(pcms)

    def timed(encode) -> tuple[float, float]:
        """(seconds per stem, kB per stem) of encode(k, pcm) -> output path, for every stem."""
        t0 = time.perf_counter()
        outs = [encode(k, pcm) for k, pcm in enumerate(pcms)]
        return (time.perf_counter() - t0) / n, sum(o.stat().st_size for o in outs) / n / 1e3

    def wav(k, pcm):
        _write_pcm(tmp / f"w{k}.wav", pcm, 44100)
        return tmp / f"w{k}.wav"

    def run(cmd, out):
        subprocess.run(cmd, check=True)
        return out

    figures = {
        "WAV (numpy, no subprocess)": timed(wav),
        "FLAC (one ffmpeg run per stem)": timed(lambda k, pcm: run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav(k, pcm)), "-c:a", "flac",
             str(tmp / f"f{k}.flac")], tmp / f"f{k}.flac")),
        f"MP3 (lame -V {MP3_VBR_QUALITY})": timed(lambda k, pcm: run(
            ["lame", "--quiet", "-V", str(MP3_VBR_QUALITY), str(wav(k, pcm)), str(tmp / f"m{k}.mp3")],
            tmp / f"m{k}.mp3")),
    }
    t0 = time.perf_counter()
    flacs = encode_flacs([wav(k, pcm) for k, pcm in enumerate(pcms)], [tmp / f"a{k}.flac" for k in range(n)])
    figures["FLAC (all stems in one ffmpeg run)"] = ((time.perf_counter() - t0) / n,
                                                     sum(f.stat().st_size for f in flacs) / n / 1e3)
    print(f"\n== stem encoding: 8 bars at 120 BPM ({stems[0].seconds:.1f} s of 16-bit stereo), mean of the "
          f"{n} stems ({', '.join(s.group for s in stems)}), WAV writing included")
    print(f"{'format':36s} {'s per stem':>10s} {'kB per stem':>11s}")
    for label, (sec, kb) in figures.items():
        print(f"{label:36s} {sec:10.3f} {kb:11.0f}")


def best(fn, repeats: int) -> float:
    """The least of `repeats` timings of fn() (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def processes_set(tmp: Path, repeats: int = 2) -> None:
    """Long and dense previews with FluidSynth (and the encoders) in one process against one per core, best of
    `repeats`: D_ROMERO of Freedoom (8.7 minutes) as a mix, the dense 20,000-note upload with its stems, the
    8-bar window of its last bars a continuation previews, and the page's 4 variants of 8 bars with stems,
    rendered side by side (2 at a time, as studio.pipeline does) with one process per core each against the
    share of the cores the pipeline gives them."""
    from bench.edit import default_song
    from bench.fair import dense_song
    from render import render_preview
    from render.audio import CORES
    from studio.pipeline import RENDER_WORKERS

    dense = dense_song()
    page = [score for _, score in openmsx_pieces(4, 8)]

    def side_by_side(processes: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(RENDER_WORKERS) as pool:
            list(pool.map(lambda k: render_preview(page[k], tmp / f"page{k}", "v", processes=processes),
                          range(len(page))))

    from tokenizer import load_midi

    romero = load_midi(default_song(str(tmp)))
    rows = [
        ("D_ROMERO mix, 8.7 minutes", lambda p: render_preview(romero, tmp, "romero", stems=False, processes=p)),
        ("dense upload + 12 stems, 2.1 minutes", lambda p: render_preview(dense, tmp, "dense", processes=p)),
        ("dense window, bars 58-64 (14 s)", lambda p: render_preview(dense.window(58, 64), tmp, "win", stems=False,
                                                                     processes=p)),
    ]
    print(f"\n== FluidSynth, lame and ffmpeg in 1 process or {CORES} at once (best of {repeats} seconds)")
    print(f"{'preview':40s} {'1':>7s} {CORES:>7d} {'ratio':>6s}")
    for label, fn in rows:
        one, many = best(lambda fn=fn: fn(1), repeats), best(lambda fn=fn: fn(CORES), repeats)
        print(f"{label:40s} {one:7.2f} {many:7.2f} {one / many:6.2f}")
    share = max(1, CORES // min(len(page), RENDER_WORKERS))
    own, shared = best(lambda: side_by_side(CORES), repeats), best(lambda: side_by_side(share), repeats)
    print(f"{len(page)} page variants with stems, side by side: {CORES} processes each {own:.2f} s, "
          f"{share} each (the pipeline's share) {shared:.2f} s")


def part_stem_set(tmp: Path, repeats: int = 2) -> None:
    """A part edit's preview, best of `repeats`: the whole mix with every part's stems (as before) against the mix
    with the new part's stem only (`render_preview` stem_groups, what studio.pipeline renders for a part edit),
    the same with the other parts rendered ahead (`Backing`, done while the model writes: what is left after
    generation), and the mix alone: the dense 20,000-note upload with its piano, and D_ROMERO with its busiest
    part."""
    from bench.edit import default_song
    from bench.fair import dense_song
    from render import render_preview
    from render.ahead import Backing
    from render.audio import SAMPLE_RATE
    from tokenizer import load_midi
    from tokenizer import vocab as V

    romero = load_midi(default_song(str(tmp)))
    busiest = max(romero.groups, key=lambda g: int((romero.notes["group"] == g).sum()))
    print(f"\n== a part edit's preview (best of {repeats} seconds)")
    print(f"{'song':44s} {'every stem':>11s} {'one stem':>9s} {'one, rest ahead':>16s} {'no stem':>8s}")
    for label, score, group in (("dense upload, 12 parts, 2.1 minutes (piano)", dense_song(), V.GROUPS.index("piano")),
                                (f"D_ROMERO, 7 parts, 8.7 minutes ({V.GROUPS[busiest]})", romero, busiest)):
        every = best(lambda s=score: render_preview(s, tmp / "every", "v"), repeats)
        one = best(lambda s=score, g=group: render_preview(s, tmp / "one", "v", stem_groups=[g]), repeats)
        backing = Backing.of_groups(score, [g for g in score.groups if g != group])
        backing.audio(backing.midi, SAMPLE_RATE)  # done: generation takes longer than this
        ahead = best(lambda s=score, g=group, b=backing: render_preview(s, tmp / "ahead", "v", stem_groups=[g], backing=b),
                     repeats)
        none = best(lambda s=score: render_preview(s, tmp / "none", "v", stems=False), repeats)
        print(f"{label:44s} {every:11.2f} {one:9.2f} {ahead:16.2f} {none:8.2f}")


def loudness_set(tmp: Path, repeats: int = 3) -> None:
    """The loudness measure of D_ROMERO's 8.7-minute mix (`render.loudness.block_powers`, which a preview's gain
    needs before anything is encoded) on one thread and on one a core, best of `repeats`."""
    from bench.edit import default_song
    from render.audio import CORES, SAMPLE_RATE, read_wav, render_wav
    from render.loudness import block_powers
    from tokenizer import load_midi

    mix = read_wav(render_wav(load_midi(default_song(str(tmp))), tmp / "romero.wav"))[0]
    print(f"\n== loudness of D_ROMERO's mix, {len(mix) / SAMPLE_RATE / 60:.1f} minutes (best of {repeats} seconds)")
    for threads in sorted({1, CORES}):
        print(f"block_powers, {threads} thread(s): {best(lambda t=threads: block_powers(mix, SAMPLE_RATE, t), repeats):.2f}")


def mp3_set(tmp: Path, repeats: int = 2, qualities=(3, 5, 7)) -> None:
    """D_ROMERO's 8.7-minute mix (`render_wav`: FluidSynth's output as a 16-bit WAV, no gain) encoded at lame -V
    MP3_VBR_QUALITY with each algorithm quality `-q` (3: LAME's default; render.audio uses MP3_ALGORITHM_QUALITY),
    interleaved, best of `repeats` seconds: the MP3's size, how close it decodes to the source (signal to error in dB, over the whole
    mix and the mean over its 50 ms frames with sound) and its loudness change (LU)."""
    from bench.edit import default_song
    from render.audio import MP3_ALGORITHM_QUALITY, MP3_VBR_QUALITY, SAMPLE_RATE, decode_audio, read_wav, render_wav
    from render.loudness import block_powers, gated_loudness
    from tokenizer import load_midi

    wav = render_wav(load_midi(default_song(str(tmp))), tmp / "romero.wav")
    src = read_wav(wav)[0]

    def loudness(x) -> float:
        return gated_loudness(block_powers(x, SAMPLE_RATE, 1))

    times = {q: [] for q in qualities}
    for _ in range(repeats):
        for q in qualities:
            t0 = time.perf_counter()
            subprocess.run(["lame", "--quiet", "-V", str(MP3_VBR_QUALITY), "-q", str(q), str(wav),
                            str(tmp / f"q{q}.mp3")], check=True)
            times[q].append(time.perf_counter() - t0)
    print(f"\n== MP3 of D_ROMERO's mix, {len(src) / SAMPLE_RATE / 60:.1f} minutes, lame -V {MP3_VBR_QUALITY} "
          f"(previews: -q {MP3_ALGORITHM_QUALITY}; best of {repeats} seconds)")
    print(f"{'lame -q':8s} {'seconds':>8s} {'MB':>6s} {'SNR dB':>7s} {'frame SNR dB':>13s} {'loudness LU':>12s}")
    ref = loudness(src)
    frame = SAMPLE_RATE // 20
    for q in qualities:
        out = decode_audio(tmp / f"q{q}.mp3", channels=2)
        n = min(len(out), len(src))
        err = out[:n] - src[:n]
        m = n // frame
        sig_f, err_f = ((a[:m * frame] ** 2).reshape(m, -1).sum(1) for a in (src[:n], err))
        sound = sig_f > 1e-4
        frame_snr = float(np.mean(10 * np.log10(sig_f[sound] / np.maximum(err_f[sound], 1e-12))))
        snr = 10 * np.log10(float((src[:n] ** 2).sum()) / float((err ** 2).sum()))
        print(f"{q:<8d} {min(times[q]):8.2f} {(tmp / f'q{q}.mp3').stat().st_size / 1e6:6.2f} {snr:7.2f} "
              f"{frame_snr:13.2f} {loudness(out) - ref:+12.3f}")


def voices_set(tmp: Path, repeats: int = 2) -> None:
    """FluidSynth's default 256 voices against `render.audio.POLYPHONY`: per song, the preview's seconds
    (render_preview, the mix alone, best of `repeats`) and how far the synthesized samples move (the share of
    their energy that differs, 0: the same samples), for real songs (D_ROMERO's first 40 bars, POP909 003, an
    openmsx song) and the dense upload's infill and continue preview windows."""
    from bench.edit import default_song
    from bench.fair import dense_song
    from render import audio
    from tokenizer import load_midi, to_midi_bytes
    from training.corpus.pop909 import read_song

    limit = audio.POLYPHONY
    dense = dense_song()
    songs = [("D_ROMERO, bars 1-40", load_midi(default_song(str(tmp))).window(1, 40))]
    if os.path.isdir("../shared/data/pop909/003"):
        songs.append(("POP909 003", read_song("../shared/data/pop909/003").score))
    msx = sorted(glob.glob(os.path.join(OPENMSX, "*.mid")))
    if msx:
        songs.append((os.path.basename(msx[3 % len(msx)]), load_midi(msx[3 % len(msx)])))
    songs += [("dense upload, bars 28-32 (its infill's preview)", dense.window(28, 32)),
              ("dense upload, bars 26-33 (8 bars)", dense.window(26, 33))]
    print(f"\n== FluidSynth voices: 256 against POLYPHONY = {limit} (preview seconds, best of {repeats})")
    print(f"{'song':48s} {'notes':>6s} {'256':>7s} {limit:>7d} {'ratio':>6s} {'energy moved':>13s}")
    try:
        for label, score in songs:
            seconds, samples = {}, {}
            for voices in (256, limit):
                audio.POLYPHONY = voices
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    audio.render_preview(score, tmp, "voices", stems=False)
                    times.append(time.perf_counter() - t0)
                seconds[voices] = min(times)
                samples[voices] = np.array(audio._synthesize(to_midi_bytes(score), tmp / f"v{voices}.raw", None,
                                                             audio.SAMPLE_RATE, 120.0))
            a, b = samples[256], samples[limit]
            n = min(len(a), len(b))
            moved = float(((a[:n] - b[:n]) ** 2).sum() / max((a[:n] ** 2).sum(), 1e-12))
            shorter = f" (the ring ends {(len(a) - len(b)) / audio.SAMPLE_RATE:.2f} s sooner)" if len(a) != len(b) else ""
            print(f"{label:48s} {len(score.notes):6d} {seconds[256]:7.2f} {seconds[limit]:7.2f} "
                  f"{seconds[256] / seconds[limit]:6.2f} {moved:13.2g}{shorter}")
    finally:
        audio.POLYPHONY = limit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--bars", type=int, default=8)
    ap.add_argument("--engine", default="transformer")
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--no-generated", action="store_true")
    ap.add_argument("--processes", action="store_true", help="only long and dense previews, one process against "
                    "one per core (needs Freedoom's WAD)")
    ap.add_argument("--voices", action="store_true", help="only FluidSynth's default 256 voices against "
                    "render.audio.POLYPHONY, on real songs and the dense upload (needs Freedoom's WAD)")
    ap.add_argument("--part-stem", action="store_true", help="only a part edit's preview: every part's stems "
                    "against the new part's (needs Freedoom's WAD)")
    ap.add_argument("--loudness", action="store_true", help="only the loudness measure of a long mix, on one "
                    "thread and one a core (needs Freedoom's WAD)")
    ap.add_argument("--mp3", action="store_true", help="only LAME's algorithm qualities on a long mix: time, "
                    "size, fidelity (needs Freedoom's WAD)")
    args = ap.parse_args(argv)

    from render import RenderError
    from render.audio import MP3_VBR_QUALITY, RELEASE_TAIL
    from render.loudness import PEAK_CEILING_DB, TARGET_LUFS

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; one variant at a time")
    print(f"new previews: {TARGET_LUFS:g} LUFS, sample peak <= {PEAK_CEILING_DB:g} dBFS, piece + {RELEASE_TAIL:g} s, "
          f"lame -V {MP3_VBR_QUALITY}; stems: FLAC")
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            only = [f for on, f in ((args.processes, processes_set), (args.voices, voices_set),
                                    (args.part_stem, part_stem_set), (args.loudness, loudness_set),
                                    (args.mp3, mp3_set)) if on]
            for f in only:
                f(tmp)
            if only:
                return 0
            bench_set(f"openmsx songs, first {args.bars} bars", list(openmsx_pieces(args.files, args.bars)), tmp)
            if not args.no_generated:
                variants = generated_variants(args.engine, args.variants, args.bars)
                if variants:
                    bench_set(f"the {len(variants)} variants of one request ({args.engine}, piano guitar bass drums, "
                              f"{args.bars} bars, seed 1)", variants, tmp)
            stem_formats(tmp)
        except RenderError as e:
            print(e)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
