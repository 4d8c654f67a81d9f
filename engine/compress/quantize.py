"""int8: onnxruntime's dynamic quantization of the exported files, PyTorch's where it exists, and a
per-module sensitivity sweep that decides what stays fp32.

- ``quantize_onnx``: weights of MatMul nodes to int8 (per tensor, activations quantized on the fly
  at run time), as icefall quantizes its sherpa-onnx exports; convolutions, embeddings and norms
  stay fp32. ``keep_fp32`` names module types (``MODULE_TYPES``) whose MatMuls are left alone.
- ``module_type``: the module type of an exported node, from the module path the exporter
  writes into node names (``/encoder/blocks.2/attn/q/MatMul`` is ``attention``).
- ``sensitivity_sweep``: quantize one module type at a time, everything else fp32, score each on
  dev with the same onnxruntime decoder, and keep fp32 every type whose int8 costs more than
  ``tolerance`` WER points with a paired-bootstrap interval that excludes no loss. ``asrlab export --int8 --sensitivity`` and the export stage's
  ``sensitivity = true`` run it and export with its choice.
- ``torch_int8``: ``torch.ao.quantization.quantize_dynamic`` of the Linear layers, for an in-lab
  int8 figure in PyTorch, behind a version guard: recent PyTorch releases deprecate and then drop
  ``torch.ao.quantization`` (for torchao), and then it says so instead of failing obscurely.
  Its sizes are not byte-true for shared blocks (it copies a shared Linear per use; DESIGN.md),
  so the lab's int8 sizes come from the ONNX files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

MODULE_TYPES = ("subsampling", "feed_forward", "attention", "convolution", "time_reduction",
                "encoder_proj", "decoder", "joiner")
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


def sensitivity_sweep(folder: Path, corpus: Path, split: str = "dev",
                      max_utterances: int | None = 100, tolerance: float = 0.5,
                      log=print) -> dict:
    """WER on ``split`` of the fp32 export and of each one-module-type-int8 variant, and the
    paired-bootstrap interval of each difference; a type stays fp32 (``keep_fp32``) when its
    int8 costs more than ``tolerance`` points **and** the interval excludes no loss: on a
    100-utterance dev set a difference of a word or two is noise, and keeping a type fp32 on
    noise costs real bytes (it kept the teacher's int8 files at 48% of fp32 instead of 28%)."""
    from engine.evaluate import UtteranceResult, paired_bootstrap
    from engine.runtimes import evaluate_exported

    def scored(where, int8):
        res = evaluate_exported(where, corpus, split, "onnxruntime", int8=int8,
                                max_utterances=max_utterances, accounting=False)
        keys = UtteranceResult.__dataclass_fields__
        return res["summary"]["wer"], [UtteranceResult(**{k: u[k] for k in keys})
                                       for u in res["utterances"]]

    folder = Path(folder)
    base, base_utts = scored(folder, False)
    log(f"sensitivity on {split}: fp32 WER {base:.2f}%")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="asrlab-sens-") as tmp:
        work = Path(tmp)
        for f in folder.iterdir():
            if f.suffix in (".onnx", ".txt", ".json", ".model") and ".int8." not in f.name:
                shutil.copy(f, work / f.name)
        info = json.loads((work / "asrlab.json").read_text())
        info["int8_files"] = {n: f"{n}.int8.onnx" for n in ("encoder", "decoder", "joiner")}
        (work / "asrlab.json").write_text(json.dumps(info))
        types = present_types(work)
        for kind in types:
            for name in ("encoder", "decoder", "joiner"):
                quantize_onnx(work / f"{name}.onnx", work / f"{name}.int8.onnx",
                              keep_fp32=[k for k in MODULE_TYPES if k != kind])
            wer, utts = scored(work, True)
            d = paired_bootstrap(base_utts, utts)
            rows[kind] = {"wer": wer, "delta": round(wer - base, 3),
                          "delta_ci": [round(x, 3) for x in d["ci"]]}
            log(f"  int8 {kind}: WER {wer:.2f}% ({wer - base:+.2f}, 95% interval "
                f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}])")
    keep = [k for k, r in rows.items() if r["delta"] > tolerance and r["delta_ci"][0] > 0]
    return {"split": split, "utterances": max_utterances, "fp32_wer": base,
            "tolerance": tolerance, "types": rows, "keep_fp32": keep}


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
