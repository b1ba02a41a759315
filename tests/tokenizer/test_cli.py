"""`python -m tokenizer`: encode / decode / roundtrip / vocab, and bad input -> exit 2, one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tokenizer import encode, load_midi
from tokenizer import vocab as V

ROOT = Path(__file__).resolve().parents[2]


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tokenizer", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_encode_decode_roundtrip(midi_paths, tmp_path):
    src = midi_paths["type0_multichannel"]
    r = run("encode", src)
    assert r.returncode == 0, r.stderr
    tokens = json.loads(r.stdout)
    assert tokens == encode(load_midi(src)).tolist()
    r = run("encode", src, "--describe")
    assert r.returncode == 0 and json.loads(r.stdout)[:2] == ["START", "DRUMS_ON"]
    (tmp_path / "t.json").write_text(json.dumps(tokens))
    r = run("decode", tmp_path / "t.json", tmp_path / "out.mid")
    assert r.returncode == 0, r.stderr
    assert (load_midi(tmp_path / "out.mid").notes == load_midi(src).notes).all()
    r = run("roundtrip", src, tmp_path / "rt.mid")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["equal"] is True and info["notes_in"] == info["notes_out"] == 32
    assert info["drum_notes_in"] == info["drum_notes_out"] == 8


def test_vocab():
    r = run("vocab")
    assert r.returncode == 0 and str(V.VOCAB_SIZE) in r.stdout


@pytest.mark.parametrize("case", ["missing", "broken", "text", "bad_json", "not_list", "out_of_vocab",
                                  "negative", "wrong_slot", "no_args", "bad_command"])
def test_bad_input_exits_2_with_one_line(case, tmp_path, midi_paths):
    bad_mid = tmp_path / "bad.mid"
    bad_mid.write_bytes(midi_paths["zero_length"].read_bytes()[:40])
    js = tmp_path / "t.json"
    args = {
        "missing": ("encode", tmp_path / "nope.mid"),
        "broken": ("roundtrip", bad_mid, tmp_path / "o.mid"),
        "text": ("encode", js),
        "bad_json": ("decode", js, tmp_path / "o.mid"),
        "not_list": ("decode", js, tmp_path / "o.mid"),
        "out_of_vocab": ("decode", js, tmp_path / "o.mid"),
        "negative": ("decode", js, tmp_path / "o.mid"),
        "wrong_slot": ("decode", js, tmp_path / "o.mid"),
        "no_args": (),
        "bad_command": ("frobnicate",),
    }[case]
    js.write_text({"bad_json": "[1, 2,", "not_list": '{"a": 1}', "out_of_vocab": f"[1, 3, {V.VOCAB_SIZE}]",
                   "negative": "[1, 3, -5]", "wrong_slot": f"[1, 3, {V.START}, {V.SHIFT_OFFSET}, {V.SHIFT_OFFSET}, "
                   f"{V.SHIFT_OFFSET}]"}.get(case, "hello"))
    r = run(*args)
    assert r.returncode == 2
    if case in ("no_args", "bad_command"):
        return  # argparse prints usage + one error line
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert not (tmp_path / "o.mid").exists()
