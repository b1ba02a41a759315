"""The page: the only package that imports gradio.  Layout and wiring (layout.py), module-level handlers
(handlers.py), one table of controls (controls.py), the named endpoints and MCP tools generated from the edit
registry (endpoints.py), the live piano roll (roll.py).

    demo = build_demo(Studio())          # studio/: the service layer
    serve(demo)                          # 0.0.0.0:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)

API (gradio_client: `Client(url).predict(groups=["piano"], bars=4, api_name="/generate")`; README.md has an
example of each): /generate takes the controls by name (page/controls.py; every one has a default) and returns
the seed used, a summary, a zip, then per variant slot 1..8 its piano-roll PNG, MP3 and MIDI; /continue,
/add_part, /regenerate_part and /infill take a MIDI file, the edit's own fields and the shared settings, and
return the edited MIDI, its MP3, its piano roll and a summary.  Both take the values as sent (no Gradio
preprocessing): a wrong type, a value out of range or a choice not in a list reaches the studio and comes back as
a message that names the field.  The page's own events (editing a variant, undo, redo, keep) are private.  The
same named endpoints are MCP tools (at /gradio_api/mcp/; MIDI_BANGERS_MCP=0 turns it off).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home; works offline

import anyio  # noqa: E402
import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from tokenizer.score import MAX_FILE_BYTES  # noqa: E402

from .layout import build_demo  # noqa: E402

# System fonts only: the default theme would fetch Google Fonts, which an offline machine cannot.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# lighter borders than the theme's; the variant's edit buttons in one compact row
CSS = (".variant-slot {border: 1px solid #eceef2 !important; border-radius: 8px; padding: 6px} "
       ".variant-actions button {min-width: 0 !important} .block {border-color: #eceef2 !important}")


class PruneAfterUpload:
    """ASGI middleware: after each request to Gradio's upload route, the uploads are pruned (their caps, and a
    refused upload's leftover), so the total stays within the cap between the janitor's timed passes."""

    def __init__(self, app, uploads):
        self.app, self.uploads = app, uploads

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)
        if scope.get("type") == "http" and scope.get("path", "").rstrip("/").endswith("/upload"):
            await anyio.to_thread.run_sync(self.uploads.prune)


def serve(demo: gr.Blocks, host: str | None = None, port: int | None = None, mcp_server: bool | None = None,
          **kwargs):
    """Launch with the studio's settings (offline theme, no SSR, uploads limited to what the tokenizer
    accepts for a MIDI file and pruned after each upload) and the MCP server at /gradio_api/mcp/ (off with
    MIDI_BANGERS_MCP=0)."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    if mcp_server is None:
        mcp_server = os.environ.get("MIDI_BANGERS_MCP", "1").strip().lower() not in ("0", "false", "no", "off")
    uploads = getattr(getattr(demo, "studio", None), "uploads", None)
    if uploads is not None:
        kwargs.setdefault("app_kwargs", {}).setdefault("middleware", []).append(
            Middleware(PruneAfterUpload, uploads=uploads))
    return demo.launch(server_name=host, server_port=port, theme=THEME, css=CSS, ssr_mode=False,
                       max_file_size=MAX_FILE_BYTES, show_error=True, mcp_server=mcp_server, **kwargs)


__all__ = ["build_demo", "serve", "THEME", "CSS"]
