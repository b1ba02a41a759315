"""model/ is inference only: importing it pulls in nothing from training/ or evaluation/; every engine
takes --checkpoint, and a missing one is one clear line and exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ["transformer", "gru", "lstm", "multi-rnn", "style-vae", "vae-nn", "cnn"]


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
