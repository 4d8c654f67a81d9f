import torch
import torchaudio

from tests.rnnt_reference import rnnt_loss_reference


def test_torchaudio_rnnt_loss_matches_the_reference_with_gradients():
    torch.manual_seed(0)
    b, t, u, v = 3, 7, 4, 6
    logits = torch.randn(b, t, u + 1, v, dtype=torch.float32, requires_grad=True)
    targets = torch.randint(1, v, (b, u), dtype=torch.int32)
    t_lens = torch.tensor([7, 5, 3], dtype=torch.int32)
    u_lens = torch.tensor([4, 2, 0], dtype=torch.int32)  # padded batch, one empty target
    ours = rnnt_loss_reference(logits.double(), targets.long(), t_lens, u_lens)
    theirs = torchaudio.functional.rnnt_loss(logits, targets, t_lens, u_lens, blank=0,
                                             reduction="none")
    torch.testing.assert_close(theirs.double(), ours, rtol=1e-5, atol=1e-5)
    g_ours, = torch.autograd.grad(ours.sum(), logits)
    g_theirs, = torch.autograd.grad(theirs.sum(), logits)
    # torchaudio leaves gradients of padded lattice cells undefined; compare valid cells
    for i in range(b):
        torch.testing.assert_close(g_theirs[i, : t_lens[i], : u_lens[i] + 1],
                                   g_ours[i, : t_lens[i], : u_lens[i] + 1].float(),
                                   rtol=1e-4, atol=1e-4)


