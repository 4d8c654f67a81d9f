"""Cross-layer weight sharing: patterns, sizes counted once, reload, streaming, config errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine.checkpoint import load_model, save_model
from engine.compress.share import describe_sharing, layer_map, shared_encoder, unique_params
from engine.config import ConfigError, parse_experiment
from engine.models.build import build, preset, with_streaming


def six_layers(cfg):
    return replace(cfg, encoder=replace(cfg.encoder, blocks=(cfg.encoder.blocks[0],) * 6))


def test_patterns():
    assert layer_map("repeat", 12, 4) == (0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3)
    assert layer_map("cycle", 6, 3) == (0, 1, 2, 0, 1, 2)
    assert layer_map("repeat", 6, 4) == (0, 0, 1, 2, 2, 3)  # the remainder spread evenly
    assert layer_map("repeat", 6, 6) == tuple(range(6))
    with pytest.raises(ValueError, match="physical blocks <= layers"):
        layer_map("repeat", 3, 4)
    with pytest.raises(ValueError, match="unknown sharing pattern 'zigzag'"):
        layer_map("zigzag", 6, 3)


def test_shared_tensors_count_once_and_reload(tmp_path):
    torch.manual_seed(0)
    full = build(six_layers(preset("tiny", vocab_size=40))).eval()
    cfg = replace(full.cfg, encoder=shared_encoder(full.cfg.encoder, "repeat", 2))
    shared = build(cfg).eval()
    assert shared.cfg.encoder.n_layers == 6 and len(shared.encoder.blocks) == 2
    info = describe_sharing(shared)
    per_block = info["block_params"] // 2
    # 4 of the 6 blocks are gone; each layer keeps its own LayerNorm (2 x d_model)
    assert info["params_saved"] == 4 * per_block and info["layer_norm_params"] == 6 * 2 * 64
    n = sum(p.numel() for p in shared.parameters())
    assert n == unique_params(shared)
    assert sum(p.numel() for p in full.parameters()) - n == info["params_saved"]
    # the file holds each block once, and reloads as the same shared model
    save_model(shared, tmp_path / "s.pt", {})
    save_model(full, tmp_path / "f.pt", {})
    ratio = (tmp_path / "s.pt").stat().st_size / (tmp_path / "f.pt").stat().st_size
    assert ratio < 0.75, ratio
    back, _ = load_model(tmp_path / "s.pt")
    assert back.cfg.encoder.share == (0, 0, 0, 1, 1, 1)
    x, lens = torch.randn(2, 120, 80), torch.tensor([120, 90])
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x, lens)[0], shared.encode(x, lens)[0])


def test_a_shared_block_is_one_module_trained_by_every_layer():
    torch.manual_seed(0)
    cfg = six_layers(preset("tiny", vocab_size=40))
    model = build(replace(cfg, encoder=shared_encoder(cfg.encoder, "cycle", 3)))
    enc, _ = model.encode(torch.randn(1, 80, 80), torch.tensor([80]))
    enc.sum().backward()
    # block 0 runs layers 0 and 3: its gradient is the sum over both uses
    w = model.encoder.blocks[0].ffn1.up.weight
    assert w.grad is not None and float(w.grad.abs().sum()) > 0
    assert all(n.weight.grad is not None for n in model.encoder.layer_norms)


def test_shared_streaming_matches_the_masked_pass():
    torch.manual_seed(0)
    cfg = six_layers(with_streaming(preset("tiny", vocab_size=40), 8, 2))
    cfg = replace(cfg, encoder=replace(shared_encoder(cfg.encoder, "repeat", 3), reduce_after=1))
    model = build(cfg).eval()
    x = torch.randn(1, 203, 80)
    with torch.no_grad():
        full, _ = model.encode(x, torch.tensor([203]))
        state, outs = None, []
        for i in range(0, 203, 37):
            h, state = model.encoder.forward_chunk(x[:, i:i + 37], state, final=i + 37 >= 203)
            outs.append(h)
    got = torch.cat(outs, 1)
    torch.testing.assert_close(got, full[:, : got.shape[1]], atol=1e-4, rtol=1e-4)
    assert len(state.blocks) == 6  # caches per layer, weights per block


def _exp(model: dict) -> dict:
    return {"name": "x", "stages": [{"kind": "train", "name": "a", "model": model}]}


def test_sharing_settings_are_checked_at_the_edge():
    with pytest.raises(ConfigError, match=r"stages\[0\].model: .*needs physical_blocks"):
        parse_experiment(_exp({"preset": "tiny", "share": "repeat"}))
    with pytest.raises(ConfigError, match="physical_blocks is set but share is 'none'"):
        parse_experiment(_exp({"preset": "tiny", "physical_blocks": 2}))
    with pytest.raises(ConfigError, match="physical_blocks = 8 exceeds the 6 layers"):
        parse_experiment(_exp({"preset": "tiny", "blocks": 6, "share": "cycle",
                               "physical_blocks": 8}))
    with pytest.raises(ConfigError, match=r"share: 'ring' is not allowed"):
        parse_experiment(_exp({"preset": "tiny", "share": "ring", "physical_blocks": 2}))
