"""Budgets the whole repository keeps: a GPU run carries the working tree (64 MiB at most) with its data."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 56 * 1024 * 1024


def test_tracked_files_stay_under_56_mib():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    total = sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())
    assert 0 < total < LIMIT, f"tracked files hold {total / 2**20:.1f} MiB"


# The path a click takes: page -> studio -> request, edits and the sampler.  Each file stays readable.
REQUEST_PATH = ["app.py", "page", "studio", "model/sampling", "model/edits.py", "model/request.py", "model/engine.py"]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 450, 90


def _python_files(paths):
    for p in paths:
        path = ROOT / p
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def test_the_request_path_has_no_file_over_450_lines_and_no_function_over_90():
    import ast

    long_files, long_functions = [], []
    for f in _python_files(REQUEST_PATH):
        src = f.read_text(encoding="utf-8")
        if len(src.splitlines()) > MAX_FILE_LINES:
            long_files.append(str(f.relative_to(ROOT)))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long_functions.append(f"{f.relative_to(ROOT)}:{node.name}")
    assert not long_files and not long_functions, (long_files, long_functions)


def test_an_edit_kinds_name_appears_in_at_most_three_source_files():
    from model.edits import EDITS

    sources = [p for p in ROOT.rglob("*.py") if not ({".venv", "tests", "__pycache__"} & set(p.relative_to(ROOT).parts))]
    texts = {p: p.read_text(encoding="utf-8") for p in sources}
    for name in EDITS:
        holders = [str(p.relative_to(ROOT)) for p, t in texts.items() if f'"{name}"' in t or f"'{name}'" in t]
        assert len(holders) <= 3, (name, holders)
