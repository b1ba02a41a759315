"""The shared training loop: a tiny transformer learns, resumes, and never trains over a run or a
shipped checkpoint by accident."""

import csv
import json
import shutil

import pytest

from training.train import main


def test_tiny_training_loss_falls(tiny_run):
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    train = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert len(train) >= 4 and train[-1] < train[0] - 0.5
    assert (tiny_run / "curves.png").stat().st_size > 1000
    assert (tiny_run / "best" / "model.safetensors").exists()
    assert (tiny_run / "last" / "optimizer.safetensors").exists()
    val = [r for r in rows if r["split"] == "validation"]
    assert {"ppl_shift", "ppl_durvel", "ppl_grouppitch", "accuracy"} <= set(val[0])


def test_resume_continues_from_last(tiny_run, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rc = main(["--preset", "tiny", "--data", str(tiny_corpus), "--out", str(run), "--steps", "70", "--batch", "8",
               "--eval-every", "10", "--ckpt-every", "10", "--val-windows", "4", "--resume", "--quiet"])
    assert rc == 0
    conf = json.loads((run / "last" / "config.json").read_text())
    assert conf["meta"]["train"]["step"] == 70



def _args(corpus, out, *extra):
    return ["--preset", "tiny", "--data", str(corpus), "--out", str(out), "--steps", "2", "--batch", "4",
            "--eval-every", "2", "--ckpt-every", "2", "--val-windows", "2", "--quiet", *extra]


def test_training_into_a_run_without_resume_or_force_is_refused(tiny_run, tiny_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "metrics.csv").read_text()
    assert main(_args(tiny_corpus, run)) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "metrics.csv").read_text() == before  # nothing appended, best/ untouched


def test_force_starts_the_run_afresh(tiny_run, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(_args(tiny_corpus, run, "--force")) == 0
    steps = [int(r["step"]) for r in csv.DictReader((run / "metrics.csv").open())]
    assert max(steps) == 2


def test_training_into_the_shipped_checkpoints_is_refused(tiny_corpus, capsys, monkeypatch):
    from model import checkpoint as ckpt

    assert main(_args(tiny_corpus, ckpt.CHECKPOINT_ROOT / "transformer")) == 2
    assert "shipped" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [[], ["--force"]])
def test_convert_never_overwrites_a_shipped_checkpoint_without_the_flag(tiny_run, capsys, flags):
    from model import checkpoint as ckpt

    target = ckpt.CHECKPOINT_ROOT / "transformer"
    before = (target / "config.json").read_text()
    assert ckpt.main(["convert", str(tiny_run / "best"), str(target), *flags]) == 2
    assert "--replace-shipped" in capsys.readouterr().err
    assert (target / "config.json").read_text() == before


def test_convert_into_an_existing_folder_needs_force(tiny_run, tmp_path):
    from model import checkpoint as ckpt

    dst = tmp_path / "int8"
    assert ckpt.main(["convert", str(tiny_run / "best"), str(dst)]) == 0
    assert ckpt.main(["convert", str(tiny_run / "best"), str(dst)]) == 2
    assert ckpt.main(["convert", str(tiny_run / "best"), str(dst), "--force"]) == 0


def test_bf16_autocast_on_the_cpu_trains_and_is_recorded(tiny_corpus, tmp_path):
    out = tmp_path / "bf16"
    assert main(["--preset", "tiny", "--data", str(tiny_corpus), "--out", str(out), "--steps", "12", "--batch", "4",
                 "--lr", "3e-3", "--eval-every", "6", "--ckpt-every", "6", "--val-windows", "4", "--device", "cpu",
                 "--bf16", "--quiet"]) == 0
    meta = json.loads((out / "last" / "config.json").read_text())["meta"]
    assert meta["train"]["amp"] is True and meta["train"]["step"] == 12
    assert meta["validation"]["loss"] == meta["validation"]["loss"] > 0  # a finite loss
