"""MACs are counted for every operator the models run, checked against analytic counts of small
known configurations, one per module type (torch's own counter has no formula for the CPU
attention kernel, oneDNN's LSTM layer or dynamically quantised Linear layers: each counted 0)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from engine.compress.accounting import flop_counter, macs_per_second
from engine.models.build import build, preset


def flops(fn) -> int:
    with torch.no_grad(), flop_counter() as c:
        fn()
    return c.get_total_flops()


def test_attention_counts_q_k_and_attention_v():
    b, h, lq, lk, d = 2, 4, 37, 37, 16
    q, k, v = (torch.randn(b, h, n, d) for n in (lq, lk, lk))
    mask = torch.ones(b, 1, lq, lk, dtype=torch.bool)
    want = 2 * b * h * lq * lk * d * 2  # Q.K^T and A.V, each 2 B H Lq Lk D FLOPs
    assert flops(lambda: F.scaled_dot_product_attention(q, k, v)) == want
    assert flops(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) == want


@pytest.mark.parametrize("mkldnn", [True, False])
def test_an_lstm_counts_its_input_and_recurrent_products(mkldnn):
    b, t, i, hdim, layers = 3, 11, 16, 24, 2
    lstm = torch.nn.LSTM(i, hdim, num_layers=layers, batch_first=True)
    x = torch.randn(b, t, i)
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = mkldnn
    try:
        got = flops(lambda: lstm(x))
    finally:
        torch.backends.mkldnn.enabled = before
    want = sum(2 * b * t * 4 * hdim * (inp + hdim) for inp in [i] + [hdim] * (layers - 1))
    # without oneDNN torch decomposes the cell and also counts the bias additions' matmul form
    assert got == want if mkldnn else want <= got <= want * 1.05


def test_a_dynamically_quantised_linear_counts_like_the_fp32_one():
    lin = torch.nn.Sequential(torch.nn.Linear(48, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(lin, {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(7, 48)
    assert flops(lambda: q(x)) == flops(lambda: lin(x)) == 2 * 7 * 48 * 20


def test_an_encoder_s_count_includes_its_attention():
    # the whole model: the count with the formulas minus torch's own is exactly the attention
    # products of every block, 4 x heads x T'^2 x head_dim per utterance at the block's rate
    from torch.utils.flop_counter import FlopCounterMode

    model = build(preset("tiny", vocab_size=32)).eval()
    x, lens = torch.randn(1, 400, 80), torch.tensor([400])
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        _, _, blocks = model.encoder(x, lens, return_blocks=True)
    ours = flops(lambda: model.encoder(x, lens))
    want = sum(4 * blk.attn.heads * out.shape[1] ** 2 * blk.attn.head_dim
               for blk, out in zip(model.encoder.blocks, blocks) if blk.attn is not None)
    assert want > 0 and ours - plain.get_total_flops() == want
    # the per-second figure the lab reports is encoder (attention included) + greedy search
    assert macs_per_second(model, [(x, lens)], 4.0) * 4.0 * 2 > ours


def test_the_cost_reported_is_the_search_s_that_produced_the_wer():
    from engine.compress.accounting import account
    from engine.models.las import LASConfig

    torch.manual_seed(0)
    model = build(preset("tiny", vocab_size=32)).with_las(
        LASConfig(layers=(24,), embed_dim=8, attn_dim=8, out_dim=8)).eval()
    utts = [torch.randn(300, 80), torch.randn(220, 80)]
    greedy = account(model, utts, repeats=1, search="greedy")
    beam = account(model, utts, repeats=1, search="beam", beam=4)
    both = account(model, utts, repeats=1, search="twopass", beam=4)
    assert greedy["accounting_search"] == "greedy" and both["accounting_search"] == "twopass"
    # a beam of 4 runs the predictor and joiner on every hypothesis: more MACs than greedy
    assert beam["macs_per_second"] > greedy["macs_per_second"]
    # two passes: the first pass's beam, then the LAS over its n-best, each reported
    assert both["macs_per_second"] > both["macs_per_second_first_pass"] > 0
    assert both["macs_per_second_first_pass"] == pytest.approx(beam["macs_per_second"], rel=0.01)
    with pytest.raises(ValueError, match="unknown search 'viterbi'"):
        account(model, utts, repeats=1, search="viterbi")
