"""MIDI -> FluidSynth (General MIDI soundfont with drum kits) -> previews and stems a DAW user can trust.

    res = render_mp3(score, "v1.mp3")                         # the mix only (a Score or MIDI bytes)
    res, stems = render_preview(score, folder, "v1")          # v1.mp3 + v1-piano.flac, v1-piano.mid, ...
    stems = render_stems(score, folder, "v1", gain_db=res.gain_db)
    backing = Backing.of_groups(song, kept_groups)            # render.ahead: renders them while the model writes
    res, stems = render_preview(edited, folder, "v1", stem_groups=[new_group], backing=backing)

Length.  A preview lasts exactly the piece plus RELEASE_TAIL seconds.  The piece is `score.length` steps, or
the end of its last note when length is None, at the score's tempo (the microseconds per quarter note the
MIDI file holds; the time signature does not change how long a step lasts); for MIDI bytes it is the file's
own length (its last event, end of track included).  FluidSynth renders on past the end, so its output is cut
to that many samples, the last FADE_OUT seconds faded out (a note still ringing does not click), or padded
with silence.  lame writes its gapless header (encoder delay and padding), so ffmpeg decodes the MP3 to that
exact number of samples (tests/render check it to within one MP3 frame, 1152 samples).

Loudness.  Every preview is brought to TARGET_LUFS integrated loudness (render.loudness: ITU-R BS.1770-4 / EBU R128:
K-weighting, 400 ms blocks overlapping by 75 %, absolute gate -70 LUFS, relative gate -10 LU;
`integrated_loudness`, numpy only) by one gain, unless that gain would lift a sample peak past
PEAK_CEILING_DB: then the gain stops at the ceiling and `RenderResult.peak_limited` says so (that preview is
quieter than the target; nothing is compressed or clipped).  FluidSynth writes 32-bit float, so nothing clips
before the gain.  A silent preview keeps gain 0 dB and reports loudness None.  The MP3 is VBR (lame -V
MP3_VBR_QUALITY, about 140 kbps), which keeps the loudness: decoded, it reads within 0.02 LU of the target,
where 128 kbps CBR read 0.44 LU low (measured on an openmsx song).

Stems.  `render_preview(..., stems=True)` renders every instrument group of the score (piano, bass, ...,
drums) on its own, in one FluidSynth run per core (`_stem_parts`: the groups dealt into runs of about equal
note counts): in a run the groups play one after the other, STEM_GUARD seconds of silence apart; an all-sound-off stops each group's voices at the end of its window, and what is left of it when the
next group starts (FluidSynth's reverb) measured below -127 dBFS before the gain (an openmsx song).  The mix
IS the sum of the stems (in float), so the stems sum to the mix sample for sample in a DAW: same length, same
start, same gain (the mix's; the peak ceiling covers every stem too, so no stem clips).  Each stem is a
16-bit FLAC (lossless; a third of WAV's size and under 0.1 s per stem for 8 bars at 120 BPM, all of a preview's
FLACs made by one ffmpeg run; `python -m bench.render` prints FLAC, WAV and MP3 side by side) plus a MIDI file
of that group alone (same tempo, metre, length and drum kit).  FluidSynth's player moves the MIDI clock once
per 64-sample block, so a group rendered later in the run lines up with a render of that group alone to
within about one block (1.5 ms; tests/render check it), not sample for sample: the mix of render_preview
is therefore a slightly different render from render_mp3's single pass (same notes, gain within 0.1 dB).

The soundfont is found in this order: the `soundfont` argument, $MIDI_BANGERS_SOUNDFONT, then the
usual Debian/Ubuntu/Homebrew places (fluid-soundfont-gm installs /usr/share/sounds/sf2/FluidR3_GM.sf2).
Drum kits are the drum track's program change (`Score.drum_kit`); FluidSynth plays channel 10 from the
soundfont's bank 128.  Every external program runs with a timeout.  Anything that stops a preview raises
`RenderError`, whose message starts with "no preview:" so the page can show it while still delivering the MIDI.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import mido
import numpy as np

from tokenizer import Score, to_midi_bytes, write_midi
from tokenizer import vocab as V
from tokenizer.score import to_midi_file

from .loudness import block_powers, gated_loudness, loudness_gain

log = logging.getLogger(__name__)

SOUNDFONT_ENV = "MIDI_BANGERS_SOUNDFONT"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
    "/opt/homebrew/share/soundfonts/default.sf2",
    "/usr/local/share/soundfonts/default.sf2",
)
SAMPLE_RATE = 44100
RELEASE_TAIL = 1.0  # seconds after the piece's end, shared by every preview
FADE_OUT = 0.1  # seconds: the end of the tail fades to silence
STEM_GUARD = 1.0  # seconds of silence between two groups in the one-run stem render
SYNTH_GAIN = 0.6  # FluidSynth's master gain (-g); output is float, the loudness gain comes after
# FluidSynth's voices at once (its default is 256; past the limit it ends the quietest, oldest voices first).  Real
# songs stay under 128: POP909 003 and an openmsx song rendered to the same samples with 128 as with 256, and
# D_ROMERO's first 40 bars differ by 1e-7 of their energy.  The dense 16-track upload's 5-bar preview (1,562 notes)
# took 1.25 s with 256 and 0.84 s with 128 (`python -m bench.render --voices`, docs/runs/bench-render-voices.log).
POLYPHONY = 128
MAX_SECONDS = 30 * 60  # refuse to render more than 30 minutes of audio
MP3_FRAME = 1152  # samples per MPEG-1 Layer III frame
MP3_VBR_QUALITY = 4  # lame -V 4: about 140 kbps; keeps the loudness (CBR 128 kbps loses 0.44 LU, measured)
# LAME's algorithm quality (lame -q; ffmpeg's -compression_level): 5 encodes D_ROMERO's 8.7-minute mix in 5.6 s
# against 6.5 s at LAME's default (3), decoded as close to the source (24.9 dB signal to error) and as loud; 7 took
# 4.0 s but lost 1.5 dB (`python -m bench.render --mp3`, docs/runs/bench-render-mp3.log)
MP3_ALGORITHM_QUALITY = 5
STEM_FORMAT = "flac"
# a mix longer than this renders in pieces, FluidSynth on every core at once (`_synthesize_parts`: a dense 14 s window
# 1.32 s -> 0.91 s, D_ROMERO's 8.7 minutes 21.6 s -> 15.9 s; a FluidSynth starts in 0.1-0.2 s); each piece
# plays PIECE_RELEASE seconds past its last note's end, so what rings over a cut is rendered in full
PARALLEL_SECONDS = 8.0
PIECE_RELEASE = 3.0
CORES = min(2, os.cpu_count() or 1)


class RenderedAhead(Protocol):
    """Notes rendered before the preview is made (render.ahead.Backing): which notes of a score they are, and their
    audio when `midi` is exactly what was rendered."""

    def split(self, score: Score) -> tuple[Score, Score]: ...

    def audio(self, midi: bytes, rate: int) -> np.ndarray | None: ...


class RenderError(RuntimeError):
    """No preview could be made; str(e) starts with "no preview:" and says why."""

    def __init__(self, reason: str):
        super().__init__(f"no preview: {reason}")


@dataclass
class RenderResult:
    path: Path  # the MP3
    seconds: float  # length of the audio: the piece + RELEASE_TAIL
    render_seconds: float  # wall time of synthesis + loudness + encoding (+ stems when made together)
    loudness_lufs: float | None = None  # integrated loudness of the mix after the gain (LUFS); None when silent
    gain_db: float = 0.0  # gain applied to FluidSynth's output (the stems get the same)
    peak_limited: bool = False  # True: the peak ceiling stopped the gain short of TARGET_LUFS
    peak_dbfs: float | None = None  # highest sample of the mix and stems after the gain; None when silent


@dataclass
class Stem:
    group: str  # "piano", "bass", ..., "drums"
    audio: Path  # FLAC, as long as the mix and with the mix's gain
    midi: Path  # this group's notes alone
    seconds: float


# ---- finding the programs ------------------------------------------------------------------------
def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    if soundfont is None:
        soundfont = os.environ.get(SOUNDFONT_ENV) or None
    if soundfont is not None:
        p = Path(soundfont)
        if not p.is_file():
            raise RenderError(f"soundfont {p} not found (set {SOUNDFONT_ENV} to a General MIDI .sf2 file)")
        return p
    for c in SOUNDFONT_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    raise RenderError("no General MIDI soundfont found; install fluid-soundfont-gm "
                      f"or set {SOUNDFONT_ENV} to an .sf2 file")


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderError("FluidSynth is not installed (Debian package 'fluidsynth')")
    return exe


def find_encoder() -> list[str]:
    """The MP3 encoder command prefix: lame if present, else ffmpeg with libmp3lame."""
    if shutil.which("lame"):
        return ["lame"]
    if shutil.which("ffmpeg"):
        return ["ffmpeg"]
    raise RenderError("no MP3 encoder found (install 'lame' or 'ffmpeg')")


def _midi_bytes(midi: Score | bytes | bytearray) -> bytes:
    if isinstance(midi, Score):
        return to_midi_bytes(midi)
    if isinstance(midi, (bytes, bytearray, memoryview)):
        return bytes(midi)
    raise TypeError(f"expected a Score or MIDI bytes, got {type(midi).__name__}")


def _run(cmd: list[str], timeout: float, what: str,
         started: Callable[[subprocess.Popen], None] | None = None) -> str:
    """Run a program with a timeout; returns its stderr; a failure becomes a RenderError.  `started(process)` is
    called once it runs (so that another thread may kill it)."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise RenderError(f"{what} could not start ({e.strerror or e})") from None
    with proc:
        if started is not None:
            started(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RenderError(f"{what} took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (err or out or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RenderError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail) or 'no message'}")
    return (err or b"").decode("utf-8", "replace")


# ---- WAV in and out --------------------------------------------------------------------------------
def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> float32 array (frames, channels) in [-1, 1], sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise RenderError(f"unexpected WAV sample width {w.getsampwidth()}")
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
        return data.reshape(-1, w.getnchannels()), w.getframerate()


def _pcm16(samples: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Float samples times `gain` -> 16-bit integers, rounded to the nearest and clipped, in one float32 scratch
    array (np.clip(np.rint(...)) made three: 8.7 minutes of stereo took 0.07 s against 0.10-0.19 s in a one-off
    timing, the same integers)."""
    y = np.multiply(samples, np.float32(gain * 32767.0), dtype=np.float32)
    np.rint(y, out=y)
    np.clip(y, -32768, 32767, out=y)
    return y.astype("<i2")


def _write_pcm(path: str | os.PathLike, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm).tobytes())


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int) -> None:
    """float samples (frames, channels) in [-1, 1] -> 16-bit PCM WAV."""
    _write_pcm(path, _pcm16(samples), rate)


def _peak_db(samples: np.ndarray) -> float:
    m = float(np.abs(samples).max()) if samples.size else 0.0
    return 20 * math.log10(m) if m > 0 else float("-inf")


# ---- lengths --------------------------------------------------------------------------------------
def _tempo(score: Score) -> int:
    """Microseconds per quarter note, as the written MIDI holds it."""
    return mido.bpm2tempo(score.bpm)


def piece_seconds(midi: Score | bytes) -> float:
    """How long the piece lasts, without the release tail: score.length steps (the end of the last note when
    length is None) at the score's tempo; for MIDI bytes the file's length (its last event)."""
    if isinstance(midi, Score):
        steps = midi.length if midi.length is not None else midi.end_step
        return steps * _tempo(midi) / (V.STEPS_PER_QUARTER * 1e6)
    try:
        return float(mido.MidiFile(file=io.BytesIO(_midi_bytes(midi))).length)
    except (OSError, ValueError, EOFError, KeyError, IndexError, TypeError) as e:
        raise RenderError(f"the MIDI data cannot be read ({e or type(e).__name__})") from None


def preview_frames(midi: Score | bytes, rate: int = SAMPLE_RATE) -> int:
    """Samples in a preview: the piece plus RELEASE_TAIL."""
    return int(round((piece_seconds(midi) + RELEASE_TAIL) * rate))


def _fit(samples: np.ndarray, frames: int, rate: int) -> np.ndarray:
    """Cut or silence-pad to `frames`, then fade the last FADE_OUT seconds out (raised cosine)."""
    out = np.zeros((frames, samples.shape[1]), np.float32)
    n = min(frames, len(samples))
    out[:n] = samples[:n]
    fade = min(frames, int(round(FADE_OUT * rate)))
    if fade:
        out[frames - fade:] *= (0.5 + 0.5 * np.cos(np.pi * (np.arange(1, fade + 1) / fade)))[:, None]
    return out


# ---- synthesis --------------------------------------------------------------------------------
def _synthesize(midi: bytes, out_raw: Path, soundfont: str | os.PathLike | None, rate: int,
                timeout: float, started: Callable[[subprocess.Popen], None] | None = None) -> np.ndarray:
    """FluidSynth -> 32-bit float stereo at `out_raw`, returned memory-mapped as (frames, 2).  `started`: as `_run`'s."""
    sf2 = find_soundfont(soundfont)
    exe = find_fluidsynth()
    mid = out_raw.with_suffix(".mid")
    mid.write_bytes(midi)
    err = _run([exe, "-ni", "-q", "-o", "synth.dynamic-sample-loading=1", "-o", f"synth.polyphony={POLYPHONY}",
                "-g", str(SYNTH_GAIN), "-r", str(rate),
                "-F", str(out_raw), "-T", "raw", "-O", "float", "-E", "little", str(sf2), str(mid)], timeout,
               "FluidSynth", started)
    if "Failed to load SoundFont" in err:  # fluidsynth goes on (exit 0) and renders silence
        raise RenderError(f"FluidSynth could not load the soundfont {sf2}")
    if not out_raw.is_file() or out_raw.stat().st_size < 8:
        raise RenderError("FluidSynth wrote no audio")
    return np.memmap(out_raw, "<f4", "r").reshape(-1, 2)


def _split_step(score: Score, parts: int) -> list[int]:
    """Where to cut `score` into `parts` pieces for `_synthesize_parts`: bar lines near equal shares of its notes
    (FluidSynth's time grows with the voices it plays), each piece at least one bar; fewer cuts where it has
    fewer bars."""
    bar = score.bar_steps
    onsets = np.sort(score.notes["onset"].astype(np.int64))
    cuts = []
    for k in range(1, parts):
        step = int(onsets[len(onsets) * k // parts]) // bar * bar
        if step > (cuts[-1] if cuts else 0) and step <= int(onsets[-1]) // bar * bar:
            cuts.append(step)
    return cuts


def _piece(score: Score, lo: int, hi: int | None, tail_steps: int) -> Score:
    """The notes with onsets in [lo, hi), moved to start at `lo`, lasting to their last note's end plus
    `tail_steps` (so the release of a note that ends at the cut is rendered in full)."""
    on = score.notes["onset"].astype(np.int64)
    part = score.notes[(on >= lo) & ((on < hi) if hi is not None else True)].copy()
    part["onset"] = part["onset"].astype(np.int64) - lo
    end = int((part["onset"].astype(np.int64) + part["duration"]).max()) if len(part) else 0
    return Score(part, score.bpm, score.time_signature, score.style, length=end + tail_steps,
                 drum_kit=score.drum_kit)


def _synthesize_parts(score: Score, frames: int, tmp: Path, soundfont, rate: int, timeout: float,
                      parts: int) -> np.ndarray:
    """The mix of `score` (frames, 2), FluidSynth rendering `parts` pieces of it at once (one process each, one
    per core): cut at bar lines (`_split_step`), each piece's notes ringing and releasing past its cut, and the
    pieces' float outputs summed at their places (synthesis and reverb are linear, so the sum is the whole
    render to within FluidSynth's 64-sample clock step at each cut)."""
    cuts = _split_step(score, parts)
    bounds = [0, *cuts, None]
    tail = int(math.ceil(PIECE_RELEASE * 1e6 / _tempo(score) * V.STEPS_PER_QUARTER))
    pieces = [_piece(score, lo, hi, tail) for lo, hi in zip(bounds, bounds[1:])]
    with ThreadPoolExecutor(len(pieces)) as pool:
        raws = list(pool.map(lambda k: _synthesize(_midi_bytes(pieces[k]), tmp / f"part{k}.f32", soundfont, rate,
                                                   timeout), range(len(pieces))))
    out = np.zeros((frames, 2), np.float32)
    for lo, raw in zip(bounds, raws):
        at = int(round(lo * _tempo(score) / (V.STEPS_PER_QUARTER * 1e6) * rate))
        n = max(0, min(len(raw), frames - at))
        out[at:at + n] += raw[:n]
    return out


def render_wav(midi: Score | bytes, wav_path: str | os.PathLike, soundfont: str | os.PathLike | None = None,
               rate: int = SAMPLE_RATE, timeout: float = 120.0) -> Path:
    """FluidSynth's raw output (the piece and whatever it rendered after it, no gain) as a 16-bit stereo WAV."""
    wav_path = Path(wav_path)
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        _write_pcm(wav_path, _pcm16(_synthesize(_midi_bytes(midi), Path(tmp) / "raw.f32", soundfont, rate,
                                                timeout)), rate)
    return wav_path


def _stem_sequence(score: Score, frames: int, rate: int) -> tuple[bytes, list[int]]:
    """One MIDI file playing the score's groups one after the other (tracks as the score's own file has them:
    same channels, programs and drum kit), each stopped by an all-sound-off when its window of `frames`
    samples ends; and the sample at which each group starts in FluidSynth's output."""
    mf = to_midi_file(score)
    tempo, tpq = _tempo(score), mf.ticks_per_beat
    ticks = lambda s: int(math.ceil(s * 1e6 * tpq / tempo))  # noqa: E731
    stop = ticks(frames / rate + 0.01)
    window = ticks(frames / rate + STEM_GUARD)
    seq = mido.MidiFile(type=1, ticks_per_beat=tpq)
    conductor = mido.MidiTrack(m for m in mf.tracks[0] if m.type != "end_of_track")
    conductor.append(mido.MetaMessage("end_of_track", time=window * (len(mf.tracks) - 1)))
    seq.tracks.append(conductor)
    starts = []
    for k, track in enumerate(mf.tracks[1:]):
        offset = k * window
        starts.append(int(round(offset * tempo / tpq / 1e6 * rate)))
        channel = next(m.channel for m in track if not m.is_meta)
        events, now = [], offset
        for m in track:
            now += m.time
            if m.type != "end_of_track" and now < offset + stop:
                events.append((now, m))
        events.append((offset + stop, mido.Message("control_change", channel=channel, control=120, value=0)))
        out, last = mido.MidiTrack(), 0
        for t, m in events:
            out.append(m.copy(time=t - last))
            last = t
        out.append(mido.MetaMessage("end_of_track", time=0))
        seq.tracks.append(out)
    buf = io.BytesIO()
    seq.save(file=buf)
    return buf.getvalue(), starts


def _stem_parts(score: Score, frames: int, tmp: Path, soundfont, rate: int, timeout: float,
                processes: int) -> list[np.ndarray]:
    """Each group's audio (frames, 2), in `score.groups` order: the groups dealt into up to `processes` runs of
    about equal note counts, FluidSynth playing each run's groups one after the other (`_stem_sequence`), the
    runs at once.  One group alone is rendered as a mix is (`_render_mix`: a long one in pieces, a core each)."""
    groups = score.groups
    if len(groups) == 1:  # in a folder of its own: the other groups' mix may be rendering in `tmp` meanwhile
        (tmp / "stem").mkdir(exist_ok=True)
        return [_render_mix(score, frames, tmp / "stem", soundfont, rate, timeout, processes)[0]]
    runs: list[list[int]] = [[] for _ in range(min(processes, len(groups)))]
    load = [0] * len(runs)
    for g in sorted(groups, key=lambda g: -int((score.notes["group"] == g).sum())):
        k = load.index(min(load))
        runs[k].append(g)
        load[k] += int((score.notes["group"] == g).sum())

    def run(k: int) -> dict[int, np.ndarray]:
        part = Score(score.notes[np.isin(score.notes["group"], runs[k])], score.bpm, score.time_signature, score.style,
                     length=score.length, drum_kit=score.drum_kit)
        seq, starts = _stem_sequence(part, frames, rate)
        raw = _synthesize(seq, tmp / f"stems{k}.f32", soundfont, rate, timeout * len(runs[k]))
        return {g: _fit(raw[s:s + frames], frames, rate) for g, s in zip(part.groups, starts)}

    with ThreadPoolExecutor(len(runs)) as pool:
        audio = {g: a for done in pool.map(run, range(len(runs))) for g, a in done.items()}
    return [audio[g] for g in groups]


def _write_stems(score: Score, groups: list[int], parts: list[np.ndarray], gain: float, folder: Path, prefix: str,
                 tmp: Path, rate: int) -> tuple[list[Stem], list[Path]]:
    """Per group its MIDI file in `folder` and its audio with `gain` as a WAV in `tmp` (for `encode_flacs`): the
    stems (their FLAC paths still to be written) and the WAVs."""
    folder.mkdir(parents=True, exist_ok=True)
    stems, wavs = [], []
    seconds = len(parts[0]) / rate
    for g, part in zip(groups, parts):
        name = V.GROUPS[g]
        wavs.append(tmp / f"{name}.wav")
        _write_pcm(wavs[-1], _pcm16(part, gain), rate)
        midi_path = write_midi(_stem_score(score, g), folder / f"{prefix}-{name}.mid")
        stems.append(Stem(name, folder / f"{prefix}-{name}.{STEM_FORMAT}", midi_path, seconds))
    return stems, wavs


def _encode_mp3(pcm: np.ndarray, mp3_path: Path, rate: int, bitrate: int | None, timeout: float, tmp: Path) -> None:
    """16-bit stereo samples -> MP3 at `mp3_path` (written under a temporary name, then renamed)."""
    wav = tmp / "mix.wav"
    _write_pcm(wav, pcm, rate)
    part = mp3_path.with_name(mp3_path.name + ".part")
    try:
        encode_mp3(wav, part, bitrate=bitrate, timeout=timeout)
    except RenderError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, mp3_path)


def encode_mp3(wav_path: str | os.PathLike, mp3_path: str | os.PathLike, bitrate: int | None = None,
               timeout: float = 120.0) -> Path:
    """WAV -> MP3 at LAME's MP3_ALGORITHM_QUALITY: VBR at MP3_VBR_QUALITY, or constant `bitrate` kbps when given
    (which LAME encodes measurably quieter: -0.44 LU at 128 kbps)."""
    enc = find_encoder()
    if enc[0] == "lame":
        rate_args = ["-V", str(MP3_VBR_QUALITY)] if bitrate is None else ["-b", str(bitrate)]
        cmd = ["lame", "--quiet", *rate_args, "-q", str(MP3_ALGORITHM_QUALITY), str(wav_path), str(mp3_path)]
    else:
        rate_args = ["-q:a", str(MP3_VBR_QUALITY)] if bitrate is None else ["-b:a", f"{bitrate}k"]
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav_path), "-codec:a", "libmp3lame",
               *rate_args, "-compression_level", str(MP3_ALGORITHM_QUALITY), "-f", "mp3", str(mp3_path)]
    _run(cmd, timeout, "MP3 encoding")
    return Path(mp3_path)


def encode_flacs(wavs: list[Path], flacs: list[Path], timeout: float = 120.0) -> list[Path]:
    """WAV files -> FLAC files, all in one ffmpeg run (one input and one output per file)."""
    if not shutil.which("ffmpeg"):
        raise RenderError("ffmpeg is not installed, so the stems cannot be encoded to FLAC")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for w in wavs:
        cmd += ["-i", str(w)]
    parts = [f.with_name(f.name + ".part") for f in flacs]
    for k, p in enumerate(parts):
        cmd += ["-map", f"{k}:a", "-c:a", "flac", "-f", "flac", str(p)]
    try:
        _run(cmd, timeout, "FLAC encoding")
    except RenderError:
        for p in parts:
            p.unlink(missing_ok=True)
        raise
    for p, f in zip(parts, flacs):
        os.replace(p, f)
    return flacs


# ---- previews ---------------------------------------------------------------------------------
def _stem_score(score: Score, groups: int | list[int] | None = None, mask: np.ndarray | None = None) -> Score:
    """The score's notes of one group (or of several; or those `mask` picks), lasting as long as the whole piece."""
    length = score.length if score.length is not None else score.end_step
    if mask is None:
        mask = np.isin(score.notes["group"], np.atleast_1d(groups))
    return Score(score.notes[mask], score.bpm, score.time_signature, score.style, length=length,
                 drum_kit=score.drum_kit)


def _check_length(midi: Score | bytes) -> None:
    if piece_seconds(midi) > MAX_SECONDS:
        raise RenderError(f"the piece is longer than {MAX_SECONDS // 60} minutes")


def _render(midi: Score | bytes, mp3_path: Path | None, stem_folder: Path | None, stem_prefix: str,
            gain_db: float | None, soundfont, rate: int, bitrate: int | None, timeout: float,
            processes: int | None = None, stem_groups=None,
            backing: RenderedAhead | None = None) -> tuple[RenderResult | None, list[Stem]]:
    """The one pipeline behind render_mp3, render_stems and render_preview.  `processes`: how many FluidSynth,
    lame or ffmpeg processes it may run at once (default CORES; less when other renders share the cores).
    `stem_groups`: the groups to write stems of (None: every group; the mix is then their sum).  `backing`: the
    other groups' audio when it rendered exactly them."""
    processes = max(1, processes or CORES)
    t0 = time.perf_counter()
    if stem_folder is not None and not isinstance(midi, Score):
        raise TypeError("stems need a Score (its instrument groups), not MIDI bytes")
    _check_length(midi)
    frames = preview_frames(midi, rate)
    groups = [g for g in midi.groups if stem_groups is None or g in stem_groups] if stem_folder is not None else []
    with tempfile.TemporaryDirectory(prefix="render-") as tmp_name:
        tmp = Path(tmp_name)
        if groups and len(groups) == len(midi.groups):
            parts = _stem_parts(midi, frames, tmp, soundfont, rate, timeout, processes)
            mix = parts[0].copy()
            for part in parts[1:]:
                mix += part
            peak = max(_peak_db(p) for p in parts + [mix])
        elif groups:  # some groups' stems, and the other groups' audio: the mix is the sum
            mix, parts = _rest_and_stems(midi, groups, frames, tmp, soundfont, rate, timeout, processes, backing)
            peak = max(_peak_db(p) for p in parts + [mix])
        else:
            parts, mix = [], _known_and_new(midi, frames, tmp, soundfont, rate, timeout, processes, backing)
            if mix is None:
                mix, peak = _render_mix(midi, frames, tmp, soundfont, rate, timeout, processes)
            else:
                peak = _peak_db(mix)
        limited = False
        z = block_powers(mix, rate, processes) if gain_db is None or mp3_path is not None else None
        if gain_db is None:
            gain_db, limited = loudness_gain(gated_loudness(z), peak)
        gain = 10 ** (gain_db / 20)
        result, stems, jobs = None, [], []
        with ThreadPoolExecutor(processes + 1) as pool:  # lame and ffmpeg are processes: the encodings run at once
            if mp3_path is not None:
                jobs.append(pool.submit(_encode_mp3, _pcm16(mix, gain), mp3_path, rate, bitrate, timeout, tmp))
                loud = gated_loudness(z * gain * gain)  # the mix after the gain (before 16-bit rounding and MP3)
                result = RenderResult(mp3_path, frames / rate, 0.0, loud if math.isfinite(loud) else None, gain_db,
                                      limited, peak + gain_db if math.isfinite(peak) else None)
            if parts:
                stems, wavs = _write_stems(midi, groups, parts, gain, stem_folder, stem_prefix, tmp, rate)
                flacs = [s.audio for s in stems]
                jobs += [pool.submit(encode_flacs, wavs[k::processes], flacs[k::processes], timeout)
                         for k in range(min(processes, len(wavs)))]
            for job in jobs:
                job.result()  # a RenderError from any of them
    if result is not None:
        result.render_seconds = time.perf_counter() - t0
    return result, stems


def _rest_and_stems(score: Score, groups: list[int], frames: int, tmp: Path, soundfont, rate: int, timeout: float,
                    processes: int, backing: RenderedAhead | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(the mix, the stems of `groups`): the other groups' audio from `backing` when it rendered exactly them, else
    rendered at the same time as the stems (one after the other with one process)."""
    rest = _stem_score(score, [g for g in score.groups if g not in groups])
    known = backing.audio(_midi_bytes(rest), rate) if backing is not None else None
    with ThreadPoolExecutor(1) as pool:
        job = None if known is not None else pool.submit(_render_mix, rest, frames, tmp, soundfont, rate, timeout,
                                                         processes)
        if job is not None and processes == 1:
            job.result()
        parts = _stem_parts(_stem_score(score, groups), frames, tmp, soundfont, rate, timeout, processes)
        mix = _fit(known, frames, rate) if job is None else job.result()[0]
    for part in parts:
        mix += part
    return mix, parts


def _known_and_new(score: Score | bytes, frames: int, tmp: Path, soundfont, rate: int, timeout: float,
                   processes: int, backing: RenderedAhead | None) -> np.ndarray | None:
    """The mix from `backing`'s audio of the notes it rendered ahead plus a render of the score's other notes; None
    when those are not exactly the notes it rendered (or there is no backing): the caller renders the score whole."""
    if backing is None or not isinstance(score, Score):
        return None
    known, new = backing.split(score)
    audio = backing.audio(_midi_bytes(known), rate)
    if audio is None:
        return None
    mix = _fit(audio, frames, rate)
    if len(new.notes):
        mix += _render_mix(new, frames, tmp, soundfont, rate, timeout, processes)[0]
    return mix


def _render_mix(midi: Score | bytes, frames: int, tmp: Path, soundfont, rate: int, timeout: float,
                processes: int) -> tuple[np.ndarray, float]:
    """The whole piece's audio (frames, 2), a long one in pieces one FluidSynth a core; and its peak (dB)."""
    if isinstance(midi, Score) and frames > PARALLEL_SECONDS * rate and len(midi.notes) and processes > 1:
        mix = _fit(_synthesize_parts(midi, frames, tmp, soundfont, rate, timeout, processes), frames, rate)
    else:
        mix = _fit(_synthesize(_midi_bytes(midi), tmp / "mix.f32", soundfont, rate, timeout), frames, rate)
    return mix, _peak_db(mix)


def render_mp3(midi: Score | bytes, mp3_path: str | os.PathLike, soundfont: str | os.PathLike | None = None,
               bitrate: int | None = None, timeout: float = 120.0, rate: int = SAMPLE_RATE) -> RenderResult:
    """MIDI (Score or bytes) -> MP3 at `mp3_path`: the piece + RELEASE_TAIL, at TARGET_LUFS (see the module)."""
    result, _ = _render(midi, Path(mp3_path), None, "", None, soundfont, rate, bitrate, timeout)
    return result


def render_preview(score: Score, folder: str | os.PathLike, stem: str, stems: bool = True,
                   soundfont: str | os.PathLike | None = None, bitrate: int | None = None, timeout: float = 120.0,
                   rate: int = SAMPLE_RATE, processes: int | None = None, stem_groups: list[int] | None = None,
                   backing: RenderedAhead | None = None) -> tuple[RenderResult, list[Stem]]:
    """The mix `folder/stem.mp3` and, with `stems`, per instrument group `folder/stem-GROUP.flac` and
    `folder/stem-GROUP.mid` (the folder is made when missing), from FluidSynth runs of the groups: the mix is the sum
    of the stems, all with one gain.  `stem_groups`: stems of these groups only (a part edit's new part: the
    other parts are the song's own); the other groups are rendered together at the same time, and the mix is
    their sum with the stems (`backing`: those groups rendered ahead, used when they are exactly its notes).
    Without `stems` (or for a score without notes) it is render_mp3 and the list is empty.  `processes`: the
    programs it runs at once (default one per core; the page's variants, rendered side by side, share them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return _render(score, folder / f"{stem}.mp3", folder if stems else None, stem, None, soundfont, rate,
                   bitrate, timeout, processes, stem_groups, backing)


def render_stems(score: Score, folder: str | os.PathLike, stem_prefix: str, gain_db: float | None = None,
                 soundfont: str | os.PathLike | None = None, timeout: float = 120.0,
                 rate: int = SAMPLE_RATE) -> list[Stem]:
    """Per instrument group `folder/PREFIX-GROUP.flac` and `.mid`, as render_preview makes them, without
    the MP3.  `gain_db`: the gain to apply (e.g. an earlier RenderResult.gain_db); None computes the mix's
    gain (TARGET_LUFS, peak ceiling) from the sum of the stems."""
    return _render(score, None, Path(folder), stem_prefix, gain_db, soundfont, rate, None, timeout)[1]


def decode_audio(path: str | os.PathLike, rate: int = SAMPLE_RATE, timeout: float = 60.0,
                 channels: int = 1) -> np.ndarray:
    """Any audio file ffmpeg reads (MP3, FLAC) -> float32 samples in [-1, 1] at `rate`: (frames,) for
    channels=1 (a downmix), else (frames, channels)."""
    if not shutil.which("ffmpeg"):
        raise RenderError("ffmpeg is not installed, so the audio cannot be decoded")
    try:
        proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "s16le", "-ac",
                               str(channels), "-ar", str(rate), "-"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"decoding took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RenderError(f"ffmpeg could not decode {Path(path).name}: {proc.stderr.decode(errors='replace')[-300:]}")
    pcm = np.frombuffer(proc.stdout, "<i2").astype(np.float32) / 32768.0
    return pcm if channels == 1 else pcm.reshape(-1, channels)
