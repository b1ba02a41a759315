"""gradio belongs to the page alone: no other package imports it (in source, imports inside functions included),
and importing every other package's modules leaves it out of sys.modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tokenizer", "model", "training", "evaluation", "render", "studio", "bench")


def modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_package_but_the_page_imports_gradio():
    offenders = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in modules(pkg)
                 if "gradio" in imported_names(p)]  # gradio_client, an HTTP client, may drive the page from bench/
    assert not offenders, offenders
    assert "gradio" in set().union(*(imported_names(p) for p in modules("page")))
    assert "gradio" not in imported_names(ROOT / "app.py")  # the entry point asks the page


def test_importing_the_service_and_the_engines_loads_no_gradio():
    mods = [".".join(p.relative_to(ROOT).with_suffix("").parts) for pkg in ("studio", "model", "render", "tokenizer")
            for p in modules(pkg) if p.name != "__main__.py"]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
