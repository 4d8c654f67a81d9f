"""Saving and loading models and training state.

Everything is written to a temporary name and renamed (a ``kill -9`` mid-write leaves the last
complete file), and everything is read with ``torch.load(..., weights_only=True)``: a model file
someone hands the lab cannot run code. So files hold only tensors and plain data.

A **model file** (``model.pt``) holds ``{"format": "asrlab-model", "config": dict, "state":
state_dict, "meta": dict}``; the config carries every block's real sizes, so a pruned model
reloads as the smaller dense model it is. A sparse model can be written **sparse**: a tensor
with enough zeros is stored as a bitmask of its non-zeros (1 bit per weight) plus their values,
under ``"sparse"``, whenever that is smaller than the dense tensor; loading restores it exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from engine.models.build import build, from_dict, to_dict
from engine.models.transducer import Transducer

MODEL_FORMAT = "asrlab-model"


def atomic_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def pack_sparse(state: dict) -> tuple[dict, dict]:
    """(dense tensors, sparse tensors) of a state dict: a floating tensor goes sparse (bitmask +
    non-zero values) when that takes fewer bytes than storing it dense."""
    import numpy as np

    dense, sparse = {}, {}
    for k, t in state.items():
        if t.is_floating_point() and t.numel() >= 64:
            nz = t != 0
            nnz = int(nz.sum())
            if (t.numel() + 7) // 8 + nnz * t.element_size() < t.numel() * t.element_size():
                bits = np.packbits(nz.flatten().numpy())
                sparse[k] = {"shape": list(t.shape), "bits": torch.from_numpy(bits),
                             "values": t[nz].clone()}
                continue
        dense[k] = t
    return dense, sparse


def unpack_sparse(sparse: dict) -> dict:
    import numpy as np

    out = {}
    for k, s in sparse.items():
        n = 1
        for d in s["shape"]:
            n *= d
        nz = torch.from_numpy(np.unpackbits(s["bits"].numpy(), count=n).astype(bool))
        t = torch.zeros(n, dtype=s["values"].dtype)
        t[nz] = s["values"]
        out[k] = t.view(s["shape"])
    return out


def save_model(model: Transducer, path: Path, meta: dict | None = None,
               sparse: bool = False) -> Path:
    from engine.devices import to_cpu

    state = to_cpu(model.state_dict())  # a model trained on a GPU loads anywhere
    obj = {"format": MODEL_FORMAT, "config": to_dict(model.config()), "meta": meta or {}}
    if sparse:
        obj["state"], obj["sparse"] = pack_sparse(state)
    else:
        obj["state"] = state
    atomic_save(obj, path)
    return Path(path)


def load_model(path: Path | str, inference: bool = True) -> tuple[Transducer, dict]:
    """(model in eval mode, meta) from a model file or a training checkpoint. With ``inference``
    the training-only heads are dropped (see ``Transducer.for_inference``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable model file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict) or "config" not in obj or ("state" not in obj and "model" not in obj):
        raise ValueError(f"{path}: not an asrlab model or checkpoint (no config/state)")
    model = build(from_dict(obj["config"]))
    state = dict(obj.get("state", obj.get("model")))
    state.update(unpack_sparse(obj.get("sparse") or {}))
    model.load_state_dict(state)
    if inference:
        model.for_inference()
    return model.eval(), obj.get("meta", {})
