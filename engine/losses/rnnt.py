"""The transducer loss in pure PyTorch, vectorised over the batch, autograd for the backward.

The forward variable alpha(t, u) (Graves 2012) is computed one frame at a time: within frame t,
alpha(t, u) = logsumexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + emit(t, u-1)) unrolls to

    alpha(t, u) = C(u) + logcumsumexp_k (a(k) - C(k)),  a(k) = alpha(t-1, k) + blank(t-1, k),

with C(u) the cumulative sum of emit(t, 0..u-1): one cumsum and one logcumsumexp per frame, in
float64 so the cumulative sums lose nothing. ``rnnt_loss_from_logprobs`` takes the two per-node
log-probabilities directly, which is what the pruned loss (``pruned.py``) reuses.
"""

from __future__ import annotations

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
