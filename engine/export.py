"""Deployable artifacts; their file sizes are the sizes the lab reports.

``export_torch``: one self-contained file ``model.pt`` (config with every block's real sizes,
fp32 weights, the embedded tokenizer) plus ``tokens.txt`` beside it. A tensor with enough zeros
(a magnitude-pruned model) is stored as a bitmask plus its non-zero values, so the file's bytes
are what the sparsity really saves (``format`` says ``torch-fp32-sparse``). Loadable with
``engine.checkpoint.load_model`` (``weights_only=True``). The sherpa-onnx three-file ONNX export
and int8 come with the quantization issue.
"""

from __future__ import annotations

from pathlib import Path

from engine.checkpoint import load_model, pack_sparse, save_model
from engine.data.tokenizer import Tokenizer


def export_torch(model_path: Path, out_dir: Path) -> dict:
    model, meta = load_model(model_path)  # inference form: no training-only heads
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in meta.items() if k in ("tokenizer", "step", "corpus", "twopass")}
    _, sparse = pack_sparse(model.state_dict())
    artifact = save_model(model, out_dir / "model.pt", keep, sparse=bool(sparse))
    if "tokenizer" in meta:
        tok = Tokenizer(proto=bytes(meta["tokenizer"].numpy().tobytes()))
        (out_dir / "tokens.txt").write_text(tok.tokens_txt())
    return {"artifact": str(artifact), "bytes": artifact.stat().st_size,
            "format": "torch-fp32-sparse" if sparse else "torch-fp32",
            "sparse_tensors": len(sparse)}
