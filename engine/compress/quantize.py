"""int8: onnxruntime's dynamic quantization of the exported files, PyTorch's where it exists, and a
the module types a sensitivity sweep
(``engine.export``) may keep fp32.

- ``quantize_onnx``: weights of MatMul nodes to int8 (per tensor, activations quantized on the fly
  at run time), as icefall quantizes its sherpa-onnx exports; convolutions, embeddings and norms
  stay fp32. ``keep_fp32`` names module types (``MODULE_TYPES``) whose MatMuls are left alone.
- ``module_type``: the module type of an exported node, from the module path the exporter
  writes into node names (``/encoder/blocks.2/attn/q/MatMul`` is ``attention``).
- The per-module sensitivity sweep that picks ``keep_fp32`` scores exported folders, so it lives
  with the export (``engine.export.sensitivity_sweep``), above the runtimes it evaluates with.
- ``torch_int8``: ``torch.ao.quantization.quantize_dynamic`` of the Linear layers, for an in-lab
  int8 figure in PyTorch, behind a version guard: recent PyTorch releases deprecate and then drop
  ``torch.ao.quantization`` (for torchao), and then it says so instead of failing obscurely.
  Its sizes are not byte-true for shared blocks (it copies a shared Linear per use),
  so the lab's int8 sizes come from the ONNX files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.config import MODULE_TYPES

_PATTERNS = (("/subsampling/", "subsampling"), ("/ffn1/", "feed_forward"),
             ("/ffn2/", "feed_forward"), ("/attn/", "attention"), ("/conv/", "convolution"),
             ("/reduction/", "time_reduction"), ("/enc_proj/", "encoder_proj"),
             ("/pred_proj/", "decoder"), ("/predictor/", "decoder"), ("/out/", "joiner"))


def module_type(node_name: str) -> str | None:
    for pattern, kind in _PATTERNS:
        if pattern in node_name:
            return kind
    return None


def matmul_nodes(path: Path) -> dict[str, str | None]:
    """Name -> module type of every MatMul node in an ONNX file."""
    import onnx

    g = onnx.load(str(path)).graph
    return {n.name: module_type(n.name) for n in g.node if n.op_type == "MatMul"}


def quantize_onnx(src: Path, dst: Path, keep_fp32=()) -> dict:
    """int8 copy of ``src`` at ``dst``; returns which MatMuls were quantized, by module type."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bad = sorted(set(keep_fp32) - set(MODULE_TYPES))
    if bad:
        raise ValueError(f"unknown module types to keep fp32: {bad}; allowed: "
                         f"{', '.join(MODULE_TYPES)}")
    nodes = matmul_nodes(src)
    exclude = [n for n, kind in nodes.items() if kind in set(keep_fp32)]
    if len(exclude) == len(nodes):  # nothing to quantize: an fp32 copy
        shutil.copyfile(src, dst)
    else:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    counts: dict[str, int] = {}
    for n, kind in nodes.items():
        if n not in exclude:
            counts[kind or "other"] = counts.get(kind or "other", 0) + 1
    return counts


def present_types(folder: Path) -> list[str]:
    """Module types with at least one MatMul in an exported folder."""
    kinds = set()
    for name in ("encoder", "decoder", "joiner"):
        kinds |= {k for k in matmul_nodes(Path(folder) / f"{name}.onnx").values() if k}
    return [k for k in MODULE_TYPES if k in kinds]


def torch_int8(model):
    """A copy of ``model`` with its Linear layers int8 (dynamic), or a clear error."""
    import copy

    import torch

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # pragma: no cover - depends on the PyTorch release
        raise RuntimeError(f"torch {torch.__version__} has no torch.ao.quantization."
                           f"quantize_dynamic; use the onnxruntime int8 path (--runtime "
                           f"onnxruntime or sherpa-onnx)") from None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        engines = torch.backends.quantized.supported_engines
        if "qnnpack" in engines and "fbgemm" not in engines:
            torch.backends.quantized.engine = "qnnpack"
        return quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear},
                                dtype=torch.qint8)
