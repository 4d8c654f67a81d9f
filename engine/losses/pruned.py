"""Pruned RNN-T (Kuang et al., "Pruned RNN-T for fast, memory-efficient ASR training",
Interspeech 2022; k2's ``rnnt_loss_smoothed`` / ``get_rnnt_prune_ranges`` / ``rnnt_loss_pruned``),
in pure PyTorch.

1. A "simple" joiner, ``am[t] + lm[u]`` (two linear heads over the vocabulary), defines a full
   lattice whose normaliser is one (T x V) @ (V x U+1) matrix product. Its loss trains the heads,
   and its node occupation probabilities (gradients of that loss) say where the alignment is.
2. For every frame, a band of ``prune_range`` consecutive u (the window holding most occupation,
   made monotonic and connected) is kept.
3. The real joiner runs only on the band, (B, T, S, V) instead of (B, T, U+1, V), and the
   transducer loss is computed on it (outside the band: probability 0).

When the band covers all of U+1, the pruned loss equals the full loss (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine import devices
from engine.losses.rnnt import rnnt_loss_from_logprobs, using_reference

NEG_INF = float("-inf")


def _emit_index(targets: Tensor, u1: int) -> Tensor:
    """(B, U) targets -> (B, U+1) index of the token emitted at node u (padding: 0)."""
    pad = targets.new_zeros(targets.shape[0], 1)
    return torch.cat([targets.long(), pad.long()], 1)[:, :u1]


def simple_logprobs(am: Tensor, lm: Tensor, targets: Tensor, blank: int = 0
                    ) -> tuple[Tensor, Tensor]:
    """am (B, T, V), lm (B, U+1, V) -> emit, blank log-probs (B, T, U+1) of softmax(am + lm),
    computed in fp32 whatever the autocast around it (a bf16 normaliser is off by 1e-2)."""
    with devices.fp32(am):
        return _simple_logprobs(am.float(), lm.float(), targets, blank)


def _simple_logprobs(am: Tensor, lm: Tensor, targets: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    am_max = am.max(-1, keepdim=True).values
    lm_max = lm.max(-1, keepdim=True).values
    # log sum_v exp(am[t,v] + lm[u,v]), as a matrix product of exponentials
    norm = torch.log(torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))
                     .clamp_min(1e-30)) + am_max + lm_max.transpose(1, 2)
    idx = _emit_index(targets, lm.shape[1])  # (B, U+1)
    am_y = am.gather(2, idx[:, None, :].expand(-1, am.shape[1], -1))  # (B, T, U+1)
    lm_y = lm.gather(2, idx[:, :, None]).squeeze(2)  # (B, U+1)
    emit = am_y + lm_y[:, None, :] - norm
    blank_lp = am[:, :, blank : blank + 1] + lm[:, None, :, blank] - norm
    return emit, blank_lp


def prune_ranges(occ: Tensor, logit_lengths: Tensor, target_lengths: Tensor, s_range: int
                 ) -> Tensor:
    """Start u of each frame's band, (B, T), from the simple lattice's occupation probabilities
    ``occ`` (B, T, U+1) (``rnnt.lattice`` gives them with the simple loss): each frame's window
    of ``s_range`` u holding the most occupation, then made monotonic and connected and raised
    to reach U at the last frame (``lattice.prune_band``, one kernel, no loop over frames)."""
    from engine.losses.lattice import prune_band

    b, t_max, u1 = occ.shape
    s = min(s_range, u1)
    cs = torch.cat([occ.new_zeros(b, t_max, 1), occ.cumsum(2)], 2)
    window = cs[:, :, s:] - cs[:, :, : u1 - s + 1]  # (B, T, U+1-S+1)
    hi = (target_lengths.long() + 1 - s).clamp(min=0)
    start = torch.minimum(window.argmax(2), hi[:, None])
    if using_reference():
        return band_reference(start, logit_lengths.long(), hi, s)
    return prune_band(start, logit_lengths.long(), hi, s)


def band_reference(start: Tensor, logit_lengths: Tensor, hi: Tensor, s: int) -> Tensor:
    """``lattice.prune_band``'s constraints one frame at a time (the reference)."""
    b, t_max = start.shape
    cols = [torch.zeros_like(start[:, 0])]
    for t in range(1, t_max):
        cols.append(torch.minimum(torch.maximum(start[:, t], cols[-1]), cols[-1] + s - 1))
    out = torch.stack(cols, 1)
    last, lower = logit_lengths - 1, torch.full_like(hi, -(10 ** 9))
    for t in range(t_max - 1, -1, -1):
        lower = torch.where(last == t, hi, lower)
        out[:, t] = torch.maximum(out[:, t], lower)
        lower = out[:, t] - (s - 1)
    return torch.minimum(out, hi[:, None])


def pruned_rnnt_loss(enc_proj: Tensor, pred_proj: Tensor, joiner_out, targets: Tensor,
                     logit_lengths: Tensor, target_lengths: Tensor, ranges: Tensor,
                     s_range: int, blank: int = 0, return_logits: bool = False,
                     zeroed: Tensor | None = None):
    """The transducer loss with the real joiner evaluated on each frame's band only.

    enc_proj (B, T, J), pred_proj (B, U+1, J): projected encoder and predictor outputs;
    ``joiner_out(hidden (..., J)) -> logits (..., V)`` is the joiner after the sum; ranges (B, T)
    band starts from ``prune_ranges``. Returns the loss per utterance (B,); with
    ``return_logits`` also the joiner logits on the band (B, T, S, V) and the u of each band
    cell (B, T, S) (distillation matches the teacher on the same nodes). ``zeroed``: as
    ``rnnt_loss_from_logprobs``'s (utterances whose band holds no path are marked).
    """
    b, t_max, j = enc_proj.shape
    u1 = pred_proj.shape[1]
    width = torch.arange(min(s_range, u1), device=enc_proj.device)
    u_band = (ranges[:, :, None] + width).clamp(max=u1 - 1)  # (B, T, S)
    pred_band = pred_proj.gather(1, u_band.reshape(b, -1, 1).expand(-1, -1, j)).reshape(
        b, t_max, -1, j)
    logits = joiner_out(enc_proj[:, :, None] + pred_band)  # under autocast: bf16
    with devices.fp32(logits):
        return _pruned_from_logits(logits, u_band, targets, logit_lengths, target_lengths, u1,
                                   blank, return_logits, zeroed)


def _pruned_from_logits(logits: Tensor, u_band: Tensor, targets: Tensor, logit_lengths: Tensor,
                        target_lengths: Tensor, u1: int, blank: int, return_logits: bool,
                        zeroed: Tensor | None):
    b, t_max = logits.shape[:2]
    logp = logits.float().log_softmax(-1)  # (B, T, S, V)
    idx = _emit_index(targets, u1).gather(1, u_band.reshape(b, -1)).reshape(b, t_max, -1)
    emit_band = logp.gather(3, idx[..., None]).squeeze(3)
    full = logp.new_full((b, t_max, u1), NEG_INF)
    # outside the band the lattice has probability 0; band cells past an utterance's U are
    # ignored by the recursion
    emit = full.scatter(2, u_band, emit_band)
    blank_lp = full.scatter(2, u_band, logp[..., blank])
    loss = rnnt_loss_from_logprobs(emit, blank_lp, logit_lengths, target_lengths, zeroed)
    return (loss, logits, u_band) if return_logits else loss
