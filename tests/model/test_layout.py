"""model/ is inference only: importing it pulls in nothing from training/ or evaluation/, and its source imports
nothing from the studio or the page; the modules of every package import one another without a cycle; every
engine takes --checkpoint, and a missing one is one clear line and exit status 2."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ["transformer", "gru", "lstm", "multi-rnn", "style-vae", "vae-nn", "cnn"]
# every package whose modules join the import graph (the studio and the page where they exist)
PACKAGES = ("tokenizer", "model", "training", "evaluation", "render", "bench", "studio", "page")
UNFINISHED = ("studio", "page")  # being written: a module that does not parse yet is left out


def module_sources() -> dict[str, ast.Module]:
    """{dotted module name: its parsed source} for every module of PACKAGES (a folder, or one file pkg.py)."""
    out = {}
    for pkg in PACKAGES:
        folder = ROOT / pkg
        files = sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts) if folder.is_dir() \
            else [ROOT / f"{pkg}.py"] if (ROOT / f"{pkg}.py").is_file() else []
        for path in files:
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            try:
                out[name] = (ast.parse(path.read_text(encoding="utf-8")), path.name == "__init__.py")
            except SyntaxError:
                if pkg not in UNFINISHED:
                    raise
    return out


def imported_modules(name: str, tree: ast.Module, is_package: bool, known) -> set[str]:
    """The modules of `known` that module `name` imports anywhere in its source (inside functions too), with
    the packages Python runs on the way to them (not `name`'s own)."""
    package = name if is_package else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets |= {base} | {f"{base}.{a.name}" for a in node.names}  # a name may be a submodule
    out = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            if module in known and not (name == module or name.startswith(module + ".")):
                out.add(module)
    return out


def import_graph() -> dict[str, set[str]]:
    sources = module_sources()
    return {name: imported_modules(name, tree, is_pkg, sources) for name, (tree, is_pkg) in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert {"model.engine", "model.sampling.decode", "tokenizer.score"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_model_imports_nothing_from_the_layers_above_it():
    graph = import_graph()
    above = ("training", "evaluation", "studio", "page")
    wrong = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.split(".")[0] == "model" for t in ts
                   if t.split(".")[0] in above)
    assert not wrong, wrong


def test_model_imports_nothing_from_training_or_evaluation():
    code = ("import sys, model, model.transformer, model.cnn, model.vae_nn, model.recurrent, model.style_vae, "
            "model.generate, model.engine; model.engine.engine_names(); "
            "print([m for m in sys.modules if m.split('.')[0] in ('training', 'evaluation')])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_registry_lists_every_engine():
    from model.engine import engine_names

    assert set(ENGINES) <= set(engine_names())


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_checkpoint_is_one_line_and_exit_2(engine, tmp_path):
    r = subprocess.run([sys.executable, "-m", "model.generate", "--engine", engine, "--checkpoint", "/nonexistent",
                        "--bars", "1", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "/nonexistent" in r.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("engine", ENGINES)
def test_checkpoint_folder_is_honoured(engine, tmp_path):
    """A checkpoint folder passed to the engine (the shipped one, copied and marked) is the one it loads,
    by the registry and by the CLI."""
    import shutil

    from model import checkpoint as ckpt
    from model.engine import get_engine

    dst = tmp_path / "ck"
    shutil.copytree(ckpt.CHECKPOINT_ROOT / engine, dst)
    cfg = json.loads((dst / ckpt.CONFIG_NAME).read_text())
    cfg["meta"] = {**cfg.get("meta", {}), "marker": "copied for the test"}
    (dst / ckpt.CONFIG_NAME).write_text(json.dumps(cfg))
    eng = get_engine(engine, dst)
    assert eng.source == str(dst) and eng.meta["marker"] == "copied for the test"
    assert get_engine(engine) is not eng and "marker" not in get_engine(engine).meta
