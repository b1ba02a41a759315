"""Checkpoint storage: every dtype round-trips through safetensors + JSON, within its precision."""

import pytest
import torch

from model import checkpoint as ckpt
from model.transformer import TransformerEngine


@pytest.mark.parametrize("bits", [4, 5, 6])
def test_grouped_codes_round_trip_within_half_a_step(bits):
    w = torch.randn(48, 128) * torch.linspace(0.1, 3, 128)  # groups of very different ranges
    packed, scale, zero = ckpt.quantize_grouped(w, bits, 32)
    assert packed.dtype == torch.uint8 and packed.numel() == 48 * 128 * bits // 8
    back = ckpt.dequantize_grouped(packed, scale, zero, bits)
    step = scale.float().repeat_interleave(32, 1)
    assert back.shape == w.shape and ((back - w).abs() <= step * 0.5 + 1e-3).float().mean() > 0.99


def test_pack_codes_is_the_inverse_of_unpack():
    q = torch.randint(0, 32, (1001,), dtype=torch.uint8)
    assert torch.equal(ckpt.unpack_codes(ckpt.pack_codes(q, 5), 5, 1001), q)


def test_more_bits_give_less_error():
    w = torch.randn(64, 256)
    err = [float((ckpt.dequantize_grouped(*ckpt.quantize_grouped(w, b, 64), b) - w).pow(2).mean()) for b in (4, 5, 6)]
    assert err[0] > 3 * err[1] > 9 * err[2]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8", "int4"])
def test_checkpoint_round_trip(tiny_engine, tmp_path, dtype):
    state = tiny_engine.model.state_dict()
    cfg = {"engine": "transformer", "model": tiny_engine.cfg.__dict__, "meta": {}}
    ckpt.save_checkpoint(tmp_path / "c", state, cfg, dtype=dtype)
    back, conf = ckpt.load_checkpoint(tmp_path / "c")
    assert conf["dtype"] == dtype and set(back) == set(state)
    tol = {"fp32": 0, "fp16": 1e-2, "int8": 5e-2, "int4": 0.5}[dtype]
    for k in state:
        assert torch.allclose(back[k].float(), state[k].float(), atol=tol), k
    eng = TransformerEngine(tmp_path / "c", quantize=False)
    assert eng.cfg == tiny_engine.cfg
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "c.old").exists()


def test_mixed_plan_stores_each_tensor_as_planned(tiny_engine, tmp_path):
    from safetensors.torch import load_file

    state = tiny_engine.model.state_dict()
    plan = {"to_logits.weight": "int8", "attn_layers.layers.0.1.to_q.weight": (6, 64),
            "attn_layers.layers.1.1.ff.0.0.weight": (5, 32)}
    cfg = {"engine": "transformer", "model": tiny_engine.cfg.__dict__, "meta": {}}
    ckpt.save_checkpoint(tmp_path / "m", state, cfg, dtype="mixed", plan=plan)
    stored = load_file(str(tmp_path / "m" / ckpt.WEIGHTS_NAME))
    assert "to_logits.weight.int8" in stored and "attn_layers.layers.0.1.to_q.weight.q6" in stored
    assert "attn_layers.layers.1.1.ff.0.0.weight.q5" in stored
    assert stored["attn_layers.layers.0.1.to_k.weight"].dtype == torch.float16  # not in the plan: fp16
    back, _ = ckpt.load_checkpoint(tmp_path / "m")
    assert set(back) == set(state)
