"""The report end to end on a tiny checkpoint: --pieces 2, every engine, plots and tables."""

import json
import os
import subprocess
import sys
from pathlib import Path

from evaluation import style as S

ROOT = Path(__file__).resolve().parents[2]


def test_report_end_to_end(corpus, tiny_checkpoint_root, tmp_path):
    from training.corpus import load_split

    _, rows = load_split(corpus, "train")
    picked = [r for r in rows[::40]][:120]
    X, y = S.excerpt_dataset(S.corpus_scores(corpus, "train", picked))
    S.train_classifier(X, y, hidden=16, steps=100).save(tmp_path / "clf")

    out = tmp_path / "report"
    env = dict(os.environ, MIDI_BANGERS_CHECKPOINTS=str(tiny_checkpoint_root))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("step,split,loss,accuracy\n10,train,5.0,0.2\n20,train,4.0,0.3\n"
                                         "20,validation,4.5,0.25\n")
    cmd = [sys.executable, "-m", "evaluation.report", "--engines", "all", "--pieces", "2", "--out", str(out),
           "--data", str(corpus), "--real-pieces", "16", "--model-windows", "2", "--style-classifier",
           str(tmp_path / "clf"), "--run", str(run_dir)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "report.md").read_text()
    for png in ("features.png", "pitch_classes.png", "training_curves.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in md
    assert "| real test (reference) |" in md and "| transformer |" in md
    rep = json.loads((out / "report.json").read_text())
    (eng,) = [e for e in rep["engines"] if e["name"] == "transformer"]
    adh = eng["adherence"]
    # grammar-constrained decoding: groups, drums and bars always hold
    assert adh["group_share"] == 1.0 and adh["drums_iff"] == 1.0 and adh["bars_exact"] == 1.0
    assert 0.0 <= adh["style"] <= 1.0 and adh["style_n"] == 2
    assert eng["model"]["windows"] == 2 and eng["model"]["loss"] > 0
    assert eng["seconds_per_variant"] > 0
    assert 0.0 <= eng["compare"]["polyphony"]["oa"] <= 1.0
    assert rep["train"]["compare"]["pitch_class_entropy"]["oa"] > 0.5
    assert rep["n_real"] == 16 and rep["classifier"]["real_test_n"] == 16
