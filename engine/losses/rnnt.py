"""The transducer loss: the lattice in one kernel (``lattice.py``), and the pure-PyTorch
reference the tests compare it with.

``rnnt_loss_from_logprobs`` takes the two per-node log-probabilities of a lattice, emit and
blank (B, T, U+1), and returns the loss per utterance; its backward is the gradient the kernel
computed with the loss (one launch for the batch, whatever T and U). The pruned loss
(``pruned.py``) reuses it, and its occupation probabilities choose the pruned band.

The reference, ``reference_from_logprobs``, computes the forward variable alpha(t, u) (Graves
2012) one frame at a time: within frame t, alpha(t, u) = logsumexp(alpha(t-1, u) + blank(t-1, u),
alpha(t, u-1) + emit(t, u-1)) unrolls to

    alpha(t, u) = C(u) + logcumsumexp_k (a(k) - C(k)),  a(k) = alpha(t-1, k) + blank(t-1, k),

with C(u) the cumulative sum of emit(t, 0..u-1): one cumsum and one logcumsumexp per frame, in
float64 so the cumulative sums lose nothing, autograd for the backward (a few thousand operator
dispatches a step: slow on a CPU, launch-bound on a GPU).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor


LOG_ZERO = -1e5  # "probability zero" that keeps cumulative sums finite (see below)


ZEROED_AT = -LOG_ZERO / 10  # a loss this large has no real path: it is zeroed


def zero_impossible(loss: Tensor) -> tuple[Tensor, Tensor]:
    """(loss with every utterance at or above ``ZEROED_AT`` set to 0, which gives it no
    gradient; the mask of those utterances). The trainer counts and logs them."""
    zeroed = loss >= ZEROED_AT
    return torch.where(zeroed, torch.zeros_like(loss), loss), zeroed


def rnnt_loss_from_logprobs(emit: Tensor, blank: Tensor, logit_lengths: Tensor,
                            target_lengths: Tensor, zeroed: Tensor | None = None) -> Tensor:
    """emit, blank (B, T, U+1) -> loss per utterance (B,), by the lattice kernel; as
    ``reference_from_logprobs`` (which documents the conventions), to 1e-6 relative."""
    if using_reference():
        return reference_from_logprobs(emit, blank, logit_lengths, target_lengths, zeroed)
    return lattice(emit, blank, logit_lengths, target_lengths, zeroed)[0]


_REFERENCE = [False]


@contextlib.contextmanager
def reference_lattice():
    """Inside: ``lattice`` and the pruned band use the pure-PyTorch reference (per-frame loops,
    the occupation probabilities by a second float64 pass with ``autograd.grad``), the way the
    lab computed them before the kernels: what ``benchmarks/bench_loss.py`` compares with."""
    _REFERENCE.append(True)
    try:
        yield
    finally:
        _REFERENCE.pop()


def using_reference() -> bool:
    return _REFERENCE[-1]


def lattice(emit: Tensor, blank: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
            zeroed: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(loss per utterance (B,), the occupation probability of every node (B, T, U+1),
    detached): one kernel gives both; an impossible utterance's loss is zeroed (``zeroed``)."""
    if using_reference():
        loss = reference_from_logprobs(emit, blank, logit_lengths, target_lengths, zeroed)
        e = emit.detach().double().requires_grad_()
        bl = blank.detach().double().requires_grad_()
        with torch.enable_grad():
            ge, gb = torch.autograd.grad(
                reference_from_logprobs(e, bl, logit_lengths, target_lengths).sum(), (e, bl))
        return loss, -(ge + gb)
    from engine.losses.lattice import rnnt_lattice  # the custom op asrlab::rnnt_lattice

    raw, ge, gb = rnnt_lattice(emit.float(), blank.float(), logit_lengths, target_lengths)
    loss, impossible = zero_impossible(raw)
    if zeroed is not None:
        zeroed |= impossible
    return loss.float(), -(ge + gb).detach()


def reference_from_logprobs(emit: Tensor, blank: Tensor, logit_lengths: Tensor,
                            target_lengths: Tensor, zeroed: Tensor | None = None) -> Tensor:
    """emit (B, T, U+1): log P(y_{u+1} | t, u) (column U unused); blank (B, T, U+1):
    log P(blank | t, u); either may hold -inf (pruned cells). Returns the negative
    log-likelihood per utterance (B,).

    Impossible cells hold LOG_ZERO instead of -inf: a -inf emission would make every later
    cumulative sum -inf (and its gradient NaN), while exp(-1e5) is an exact 0 next to any real
    path. An utterance with no possible path at all (pruning bands that cannot reach U) gets loss
    0 and no gradient, as ``zero_infinity`` does for CTC; given a bool tensor ``zeroed`` (B,),
    those utterances are marked in it (``|=``), so the caller can count them.
    """
    b, t_max, u1 = emit.shape
    u_idx = torch.arange(u1, device=emit.device)
    emit = emit.double().clamp(min=LOG_ZERO)
    blank = blank.double().clamp(min=LOG_ZERO)
    emit = torch.where(u_idx[None, None, :] < target_lengths[:, None, None], emit,
                       emit.new_tensor(LOG_ZERO))
    zero = emit.new_zeros(b, 1)
    alpha = torch.cat([zero, emit[:, 0, :-1]], 1).cumsum(1)  # frame 0: emissions only
    alphas = [alpha]
    for t in range(1, t_max):
        a = alpha + blank[:, t - 1]
        c = torch.cat([zero, emit[:, t, :-1]], 1).cumsum(1)
        alpha = c + torch.logcumsumexp(a - c, 1)
        alphas.append(alpha)
    stacked = torch.stack(alphas, 1)  # (B, T, U+1)
    rows = torch.arange(b, device=emit.device)
    last_t, last_u = logit_lengths.long() - 1, target_lengths.long()
    loss = -(stacked[rows, last_t, last_u] + blank[rows, last_t, last_u])
    loss, impossible = zero_impossible(loss)
    if zeroed is not None:
        zeroed |= impossible
    return loss.float()


def rnnt_loss(logits: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor,
              blank: int = 0, zeroed: Tensor | None = None) -> Tensor:
    """Joiner logits (B, T, U+1, V), targets (B, U) -> loss per utterance (B,), equal to
    ``torchaudio.functional.rnnt_loss(..., reduction="none")``."""
    logp = logits.float().log_softmax(-1)
    u1 = logits.shape[2]
    idx = torch.cat([targets.long(), targets.new_zeros(targets.shape[0], 1).long()], 1)[:, :u1]
    emit = logp.gather(3, idx[:, None, :, None].expand(-1, logits.shape[1], -1, 1)).squeeze(3)
    return rnnt_loss_from_logprobs(emit, logp[..., blank], logit_lengths, target_lengths, zeroed)
