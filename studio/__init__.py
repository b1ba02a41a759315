"""The page's service layer (no gradio): values by name -> request, pipeline, results, bounded stores, the zip and
its session.json, per-session history, and the runner generation goes through.

    studio = Studio(OutputStore(), UploadCache())
    result = studio.generate({"engine": "transformer", "groups": ["piano", "bass"], "bars": 8}, session="abc")
    result.variants[0].midi, .mp3, .png; result.zip_path; result.summary; result.seed

Modules: `inputs` (page values by name -> validated request), `results` (Result, Variant, their wording),
`stores` (output folders and uploads bounded in count, age and bytes), `archive` (the zip), `history` (undo and
redo per session, Stop), `runner` (local or ZeroGPU), `pipeline` (engine -> variants -> files -> zip),
`service` (Studio, the object the page holds).
"""

from .history import CancelFlags, Cancelled, History, Sessions
from .inputs import (
    EDIT_COMMON,
    EDIT_DEFAULTS,
    GENERATE_DEFAULTS,
    NO_KEY,
    NO_KIT,
    NO_REFERENCE,
    NO_STYLE,
    Prepared,
    blank,
    edit_request,
    engine_options,
    file_path,
    generate_request,
    load_upload,
    parse_seed,
    to_choice,
    to_flag,
    to_names,
    to_number,
)
from .results import Result, Variant
from .service import Keep, Studio
from .stores import PRUNE_EVERY, Janitor, OutputStore, UploadCache

__all__ = [
    "Studio", "Result", "Variant", "Keep", "History", "Sessions", "CancelFlags", "Cancelled", "OutputStore",
    "UploadCache", "Janitor", "PRUNE_EVERY", "GENERATE_DEFAULTS", "EDIT_COMMON", "EDIT_DEFAULTS", "NO_STYLE",
    "NO_REFERENCE", "NO_KEY", "NO_KIT", "Prepared", "generate_request", "edit_request", "to_number", "blank",
    "parse_seed", "to_flag", "to_names", "to_choice", "file_path", "load_upload", "engine_options",
]
