"""Fixtures every test package shares: the checkpoint root the engines load (checkpoint_root), the MIDI
files shipped in tests/fixtures/midi, one tiny corpus built from them (laid out like data/corpus), the real corpus where it has been built, and a tiny
transformer trained on the tiny corpus for a few steps (the real training loop)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import tokenizer as T

ROOT = Path(__file__).resolve().parents[1]

# The checkpoints the engines load (read when model.checkpoint is imported, so set here, before any test imports
# model): the shipped ones, or where none is shipped a tiny transformer trained for a few steps (`checkpoint_root`).
SHIPPED = ROOT / "checkpoints" / "transformer"
HAS_SHIPPED = (SHIPPED / "config.json").is_file() and (SHIPPED / "model.safetensors").is_file()
TEST_ROOT = Path(tempfile.gettempdir()) / f"midi-bangers-apptests-{os.getpid()}"
if not HAS_SHIPPED and not os.environ.get("MIDI_BANGERS_CHECKPOINTS"):
    os.environ["MIDI_BANGERS_CHECKPOINTS"] = str(TEST_ROOT / "checkpoints")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Outputs of the app under test go to their own folder (inside a private Gradio cache folder).
os.environ.setdefault("GRADIO_TEMP_DIR", str(TEST_ROOT / "gradio"))

OPENMSX = sorted(Path("/usr/share/games/openttd/baseset/openmsx").glob("*.mid"))
MIDI_FIXTURES = sorted((Path(__file__).parent / "fixtures" / "midi").glob("*.mid"))
REAL_CORPUS = ROOT / "data" / "corpus"
# tiny corpus: which fixture files go to which split, and the style labels they get (two styles, so
# style-conditioned code sees more than one)
TINY_SPLITS = {"train": MIDI_FIXTURES[:5], "validation": MIDI_FIXTURES[5:6], "test": MIDI_FIXTURES[6:8]}
TINY_STYLES = ("game", "rock")


def write_corpus(out: Path, splits: dict[str, list[Path]]) -> Path:
    """A corpus folder like `python -m training.corpus build` writes: per split the token stream
    ({split}.tokens.npy, uint16) and its index ({split}.index.jsonl), and stats.json."""
    out.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, files in splits.items():
        toks, rows, off = [], [], 0
        for f in files:
            score = T.load_midi(f)
            t = T.encode(score)
            style = TINY_STYLES[k % len(TINY_STYLES)]
            k += 1
            rows.append({"id": f"fixture:{f.name}", "group": f.stem, "source": "fixture", "style": style,
                         "groups": [T.vocab.GROUPS[g] for g in score.groups if g != T.vocab.DRUM_GROUP],
                         "drums": score.has_drums, "n_notes": int(len(score.notes)), "bars": score.n_bars,
                         "length": int(len(t)), "offset": off, "bpm": round(score.bpm, 2),
                         "time_signature": list(score.time_signature)})
            toks.append(t)
            off += len(t)
        np.save(out / f"{split}.tokens.npy", np.concatenate(toks).astype(np.uint16))
        (out / f"{split}.index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "stats.json").write_text(json.dumps({"pieces": k, "source": "tests/fixtures/midi"}) + "\n")
    return out


def train_tiny(engine: str, data: Path, out: Path, steps: int, every: int, val_windows: int,
               lr: str = "1e-2", batch: int = 16) -> Path:
    """A few steps of the real training loop with the engine's tiny preset; returns the run folder."""
    from training.train import main

    rc = main(["--engine", engine, "--preset", "tiny", "--data", str(data), "--out", str(out), "--steps", str(steps),
               "--batch", str(batch), "--lr", lr, "--eval-every", str(every), "--ckpt-every", str(every),
               "--val-windows", str(val_windows), "--log-every", "5", "--quiet"])
    assert rc == 0
    return out


def _tiny_data_dir() -> Path | None:
    for d in (ROOT / "data" / "tmpc", ROOT / "data" / "corpus"):
        if (d / "train.tokens.npy").is_file() and (d / "validation.tokens.npy").is_file():
            return d
    return None


@pytest.fixture(scope="session")
def checkpoint_root() -> Path:
    """The folder holding transformer/ (config.json + model.safetensors) that the engines load."""
    from model import checkpoint as ckpt

    root = Path(ckpt.CHECKPOINT_ROOT)
    if (root / "transformer" / "config.json").is_file():
        return root
    if os.environ.get("MIDI_BANGERS_CHECKPOINTS") != str(root):
        pytest.fail("model.checkpoint was imported before tests/conftest.py could point it at a test "
                    "checkpoint; run tests/app first or ship checkpoints/transformer")
    data = _tiny_data_dir()
    if data is None:
        pytest.skip("no checkpoint shipped and no token data (data/tmpc or data/corpus) to train a tiny one")
    out = TEST_ROOT / "train"
    cmd = [sys.executable, "-m", "training.train", "--preset", "tiny", "--data", str(data), "--out", str(out),
           "--steps", "40", "--batch", "8", "--eval-every", "40", "--ckpt-every", "40", "--val-windows", "4",
           "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root).mkdir(parents=True, exist_ok=True)
    shutil.copytree(out / "last", root / "transformer", ignore=shutil.ignore_patterns("optimizer*"))
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """Eight real songs as a corpus: 5 train, 1 validation, 2 test pieces."""
    return write_corpus(tmp_path_factory.mktemp("tiny_corpus"), TINY_SPLITS)


@pytest.fixture(scope="session")
def real_corpus() -> Path:
    """data/corpus, where `make corpus` has built it (tests that need many styles or pieces)."""
    if not all((REAL_CORPUS / f"{s}.{k}").is_file() for s in ("train", "test") for k in ("tokens.npy", "index.jsonl")):
        pytest.skip("no corpus at data/corpus (make corpus)")
    return REAL_CORPUS


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus, tmp_path_factory) -> Path:
    from training.train import main

    out = tmp_path_factory.mktemp("tiny_run")
    rc = main(["--preset", "tiny", "--data", str(tiny_corpus), "--out", str(out), "--steps", "60", "--batch", "8",
               "--lr", "3e-3", "--eval-every", "30", "--ckpt-every", "30", "--val-windows", "8", "--log-every", "10",
               "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def tiny_engine(tiny_run):
    from model.transformer import TransformerEngine

    return TransformerEngine(tiny_run / "best", quantize=False)


@pytest.fixture()
def env_checkpoints(tiny_run, tmp_path, monkeypatch):
    """MIDI_BANGERS_CHECKPOINTS root holding the tiny run as the transformer engine's checkpoint."""
    import shutil

    root = tmp_path / "ckroot"
    shutil.copytree(tiny_run / "best", root / "transformer")
    monkeypatch.setenv("MIDI_BANGERS_CHECKPOINTS", str(root))
    return root


@pytest.fixture(scope="session")
def roll_corpus(tiny_corpus) -> Path:
    """The shared tiny corpus (tests/conftest.py), under the name the pianoroll engine tests use."""
    return tiny_corpus


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): small models
    decode fastest on one thread, and leave the shared cores to other work."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- a real browser: Debian's headless Chromium through Selenium and the system chromedriver ----------
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_TEST = [
    pytest.mark.browser,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="Debian chromium and chromium-driver are not installed"),
]


@pytest.fixture
def browser():
    """Headless Chromium (1400 x 1800, audio may play without a gesture), its profile removed afterwards."""
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1800", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)



@pytest.fixture(scope="session", autouse=True)
def _cleanup_test_root():
    yield
    shutil.rmtree(TEST_ROOT, ignore_errors=True)
