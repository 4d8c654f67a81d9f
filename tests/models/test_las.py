"""The LAS rescorer and two-pass decoding: scores do not depend on batching or padding, the
teacher-forced loss is the sum of the scores, and lambda moves the choice from RNN-T to LAS."""

from __future__ import annotations

import pytest
import torch

from engine.compress.twopass import las_kd
from engine.decode import modified_beam_search, modified_beam_search_nbest, two_pass
from engine.models.build import build, from_dict, preset, to_dict
from engine.models.las import LASConfig, LASDecoder


def las(seed=0, vocab=20, enc_dim=16):
    torch.manual_seed(seed)
    return LASDecoder(LASConfig(embed_dim=8, layers=(12, 10), attn_dim=8, out_dim=12,
                                dropout=0.0), enc_dim, vocab).eval()


def test_scores_do_not_depend_on_batching_or_padding():
    m = las()
    enc = torch.randn(3, 9, 16)
    lens = torch.tensor([9, 6, 4])
    hyps = [[3, 4, 5, 6], [7], []]
    together = m.score(enc, lens, hyps)
    for i, h in enumerate(hyps):
        alone = m.score(enc[i : i + 1, : int(lens[i])], lens[i : i + 1], [h])
        assert torch.allclose(together[i], alone[0], atol=1e-5), i
    # the teacher-forced cross-entropy is minus the sum of the scores
    tokens = torch.tensor([[3, 4, 5, 6], [7, 0, 0, 0], [0, 0, 0, 0]])
    ce, _ = m.loss(enc, lens, tokens, torch.tensor([4, 1, 0]))
    assert float(ce.detach()) == pytest.approx(-float(together.sum()), rel=1e-5)


def test_per_layer_sizes_round_trip_through_the_model_config():
    cfg = preset("tiny", vocab_size=20)
    model = build(cfg).with_las(LASConfig(layers=(24, 16), embed_dim=8, attn_dim=8, out_dim=8))
    again = build(from_dict(to_dict(model.config())))
    assert again.las is not None and again.config().las.layers == (24, 16)
    assert [l.hidden_size for l in again.las.lstms] == [24, 16]


def test_las_kd_is_zero_for_equal_models_and_positive_otherwise():
    a, b = las(0), las(1)
    enc, lens = torch.randn(2, 7, 16), torch.tensor([7, 5])
    tokens, tlens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    with torch.no_grad():
        la, lb = a(enc, lens, tokens), b(enc, lens, tokens)
    assert float(las_kd(la, la, tokens, tlens)) == pytest.approx(0.0, abs=1e-5)
    assert float(las_kd(lb, la, tokens, tlens, temperature=2.0)) > 0


def test_lambda_moves_the_choice_from_the_first_pass_to_the_rescorer():
    torch.manual_seed(0)
    model = build(preset("tiny", vocab_size=20, dropout=0.0)).with_las(
        LASConfig(embed_dim=8, layers=(16,), attn_dim=8, out_dim=8, dropout=0.0)).eval()
    enc, lens = model.encode(torch.randn(2, 200, 80), torch.tensor([200, 150]))
    nb = modified_beam_search_nbest(model, enc, lens, 4)
    assert [n[0][0] for n in nb] == modified_beam_search(model, enc, lens, 4)
    first, _ = two_pass(model, enc, lens, 4, las_lambda=0.0)
    assert all(r["chosen"] == 0 and r["second"] == r["first"] for r in first)
    only_las, times = two_pass(model, enc, lens, 4, las_lambda=1.0)
    for r in only_las:
        best = max(range(len(r["nbest"])), key=lambda j: r["nbest"][j]["las"])
        assert r["nbest"][r["chosen"]]["las"] == r["nbest"][best]["las"]
    assert times["rescore_s"] >= 0 and times["first_pass_s"] > 0
