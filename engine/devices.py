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
    """The torch device for a setting; a DDP rank on CUDA takes ``cuda:LOCAL_RANK``, its own
    GPU (two ranks on one GPU would make NCCL fail with "Duplicate GPU")."""
    check(spec)
    if spec == "auto":
        spec = "cuda" if cuda_count() else "cpu"
    if spec.startswith("cuda") and distributed:
        rank, n = int(os.environ.get("LOCAL_RANK", "0")), cuda_count()
        if spec != "cuda":
            raise ValueError(f"device = {spec!r} in a data-parallel stage: every rank would "
                             f"take that one GPU; use 'cuda' (rank r takes cuda:r)")
        if rank >= n:
            raise ValueError(f"rank {rank} of a data-parallel stage has no GPU of its own: "
                             f"this node has {n} (CUDA_VISIBLE_DEVICES="
                             f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); nproc must "
                             f"be at most {n}")
        return torch.device("cuda", rank)
    return torch.device(spec)


def where_note(spec: str, device: torch.device) -> str:
    """Why ``device = "auto"`` chose the CPU on a machine whose GPUs were hidden (a Ray task
    given no GPU sees ``CUDA_VISIBLE_DEVICES=""``), or ""."""
    if spec == "auto" and device.type == "cpu" and os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return (" (device = 'auto', but CUDA_VISIBLE_DEVICES is empty: a Ray task asked for "
                "no GPU, gpus = 0; set [stages.resources] gpus = 1 to train on a GPU)")
    return ""


def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision = {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def fp32(t: torch.Tensor):
    """Autocast off on ``t``'s device: what runs inside computes in the dtypes it is given (the
    transducer losses, the recurrent layers: cast their inputs with ``.float()``). As icefall
    computes its transducer losses; oneDNN has no bf16 LSTM on some CPUs and cuDNN's bf16 LSTM
    drifts."""
    return torch.autocast(device_type=t.device.type, enabled=False)


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


def check_experiment(exp, source: str, gpus_of=None) -> list[str]:
    """Refuse, naming the field, a device this machine lacks, and data-parallel ranks that
    would share a GPU. With ``gpus_of`` (a Ray submission: the GPUs a stage asks for per node),
    the cluster's nodes, not this machine, run it: a CUDA stage must ask for a GPU per rank.
    Returns notes for the user (a stage that will run on the CPU although it says ``auto``)."""
    from engine.config import ConfigError

    notes = []
    for field, spec, st in stage_devices(exp):
        nproc = getattr(st, "nproc", 1)
        where = field.rsplit(".train.device", 1)[0].rsplit(".device", 1)[0]
        try:
            if nproc > 1 and spec.startswith("cuda:"):
                raise ValueError(f"{field} = {spec!r} with {where}.nproc = {nproc}: every rank "
                                 f"would take that one GPU (NCCL fails with 'Duplicate GPU'); "
                                 f"use 'cuda' (rank r takes cuda:r)")
            if gpus_of is None:
                check(spec, field)
                n = cuda_count()
                if nproc > 1 and n and spec in ("cuda", "auto") and nproc > n:
                    raise ValueError(f"{where}.nproc = {nproc} ranks on CUDA need a GPU each; "
                                     f"this machine has {n}")
                continue
            gpus = gpus_of(st)
            if spec.startswith("cuda") and not gpus:
                raise ValueError(f"{field} = {spec!r} on a Ray cluster needs a GPU: set "
                                 f"[stages.resources] gpus = {nproc} (or [resources.{st.kind}])")
            if nproc > 1 and gpus and gpus < nproc:
                raise ValueError(f"{where}.nproc = {nproc} ranks with gpus = {gpus:g} per node: "
                                 f"each rank needs a GPU of its own (NCCL fails with 'Duplicate "
                                 f"GPU'); set [stages.resources] gpus = {nproc}")
            if spec == "auto" and not gpus:
                notes.append(f"{source}: {field} = 'auto' with gpus = 0 on Ray: the stage "
                             f"{st.name!r} runs on the CPU (Ray hides the GPUs of a task that "
                             f"asks for none); set [stages.resources] gpus = 1 for a GPU")
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    return notes
