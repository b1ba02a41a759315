"""Fixtures for the studio tests: a real transformer checkpoint and the app served in-process.

The shipped checkpoint (checkpoints/transformer) is used when it exists.  Otherwise a tiny one is
trained for a few steps (the real training loop, on data/tmpc or data/corpus) into a per-session
folder, and MIDI_BANGERS_CHECKPOINTS points the engines at it.  That variable is read when
model.checkpoint is imported, so it is set here, at conftest import, before any test imports model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHIPPED = ROOT / "checkpoints" / "transformer"
HAS_SHIPPED = (SHIPPED / "config.json").is_file() and (SHIPPED / "model.safetensors").is_file()
_TEST_ROOT = Path(tempfile.gettempdir()) / f"midi-bangers-apptests-{os.getpid()}"
if not HAS_SHIPPED and not os.environ.get("MIDI_BANGERS_CHECKPOINTS"):
    os.environ["MIDI_BANGERS_CHECKPOINTS"] = str(_TEST_ROOT / "checkpoints")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Outputs of the app under test go to their own folder (inside a private Gradio cache folder).
os.environ.setdefault("GRADIO_TEMP_DIR", str(_TEST_ROOT / "gradio"))

OPENMSX = sorted(Path("/usr/share/games/openttd/baseset/openmsx").glob("*.mid"))


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
        pytest.fail("model.checkpoint was imported before tests/app/conftest.py could point it at a test "
                    "checkpoint; run tests/app first or ship checkpoints/transformer")
    data = _tiny_data_dir()
    if data is None:
        pytest.skip("no checkpoint shipped and no token data (data/tmpc or data/corpus) to train a tiny one")
    out = _TEST_ROOT / "train"
    cmd = [sys.executable, "-m", "training.train", "--preset", "tiny", "--data", str(data), "--out", str(out),
           "--steps", "40", "--batch", "8", "--eval-every", "40", "--ckpt-every", "40", "--val-windows", "4",
           "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root).mkdir(parents=True, exist_ok=True)
    shutil.copytree(out / "last", root / "transformer", ignore=shutil.ignore_patterns("optimizer*"))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


UPLOAD_CAP_BYTES = 1024 * 1024  # small, so that a test can go past it with a few uploads


@pytest.fixture(scope="session")
def app_server(checkpoint_root):
    """(url, store, uploads): the studio launched in-process on a free loopback port, with its output
    folders and the uploads in its Gradio cache (small caps); closed at the end."""
    import app
    from studio import OutputStore, UploadCache

    cache = Path(os.environ["GRADIO_TEMP_DIR"])  # Gradio's cache: uploads, and our outputs inside it
    store = OutputStore(cache / "midi-bangers", keep=6)
    uploads = UploadCache(cache, keep=64, max_bytes=UPLOAD_CAP_BYTES)
    demo = app.build_demo(store, uploads)
    port = free_port()
    app.serve(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", store, uploads
    finally:
        demo.close()


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client

    # its downloads go to their own folder, not into the server's Gradio cache (where they would count as uploads)
    return Client(app_server[0], verbose=False, download_files=str(_TEST_ROOT / "downloads"))


@pytest.fixture(scope="session", autouse=True)
def _cleanup_test_root():
    yield
    shutil.rmtree(_TEST_ROOT, ignore_errors=True)
