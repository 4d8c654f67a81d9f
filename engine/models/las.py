"""A LAS (listen-attend-spell) rescorer that attends to the transducer's own encoder output: the
second pass of a two-pass model (Sainath et al. 2019; compressed as Dawalatabad et al., ASRU 2021).

- Token embedding -> a stack of LSTM layers, **each with its own hidden size** (so the rescorer
  shrinks like the encoder) -> additive-free dot-product cross-attention over the encoder frames
  (padding masked) -> tanh(W [h; context]) -> logits over the same vocabulary as the transducer.
- Id 0 (the transducer's blank, never a real token) is both start and end of sentence, so the
  vocabulary and ``tokens.txt`` stay the transducer's.
- No input feeding: every position of a hypothesis is scored in one parallel pass under teacher
  forcing, which is what training and n-best rescoring both need (``score``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import devices


@dataclass(frozen=True)
class LASConfig:
    embed_dim: int = 128
    layers: tuple[int, ...] = (256,)  # hidden units of each LSTM layer
    attn_dim: int = 128
    out_dim: int = 256  # the tanh layer before the output projection
    dropout: float = 0.1


class LASDecoder(nn.Module):
    def __init__(self, cfg: LASConfig, enc_dim: int, vocab: int, sos: int = 0) -> None:
        super().__init__()
        self.cfg, self.sos = cfg, sos
        self.embed = nn.Embedding(vocab, cfg.embed_dim)
        dims = [cfg.embed_dim, *cfg.layers]
        self.lstms = nn.ModuleList(nn.LSTM(i, o, batch_first=True) for i, o in zip(dims, dims[1:]))
        h = dims[-1]
        self.query = nn.Linear(h, cfg.attn_dim)
        self.key = nn.Linear(enc_dim, cfg.attn_dim)
        self.combine = nn.Linear(h + enc_dim, cfg.out_dim)
        self.out = nn.Linear(cfg.out_dim, vocab)
        self.dropout = nn.Dropout(cfg.dropout)

    def config(self) -> LASConfig:
        return LASConfig(embed_dim=self.embed.embedding_dim,
                         layers=tuple(l.hidden_size for l in self.lstms),
                         attn_dim=self.query.out_features, out_dim=self.combine.out_features,
                         dropout=self.cfg.dropout)

    def forward(self, enc: Tensor, enc_lens: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced logits: enc (B, T, d), tokens (B, U) (padding anywhere after the
        length) -> (B, U+1, V): position u predicts token u, position U predicts the end."""
        b = tokens.shape[0]
        y_in = torch.cat([tokens.new_full((b, 1), self.sos), tokens.clamp(min=0)], 1)
        h = self.dropout(self.embed(y_in))
        with devices.fp32(h):  # the recurrent layers in fp32 outside autocast (no bf16 LSTM)
            h = h.float()
            for lstm in self.lstms:
                h, _ = lstm(h)
                h = self.dropout(h)
        q, k = self.query(h), self.key(enc)
        att = torch.einsum("bua,bta->but", q, k) / k.shape[-1] ** 0.5
        valid = torch.arange(enc.shape[1], device=enc.device)[None, :] < enc_lens[:, None]
        att = att.masked_fill(~valid[:, None, :], float("-inf")).softmax(-1)
        context = torch.einsum("but,btd->bud", att, enc)
        return self.out(self.dropout(torch.tanh(self.combine(torch.cat([h, context], -1)))))

    @staticmethod
    def targets(tokens: Tensor, token_lens: Tensor, eos: int = 0, pad: int = -100) -> Tensor:
        """(B, U+1): each position's next token, the end of sentence at U, padding after."""
        b, u = tokens.shape
        out = torch.full((b, u + 1), pad, dtype=torch.long, device=tokens.device)
        pos = torch.arange(u + 1, device=tokens.device)[None]
        out[:, :u] = torch.where(pos[:, :u] < token_lens[:, None], tokens.long(), pad)
        out[torch.arange(b), token_lens.long()] = eos
        return out

    def loss(self, enc: Tensor, enc_lens: Tensor, tokens: Tensor, token_lens: Tensor
             ) -> tuple[Tensor, Tensor]:
        """(cross-entropy summed over the batch's positions, the logits)."""
        logits = self(enc, enc_lens, tokens)
        tgt = self.targets(tokens, token_lens, self.sos)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=-100,
                             reduction="sum")
        return ce, logits

    @torch.no_grad()
    def score(self, enc: Tensor, enc_lens: Tensor, hyps: list[list[int]]) -> Tensor:
        """Log P(hypothesis + end | audio) of each hypothesis; ``enc`` (N, T, d) has one row
        per hypothesis (repeat an utterance's encoder output for its n-best). (N,)"""
        n = len(hyps)
        u = max((len(h) for h in hyps), default=0)
        tokens = torch.zeros(n, max(u, 1), dtype=torch.long, device=enc.device)
        for i, h in enumerate(hyps):
            if h:
                tokens[i, : len(h)] = torch.tensor(h)
        lens = torch.tensor([len(h) for h in hyps], device=enc.device)
        logp = self(enc, enc_lens, tokens[:, :u]).log_softmax(-1)
        tgt = self.targets(tokens[:, :u], lens, self.sos)
        picked = logp.gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1)
        return (picked * (tgt != -100)).sum(1)
