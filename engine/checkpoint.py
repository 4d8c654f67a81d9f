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


def safe_load(path: Path, what: str = "file"):
    """``torch.load(weights_only=True)`` with a message that says what is wrong with ``path``: an
    empty file, a file that is not PyTorch's, or one refused because it holds Python objects
    beyond tensors and plain data (the lab never runs code from a file it is handed)."""
    import pickle
    import warnings
    import zipfile

    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: an empty file, not a {what}")
    with open(path, "rb") as f:
        head = f.read(1)
    if not zipfile.is_zipfile(path) and head != b"\x80":
        raise ValueError(f"{path}: not a PyTorch {what} (torch.save writes a zip archive; this "
                         f"file is neither that nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise ValueError(f"{path}: refused: it holds Python objects beyond tensors and plain "
                             f"data, and the lab loads weights only (loading such a file can run "
                             f"code from it); not an asrlab {what}") from None
        raise ValueError(f"{path}: not a PyTorch {what} ({e})") from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{path}: not a PyTorch {what} ({type(e).__name__}: {first})") from None


def load_model(path: Path | str, inference: bool = True) -> tuple[Transducer, dict]:
    """(model in eval mode, meta) from a model file or a training checkpoint. With ``inference``
    the training-only heads are dropped (see ``Transducer.for_inference``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    obj = safe_load(path, "model file")
    if not isinstance(obj, dict) or "config" not in obj or ("state" not in obj and "model" not in obj):
        raise ValueError(f"{path}: not an asrlab model or checkpoint (no config/state)")
    model = build(from_dict(obj["config"]))
    state = dict(obj.get("state", obj.get("model")))
    state.update(unpack_sparse(obj.get("sparse") or {}))
    model.load_state_dict(state)
    if inference:
        model.for_inference()
    return model.eval(), obj.get("meta", {})
