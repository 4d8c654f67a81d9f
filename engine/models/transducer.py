"""RNN-Transducer (Graves 2012) around the Conformer encoder: predictor, joiner, losses.

``encode``, ``predict`` and ``join`` are callable on their own, as in torchaudio's RNNT:

- ``encode(x (B,T,80), x_lens (B,)) -> (enc (B,T',d_model), enc_lens (B,))``
- ``predict(y (B,U) token ids, state) -> (pred (B,U,pred_dim), state)``
- ``join(enc (B,T',1,J) or (B,T',d), pred (B,1,U,J) or (B,U,p)) -> logits``; ``project_enc`` and
  ``project_pred`` map each side to the joiner dimension first, so decoding projects once.

Predictors: ``stateless`` (embedding + width-``context`` grouped convolution over the last tokens,
as icefall and sherpa-onnx), and ``lstm`` (embedding + LSTM, as in the RNN-T compression papers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from engine import devices
from engine.models.conformer import ConformerEncoder, EncoderConfig
from engine.models.las import LASConfig, LASDecoder


LOSSES = ("pruned", "full", "torchaudio")


@dataclass(frozen=True)
class PredictorConfig:
    kind: str = "stateless"  # "stateless" or "lstm"
    dim: int = 256  # embedding (and stateless output) size
    context: int = 2  # stateless: tokens of left context
    hidden: int = 320  # lstm: hidden units
    layers: int = 1  # lstm: layers


@dataclass(frozen=True)
class TransducerConfig:
    vocab_size: int
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    joiner_dim: int = 256
    ctc_weight: float = 0.0  # auxiliary CTC head on the encoder
    # where it reads: "reduce": the block before the time reduction (25 Hz), "top": the
    # encoder output (icefall's and ESPnet's choice; at 12.5 Hz an utterance with more tokens
    # than frames gets no CTC gradient)
    ctc_layer: str = "reduce"
    blank: int = 0
    # "pruned": k2-style pruned loss (engine/losses/pruned.py); "full": our pure-PyTorch loss over
    # the whole lattice (engine/losses/rnnt.py); "torchaudio": torchaudio.functional.rnnt_loss
    loss: str = "pruned"
    prune_range: int = 5
    simple_loss_scale: float = 0.5
    # the second pass of a two-pass model: a LAS rescorer on the same encoder (engine/models/las.py)
    las: LASConfig | None = None


class StatelessPredictor(nn.Module):
    """Embedding + grouped Conv1d over the last ``context`` tokens + ReLU (Ghodsi et al. 2020)."""

    def __init__(self, vocab: int, cfg: PredictorConfig, blank: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, cfg.dim)
        self.context, self.blank = cfg.context, blank
        self.conv = (nn.Conv1d(cfg.dim, cfg.dim, cfg.context, groups=max(1, cfg.dim // 4),
                               bias=False) if cfg.context > 1 else None)
        self.out_dim = cfg.dim

    def forward(self, y: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """y: (B, U) ids; state: (B, context-1) previous ids -> (B, U, dim), new state."""
        if state is None:
            state = y.new_full((y.shape[0], self.context - 1), self.blank)
        ctx = torch.cat([state, y], 1)
        h = self.embed(ctx.clamp(min=0)) * (ctx >= 0)[..., None]  # -1 ids: zero (sherpa-onnx)
        if self.conv is not None:
            h = self.conv(h.transpose(1, 2)).transpose(1, 2)
        else:
            h = h[:, -y.shape[1]:]
        return F.relu(h), ctx[:, ctx.shape[1] - (self.context - 1):]


class LstmPredictor(nn.Module):
    def __init__(self, vocab: int, cfg: PredictorConfig, blank: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, cfg.dim)
        self.lstm = nn.LSTM(cfg.dim, cfg.hidden, cfg.layers, batch_first=True)
        self.out_dim = cfg.hidden

    def forward(self, y: Tensor, state: tuple[Tensor, Tensor] | None = None):
        # in fp32 outside autocast: oneDNN has no bf16 LSTM on some CPUs
        with devices.fp32(y):
            h, state = self.lstm(self.embed(y).float(), state)
        return h, state


class Joiner(nn.Module):
    def __init__(self, enc_dim: int, pred_dim: int, joiner_dim: int, vocab: int) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(enc_dim, joiner_dim)
        self.pred_proj = nn.Linear(pred_dim, joiner_dim)
        self.out = nn.Linear(joiner_dim, vocab)

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        """Projected enc (..., J) + projected pred (..., J), broadcast -> logits (..., V)."""
        return self.out(torch.tanh(enc + pred))


class Transducer(nn.Module):
    def __init__(self, cfg: TransducerConfig, cmvn: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ConformerEncoder(cfg.encoder, cmvn)
        p = cfg.predictor
        if p.kind == "stateless":
            self.predictor: nn.Module = StatelessPredictor(cfg.vocab_size, p, cfg.blank)
        elif p.kind == "lstm":
            self.predictor = LstmPredictor(cfg.vocab_size, p, cfg.blank)
        else:
            raise ValueError(f"unknown predictor kind {p.kind!r}; expected 'stateless' or 'lstm'")
        self.joiner = Joiner(cfg.encoder.d_model, self.predictor.out_dim, cfg.joiner_dim,
                             cfg.vocab_size)
        self.ctc = nn.Linear(cfg.encoder.d_model, cfg.vocab_size) if cfg.ctc_weight > 0 else None
        if cfg.ctc_layer not in ("reduce", "top"):
            raise ValueError(f"unknown ctc_layer {cfg.ctc_layer!r}; expected 'reduce' or 'top'")
        if cfg.loss not in LOSSES:
            raise ValueError(f"unknown transducer loss {cfg.loss!r}; expected one of {LOSSES}")
        # the pruned loss's "simple" joiner: linear heads on each side (training only)
        self.simple_am = (nn.Linear(cfg.encoder.d_model, cfg.vocab_size)
                          if cfg.loss == "pruned" else None)
        self.simple_lm = (nn.Linear(self.predictor.out_dim, cfg.vocab_size)
                          if cfg.loss == "pruned" else None)
        self.las = (LASDecoder(cfg.las, cfg.encoder.d_model, cfg.vocab_size, cfg.blank)
                    if cfg.las is not None else None)

    def config(self) -> TransducerConfig:
        return replace(self.cfg, encoder=self.encoder.config(),
                       las=self.las.config() if self.las is not None else None)

    def with_las(self, cfg: LASConfig) -> "Transducer":
        """Give this model a (new) second-pass rescorer, in place."""
        self.las = LASDecoder(cfg, self.cfg.encoder.d_model, self.cfg.vocab_size, self.cfg.blank)
        self.cfg = replace(self.cfg, las=cfg)
        return self

    def for_inference(self) -> "Transducer":
        """Drop the training-only heads (CTC, the pruned loss's simple joiner), in place: they
        are not part of the deployed model, so they count in no size or cost."""
        self.ctc = self.simple_am = self.simple_lm = None
        self.cfg = replace(self.cfg, ctc_weight=0.0, loss="torchaudio")
        return self

    # ----- the three parts ---------------------------------------------------------------------
    def encode(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x, x_lens)

    def predict(self, y: Tensor, state=None):
        return self.predictor(y, state)

    def project_enc(self, enc: Tensor) -> Tensor:
        return self.joiner.enc_proj(enc)

    def project_pred(self, pred: Tensor) -> Tensor:
        return self.joiner.pred_proj(pred)

    def join(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        return self.joiner(enc_proj, pred_proj)

    # ----- training ----------------------------------------------------------------------------
    def lattice_logits(self, enc: Tensor, tokens: Tensor) -> Tensor:
        """enc (B, T, d), tokens (B, U) -> joiner logits over the whole lattice (B, T, U+1, V)."""
        blank = tokens.new_full((tokens.shape[0], 1), self.cfg.blank)
        pred, _ = self.predict(torch.cat([blank, tokens], 1))
        return self.join(self.project_enc(enc)[:, :, None], self.project_pred(pred)[:, None])

    def forward(self, x: Tensor, x_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                warmup: float = 1.0, keep: bool = False) -> dict[str, Tensor]:
        """Losses summed over the batch: ``loss`` (what to minimise), ``rnnt``, and ``simple``
        and ``ctc`` when used; ``zeroed`` (our losses): how many utterances got loss 0 and no
        gradient because no path reached the end (a pruned band) or their loss reached 1e4. ``warmup`` in [0, 1] ramps the pruned loss in (icefall's recipe:
        the band is unreliable until the simple joiner has learnt an alignment). With ``keep``
        (distillation) also ``enc``, ``enc_lens``, ``blocks`` (each block's output and length)
        and the joiner's ``node_logits`` with their ``node_u``: the pruned band (B, T, S, V) and
        its u (B, T, S), or the whole lattice (B, T, U+1, V) and None."""
        ctc_low = (self.ctc is not None and self.cfg.ctc_layer == "reduce"
                   and self.cfg.encoder.reduce_after is not None)
        need_blocks = keep or ctc_low
        if need_blocks:
            enc, enc_lens, blocks = self.encoder(x, x_lens, return_blocks=True)
        else:
            enc, enc_lens = self.encoder(x, x_lens)
        node_u = None
        if self.cfg.loss == "pruned":
            out = self._pruned_losses(enc, enc_lens, tokens, token_lens, warmup)
            logits, node_u = out.pop("node_logits"), out.pop("node_u")
        elif self.cfg.loss == "full":
            from engine.losses.rnnt import rnnt_loss

            logits = self.lattice_logits(enc, tokens)
            zeroed = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
            with devices.fp32(logits):
                rnnt = rnnt_loss(logits.float(), tokens, enc_lens, token_lens, self.cfg.blank,
                                 zeroed).sum()
            out = {"rnnt": rnnt, "loss": rnnt, "zeroed": zeroed.sum()}
        else:
            logits = self.lattice_logits(enc, tokens)
            with devices.fp32(logits):  # torchaudio's loss takes fp32 or fp16 logits only
                rnnt = torchaudio.functional.rnnt_loss(
                    logits.float(), tokens.int(), enc_lens.int(), token_lens.int(),
                    blank=self.cfg.blank, reduction="sum")
            out = {"rnnt": rnnt, "loss": rnnt}
        if keep:
            out.update(enc=enc, enc_lens=enc_lens, blocks=blocks, node_logits=logits,
                       node_u=node_u)
        if self.ctc is not None:
            # CTC at the 4x rate when there is a time reduction: at 12.5 Hz some utterances have
            # more tokens than frames.
            if ctc_low:
                ctc_in = blocks[self.cfg.encoder.reduce_after]
                ctc_lens = ((x_lens - 1) // 2 - 1) // 2
            else:
                ctc_in, ctc_lens = enc, enc_lens
            logits = self.ctc(ctc_in)
            with devices.fp32(logits):
                logp = logits.float().log_softmax(-1).transpose(0, 1)
                ctc = F.ctc_loss(logp, tokens, ctc_lens.clamp(min=1), token_lens,
                                 blank=self.cfg.blank, reduction="sum", zero_infinity=True)
            out["ctc"] = ctc
            out["loss"] = (1 - self.cfg.ctc_weight) * out["loss"] + self.cfg.ctc_weight * ctc
        return out

    def _pruned_losses(self, enc: Tensor, enc_lens: Tensor, tokens: Tensor, token_lens: Tensor,
                       warmup: float) -> dict[str, Tensor]:
        from engine.losses.pruned import (prune_ranges, pruned_rnnt_loss, simple_logprobs)
        from engine.losses.rnnt import lattice

        blank = tokens.new_full((tokens.shape[0], 1), self.cfg.blank)
        pred, _ = self.predict(torch.cat([blank, tokens], 1))
        emit, blank_lp = simple_logprobs(self.simple_am(enc), self.simple_lm(pred), tokens,
                                         self.cfg.blank)
        zeroed = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        # one kernel: the simple loss and the occupation probabilities that place the band
        simple, occ = lattice(emit, blank_lp, enc_lens, token_lens, zeroed)
        simple = simple.sum()
        ranges = prune_ranges(occ, enc_lens, token_lens, self.cfg.prune_range)
        pruned, logits, u_band = pruned_rnnt_loss(
            self.project_enc(enc), self.project_pred(pred),
            lambda h: self.joiner.out(torch.tanh(h)), tokens, enc_lens, token_lens, ranges,
            self.cfg.prune_range, self.cfg.blank, return_logits=True, zeroed=zeroed)
        pruned = pruned.sum()
        w = min(max(warmup, 0.0), 1.0)
        s = self.cfg.simple_loss_scale
        simple_scale = 1.0 - w * (1.0 - s)
        pruned_scale = 0.1 + 0.9 * w
        return {"rnnt": pruned, "simple": simple, "node_logits": logits, "node_u": u_band,
                "loss": simple_scale * simple + pruned_scale * pruned, "zeroed": zeroed.sum()}
