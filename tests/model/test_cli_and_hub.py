import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tokenizer as T
from model.transformer import TransformerEngine
from tests.conftest import MIDI_FIXTURES
from training import hub

ROOT = Path(__file__).resolve().parents[2]


def run(args, env_root=None, **kw):
    env = dict(os.environ)
    if env_root:
        env["MIDI_BANGERS_CHECKPOINTS"] = str(env_root)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, **kw)


def test_generate_cli_writes_midi_and_prints_json(env_checkpoints, tmp_path):
    r = run(["model.generate", "--engine", "transformer", "--instruments", "piano,bass", "--drums", "--bars", "4",
             "--variants", "2", "--temperature", "1.0", "--seed", "7", "--top-k", "50", "--bpm", "100",
             "--out", str(tmp_path)], env_checkpoints)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["seed"] == 7 and len(info["files"]) == 2 and info["bars"] == [4, 4]
    for f, per_group in zip(info["files"], info["notes_per_group"], strict=True):
        s = T.load_midi(f)
        assert set(s.notes_per_group()) <= {"piano", "bass", "drums"}
        assert s.notes_per_group() == per_group
        assert abs(s.bpm - 100) < 0.01


def test_generate_cli_continues_a_prompt(env_checkpoints, tmp_path):
    r = run(["model.generate", "--instruments", "piano", "--no-drums", "--bars", "2", "--seed", "3",
             "--prompt", str(MIDI_FIXTURES[1]), "--prompt-bars", "2", "--out", str(tmp_path)], env_checkpoints)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["bars"][0] >= 4 - 1  # prompt bars (in the prompt's metre) + 2


@pytest.mark.parametrize("args,needle", [
    (["--bars", "0"], "bars"),
    (["--instruments", "kazoo"], "kazoo"),
    (["--temperature", "9"], "Temperature"),
    (["--variants", "x"], "invalid int"),
    (["--prompt", "/nonexistent.mid"], "cannot read"),
    (["--engine", "nope"], "unknown engine"),
])
def test_generate_cli_bad_arguments_exit_2(env_checkpoints, tmp_path, args, needle):
    r = run(["model.generate", "--out", str(tmp_path), *args], env_checkpoints)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in r.stderr


def test_hub_stage_layout_and_loading(tiny_run, tmp_path):
    out = hub.stage(tiny_run / "best", tmp_path / "stage", corpus=None, repo_id="midibangers/test")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= names
    card = (out / "README.md").read_text()
    assert "midibangers/test" in card and "Held-out" in card and "preset" in card
    eng = TransformerEngine(out, quantize=False)  # a folder in the Hub layout loads as a checkpoint
    assert eng.cfg.depth == 2


def test_hub_repo_id_resolution_goes_through_snapshot_download(monkeypatch, tiny_run):
    from model import checkpoint as ckpt

    calls = []

    def fake_snapshot_download(repo_id, **kw):
        calls.append(repo_id)
        return str(tiny_run / "best")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert ckpt.resolve("owner/name") == tiny_run / "best"
    assert calls == ["owner/name"]


def test_ddp_two_processes_gloo(tiny_corpus, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "training.train", "--preset", "tiny", "--data", str(tiny_corpus), "--out", str(out),
                        "--steps", "6", "--batch", "4", "--eval-every", "3", "--ckpt-every", "3", "--val-windows", "4",
                        "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    conf = json.loads((out / "last" / "config.json").read_text())
    assert conf["meta"]["train"]["world_size"] == 2 and conf["meta"]["train"]["step"] == 6
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == len(set(rows))  # rank 0 alone writes: no duplicated rows
    assert len([p for p in out.iterdir() if p.name.startswith("last")]) == 1
