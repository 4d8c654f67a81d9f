"""The distillation losses against direct O(T x U x V) computations on small random lattices.
The KD of an utterance is the mean KL over each frame's valid nodes, summed over frames."""

from __future__ import annotations

import pytest
import torch

from engine.compress.distill import (LayerMaps, full_kd, layer_pairs, three_way, yblank_kd)


def lattice(b=3, t=7, u=4, v=11, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, t, u + 1, v, generator=g, dtype=torch.float64) * scale
    te = torch.randn(b, t, u + 1, v, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(1, v, (b, u), generator=g)
    t_lens = torch.tensor([t, t - 2, 3])[:b]
    u_lens = torch.tensor([u, 2, 0])[:b]
    return s, te, targets, t_lens, u_lens


def direct_yblank(s, te, targets, t_lens, u_lens, blank=0, tau=1.0):
    s, te = s / tau, te / tau
    out = []
    for i in range(s.shape[0]):
        total = 0.0
        for t in range(int(t_lens[i])):
            frame = 0.0
            for u in range(int(u_lens[i]) + 1):
                ps, pt = s[i, t, u].softmax(-1), te[i, t, u].softmax(-1)
                if u < u_lens[i]:
                    y = int(targets[i, u])
                    qs = [ps[y], ps[blank], 1 - ps[y] - ps[blank]]
                    qt = [pt[y], pt[blank], 1 - pt[y] - pt[blank]]
                else:
                    qs = [ps[blank], 1 - ps[blank]]
                    qt = [pt[blank], 1 - pt[blank]]
                frame += sum(float(a * (torch.log(a) - torch.log(c))) for a, c in zip(qt, qs))
            total += frame / (int(u_lens[i]) + 1)
        out.append(total * tau ** 2)
    return torch.tensor(out, dtype=torch.float64)


def direct_full(s, te, t_lens, u_lens, tau):
    out = []
    for i in range(s.shape[0]):
        total = 0.0
        for t in range(int(t_lens[i])):
            frame = 0.0
            for u in range(int(u_lens[i]) + 1):
                lt = (te[i, t, u] / tau).log_softmax(-1)
                ls = (s[i, t, u] / tau).log_softmax(-1)
                frame += float((lt.exp() * (lt - ls)).sum())
            total += frame / (int(u_lens[i]) + 1)
        out.append(total * tau ** 2)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed,tau", [(0, 1.0), (1, 1.0), (2, 1.0), (0, 2.0), (1, 0.5)])
def test_yblank_equals_the_direct_computation(seed, tau):
    s, te, targets, t_lens, u_lens = lattice(seed=seed)
    got = yblank_kd(s, te, targets, t_lens, u_lens, temperature=tau)
    want = direct_yblank(s, te, targets, t_lens, u_lens, tau=tau)
    assert got.shape == (3,)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_full_kd_equals_the_direct_computation(tau):
    s, te, targets, t_lens, u_lens = lattice(seed=4)
    got = full_kd(s, te, t_lens, u_lens, temperature=tau)
    torch.testing.assert_close(got.double(), direct_full(s, te, t_lens, u_lens, tau), rtol=1e-4,
                               atol=1e-5)


def test_losses_are_zero_when_student_equals_teacher():
    s, _, targets, t_lens, u_lens = lattice(seed=1)
    assert yblank_kd(s, s.clone(), targets, t_lens, u_lens).abs().max() < 1e-5
    assert full_kd(s, s.clone(), t_lens, u_lens, 2.0).abs().max() < 1e-5


def test_padding_does_not_count():
    s, te, targets, t_lens, u_lens = lattice(seed=2)
    s2, te2 = s.clone(), te.clone()
    s2[1, int(t_lens[1]):] = 1e3 * torch.randn_like(s2[1, int(t_lens[1]):])  # padded frames
    te2[1, :, int(u_lens[1]) + 1:] = -50.0  # nodes past U
    torch.testing.assert_close(yblank_kd(s2, te2, targets, t_lens, u_lens),
                               yblank_kd(s, te, targets, t_lens, u_lens))


def test_rest_keeps_its_precision_when_y_and_blank_take_almost_everything():
    # blank and y hold all but 2 / (2 e^30 + 2) of the mass: log P(rest) = -30 to 1e-13, where
    # log(1 - p_y - p_blank) in float32 is log(0)
    lp = three_way(torch.tensor([[30.0, 30.0, 0.0, 0.0]]), torch.tensor([1]), torch.tensor([True]))
    assert torch.isfinite(lp).all()
    assert float(lp[0, 2]) == pytest.approx(-30.0, abs=1e-4)
    naive = torch.log(1 - lp[0, :2].exp().sum())
    assert not torch.isfinite(naive) or abs(float(naive) + 30) > 1


@pytest.mark.parametrize("kind", ["yblank", "full"])
def test_gradients_are_finite_at_extreme_logits(kind):
    s, te, targets, t_lens, u_lens = lattice(seed=3, scale=1.0)
    s = (s * 1e4).float().requires_grad_()
    te = (te * 1e4).float()  # one-hot-like teacher and student
    loss = yblank_kd(s, te, targets, t_lens, u_lens) if kind == "yblank" else \
        full_kd(s, te, t_lens, u_lens)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(s.grad).all()


def test_layer_maps_start_as_the_identity_and_pairs_follow_depth():
    assert layer_pairs(3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert layer_pairs(2, 3, [0, -1, 1]) == [(0, 0), (1, 2)]
    # more student blocks than teacher blocks (a shared student): never teacher block -1
    assert layer_pairs(6, 3) == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 1), (5, 2)]
    # a time reduction after block 1 in both: each pair runs at one frame rate
    pairs = layer_pairs(6, 5, student_reduce=1, teacher_reduce=1)
    assert pairs == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 3), (5, 4)]
    assert all((s > 1) == (t > 1) for s, t in pairs)
    assert layer_pairs(3, 5, student_reduce=1, teacher_reduce=1) == [(0, 0), (1, 1), (2, 4)]
    # where the pairs by depth keep to one rate already, they stay what they were
    assert layer_pairs(5, 6, student_reduce=1, teacher_reduce=1) == layer_pairs(5, 6)
    with pytest.raises(ValueError, match="student has 2"):
        layer_pairs(2, 3, [0, 1, 2])
    maps = LayerMaps([(0, 0)], [8], [8])
    x = torch.randn(2, 5, 8)
    lens = [torch.tensor([5, 3])]
    assert maps([x], [x], lens).abs().max() < 1e-6
    assert float(maps([x], [x + 1], lens)[1].detach()) == pytest.approx(3.0, rel=1e-5)  # 3 valid frames x 1.0


