"""Mutation fuzzer for MIDI input: real files, mutated, each through the `python -m tokenizer roundtrip` path.

    python -m bench.fuzz --n 5000 [--seed S] [--jobs J] [--timeout SECONDS] [--show K] [--keep DIR]

Sources: tests/fixtures/midi/*.mid and /usr/share/games/openttd/baseset/openmsx/*.mid.  Input i is one source
file with 1 to 3 mutations applied, all drawn from random.Random(f"{seed}:{i}"), so a seed always gives the same
inputs (and `--keep DIR` saves the ones that fail).  Mutation kinds: byte flips, truncation, inserted garbage,
chunk-length corruption, huge delta times (single ones up to 0x0FFFFFFF, or runs of them that add up past
2**31), absurd meta lengths, tempo 0 and other out-of-range tempos, bad time signatures (255/128, 0/4, ...),
huge declared track counts, header fields (format, division), many tracks, program-change storms, track
repeats, and splices of two files.

Each input runs `tokenizer.__main__.roundtrip` (load -> encode -> decode -> write -> re-read) in its own child
process forked from this one, under a wall-time limit (SIGALRM, --timeout) and an address-space limit
(RLIMIT_AS); the child's peak memory is its maxrss, read with wait4 (a forked child starts with this process's
resident memory, about 50 MB from the command line; what an input added above that is reported as well).  Outcomes: accepted; refused (MidiError,
counted by message kind: numbers replaced by N, advice dropped); crash (any other exception, or a child killed
by a signal or out of memory); hang (killed at the time limit); unreadable output (the written file did not
read back: RoundTripError); unequal (accepted, but notes in != notes out).  Exits 1 if there is any crash,
hang, unreadable output or unequal round trip.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # forked children: no BLAS thread pools behind them

import argparse  # noqa: E402
import glob  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import mido  # noqa: E402

from tokenizer.__main__ import RoundTripError, roundtrip  # noqa: E402
from tokenizer.score import MidiError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (str(ROOT / "tests/fixtures/midi/*.mid"), "/usr/share/games/openttd/baseset/openmsx/*.mid")
FAILURES = ("crash", "hang", "unreadable", "unequal")


def source_files() -> list[Path]:
    return [Path(p) for pattern in SOURCES for p in sorted(glob.glob(pattern))]


# ---- mutations: (rng, data, other) -> bytes ------------------------------------------------------------
def _chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each chunk header, MThd included, as far as the lengths make sense."""
    out, pos = [], 0
    while pos + 8 <= len(data) and len(out) < 5000:
        n = int.from_bytes(data[pos + 4:pos + 8], "big")
        out.append((pos, n))
        pos += 8 + n
    return out


def _mido(data: bytes) -> mido.MidiFile | None:
    try:
        return mido.MidiFile(file=io.BytesIO(data), clip=True)
    except Exception:
        return None


