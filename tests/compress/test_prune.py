"""Pruning: hard-concrete gates, the masked model against the physically pruned one, the cubic
schedule, masks that stay applied, and sparse storage."""

from __future__ import annotations

import math

import pytest
import torch

from engine.checkpoint import load_model, save_model
from engine.compress.prune_l0 import BETA, GAMMA, ZETA, HardConcrete, L0Pruner, prunable_params
from engine.compress.prune_magnitude import (MagnitudePruner, cubic_sparsity, magnitude_masks,
                                             prunable)
from engine.config import L0Config, MagnitudeConfig
from engine.models.build import build, preset


def tiny_model(seed=0, vocab=32):
    torch.manual_seed(seed)
    return build(preset("tiny", vocab_size=vocab, dropout=0.0))


def inputs(b=2, t=120, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 80, generator=g)
    lens = torch.tensor([t, t - 37])[:b]
    return x, lens


@pytest.mark.parametrize("la,expected", [(10.0, 1.0), (-10.0, 0.0)])
def test_a_gate_at_plus_or_minus_ten_is_fully_on_or_off(la, expected):
    # seeded: at log-alpha -10 a draw still opens with probability ~2e-4 (u > 0.99978), so 160
    # unseeded draws failed about one run in 30 (seen once the suite ran in another order)
    torch.manual_seed(0)
    g = HardConcrete(8)
    with torch.no_grad():
        g.log_alpha.fill_(la)
    assert torch.allclose(g.p_open(), torch.full((8,), expected), atol=1e-3)
    g.train()
    for _ in range(20):
        assert torch.equal(g.sample(), torch.full((8,), expected))
    assert torch.equal(g.deterministic(), torch.full((8,), expected))


@pytest.mark.parametrize("la", [-1.5, 0.0, 0.8, 2.5])
def test_p_open_is_the_share_of_samples_that_are_not_zero(la):
    # fixes the sign of the stretch term in P(z != 0): sampled gates must agree with it
    torch.manual_seed(0)
    g = HardConcrete(200_000)
    with torch.no_grad():
        g.log_alpha.fill_(la)
    g.train()
    share = float((g.sample() > 0).float().mean())
    assert share == pytest.approx(float(g.p_open()[0]), abs=0.005)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.95])
def test_init_keep_is_each_gate_s_initial_p_open(keep):
    torch.manual_seed(0)
    p = HardConcrete(1000, init_keep=keep).p_open().detach()
    assert float(p.mean()) == pytest.approx(keep, abs=0.002)


def test_deterministic_gates_keep_the_expected_number_of_units():
    g = HardConcrete(10)
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([5.0, 4, 3, -5, -6, 2.5, -7, -8, 6, -9]))
    k = round(float(g.p_open().detach().sum()))
    z = g.deterministic()
    assert int((z > 0).sum()) == k == 5
    assert set(z.nonzero().flatten().tolist()) == {0, 1, 2, 5, 8}


def test_module_gates_are_rounded_together_to_the_expected_size():
    # every module undecided just under P = 0.5: rounded one by one each closes and the masks
    # prune everything (the tiny twin's 53.8% for an expected 50.1% was this, in small); rounded
    # together the most probable ones stay open and the masks keep about the expected size
    model = tiny_model()
    p = L0Pruner(model, L0Config(target=0.5), max_steps=100)
    mods = [k for k in p.gates if k.count("_") == 1]
    probs = torch.linspace(0.40, 0.49, len(mods))
    shift = BETA * math.log(-GAMMA / ZETA)
    with torch.no_grad():
        for name, gate in p.gates.items():
            gate.log_alpha.fill_(10.0)  # every unit on
        for k, q in zip(mods, probs):
            p.gates[k].log_alpha.fill_(math.log(q / (1 - q)) + shift)
    assert all(float(p.gates[k].deterministic()[0]) == 0 for k in mods)  # one by one: all shut
    expected = float(p.expected_sparsity())
    sizes = p._kept_sizes(p.deterministic_gates(), {k: True for k in mods})
    assert abs(p.reached_sparsity() - expected) <= max(sizes.values()) / p.full / 2 + 1e-6
    z = p.deterministic_gates()
    opened = [k for k in mods if float(z[k][0]) > 0]
    assert 0 < len(opened) < len(mods)
    assert min(probs[mods.index(k)] for k in opened) > max(
        probs[mods.index(k)] for k in mods if k not in opened)  # in order of probability


def pruner_with_random_gates(model, seed=3):
    cfg = L0Config(target=0.5)
    p = L0Pruner(model, cfg, max_steps=100)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, gate in p.gates.items():
            # a spread of log-alphas: some units clearly off, some on, some in between
            gate.log_alpha.copy_(torch.randn(gate.log_alpha.shape, generator=g) * 4 + 1)
        p.gates["1_attn"].log_alpha.fill_(-10.0)  # a whole module off
        p.gates["0_ffn2_units"].log_alpha.fill_(-10.0)  # every unit of a module off
    return p


