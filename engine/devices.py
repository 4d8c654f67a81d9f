"""Where a stage computes, and in what precision: one place for the ``device`` and ``precision``
settings of ``[stages.train]`` (and an evaluate stage's ``device``).

- ``device``: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. A DDP
  rank on CUDA takes ``cuda:LOCAL_RANK`` of the devices it sees (Ray and torchrun set
  ``CUDA_VISIBLE_DEVICES`` / ``LOCAL_RANK``).
- ``precision``: ``fp32`` or ``bf16`` (autocast: matmuls and convolutions in bfloat16, the
  transducer losses' log-sum-exps and lattices in fp32/fp64 as they cast themselves).

Checkpoints are always written with CPU tensors (``to_cpu``), so they load on any device.
"""

from __future__ import annotations

import contextlib
import os
import re

import torch

from engine.config import DEVICE_PATTERN

PRECISIONS = ("fp32", "bf16")


def cuda_count() -> int:
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver counts as no device
        return 0


def check(spec: str, field: str = "device") -> None:
    """Raise ValueError naming ``field`` when ``spec`` asks for a device this machine lacks."""
    if not re.match(DEVICE_PATTERN, spec):
        raise ValueError(f"{field} = {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if spec.startswith("cuda"):
        n = cuda_count()
        if n == 0:
            raise ValueError(f"{field} = {spec!r}: this machine has no CUDA device "
                             f"(torch.cuda.is_available() is False); use 'auto' or 'cpu'")
        idx = int(spec.split(":")[1]) if ":" in spec else 0
        if idx >= n:
            raise ValueError(f"{field} = {spec!r}: this machine has {n} CUDA device(s), "
                             f"cuda:0 to cuda:{n - 1}")


def resolve(spec: str = "auto", distributed: bool = False) -> torch.device:
    """The torch device for a setting; a DDP rank on CUDA takes ``cuda:LOCAL_RANK``."""
    check(spec)
    if spec == "auto":
        spec = "cuda" if cuda_count() else "cpu"
    if spec == "cuda" and distributed:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % cuda_count())
    return torch.device(spec)


def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision = {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_cpu(obj):
    """Tensors anywhere in nested dicts / lists / tuples moved to the CPU (for checkpoints)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_state() -> list | None:
    """Every CUDA generator's state (None without CUDA), for exact resume."""
    return torch.cuda.get_rng_state_all() if cuda_count() and torch.cuda.is_initialized() else None


def set_rng_state(states: list | None) -> None:
    if states is not None and cuda_count() >= len(states):
        torch.cuda.set_rng_state_all(states)


def stage_devices(exp) -> list[tuple[str, str, object]]:
    """(field path, device setting, stage) of every stage of an experiment that runs a model."""
    out = []
    for i, st in enumerate(exp.stages):
        if getattr(st, "train", None) is not None:
            out.append((f"stages[{i}].train.device", st.train.device, st))
        elif hasattr(st, "device"):
            out.append((f"stages[{i}].device", st.device, st))
    return out


def with_device(exp, spec: str, source: str):
    """``exp`` with every model-running stage's device set to ``spec`` (``--device``)."""
    from engine.config import parse_experiment

    data = exp.model_dump()
    for _, _, st in stage_devices(exp):
        d = data["stages"][exp.stages.index(st)]
        (d["train"] if d.get("train") is not None else d)["device"] = spec
    return parse_experiment(data, source)


def check_experiment(exp, source: str, gpus_of=None) -> None:
    """Refuse, naming the field, a device this machine lacks. With ``gpus_of`` (a Ray
    submission: the GPUs a stage asks for), a CUDA stage must ask for at least one instead: the
    cluster's nodes, not this machine, run it."""
    from engine.config import ConfigError

    for field, spec, st in stage_devices(exp):
        try:
            if gpus_of is None:
                check(spec, field)
            elif spec.startswith("cuda") and not gpus_of(st):
                raise ValueError(f"{field} = {spec!r} on a Ray cluster needs a GPU: set "
                                 f"[stages.resources] gpus = 1 (or [resources.{st.kind}])")
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
