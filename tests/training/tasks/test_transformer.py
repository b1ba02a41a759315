"""The one evaluate command on transformer checkpoints."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_evaluate_command_reports_loss_accuracy_and_bits_per_note(tiny_run, tiny_corpus):
    cmd = [sys.executable, "-m", "training.evaluate", "--data", str(tiny_corpus), "--split", "test",
           "--max-windows", "4", "--context", "64", str(tiny_run / "best"), str(tiny_run / "last")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [x["engine"] for x in rows] == ["transformer", "transformer"]
    for x in rows:
        assert x["windows"] == 4 and x["context"] == 64 and 0 < x["accuracy"] < 1
        assert x["bits_per_note"] > 0 and x["ppl_grouppitch"] > 1
    assert "bits_per_note" in r.stdout.splitlines()[-3]


def test_evaluate_command_refuses_a_missing_checkpoint(tiny_corpus):
    r = subprocess.run([sys.executable, "-m", "training.evaluate", "--data", str(tiny_corpus), "/nonexistent"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "/nonexistent" in r.stderr


def test_evaluate_reports_the_real_songs_split(tiny_run, tmp_path):
    """--split realtest (the held-out real songs) reports the same figures as the other splits; a corpus built
    without them gets a one-line error that says how to build them."""
    from tests.conftest import MIDI_FIXTURES, write_corpus

    data = write_corpus(tmp_path / "c", {"train": MIDI_FIXTURES[:2], "validation": MIDI_FIXTURES[2:3],
                                         "test": MIDI_FIXTURES[3:4], "realtest": MIDI_FIXTURES[4:6]})
    cmd = [sys.executable, "-m", "training.evaluate", "--data", str(data), "--split", "realtest", "--max-windows", "3",
           "--context", "64", str(tiny_run / "best")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert row["split"] == "realtest" and row["windows"] == 3 and row["bits_per_note"] > 0 and 0 < row["accuracy"] < 1
    cmd[cmd.index("realtest")] = "realdev"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "realdev.tokens.npy" in r.stderr
    assert "real-songs sources" in r.stderr
    r = subprocess.run([sys.executable, "-m", "training.evaluate", "--data", str(data), "--split", "realtest",
                        "--engine", "cnn", str(tiny_run / "best")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "transformer checkpoints only" in r.stderr
