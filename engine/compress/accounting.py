"""Honest accounting: what a model costs, measured, never estimated from a config.

- ``params`` / ``nonzero_params``: counted from the tensors (pruned zeros show as the gap).
- ``bytes``: the size of the deployable artifact **file**, written by ``engine.export``; shared
  tensors are stored once there (torch.save keeps one copy of a shared storage).
- ``macs_per_second``: multiply-accumulates per second of audio, counted by PyTorch's
  ``FlopCounterMode`` from the real operator shapes while the model encodes and greedily decodes
  real utterances (a pruned model is counted as the smaller model it is). MACs = FLOPs / 2.
  ``flop_counter()`` adds the formulas torch lacks for what runs here: the CPU attention kernel
  behind ``scaled_dot_product_attention`` (Q.K^T and attention.V), oneDNN's LSTM layer (the
  LSTM predictor, the LAS rescorer) and dynamically quantised Linear layers (``torch-int8``);
  without them each counted 0.
- ``rtf``: real-time factor of encode + greedy search at **1 thread**, median of ``repeats``
  timed passes over the same utterances after one warm-up pass. The stateless predictor has no
  LSTM; for LSTM predictors oneDNN is switched off while timing so single-step fp32 runs at its
  fair speed (the "LSTM trap": oneDNN's single-step fp32 LSTM is ~10x slower than LSTMCell).
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.decode import decode, two_pass
from engine.models.transducer import Transducer


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q.K^T and attention.V: 2 B H Lq Lk (D + Dv); the softmax and the mask are not MACs."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _mkldnn_lstm_layer_flops(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None,
                             **kwargs) -> int:
    """One LSTM layer (one direction) over every step: the input and recurrent products,
    2 x steps x batch x (4H x I + 4H x H); the gates' element-wise work is not MACs."""
    steps_x_batch = 1
    for n in input_shape[:-1]:
        steps_x_batch *= n
    return 2 * steps_x_batch * (w_ih_shape[0] * w_ih_shape[1] + w_hh_shape[0] * w_hh_shape[1])


def _linear_dynamic_flops(input_shape, *args, out_shape=None, **kwargs) -> int:
    """A dynamically quantised Linear: 2 x rows x in x out (the int8 products count as MACs)."""
    n = 1
    for d in input_shape:
        n *= d
    return 2 * n * out_shape[-1]


def mac_formulas() -> dict:
    """Operator -> FLOP formula, for the operators torch's counter has none for."""
    # keyed by overload packet, as the counter looks them up
    ops = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
           torch.ops.aten.mkldnn_rnn_layer: _mkldnn_lstm_layer_flops}
    try:
        ops[torch.ops.quantized.linear_dynamic] = _linear_dynamic_flops
    except (AttributeError, RuntimeError):  # a build without the quantized CPU kernels
        pass
    return ops


def flop_counter() -> FlopCounterMode:
    """``FlopCounterMode`` that also counts CPU attention, oneDNN LSTMs and int8 Linear layers."""
    return FlopCounterMode(display=False, custom_mapping=mac_formulas())


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return params, nonzero


def file_bytes(path: Path) -> int:
    return Path(path).stat().st_size


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    mkldnn = torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.backends.mkldnn.enabled = mkldnn


SEARCHES = ("greedy", "beam", "streaming", "twopass")


def _decode(model: Transducer, batches: list[tuple[torch.Tensor, torch.Tensor]],
            search: str = "greedy", beam: int = 4) -> None:
    """The search whose cost is measured: ``greedy``, ``beam`` (modified beam search, also a
    two-pass model's first pass), ``streaming`` (chunk by chunk) or ``twopass`` (the beam's
    n-best, then the LAS rescoring)."""
    for x, lens in batches:
        if search == "twopass":
            two_pass(model, *model.encode(x, lens), beam)
        else:
            decode(model, x, lens, search, beam)


@torch.no_grad()
def macs_per_second(model: Transducer, batches: list[tuple[torch.Tensor, torch.Tensor]],
                    audio_seconds: float, search: str = "greedy", beam: int = 4) -> float:
    model.eval()
    with flop_counter() as counter:
        _decode(model, batches, search, beam)
    return counter.get_total_flops() / 2.0 / max(audio_seconds, 1e-9)


@torch.no_grad()
def real_time_factor(model: Transducer, batches: list[tuple[torch.Tensor, torch.Tensor]],
                     audio_seconds: float, repeats: int = 3, search: str = "greedy",
                     beam: int = 4) -> float:
    """Median seconds of compute per second of audio, one utterance at a time, 1 thread."""
    model.eval()
    times = []
    with one_thread():
        _decode(model, batches[:2], search, beam)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            _decode(model, batches, search, beam)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / max(audio_seconds, 1e-9)


def account(model: Transducer, utterances: list[torch.Tensor], artifact: Path | None = None,
            repeats: int = 3, search: str = "greedy", beam: int = 4) -> dict:
    """Every figure above for ``model`` on ``utterances`` (a list of (T, 80) fbank tensors),
    for the search that produced the WER (``search``, as ``_decode``): a beam or two-pass WER
    is not paid for at greedy's price. A two-pass search also reports its first pass alone
    (``*_first_pass``), the part a streaming deployment pays before the rescoring."""
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; expected one of {', '.join(SEARCHES)}")
    batches = [(u[None], torch.tensor([u.shape[0]])) for u in utterances]
    audio = sum(u.shape[0] for u in utterances) / 100.0  # 10 ms frames
    params, nonzero = count_params(model)
    out = {"params": params, "nonzero_params": nonzero,
           "bytes": file_bytes(artifact) if artifact else None,
           "macs_per_second": round(macs_per_second(model, batches, audio, search, beam)),
           "rtf": round(real_time_factor(model, batches, audio, repeats, search, beam), 5),
           "rtf_utterances": len(utterances), "rtf_audio_seconds": round(audio, 2),
           "accounting_search": search}
    if search == "twopass":  # its first pass is the beam search
        out["macs_per_second_first_pass"] = round(macs_per_second(model, batches, audio,
                                                                  "beam", beam))
        out["rtf_first_pass"] = round(real_time_factor(model, batches, audio, repeats,
                                                       "beam", beam), 5)
    return out
