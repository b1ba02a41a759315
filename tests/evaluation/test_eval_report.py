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
    # adherence: parts heard per bar for every engine, key / chords for the transformer (it takes both)
    assert "## Adherence" in md and "| transformer | " in md.split("## Adherence")[1]
    bars = eng["bar_adherence"]
    assert 0.0 < bars["requested_parts_heard"] <= 1.0 and bars["silent_bars"] == 0.0 and bars["n"] == 2
    k = eng["key_chord_adherence"]
    assert k["asked"] == "key + chords" and k["n"] == 2 and k["in_key"] == 1.0 and k["silent_bars"] == 0.0
    assert k["bass_on_chord_tones"] in (1.0, None) and 0.0 <= k["chord_tones_on_strong_beats"] <= 1.0
    assert 0.5 < rep["real"]["bars"]["requested_parts_heard"] <= 1.0 and rep["adherence_pieces"] == 2


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


def _stub_engine(name, controls):
    """A tiny engine without a network: each request gets one variant, every requested part (and drums)
    on beats 1 and 3 of every bar but the last, its pitched notes on tones of the bar's chord (or C major)."""
    import threading

    import numpy as np

    from model.engine import Engine
    from tokenizer import Score, make_notes
    from tokenizer import vocab as V

    class Stub(Engine):
        unit = "notes"

        def _generate(self, req, progress):
            chords = [sorted(c.tones) for c in req.parsed_chords] or [[0, 4, 7]]
            groups = req.group_ids + ([V.DRUM_GROUP] if req.drums else [])
            on, g, p = [], [], []
            for bar in range(req.bars - 1):
                chord = chords[bar % len(chords)]
                for k, grp in enumerate(groups):
                    for beat in (0, 16):
                        on.append(bar * 32 + beat), g.append(grp)
                        p.append(36 if grp == V.DRUM_GROUP else 48 + chord[k % len(chord)])
            notes = make_notes(np.array(on), np.full(len(on), 8), 5, np.array(g), np.array(p))
            return [Score(notes, length=req.bars * 32)], {"count": len(on)}

    Stub.name, Stub.controls = name, frozenset(controls)
    eng = object.__new__(Stub)
    eng.source, eng.last_stats, eng._lock, eng.description = name, {}, threading.Lock(), "a stub"
    return eng


def test_adherence_columns_per_engine(monkeypatch):
    """Parts heard per bar for every engine; key / chord figures over a second set of requests for the
    engines whose controls take a key and chords (read at run time), as far as they take them."""
    import model.engine as E
    from evaluation import report as R

    plain = _stub_engine("plain", {"groups", "drums", "bars", "seed"})
    keyed = _stub_engine("keyed", {"groups", "drums", "bars", "seed", "key", "chords"})
    key_only = _stub_engine("key-only", {"groups", "drums", "bars", "seed", "key"})
    engines = {e.name: e for e in (plain, keyed, key_only)}
    monkeypatch.setattr(E, "get_engine", lambda name, checkpoint=None: engines[name])
    rows = [{"groups": ["piano", "bass"], "drums": True, "style": "rock"}]
    res = {n: R.run_engine(n, rows, 4, 0, None, None, None, 1, with_model_metrics=False, adherence_pieces=3)
           for n in engines}
    for r in res.values():  # 7 of 8 bars hold every requested part; the last is silent
        assert r["bar_adherence"]["requested_parts_heard"] == 7 / 8 and r["bar_adherence"]["silent_bars"] == 1 / 8
        assert r["bar_adherence"]["n"] == 4
    assert res["plain"]["key_chord_adherence"] is None
    k = res["keyed"]["key_chord_adherence"]
    assert k["asked"] == "key + chords" and k["n"] == 3
    assert k["in_key"] == 1.0 and k["chord_tones_on_strong_beats"] == 1.0 and k["bass_on_chord_tones"] == 1.0
    assert res["key-only"]["key_chord_adherence"]["asked"] == "key"
    assert res["key-only"]["key_chord_adherence"]["chord_tones_on_strong_beats"] is None
    reqs, asked = R.key_chord_requests(keyed, R.requests_for(keyed, rows, 8, 0), 8)
    assert [(q.key, q.chords) for q in reqs[:2]] == list(R.KEY_CHORDS[:2]) and len(reqs) == 8
    real = R.real_parts_heard([_stub_engine("x", set())._generate(reqs[0], None)[0][0]])
    assert real["requested_parts_heard"] == 7 / 8 and real["silent_bars"] == 1 / 8
