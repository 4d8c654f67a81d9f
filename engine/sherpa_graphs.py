"""The three graphs the sherpa-onnx export traces, and the folder it writes, read back.

Below both ``engine.export`` (which traces these graphs) and ``engine.runtimes`` (which counts
their MACs and scores the folder), so neither imports the other for them.

- ``Encoder``: x (N, T, 80), x_lens -> encoder output projected to the joiner, every frame
  repeated ``FRAME_REPEAT`` times (why: below).
- ``Decoder``: y (N, context) -> projected predictor output (N, J).
- ``Joiner``: (encoder_out, decoder_out) -> logits (N, V).
- ``read_sherpa_folder``: ``asrlab.json`` of an export, checked to name files that exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

ONNX_FILES = ("encoder", "decoder", "joiner")


# sherpa-onnx's offline greedy search emits at most one token per encoder frame; the lab's
# greedy search up to three. At 12.5 Hz (after the time reduction) one is too few: the teacher
# lost 4.5 WER points to it. So the exported encoder repeats every output frame this many times:
# a token on a copy updates the decoder for the next copy, and a blank leaves every input as it
# was, so the remaining copies give blank too. sherpa-onnx then decodes exactly as the lab does.
FRAME_REPEAT = 3


class Encoder(nn.Module):
    def __init__(self, model, repeat: int = FRAME_REPEAT) -> None:
        super().__init__()
        self.encoder, self.enc_proj = model.encoder, model.joiner.enc_proj
        self.repeat = repeat

    def forward(self, x, x_lens):
        enc, lens = self.encoder(x, x_lens)
        enc = self.enc_proj(enc)
        if self.repeat > 1:
            b, t, d = enc.shape
            enc = enc[:, :, None].expand(b, t, self.repeat, d).reshape(b, t * self.repeat, d)
            lens = lens * self.repeat
        return enc, lens


class Decoder(nn.Module):
    """y (N, context) -> projected predictor output (N, J) for the last token in y."""

    def __init__(self, model) -> None:
        super().__init__()
        self.predictor, self.pred_proj = model.predictor, model.joiner.pred_proj
        self.blank = model.cfg.blank

    def forward(self, y):
        y = torch.where(y < 0, torch.full_like(y, self.blank), y)
        c = self.predictor.context
        h, _ = self.predictor(y[:, c - 1:], y[:, : c - 1])
        return self.pred_proj(h)[:, 0]  # (N, 1, dim) -> (N, J): Linear on 3-D input -> MatMul


class Joiner(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.out = model.joiner.out

    def forward(self, encoder_out, decoder_out):
        # 3-D so the output layer exports as MatMul (int8-quantizable), not Gemm
        return self.out(torch.tanh(encoder_out + decoder_out)[:, None])[:, 0]


def read_sherpa_folder(folder: Path) -> dict:
    """``asrlab.json`` of an exported sherpa-onnx folder, checked to name files that exist."""
    folder = Path(folder)
    info_path = folder / "asrlab.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{folder}: not a sherpa-onnx export of the lab (no asrlab.json; "
                                f"write one with `asrlab export MODEL --format sherpa-onnx`)")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{info_path}: not valid JSON ({e})") from None
    for group in ("files", "int8_files"):
        for name, f in (info.get(group) or {}).items():
            if not (folder / f).exists():
                raise FileNotFoundError(f"{folder / f}: missing ({group} names it)")
    return info
