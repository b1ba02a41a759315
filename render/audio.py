"""MIDI -> WAV (FluidSynth, General MIDI soundfont with drum kits) -> trimmed, peak-normalized MP3.

The soundfont is found in this order: the `soundfont` argument, $MIDI_BANGERS_SOUNDFONT, then the
usual Debian/Ubuntu/Homebrew places (fluid-soundfont-gm installs /usr/share/sounds/sf2/FluidR3_GM.sf2).
Every external program runs with a timeout.  Anything that stops a preview raises `RenderError`,
whose message starts with "no preview:" so the page can show it while still delivering the MIDI.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenizer import Score, to_midi_bytes

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
PEAK = 10 ** (-1.0 / 20)  # normalize to -1 dBFS
SILENCE_DB = -60.0  # below this (relative to full scale) counts as silence when trimming the tail
TAIL_SECONDS = 0.3  # keep this much after the last audible sample (a short natural decay)
MAX_SECONDS = 30 * 60  # refuse to render more than 30 minutes of audio


class RenderError(RuntimeError):
    """No preview could be made; str(e) starts with "no preview:" and says why."""

    def __init__(self, reason: str):
        super().__init__(f"no preview: {reason}")


@dataclass
class RenderResult:
    path: Path  # the MP3
    seconds: float  # length of the audio after trimming
    render_seconds: float  # wall time of synthesis + encoding


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


def _run(cmd: list[str], timeout: float, what: str) -> str:
    """Run a program with a timeout; returns its stderr; a failure becomes a RenderError."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{what} took longer than {timeout:.0f} s") from None
    except OSError as e:
        raise RenderError(f"{what} could not start ({e.strerror or e})") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RenderError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail) or 'no message'}")
    return (proc.stderr or b"").decode("utf-8", "replace")


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> float32 array (frames, channels) in [-1, 1], sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise RenderError(f"unexpected WAV sample width {w.getsampwidth()}")
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
        return data.reshape(-1, w.getnchannels()), w.getframerate()


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int) -> None:
    pcm = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def trim_silence(samples: np.ndarray, rate: int, threshold_db: float = SILENCE_DB,
                 tail: float = TAIL_SECONDS) -> np.ndarray:
    """Cut trailing silence (everything after the last sample above threshold, plus `tail` seconds)."""
    if not len(samples):
        return samples
    level = np.abs(samples).max(axis=1)
    loud = np.flatnonzero(level > 10 ** (threshold_db / 20))
    if not len(loud):
        return samples[: min(len(samples), int(rate * tail))]
    return samples[: min(len(samples), int(loud[-1]) + 1 + int(rate * tail))]


def normalize_peak(samples: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale so that the loudest sample sits at `peak` (silence stays silence)."""
    m = float(np.abs(samples).max()) if len(samples) else 0.0
    return samples if m < 1e-6 else samples * (peak / m)


def render_wav(midi: Score | bytes, wav_path: str | os.PathLike, soundfont: str | os.PathLike | None = None,
               rate: int = SAMPLE_RATE, timeout: float = 120.0, gain: float = 0.6) -> Path:
    """Synthesize MIDI to a raw (untrimmed) 16-bit stereo WAV with the fluidsynth program."""
    sf2 = find_soundfont(soundfont)
    exe = find_fluidsynth()
    wav_path = Path(wav_path)
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        mid = Path(tmp) / "in.mid"
        mid.write_bytes(_midi_bytes(midi))
        err = _run([exe, "-ni", "-q", "-g", str(gain), "-r", str(rate), "-F", str(wav_path), "-T", "wav",
              "-O", "s16", str(sf2), str(mid)], timeout, "FluidSynth")
    if "Failed to load SoundFont" in err:  # fluidsynth goes on (exit 0) and renders silence
        raise RenderError(f"FluidSynth could not load the soundfont {sf2}")
    if not wav_path.is_file() or wav_path.stat().st_size <= 44:
        raise RenderError("FluidSynth wrote no audio")
    return wav_path


def encode_mp3(wav_path: str | os.PathLike, mp3_path: str | os.PathLike, bitrate: int = 128,
               timeout: float = 120.0) -> Path:
    enc = find_encoder()
    if enc[0] == "lame":
        cmd = ["lame", "--quiet", "-b", str(bitrate), str(wav_path), str(mp3_path)]
    else:
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav_path), "-codec:a", "libmp3lame",
               "-b:a", f"{bitrate}k", str(mp3_path)]
    _run(cmd, timeout, "MP3 encoding")
    return Path(mp3_path)


def render_mp3(midi: Score | bytes, mp3_path: str | os.PathLike, soundfont: str | os.PathLike | None = None,
               bitrate: int = 128, timeout: float = 120.0) -> RenderResult:
    """MIDI (Score or bytes) -> trimmed, peak-normalized MP3 at `mp3_path`."""
    if isinstance(midi, Score) and midi.seconds() > MAX_SECONDS:
        raise RenderError(f"the piece is longer than {MAX_SECONDS // 60} minutes")
    t0 = time.perf_counter()
    mp3_path = Path(mp3_path)
    with tempfile.TemporaryDirectory(prefix="render-", dir=mp3_path.parent) as tmp:
        raw = render_wav(midi, Path(tmp) / "raw.wav", soundfont=soundfont, timeout=timeout)
        samples, rate = read_wav(raw)
        samples = normalize_peak(trim_silence(samples, rate))
        if not len(samples):
            samples = np.zeros((rate // 10, 2), np.float32)  # an empty piece: a tenth of a second of silence
        clean = Path(tmp) / "clean.wav"
        write_wav(clean, samples, rate)
        encode_mp3(clean, mp3_path, bitrate=bitrate, timeout=timeout)
    return RenderResult(mp3_path, len(samples) / rate, time.perf_counter() - t0)


def decode_audio(path: str | os.PathLike, rate: int = SAMPLE_RATE, timeout: float = 60.0) -> np.ndarray:
    """Any audio file ffmpeg reads (MP3 here) -> float32 mono samples in [-1, 1] at `rate`."""
    if not shutil.which("ffmpeg"):
        raise RenderError("ffmpeg is not installed, so the audio cannot be decoded")
    try:
        proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                               "-ar", str(rate), "-"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"decoding took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise RenderError(f"ffmpeg could not decode {Path(path).name}: {proc.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(proc.stdout, "<i2").astype(np.float32) / 32768.0