def test_pure_pytorch_loss_equals_torchaudio_costs_and_gradients():
    from engine.losses.rnnt import rnnt_loss

    torch.manual_seed(1)
    b, t, u, v = 4, 12, 6, 9
    logits = torch.randn(b, t, u + 1, v, requires_grad=True)
    targets = torch.randint(1, v, (b, u), dtype=torch.int32)
    t_lens = torch.tensor([12, 9, 4, 1], dtype=torch.int32)
    u_lens = torch.tensor([6, 3, 0, 2], dtype=torch.int32)
    ours = rnnt_loss(logits, targets, t_lens, u_lens)
    theirs = torchaudio.functional.rnnt_loss(logits, targets, t_lens, u_lens, blank=0,
                                             reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    g1, = torch.autograd.grad(ours.sum(), logits)
    g2, = torch.autograd.grad(theirs.sum(), logits)
    for i in range(b):
        torch.testing.assert_close(g1[i, : t_lens[i], : u_lens[i] + 1],
                                   g2[i, : t_lens[i], : u_lens[i] + 1], rtol=1e-4, atol=1e-4)


def test_pruned_loss_equals_full_loss_when_the_band_covers_everything():
    from engine.losses.pruned import prune_ranges, pruned_rnnt_loss, simple_logprobs
    from engine.losses.rnnt import lattice, rnnt_loss

    torch.manual_seed(2)
    b, t, u, v, j = 3, 10, 4, 7, 8
    enc = torch.randn(b, t, j, requires_grad=True)
    pred = torch.randn(b, u + 1, j, requires_grad=True)
    out = torch.nn.Linear(j, v)
    targets = torch.randint(1, v, (b, u))
    t_lens, u_lens = torch.tensor([10, 8, 5]), torch.tensor([4, 2, 3])
    am, lm = torch.randn(b, t, v), torch.randn(b, u + 1, v)
    e, bl = simple_logprobs(am, lm, targets)
    ranges = prune_ranges(lattice(e, bl, t_lens, u_lens)[1], t_lens, u_lens, s_range=u + 1)
    assert torch.all(ranges == 0)
    pruned = pruned_rnnt_loss(enc, pred, lambda h: out(torch.tanh(h)), targets, t_lens, u_lens,
                              ranges, s_range=u + 1)
    full = rnnt_loss(out(torch.tanh(enc[:, :, None] + pred[:, None])), targets, t_lens, u_lens)
    torch.testing.assert_close(pruned, full, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(pruned.sum(), (enc, pred))
    g2 = torch.autograd.grad(full.sum(), (enc, pred))
    for a, b_ in zip(g1, g2):
        torch.testing.assert_close(a, b_, rtol=1e-4, atol=1e-5)


def test_a_loss_past_1e4_is_zeroed_and_counted():
    # an utterance whose targets the joiner all but rules out: its loss passes 1e4, so it gets
    # loss 0 and no gradient, and the mask the trainer counts marks it (and only it)
    from engine.losses.rnnt import ZEROED_AT, rnnt_loss

    torch.manual_seed(3)
    b, t, u, v = 2, 12, 30, 6
    logits = torch.randn(b, t, u + 1, v)
    targets = torch.randint(1, v, (b, u))
    logits[1].scatter_(2, torch.cat([targets[1], targets[1, :1]])[None, :, None].expand(t, -1, 1),
                       -2000.0)
    logits.requires_grad_()
    t_lens, u_lens = torch.tensor([t, t]), torch.tensor([u, u])
    zeroed = torch.zeros(b, dtype=torch.bool)
    loss = rnnt_loss(logits, targets, t_lens, u_lens, zeroed=zeroed)
    assert zeroed.tolist() == [False, True]
    assert 0 < float(loss[0]) < ZEROED_AT and float(loss[1]) == 0.0
    g, = torch.autograd.grad(loss.sum(), logits)
    assert float(g[1].abs().sum()) == 0.0 and float(g[0].abs().sum()) > 0


def test_simple_joiner_logprobs_match_an_explicit_softmax():
    from engine.losses.pruned import simple_logprobs

    torch.manual_seed(3)
    am, lm = torch.randn(2, 5, 6) * 3, torch.randn(2, 4, 6) * 3
    targets = torch.randint(1, 6, (2, 3))
    e, bl = simple_logprobs(am, lm, targets)
    lp = (am[:, :, None] + lm[:, None]).log_softmax(-1)
    idx = torch.cat([targets, torch.zeros(2, 1, dtype=torch.long)], 1)
    torch.testing.assert_close(bl, lp[..., 0])
    torch.testing.assert_close(e, lp.gather(3, idx[:, None, :, None].expand(-1, 5, -1, 1))[..., 0])


def test_pruned_bands_are_monotonic_connected_and_end_at_u():
    from engine.losses.pruned import prune_ranges, simple_logprobs
    from engine.losses.rnnt import lattice

    torch.manual_seed(4)
    b, t, u, v, s = 4, 30, 12, 9, 4
    e, bl = simple_logprobs(torch.randn(b, t, v), torch.randn(b, u + 1, v),
                            torch.randint(1, v, (b, u)))
    t_lens, u_lens = torch.tensor([30, 25, 12, 30]), torch.tensor([12, 7, 12, 0])
    r = prune_ranges(lattice(e, bl, t_lens, u_lens)[1], t_lens, u_lens, s)
    for i in range(b):
        ri = r[i, : t_lens[i]]
        assert ri[0] == 0 and torch.all(ri[1:] >= ri[:-1]) and torch.all(ri[1:] - ri[:-1] <= s - 1)
        assert ri[-1] <= u_lens[i] <= ri[-1] + s - 1


# ----- the lattice kernels against the pure-PyTorch reference ------------------------------------
def _lattice_case(seed, b, t, u1, prune=0.0, impossible=False):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(b, t, u1, 2, generator=g).log_softmax(-1)
    emit, blank = lp[..., 0].clone(), lp[..., 1].clone()
    if prune:  # cells outside a pruned band hold -inf
        emit[torch.rand(b, t, u1, generator=g) < prune] = float("-inf")
    t_lens = torch.randint(max(1, t // 2), t + 1, (b,), generator=g)
    u_lens = torch.randint(0, u1, (b,), generator=g)
    t_lens[0], u_lens[0] = t, u1 - 1
    if impossible:  # utterance 1 can emit nothing: no path reaches its U
        emit[1] = float("-inf")
        u_lens[1] = max(1, int(u_lens[1]))
    return emit, blank, t_lens, u_lens


CASES = [dict(b=3, t=7, u1=5), dict(b=2, t=1, u1=4), dict(b=2, t=6, u1=1),
         dict(b=4, t=40, u1=15), dict(b=3, t=9, u1=6, prune=0.3),
         dict(b=3, t=8, u1=5, impossible=True)]


def _reference(emit, blank, t_lens, u_lens):
    from engine.losses.rnnt import reference_from_logprobs

    e, b = emit.clone().requires_grad_(), blank.clone().requires_grad_()
    zeroed = torch.zeros(emit.shape[0], dtype=torch.bool)
    loss = reference_from_logprobs(e, b, t_lens, u_lens, zeroed)
    ge, gb = torch.autograd.grad(loss.sum(), (e, b))
    return loss, ge, gb, zeroed


def _close(got, want):
    scale = want.abs().max().clamp(min=1e-6)
    assert float((got - want).abs().max() / scale) <= 1e-4, (got, want)


def test_the_lattice_kernel_equals_the_reference_on_the_cpu():
    """Numba's kernel: pruned bands, an impossible utterance (zeroed, counted), U = 0, T' = 1."""
    from engine.losses.rnnt import rnnt_loss_from_logprobs

    for i, case in enumerate(CASES):
        emit, blank, t_lens, u_lens = _lattice_case(i, **case)
        ref, rge, rgb, rzeroed = _reference(emit, blank, t_lens, u_lens)
        e, b = emit.clone().requires_grad_(), blank.clone().requires_grad_()
        zeroed = torch.zeros(emit.shape[0], dtype=torch.bool)
        loss = rnnt_loss_from_logprobs(e, b, t_lens, u_lens, zeroed)
        ge, gb = torch.autograd.grad(loss.sum(), (e, b))
        assert zeroed.tolist() == rzeroed.tolist(), case
        _close(loss, ref)
        _close(ge, rge)
        _close(gb, rgb)
        if case.get("impossible"):
            assert zeroed[1] and float(loss[1]) == 0 and float(ge[1].abs().sum()) == 0


def test_the_triton_kernel_equals_the_reference_in_tritons_interpreter():
    """The CUDA kernel's code, run by Triton's interpreter on CPU tensors."""
    from engine.losses.lattice import lattice_triton
    from engine.losses.rnnt import ZEROED_AT

    for i, case in enumerate(CASES):
        emit, blank, t_lens, u_lens = _lattice_case(i, **case)
        ref, rge, rgb, rzeroed = _reference(emit, blank, t_lens, u_lens)
        raw, ge, gb = lattice_triton(emit, blank, t_lens, u_lens, interpret=True)
        keep = ~rzeroed
        assert ((raw >= ZEROED_AT) == rzeroed).all(), case
        _close(raw[keep], ref[keep])
        _close(ge[keep], rge[keep])
        _close(gb[keep], rgb[keep])


def test_the_band_kernels_equal_the_frame_loop():
    from engine.losses.lattice import band_triton, prune_band
    from engine.losses.pruned import band_reference

    g = torch.Generator().manual_seed(5)
    for b, t, u, s in ((4, 30, 12, 4), (3, 5, 0, 5), (2, 1, 3, 2), (5, 50, 40, 5)):
        t_lens = torch.randint(1, t + 1, (b,), generator=g)
        t_lens[0] = t
        u_lens = torch.randint(0, u + 1, (b,), generator=g)
        s_ = min(s, u + 1)
        hi = (u_lens + 1 - s_).clamp(min=0)
        start = torch.minimum(torch.randint(0, u + 1, (b, t), generator=g), hi[:, None])
        want = band_reference(start, t_lens, hi, s_)
        assert torch.equal(prune_band(start, t_lens, hi, s_), want)
        assert torch.equal(band_triton(start, t_lens, hi, s_, interpret=True), want)