def _save(mf: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def byte_flip(rng, data, other):
    b = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        i = rng.randrange(len(b))
        b[i] = rng.choice((b[i] ^ (1 << rng.randrange(8)), rng.randrange(256), 0x00, 0x7F, 0x80, 0xFF))
    return bytes(b)


def truncate(rng, data, other):
    return data[:rng.randrange(len(data))]


def insert_garbage(rng, data, other):
    i = rng.randrange(len(data) + 1)
    return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[i:]


def chunk_length(rng, data, other):
    chunks = _chunks(data)
    if not chunks:
        return byte_flip(rng, data, other)
    pos, n = rng.choice(chunks)
    value = rng.choice((0, 1, 5, 7, n - 1, n + 1, n * 2, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(2**32)))
    return data[:pos + 4] + (value % 2**32).to_bytes(4, "big") + data[pos + 8:]


def declared_tracks(rng, data, other):
    value = rng.choice((65535, 65535, rng.randrange(2, 65536), 1025, 1024, rng.randrange(1, 40)))
    return data[:10] + value.to_bytes(2, "big") + data[12:]


def header_fields(rng, data, other):
    b = bytearray(data)
    which = rng.randrange(3)
    if which == 0:
        b[8:10] = rng.randrange(6).to_bytes(2, "big")  # format
    elif which == 1:
        b[12:14] = rng.choice((0, 1, 2, 24, 0x7FFF, 0x8000 | rng.randrange(0x8000))).to_bytes(2, "big")  # division
    else:
        b[4:8] = rng.choice((0, 5, 7, 8, 0xFFFFFFFF)).to_bytes(4, "big")  # header length
    return bytes(b)


def huge_delta(rng, data, other):
    """Large delta times on random events: single ones (up to 0x0FFFFFFF, the most MIDI holds: onsets far
    past any piece), or a run of maximal ones whose sum passes 2**31 (past what a MIDI time holds)."""
    mf = _mido(data)
    if mf is None or not any(len(t) for t in mf.tracks):
        return byte_flip(rng, data, other)
    tracks = [t for t in mf.tracks if len(t)]
    if rng.random() < 0.4:
        tr = rng.choice(tracks)
        for k in rng.sample(range(len(tr)), min(len(tr), rng.randint(8, 20))):
            tr[k].time = 0x0FFFFFFF
    else:
        for _ in range(rng.randint(1, 3)):
            tr = rng.choice(tracks)
            tr[rng.randrange(len(tr))].time = rng.choice((2**21, 2**24, 2**27, 0x0FFFFFFF, rng.randrange(2**28)))
    return _save(mf)


def _meta_positions(data: bytes, types: bytes) -> list[int]:
    return [m.start() for m in re.finditer(b"\xff[" + re.escape(types) + b"]", data) if m.start() > 14]


def meta_length(rng, data, other):
    """A meta event's length byte replaced by an absurd variable-length quantity (chunk length kept or fixed)."""
    spots = _meta_positions(data, bytes([1, 2, 3, 4, 5, 6, 7, 0x21, 0x2F, 0x51, 0x54, 0x58, 0x59, 0x7F]))
    if not spots:
        return byte_flip(rng, data, other)
    i = rng.choice(spots) + 2
    vlq = rng.choice((b"\x8f\xff\xff\x7f", b"\xff\xff\xff\x7f", b"\x81\x80\x80\x00", b"\x7f", b"\x00", b"\x83\x60"))
    out = data[:i] + vlq + data[i + 1:]
    if rng.random() < 0.5:  # keep the track chunk consistent: only the meta length is wrong
        for pos, n in _chunks(data):
            if pos < i < pos + 8 + n:
                out = out[:pos + 4] + (n + len(vlq) - 1).to_bytes(4, "big") + out[pos + 8:]
    return out


def tempo(rng, data, other):
    """A tempo event set to 0 (or 1, 10 BPM, 600 BPM, the 24-bit maximum); one is added if there is none."""
    value = rng.choice((0, 0, 0, 1, 6_000_000, 100_000, 0xFFFFFF, 2_999_999, 150_001)).to_bytes(3, "big")
    spots = _meta_positions(data, b"\x51")
    if not spots:
        mf = _mido(data)
        if mf is None or not mf.tracks:
            return byte_flip(rng, data, other)
        mf.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=500000, time=0))
        data = _save(mf)
        spots = _meta_positions(data, b"\x51")
    i = rng.choice(spots)
    return data[:i + 3] + value + data[i + 6:]


