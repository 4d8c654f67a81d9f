from dataclasses import replace

import pytest
import torch

from engine.models.build import build, describe, from_dict, preset, to_dict
from engine.models.conformer import BlockConfig


def _tiny(**kw):
    return preset("tiny", vocab_size=32, **kw)


def test_presets_sizes():
    sizes = {n: describe(build(preset(n, vocab_size=256)))["params"]
             for n in ("teacher", "student-m", "student-s")}
    assert 7.5e6 < sizes["teacher"] < 8.8e6, sizes
    assert 3.2e6 < sizes["student-m"] < 3.9e6, sizes
    assert 1.3e6 < sizes["student-s"] < 1.7e6, sizes


def test_blocks_have_their_own_sizes_and_modules_can_be_absent():
    cfg = _tiny()
    blocks = (BlockConfig(heads=2, head_dim=16, ffn1=96, ffn2=0, conv_channels=48, kernel=5),
              BlockConfig(heads=0, head_dim=0, ffn1=32, ffn2=64, conv_channels=0, kernel=7),
              BlockConfig(heads=1, head_dim=8, ffn1=0, ffn2=0, conv_channels=0, kernel=3))
    cfg = replace(cfg, encoder=replace(cfg.encoder, blocks=blocks))
    model = build(cfg).eval()
    d = describe(model)
    assert [b["heads"] for b in d["blocks"]] == [2, 0, 1]
    assert [b["ffn2"] for b in d["blocks"]] == [0, 64, 0]
    assert model.encoder.blocks[1].attn is None and model.encoder.blocks[2].conv is None
    x, lens = torch.randn(2, 120, 80), torch.tensor([120, 90])
    enc, enc_lens, outs = model.encoder(x, lens, return_blocks=True)
    assert len(outs) == 3 and enc.shape[0] == 2
    # the config round-trips through plain data and rebuilds the same architecture
    again = build(from_dict(to_dict(model.config())))
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval().encode(x, lens)[0], enc)


@pytest.mark.parametrize("name", ["tiny", "student-s"])
@pytest.mark.parametrize("n", [150, 151, 152, 153, 154, 250, 251, 254])
def test_padding_does_not_change_an_utterance(name, n):
    """Odd and even 4x lengths alike: the time reduction's last pair must not take in a padded
    frame (at 151-154 and 250 frames it did, by up to 1.6)."""
    torch.manual_seed(0)
    model = build(preset(name, vocab_size=32)).eval()
    x = torch.randn(1, n, 80)
    alone, k = model.encode(x, torch.tensor([n]))
    batch = torch.cat([torch.cat([x, torch.zeros(1, 431 - n, 80)], 1), torch.randn(1, 431, 80)], 0)
    padded, lens = model.encode(batch, torch.tensor([n, 431]))
    assert int(lens[0]) == int(k[0])
    torch.testing.assert_close(padded[0, : int(k[0])], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduce_after,left", [(1, 2), (1, -1), (None, 1)])
def test_chunk_by_chunk_equals_the_streaming_masked_pass(reduce_after, left):
    torch.manual_seed(1)
    cfg = _tiny(streaming=True, left_chunks=left)
    cfg = replace(cfg, encoder=replace(cfg.encoder, reduce_after=reduce_after))
    model = build(cfg).eval()
    x = torch.randn(1, 333, 80)
    with torch.no_grad():
        full, _ = model.encode(x, torch.tensor([333]))
        state, parts = None, []
        for s in range(0, 333, 29):  # arbitrary arrival sizes
            h, state = model.encoder.forward_chunk(x[:, s:s + 29], state)
            parts.append(h)
        h, state = model.encoder.forward_chunk(x[:, :0], state, final=True)
        parts.append(h)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)


def test_streaming_mask_limits_what_a_frame_sees():
    torch.manual_seed(2)
    model = build(_tiny(streaming=True, left_chunks=1)).eval()
    x = torch.randn(1, 400, 80)
    y = x.clone()
    y[:, 300:] += 5.0  # change only the future
    a, _ = model.encode(x, torch.tensor([400]))
    b, _ = model.encode(y, torch.tensor([400]))
    # frames well before the change are unaffected in a causal, chunked model
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, -5:], b[:, -5:])


def test_modules_shrink_themselves_into_smaller_dense_modules():
    torch.manual_seed(3)
    model = build(_tiny()).eval()
    blk = model.encoder.blocks[0]
    x, lens = torch.randn(2, 100, 80), torch.tensor([100, 80])
    before, _ = model.encode(x, lens)
    # keeping everything changes nothing
    blk.ffn1.prune(torch.arange(blk.ffn1.hidden))
    blk.attn.prune(torch.arange(blk.attn.heads))
    blk.conv.prune(torch.arange(blk.conv.channels))
    torch.testing.assert_close(model.encode(x, lens)[0], before)
    # dropping units yields smaller modules and a config that says so
    blk.ffn1.prune(torch.arange(0, blk.ffn1.hidden, 2))
    blk.attn.prune(torch.tensor([1]))
    blk.conv.prune(torch.arange(10))
    c = model.config().encoder.blocks[0]
    assert (c.ffn1, c.heads, c.conv_channels) == (64, 1, 10)
    rebuilt = build(model.config())
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval().encode(x, lens)[0], model.encode(x, lens)[0])


def test_the_labs_dropout_drops_p_scales_the_rest_and_follows_the_seed():
    from engine.models.conformer import Dropout

    x = torch.ones(400, 500, requires_grad=True)
    d = Dropout(0.1).train()
    torch.manual_seed(7)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.005  # 200,000 draws: 4 standard deviations is 0.0027
    scale = 65536 / (65536 - round(0.1 * 65536))  # 1 / P(keep): unbiased, p on a 1/65,536 grid
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], scale))
    y.sum().backward()
    assert torch.allclose(x.grad, (y != 0).float() * scale)  # the gradient flows where it kept
    torch.manual_seed(7)
    assert torch.equal(d(x), y)  # the global generator: a checkpoint's RNG state resumes it
    assert not torch.equal(d(x), y)
    assert abs((Dropout(0.5).train()(x) == 0).float().mean().item() - 0.5) < 0.01
    assert torch.equal(d.eval()(x), x)
    assert Dropout(0.999995).train()(x).abs().sum() == 0  # rounds to "drop all", never to "keep all"