def test_the_pruned_dense_model_gives_the_masked_models_outputs():
    model = tiny_model()
    p = pruner_with_random_gates(model)
    p.eval()
    x, lens = inputs()
    tokens = torch.randint(1, 32, (2, 6))
    with torch.no_grad():
        enc_m, lens_m = model.encode(x, lens)
        logits_m = model.lattice_logits(enc_m, tokens)
        small = p.pruned_copy()
        enc_p, lens_p = small.encode(x, lens)
        logits_p = small.lattice_logits(enc_p, tokens)
    assert torch.equal(lens_m, lens_p)
    assert torch.allclose(enc_m, enc_p, atol=1e-5), (enc_m - enc_p).abs().max()
    assert torch.allclose(logits_m, logits_p, atol=1e-4)
    cfg = small.config().encoder
    assert cfg.blocks[1].heads == 0 and small.encoder.blocks[1].attn is None
    assert cfg.blocks[0].ffn2 == 0 and small.encoder.blocks[0].ffn2 is None
    # uneven per-block sizes, and a real reduction in parameters
    assert len({(b.ffn1, b.conv_channels, b.heads) for b in cfg.blocks}) > 1
    assert sum(q.numel() for q in small.parameters()) < sum(q.numel() for q in model.parameters())
    # the size model counts what is really left
    left = prunable_params(small)
    assert left == round(float(p.expected_params(deterministic=True)))
    assert p.reached_sparsity() == pytest.approx(1 - left / prunable_params(model))


def test_the_pruned_model_reloads_as_the_smaller_model(tmp_path):
    model = tiny_model()
    p = pruner_with_random_gates(model)
    small = p.pruned_copy()
    path = save_model(small, tmp_path / "model.pt")
    again, _ = load_model(path, inference=False)
    assert again.config() == small.config()
    x, lens = inputs()
    with torch.no_grad():
        assert torch.allclose(again.encode(x, lens)[0], small.eval().encode(x, lens)[0], atol=1e-6)


def test_gates_get_gradients_and_the_multipliers_ascend():
    model = tiny_model()
    p = L0Pruner(model, L0Config(target=0.5, warmup_steps=0, lambda_lr=2.0), max_steps=10)
    p.train()
    x, lens = inputs()
    tokens = torch.randint(1, 32, (2, 5))
    out = p(x, lens, tokens, torch.tensor([5, 3]))
    out["loss"].backward()
    assert all(g.log_alpha.grad is not None and torch.isfinite(g.log_alpha.grad).all()
               for g in p.gates.values())
    # expected sparsity (about 0) is below the target (0.5): dual ascent moves lambda1 by
    # lr x (s - t) < 0, which makes the Lagrangian reward sparsity; lambda2 by lr x (s - t)^2
    gap = float(p.expected_sparsity().detach()) - 0.5
    assert gap < -0.4
    p.after_step(1)
    assert float(p.lambda1) == pytest.approx(2.0 * gap) and float(p.lambda2) == pytest.approx(2.0 * gap ** 2)
    # with lambda1 < 0 the gates' gradient from the Lagrangian alone points towards closing
    for g in p.gates.values():
        g.log_alpha.grad = None
    lag = p.lambda1 * (p.expected_sparsity() - 0.5)
    lag.backward()
    assert all((g.log_alpha.grad > 0).all() for g in p.gates.values())  # descent lowers them


def test_cubic_schedule():
    assert cubic_sparsity(0, 0.9, start=0, end=100) == 0.0
    assert cubic_sparsity(100, 0.9, start=0, end=100) == pytest.approx(0.9)
    assert cubic_sparsity(500, 0.9, start=0, end=100) == pytest.approx(0.9)
    assert cubic_sparsity(50, 0.9, start=0, end=100) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    vals = [cubic_sparsity(s, 0.6, start=10, end=90) for s in range(0, 120, 5)]
    assert vals == sorted(vals)


def test_magnitude_masks_prune_the_smallest_exactly():
    w = torch.tensor([[0.1, -3.0, 0.5], [2.0, -0.05, 1.0]])
    m = magnitude_masks([w], 0.5)[0]
    assert m.tolist() == [[False, True, False], [True, False, True]]
    g = magnitude_masks([w, torch.tensor([0.01, 5.0])], 0.5, "global")
    assert int(sum(x.sum() for x in g)) == 4


def test_pruned_weights_stay_zero_through_training_steps():
    model = tiny_model()
    cfg = MagnitudeConfig(sparsity=0.6, start_step=0, end_step=4, every=2)
    p = MagnitudePruner(model, cfg)
    opt = torch.optim.AdamW(p.parameters(), lr=1e-2)
    x, lens = inputs()
    tokens = torch.randint(1, 32, (2, 5))
    for step in range(1, 7):
        out = p(x, lens, tokens, torch.tensor([5, 3]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        p.after_step(step)
        zeros = [(w == 0) for w in p.weights()]
        assert all(torch.equal(z, ~m) for z, m in zip(zeros, p.masks()))
    assert p.sparsity() == pytest.approx(0.6, abs=0.01)
    names = [n for n, _ in prunable(model, ["linear"], ["encoder"])]
    assert all("norm" not in n and n.endswith("weight") for n in names)


def test_a_sparse_model_is_stored_sparse_and_reloads_exactly(tmp_path):
    model = tiny_model()
    p = MagnitudePruner(model, MagnitudeConfig(sparsity=0.9, end_step=1, every=1))
    p.after_step(1)
    dense = save_model(model, tmp_path / "dense.pt")
    sparse = save_model(model, tmp_path / "sparse.pt", sparse=True)
    assert sparse.stat().st_size < 0.45 * dense.stat().st_size
    again, _ = load_model(sparse, inference=False)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert math.isclose(p.sparsity(), 0.9, abs_tol=0.01)
