"""The report end to end on a tiny checkpoint: --pieces 2, every engine, plots and tables."""

import json
import os
import subprocess
import sys
from pathlib import Path

from evaluation import style as S

ROOT = Path(__file__).resolve().parents[2]


def test_report_end_to_end(corpus, tiny_checkpoint_root, tmp_path):
    from training.data import load_split

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
    assert eng["held_out"]["windows"] == 2 and eng["held_out"]["loss"] > 0
    assert eng["seconds_per_variant"] > 0
    assert 0.0 <= eng["compare"]["polyphony"]["oa"] <= 1.0
    assert rep["train"]["compare"]["pitch_class_entropy"]["oa"] > 0.5
    assert rep["n_real"] == 16 and rep["classifier"]["real_test_n"] == 16


def test_adherence_counts_parts_heard_in_both_halves():
    import numpy as np

    from evaluation.report import adherence
    from model.engine import GenerationRequest
    from tokenizer import Score, make_notes
    from tokenizer import vocab as V

    bar = V.STEPS_PER_BAR
    req = GenerationRequest(groups=("piano", "bass"), drums=True, bars=4).validate()

    def score(parts):  # parts: (group, onset bar)
        g, b = np.array([p[0] for p in parts]), np.array([p[1] for p in parts])
        return Score(make_notes(b * bar, np.full(len(b), 8), 5, g, np.full(len(b), 40)), length=4 * bar)

    piano, bass, drums = V.GROUPS.index("piano"), V.GROUPS.index("bass"), V.DRUM_GROUP
    full = score([(piano, 0), (bass, 0), (drums, 1), (piano, 2), (bass, 3), (drums, 3)])
    drums_die = score([(piano, 0), (bass, 0), (drums, 1), (piano, 2), (bass, 3)])
    adh = adherence([req, req], [full, drums_die], None)
    assert adh["heard"] == 0.5 and adh["drums_iff"] == 1.0 and adh["group_share"] == 1.0
