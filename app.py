"""MIDI Bangers on Hugging Face Spaces (or any machine): build the page over the studio and serve it.

    python app.py            # serves on 0.0.0.0:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)
    MIDI_BANGERS_MCP=0 python app.py   # without the MCP server (on by default: /gradio_api/mcp/)

The page is page/ (layout, handlers, the controls table, the named endpoints and MCP tools); the service layer
is studio/.
"""

import logging
import os

# before torch loads: one OpenMP thread for every thread but the inference workers, which set their own (without
# it the worker decoded at about half speed; studio/worker.py)
os.environ.setdefault("OMP_NUM_THREADS", "1")

from page import build_demo, serve  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(build_demo())
