"""Fixtures for the page tests: the app served in-process on a loopback port, and a gradio_client for it
(the checkpoint the engines load is tests/conftest.py's `checkpoint_root`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import TEST_ROOT as _TEST_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


UPLOAD_CAP_BYTES = 1024 * 1024  # small, so that a test can go past it with a few uploads


@pytest.fixture(scope="session")
def app_server(checkpoint_root):
    """(url, store, uploads): the studio launched in-process on a free loopback port, with its output
    folders and the uploads in its Gradio cache (small caps); closed at the end."""
    from page import build_demo, serve
    from studio import OutputStore, Studio, UploadCache

    cache = Path(os.environ["GRADIO_TEMP_DIR"])  # Gradio's cache: uploads, and our outputs inside it
    store = OutputStore(cache / "midi-bangers", keep=6)
    uploads = UploadCache(cache, keep=64, max_bytes=UPLOAD_CAP_BYTES)
    demo = build_demo(Studio(store, uploads))
    port = free_port()
    serve(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", store, uploads
    finally:
        demo.close()


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client

    # its downloads go to their own folder, not into the server's Gradio cache (where they would count as uploads)
    return Client(app_server[0], verbose=False, download_files=str(_TEST_ROOT / "downloads"))