@pytest.mark.parametrize("kind", ["yblank", "full"])
def test_the_same_node_kl_gives_the_same_kd_on_a_band_and_on_the_whole_lattice(kind):
    # beta must mean the same with the pruned loss (5 band nodes a frame) and the whole lattice
    # (U+1 nodes a frame): with the same KL at every node, the KD is that KL x the frames
    from engine.compress.distill import full_kd_nodes, yblank_kd_nodes

    t, v = 6, 11
    teacher = torch.randn(v, generator=torch.Generator().manual_seed(0)) * 3
    got = []
    for n in (5, 9):
        s = torch.zeros(1, t, n, v)
        te = teacher.expand(1, t, n, v)
        y = torch.full((1, t, n), 3)
        has_y = torch.ones(1, t, n, dtype=torch.bool)
        valid = torch.ones(1, t, n, dtype=torch.bool)
        if kind == "yblank":
            got.append(float(yblank_kd_nodes(s, three_way(te, y, has_y), y, has_y, valid)[0]))
        else:
            got.append(float(full_kd_nodes(s, te.log_softmax(-1), valid)[0]))
    lt = teacher.log_softmax(-1)
    node = float((lt.exp() * (lt - torch.full((v,), -torch.log(torch.tensor(float(v)))))).sum())
    if kind == "full":
        assert got[0] == pytest.approx(node * t, rel=1e-5)
    assert got[0] == pytest.approx(got[1], rel=1e-5) and got[0] > 0
