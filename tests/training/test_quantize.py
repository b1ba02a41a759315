"""Compact storage of a transformer: the mixed plan and GPTQ keep the loss close to the original."""

import torch

from model import checkpoint as ckpt
from model.transformer import TransformerEngine
from training import quantize as Q
from training.data import FixedWindows, load_tokens
from training.tasks.base import sum_metrics
from training.tasks.transformer import lm_loss, summarize


def _loss(source, corpus) -> float:
    ds = FixedWindows(load_tokens(corpus, "test"), 65, max_windows=8)
    model = TransformerEngine(source, quantize=False).model
    return summarize(sum_metrics(lm_loss, model, torch.utils.data.DataLoader(ds, batch_size=8)))["loss"]


def test_storage_plan_follows_the_measured_plan(tiny_engine):
    plan = Q.storage_plan(tiny_engine.model.state_dict())
    assert plan["to_logits.weight"] == "int8" and plan["token_emb.emb.weight"] == "int8"
    assert plan["attn_layers.layers.0.1.to_q.weight"] == (6, 64)
    assert plan["attn_layers.layers.1.1.ff.0.0.weight"] == (5, 64)


def test_round_to_nearest_and_gptq_stay_close_to_the_original(tiny_run, tiny_corpus, tmp_path):
    src = tiny_run / "best"
    rtn = Q.quantize_checkpoint(src, tmp_path / "rtn")
    gptq = Q.quantize_checkpoint(src, tmp_path / "gptq", data=tiny_corpus, windows=8, context=64)
    assert gptq["method"].startswith("GPTQ") and rtn["bytes"] < ckpt.folder_bytes(src) / 3
    base = _loss(src, tiny_corpus)
    for d in ("rtn", "gptq"):
        assert abs(_loss(tmp_path / d, tiny_corpus) - base) < 0.05 * base


def test_quantize_refuses_the_shipped_folder_and_an_existing_one(tiny_run, tmp_path, capsys):
    assert Q.main([str(tiny_run / "best"), str(ckpt.CHECKPOINT_ROOT / "transformer")]) == 2
    (tmp_path / "x").mkdir()
    assert Q.main([str(tiny_run / "best"), str(tmp_path / "x")]) == 2
    assert "--force" in capsys.readouterr().err
