"""A slow, obviously-correct transducer loss (Graves 2012): the forward variable over the lattice,
one node at a time in Python. The reference the fast losses are checked against."""

import torch


def rnnt_loss_reference(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                        target_lengths: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """logits (B, T, U+1, V) -> per-utterance negative log-likelihood (B,)."""
    logp = logits.log_softmax(-1)
    losses = []
    for b in range(logits.shape[0]):
        t_len, u_len = int(logit_lengths[b]), int(target_lengths[b])
        alpha = [[None] * (u_len + 1) for _ in range(t_len)]
        for t in range(t_len):
            for u in range(u_len + 1):
                if t == 0 and u == 0:
                    alpha[t][u] = logp.new_zeros(())
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1][u] + logp[b, t - 1, u, blank])
                if u > 0:
                    terms.append(alpha[t][u - 1] + logp[b, t, u - 1, targets[b, u - 1]])
                alpha[t][u] = torch.logsumexp(torch.stack(terms), 0)
        losses.append(-(alpha[t_len - 1][u_len] + logp[b, t_len - 1, u_len, blank]))
    return torch.stack(losses)
