"""Model presets and (de)serialisation: the one place that turns model settings into modules.

Presets are keyword-only factories returning a ``TransducerConfig``; ``build`` makes the model;
``to_dict``/``from_dict`` round-trip a config through plain data (checkpoints, exported artifacts
and ``asrlab inspect`` use them), so a pruned model with per-block sizes reloads as it is.

Defaults are engineered for two CPU cores (issue 4): frame pairs merged
after block 2 (8x overall, 12.5 Hz into the joiner), a stateless predictor, and an auxiliary CTC
head at the 4x rate.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import torch

from engine.data.features import GlobalCMVN
from engine.models.conformer import BlockConfig, EncoderConfig
from engine.models.las import LASConfig
from engine.models.transducer import PredictorConfig, Transducer, TransducerConfig


def _encoder(d: int, blocks: int, heads: int, ffn: int, conv: int, kernel: int, sub: int,
             streaming: bool, chunk_size: int, left_chunks: int, time_reduction: bool,
             dropout: float) -> EncoderConfig:
    block = BlockConfig(heads=heads, head_dim=d // heads, ffn1=ffn, ffn2=ffn, conv_channels=conv,
                        kernel=kernel)
    return EncoderConfig(d_model=d, blocks=(block,) * blocks, subsampling_channels=sub,
                         reduce_after=1 if time_reduction else None, causal=streaming,
                         chunk_size=chunk_size if streaming else 0,
                         left_chunks=left_chunks if streaming else -1, dropout=dropout)


def _transducer(vocab_size: int, enc: EncoderConfig, pred_dim: int, joiner: int,
                predictor: str, ctc_weight: float) -> TransducerConfig:
    return TransducerConfig(vocab_size=vocab_size, encoder=enc,
                            predictor=PredictorConfig(kind=predictor, dim=pred_dim,
                                                      hidden=pred_dim),
                            joiner_dim=joiner, ctc_weight=ctc_weight)


def teacher(*, vocab_size: int, streaming: bool = False, predictor: str = "stateless",
            chunk_size: int = 16, left_chunks: int = 4, ctc_weight: float = 0.3,
            dropout: float = 0.1, time_reduction: bool = True) -> TransducerConfig:
    """About 8 M parameters: 6 blocks of 256, 4 heads, FFN 768, conv 256."""
    enc = _encoder(256, 6, 4, 768, 256, 15, 64, streaming, chunk_size, left_chunks,
                   time_reduction, dropout)
    return _transducer(vocab_size, enc, 256, 256, predictor, ctc_weight)


def student_m(*, vocab_size: int, streaming: bool = False, predictor: str = "stateless",
              chunk_size: int = 16, left_chunks: int = 4, ctc_weight: float = 0.3,
              dropout: float = 0.1, time_reduction: bool = True) -> TransducerConfig:
    """About 3.5 M parameters: 5 blocks of 192, 4 heads, FFN 448, conv 192."""
    enc = _encoder(192, 5, 4, 448, 192, 15, 48, streaming, chunk_size, left_chunks,
                   time_reduction, dropout)
    return _transducer(vocab_size, enc, 192, 192, predictor, ctc_weight)


def student_s(*, vocab_size: int, streaming: bool = False, predictor: str = "stateless",
              chunk_size: int = 16, left_chunks: int = 4, ctc_weight: float = 0.3,
              dropout: float = 0.1, time_reduction: bool = True) -> TransducerConfig:
    """About 1.5 M parameters: 4 blocks of 128, 4 heads, FFN 384, conv 128."""
    enc = _encoder(128, 4, 4, 384, 128, 15, 32, streaming, chunk_size, left_chunks,
                   time_reduction, dropout)
    return _transducer(vocab_size, enc, 128, 128, predictor, ctc_weight)


def tiny(*, vocab_size: int, streaming: bool = False, predictor: str = "stateless",
         chunk_size: int = 8, left_chunks: int = 2, ctc_weight: float = 0.3,
         dropout: float = 0.0, time_reduction: bool = True) -> TransducerConfig:
    """For tests: a few hundred thousand parameters, 3 blocks of 64."""
    enc = _encoder(64, 3, 2, 128, 64, 7, 16, streaming, chunk_size, left_chunks,
                   time_reduction, dropout)
    return _transducer(vocab_size, enc, 64, 64, predictor, ctc_weight)


PRESETS = {"teacher": teacher, "student-m": student_m, "student-s": student_s, "tiny": tiny}


def preset(name: str, loss: str = "pruned", prune_range: int = 5, simple_loss_scale: float = 0.5,
           ctc_layer: str = "reduce", **kwargs) -> TransducerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
    return replace(PRESETS[name](**kwargs), loss=loss, prune_range=prune_range,
                   simple_loss_scale=simple_loss_scale, ctc_layer=ctc_layer)


def build(cfg: TransducerConfig, cmvn_stats: dict | None = None) -> Transducer:
    """The model for ``cfg``; ``cmvn_stats`` ({"mean", "std"}) become its fixed first layer."""
    cmvn = GlobalCMVN.from_stats(cmvn_stats) if cmvn_stats else GlobalCMVN([0.0] * 80, [1.0] * 80)
    return Transducer(cfg, cmvn)


# ----- plain-data round trip --------------------------------------------------------------------
def to_dict(cfg: TransducerConfig) -> dict:
    return asdict(cfg)


def from_dict(d: dict) -> TransducerConfig:
    enc = dict(d["encoder"])
    enc["blocks"] = tuple(BlockConfig(**b) for b in enc["blocks"])
    las = d.get("las")
    if las is not None:
        las = LASConfig(**{**las, "layers": tuple(las["layers"])})
    return TransducerConfig(**{**d, "encoder": EncoderConfig(**enc),
                               "predictor": PredictorConfig(**d["predictor"]), "las": las})


def describe(model: Transducer) -> dict:
    """Architecture as data (``asrlab inspect``): parameters and every block's real sizes."""
    cfg = model.config()
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {
        "params": params, "nonzero_params": nonzero, "vocab_size": cfg.vocab_size,
        "d_model": cfg.encoder.d_model, "reduce_after": cfg.encoder.reduce_after,
        "streaming": {"causal": cfg.encoder.causal, "chunk_size": cfg.encoder.chunk_size,
                      "left_chunks": cfg.encoder.left_chunks},
        "predictor": asdict(cfg.predictor), "joiner_dim": cfg.joiner_dim,
        "blocks": [{**asdict(b), "params": sum(p.numel() for p in blk.parameters())}
                   for b, blk in zip(cfg.encoder.blocks, model.encoder.blocks)],
        "layers": cfg.encoder.n_layers,
        "share": None if cfg.encoder.share is None else list(cfg.encoder.share),
        "las": None if model.las is None else {
            **asdict(cfg.las), "params": sum(p.numel() for p in model.las.parameters())},
    }


def with_streaming(cfg: TransducerConfig, chunk_size: int, left_chunks: int) -> TransducerConfig:
    return replace(cfg, encoder=replace(cfg.encoder, causal=True, chunk_size=chunk_size,
                                        left_chunks=left_chunks))