def time_signature(rng, data, other):
    """A time signature set to 255/128, 0/4, 4/2^8, 7/64, 33/4, ...; one is added if there is none."""
    num, exp = rng.choice(((255, 7), (255, 7), (0, 2), (4, 8), (4, 255), (7, 6), (33, 2), (1, 0), (3, 5)))
    spots = _meta_positions(data, b"\x58")
    if not spots:
        mf = _mido(data)
        if mf is None or not mf.tracks:
            return byte_flip(rng, data, other)
        mf.tracks[0].insert(0, mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
        data = _save(mf)
        spots = _meta_positions(data, b"\x58")
    i = rng.choice(spots)
    return data[:i + 3] + bytes((num, exp)) + data[i + 5:]


def many_tracks(rng, data, other):
    """Track chunks repeated up to a few thousand times, the header saying how many (or 65,535)."""
    tracks = [(p, n) for p, n in _chunks(data) if data[p:p + 4] == b"MTrk"]
    if not tracks:
        return byte_flip(rng, data, other)
    p, n = min(tracks, key=lambda t: t[1])
    k = min(rng.choice((600, 1100, 3000, 60000)), 3_000_000 // (n + 8))
    body = data[p:p + 8 + n] * k
    ntrk = min(65535, k) if rng.random() < 0.7 else 65535
    return data[:10] + ntrk.to_bytes(2, "big") + data[12:14] + body


def program_storm(rng, data, other):
    """A track of notes each after a new program change: thousands of instrument parts."""
    n = rng.choice((500, 3000, 20000))
    ev = bytearray()
    for i in range(n):
        ch, prog = i % 16, (i // 16) % 128
        ev += bytes((0, 0xC0 | ch, prog, 0, 0x90 | ch, 60, 64, 1, 0x80 | ch, 60, 0))
    ev += b"\x00\xff\x2f\x00"
    trk = b"MTrk" + len(ev).to_bytes(4, "big") + bytes(ev)
    k = rng.choice((1, 4))
    return b"MThd\x00\x00\x00\x06\x00\x01" + k.to_bytes(2, "big") + b"\x01\xe0" + trk * k


def repeat_track(rng, data, other):
    """The largest track chunk's events repeated (a long, busy track; size up to about 1 MB)."""
    tracks = [(p, n) for p, n in _chunks(data) if data[p:p + 4] == b"MTrk" and p + 8 + n <= len(data)]
    if not tracks:
        return byte_flip(rng, data, other)
    p, n = max(tracks, key=lambda t: t[1])
    body = data[p + 8:p + 8 + n]
    if body.endswith(b"\xff\x2f\x00"):
        body = body[:-4]  # drop the end-of-track (delta + FF 2F 00)
    reps = max(2, min(rng.choice((4, 20, 200)), 1_000_000 // max(1, len(body))))
    new = body * reps + b"\x00\xff\x2f\x00"
    return data[:p + 4] + len(new).to_bytes(4, "big") + new + data[p + 8 + n:]


def splice(rng, data, other):
    return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


MUTATIONS = {f.__name__: (f, w) for f, w in (
    (byte_flip, 16), (truncate, 8), (insert_garbage, 4), (chunk_length, 8), (declared_tracks, 5),
    (header_fields, 4), (huge_delta, 12), (meta_length, 8), (tempo, 10), (time_signature, 8), (many_tracks, 3),
    (program_storm, 2), (repeat_track, 3), (splice, 4),
)}


def make_input(sources: list[bytes], seed: int, i: int) -> tuple[bytes, list[str], int]:
    """(mutated bytes, mutation names, source index) of input i."""
    rng = random.Random(f"{seed}:{i}")
    k = rng.randrange(len(sources))
    data, names = sources[k], []
    kinds, weights = zip(*((name, w) for name, (_, w) in MUTATIONS.items()))
    for name in rng.choices(kinds, weights, k=rng.choice((1, 1, 1, 2, 2, 3))):
        if not data:
            break
        other = rng.choice(sources)
        try:
            data = MUTATIONS[name][0](rng, data, other)
        except Exception:  # cannot apply to what earlier mutations made (e.g. mido will not save it)
            name, data = "byte_flip", byte_flip(rng, data, other)
        names.append(name)
    return data, names, k


# ---- one input in a child process -------------------------------------------------------------------
def _child(data: bytes, workdir: Path, timeout: float, mem_bytes: int) -> None:
    """In the forked child: the roundtrip path on `data`; the result as JSON in workdir/result.json."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the time limit kills, even inside C code
    signal.setitimer(signal.ITIMER_REAL, timeout)
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    src, out = workdir / "in.mid", workdir / "out.mid"
    src.write_bytes(data)
    base_mb = resident_mb()
    t0 = time.perf_counter()
    try:
        info = roundtrip(src, out)
        res = {"outcome": "accepted" if info["equal"] else "unequal", "info": info}
    except MidiError as e:
        res = {"outcome": "refused", "message": str(e)}
    except RoundTripError as e:
        res = {"outcome": "unreadable", "message": str(e)}
    except BaseException as e:  # noqa: BLE001 - everything else is a crash, reported with its traceback
        res = {"outcome": "crash", "message": f"{type(e).__name__}: {e}"[:300], "traceback": traceback.format_exc()}
    res["seconds"], res["base_mb"] = time.perf_counter() - t0, base_mb
    (workdir / "result.json").write_text(json.dumps(res))


def resident_mb() -> float:
    """This process's resident memory now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def start(data: bytes, workdir: Path, timeout: float, mem_bytes: int) -> int:
    """Fork a child that runs one input; returns its pid (reap it with `finish`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            _child(data, workdir, timeout, mem_bytes)
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    return pid


def finish(status: int, rusage, workdir: Path, timeout: float) -> dict:
    """The result of a reaped child: its JSON, or what its death says; plus its peak memory and what the input
    added to it (MB)."""
    res_file = workdir / "result.json"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
        res = {"outcome": "hang", "message": f"killed after {timeout:g} s", "seconds": timeout}
    elif os.WIFSIGNALED(status):
        res = {"outcome": "crash", "message": f"killed by signal {os.WTERMSIG(status)}", "seconds": float("nan")}
    elif res_file.exists() and os.WEXITSTATUS(status) == 0:
        res = json.loads(res_file.read_text())
    else:
        res = {"outcome": "crash", "message": f"the child exited with status {os.WEXITSTATUS(status)} and no result",
               "seconds": float("nan")}
    res["peak_mb"] = rusage.ru_maxrss / 1024  # Linux: kilobytes
    res["added_mb"] = max(0.0, res["peak_mb"] - res.get("base_mb", res["peak_mb"]))
    shutil.rmtree(workdir, ignore_errors=True)
    return res


def address_limit(extra_gb: float = 3.0) -> int:
    """This process's virtual size plus `extra_gb` (at least 4 GiB): the children's RLIMIT_AS."""
    try:
        kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        kb = 0
    return max(4 << 30, kb * 1024 + int(extra_gb * (1 << 30)))


def run_one(data: bytes, timeout: float = 10.0) -> dict:
    """One input through the roundtrip path in a child process: its outcome, seconds, peak_mb and added_mb."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        pid = start(data, Path(tmp) / "job", timeout, address_limit())
        _, status, rusage = os.wait4(pid, 0)
        return finish(status, rusage, Path(tmp) / "job", timeout)


# ---- the run ----------------------------------------------------------------------------------------
def message_kind(message: str) -> str:
    """A refusal message without its numbers and its advice: what kind of problem it names."""
    kind = re.sub(r"0x[0-9A-Fa-f]+|\d+(?:[.,]\d+)*(?:e[+-]?\d+)?", "N", message)
    kind = kind.split("; ")[0]
    kind = re.sub(r": (re-export|cut|merge|use) .*$", "", kind)
    return kind[:110]


@dataclass
class Summary:
    inputs: int = 0
    outcomes: Counter = field(default_factory=Counter)
    refusals: Counter = field(default_factory=Counter)
    mutations: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)  # (index, names, source, result)
    slowest_refusal: tuple = (0.0, None, "")  # (seconds, index, message)
    slowest: float = 0.0
    peak_mb: float = 0.0
    refusal_peak_mb: float = 0.0
    added_mb: float = 0.0
    refusal_added_mb: float = 0.0
    seconds: float = 0.0

    @property
    def n_failures(self) -> int:
        return sum(self.outcomes[k] for k in FAILURES)


def fuzz(n: int, seed: int = 0, jobs: int = 1, timeout: float = 10.0, keep: Path | None = None,
         progress: bool = False) -> Summary:
    files = source_files()
    if not files:
        raise SystemExit("no source MIDI files found")
    sources = [p.read_bytes() for p in files]
    mem = address_limit()
    summary = Summary()
    t0 = time.perf_counter()
    running: dict[int, tuple[int, list[str], int, Path, bytes | None]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    next_i = 0
    try:
        while next_i < n or running:
            while next_i < n and len(running) < jobs:
                data, names, k = make_input(sources, seed, next_i)
                workdir = tmp / str(next_i)
                running[start(data, workdir, timeout, mem)] = (next_i, names, k, workdir, data if keep else None)
                next_i += 1
            pid, status, rusage = os.wait4(-1, 0)
            if pid not in running:
                continue
            i, names, k, workdir, data = running.pop(pid)
            res = finish(status, rusage, workdir, timeout)
            _tally(summary, i, names, files[k].name, res)
            if data is not None and res["outcome"] in FAILURES:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{seed}-{i}-{res['outcome']}.mid").write_bytes(data)
            if progress and summary.inputs % 250 == 0:
                print(f"  {summary.inputs}/{n} inputs, {summary.n_failures} failures, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def _tally(s: Summary, i: int, names: list[str], source: str, res: dict) -> None:
    s.inputs += 1
    outcome = res["outcome"]
    s.outcomes[outcome] += 1
    s.mutations.update(names)
    s.peak_mb = max(s.peak_mb, res["peak_mb"])
    s.added_mb = max(s.added_mb, res["added_mb"])
    if res["seconds"] == res["seconds"]:  # not NaN
        s.slowest = max(s.slowest, res["seconds"])
    if outcome == "refused":
        s.refusals[message_kind(res["message"])] += 1
        s.refusal_peak_mb = max(s.refusal_peak_mb, res["peak_mb"])
        s.refusal_added_mb = max(s.refusal_added_mb, res["added_mb"])
        if res["seconds"] > s.slowest_refusal[0]:
            s.slowest_refusal = (res["seconds"], i, res["message"])
    elif outcome in FAILURES:
        s.failures.append((i, names, source, res))


def report(s: Summary, seed: int, jobs: int, timeout: float, show: int = 5) -> str:
    sec, idx, msg = s.slowest_refusal
    lines = [
        f"fuzz: {s.inputs} inputs, seed {seed}, {jobs} job(s), {timeout:g} s limit per input, {s.seconds:.0f} s",
        f"inputs               {s.inputs}",
        f"accepted             {s.outcomes['accepted']}",
        f"refused              {s.outcomes['refused']}",
    ]
    lines += [f"  {c:6d}  {kind}" for kind, c in s.refusals.most_common()]
    lines += [
        f"crashes              {s.outcomes['crash']}",
        f"hangs                {s.outcomes['hang']}",
        f"unreadable outputs   {s.outcomes['unreadable']}",
        f"unequal round trips  {s.outcomes['unequal']}",
        f"slowest refusal      {sec:.3f} s" + (f" (input {idx}: {msg[:80]})" if idx is not None else ""),
        f"slowest input        {s.slowest:.3f} s",
        f"peak memory          {s.peak_mb:.0f} MB (refusals: {s.refusal_peak_mb:.0f} MB); the most one input "
        f"added: {s.added_mb:.0f} MB (refusals: {s.refusal_added_mb:.0f} MB)",
        "mutations            " + ", ".join(f"{k} {v}" for k, v in sorted(s.mutations.items())),
    ]
    for i, names, source, res in s.failures[:show]:
        lines.append(f"--- input {i} ({'+'.join(names)} of {source}): {res['outcome']}: {res.get('message', '')}")
        if "traceback" in res:
            lines += ["    " + ln for ln in res["traceback"].rstrip().splitlines()[-8:]]
    if len(s.failures) > show:
        lines.append(f"(+{len(s.failures) - show} more failures; --show N lists more)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="number of mutated inputs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="child processes at a time (default 1)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds an input may take before it is a hang")
    p.add_argument("--show", type=int, default=5, help="failures to print in full")
    p.add_argument("--keep", type=Path, default=None, help="save failing inputs to this folder")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    args = p.parse_args(argv)
    if args.n < 1 or args.jobs < 1 or args.timeout <= 0:
        p.error("--n and --jobs must be at least 1 and --timeout positive")
    s = fuzz(args.n, args.seed, args.jobs, args.timeout, args.keep, args.progress)
    print(report(s, args.seed, args.jobs, args.timeout, args.show))
    return 1 if s.n_failures else 0


if __name__ == "__main__":
    sys.exit(main())
