"""Gradual magnitude pruning (Zhu & Gupta, 2017), as the sparse RNN-T students of Panchapagesan
et al. (ICASSP 2021, arXiv 2011.06110) are made.

- Which weights: the weight tensors of the chosen layer types (``linear``, ``conv1d``,
  ``embedding``, ``lstm``) in the chosen parts of the transducer (``encoder``, ``predictor``,
  ``joiner``); biases, norms and the training-only heads are never pruned.
- When: the cubic schedule ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3`` between steps
  t0 and t1, a new mask every ``every`` steps, ``s_f`` from step t1 on. Each tensor is pruned to
  ``s_t`` by magnitude (layer-wise, the paper's choice) or all tensors together (``global``).
- Masks are buffers of this wrapper (they are checkpointed and resume exactly) and are applied
  after **every** optimizer step, so a pruned weight stays exactly zero although Adam's moments
  would move it.
- With a teacher the wrapped model is a ``Distiller`` (3-way KD from the unpruned model).

Zeros are only worth bytes when stored sparse (``engine.checkpoint`` writes a bitmask plus the
non-zero values); dense kernels run a sparse model no faster (``benchmarks/bench_prune.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LAYER_TYPES: dict[str, tuple[type, ...]] = {
    "linear": (nn.Linear,), "conv1d": (nn.Conv1d,), "embedding": (nn.Embedding,),
    "lstm": (nn.LSTM,),
}
PARTS = ("encoder", "predictor", "joiner")


def cubic_sparsity(step: int, final: float, initial: float = 0.0, start: int = 0,
                   end: int = 1000) -> float:
    """Zhu & Gupta's target sparsity at ``step``."""
    if step <= start:
        return initial if step == start else 0.0
    if step >= end:
        return final
    progress = (step - start) / max(end - start, 1)
    return final + (initial - final) * (1.0 - progress) ** 3


def prunable(model, layers: list[str], parts: list[str]) -> list[tuple[str, Tensor]]:
    """(name, weight) of every tensor the pruner may zero, in a fixed order."""
    types = tuple(t for name in layers for t in LAYER_TYPES[name])
    out = []
    for part in parts:
        root = getattr(model, part)
        for mname, m in root.named_modules():
            if not isinstance(m, types):
                continue
            for pname, p in m.named_parameters(recurse=False):
                if pname.startswith("weight"):
                    out.append((f"{part}.{mname}.{pname}".replace("..", "."), p))
    return out


def magnitude_masks(weights: list[Tensor], sparsity: float, scope: str = "layer") -> list[Tensor]:
    """Boolean keep-masks pruning ``sparsity`` of the weights with the smallest magnitude, per
    tensor (``layer``) or over all of them (``global``)."""
    if sparsity <= 0:
        return [torch.ones_like(w, dtype=torch.bool) for w in weights]
    if scope == "global":
        mags = torch.cat([w.detach().abs().flatten() for w in weights])
        k = int(round(sparsity * mags.numel()))
        if k == 0:
            return [torch.ones_like(w, dtype=torch.bool) for w in weights]
        threshold = mags.kthvalue(k).values
        return [_keep_top(w, threshold, None) for w in weights]
    masks = []
    for w in weights:
        k = int(round(sparsity * w.numel()))
        masks.append(_keep_top(w, None, k))
    return masks


def _keep_top(w: Tensor, threshold: Tensor | None, k: int | None) -> Tensor:
    mag = w.detach().abs().flatten()
    keep = torch.ones_like(mag, dtype=torch.bool)
    if k is not None:
        if k > 0:
            keep[mag.topk(k, largest=False).indices] = False  # exactly k zeros, ties broken
    else:
        keep = mag > threshold
    return keep.view_as(w)


class MagnitudePruner(nn.Module):
    """Wraps the trained module (a ``Transducer`` or a ``Distiller`` holding one) and keeps the
    student's chosen weights pruned on the cubic schedule."""

    def __init__(self, inner: nn.Module, cfg) -> None:
        super().__init__()
        self.inner, self.cfg = inner, cfg
        self.names = [n for n, _ in prunable(self.student, cfg.layers, cfg.parts)]
        if not self.names:
            raise ValueError(f"nothing to prune: no {cfg.layers} layers in {cfg.parts}")
        for i, (_, w) in enumerate(prunable(self.student, cfg.layers, cfg.parts)):
            self.register_buffer(f"mask_{i}", torch.ones_like(w, dtype=torch.bool))
        self.register_buffer("level", torch.zeros(()))  # the sparsity the masks were made for
        self._level: float | None = None  # its value on the host (no read-back every step)

    @property
    def student(self):
        return getattr(self.inner, "student", self.inner)

    def config(self):
        return self.student.config()

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def weights(self) -> list[Tensor]:
        return [w for _, w in prunable(self.student, self.cfg.layers, self.cfg.parts)]

    def masks(self) -> list[Tensor]:
        return [getattr(self, f"mask_{i}") for i in range(len(self.names))]

    def target(self, step: int) -> float:
        c = self.cfg
        return cubic_sparsity(step, c.sparsity, c.initial_sparsity, c.start_step, c.end_step)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        c = self.cfg
        s = self.target(step)
        due = step >= c.start_step and ((step - c.start_step) % c.every == 0 or step >= c.end_step)
        if self._level is None:  # the buffer (a checkpoint's) read once, then kept here too
            self._level = float(self.level)
        if due and abs(s - self._level) > 1e-9:
            new = magnitude_masks(self.weights(), s, c.scope)
            for m, n in zip(self.masks(), new):
                m.copy_(m & n)  # a pruned weight never comes back
            self.level.fill_(s)
            self._level = s
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self, model=None) -> None:
        """Zero the pruned weights of the student (or of ``model``, e.g. an averaged copy on
        the CPU while the masks are on the training device)."""
        target = model if model is not None else self.student
        for w, m in zip([w for _, w in prunable(target, self.cfg.layers, self.cfg.parts)],
                        self.masks()):
            w.mul_(m.to(w.device, non_blocking=True))

    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks())
        return 1.0 - sum(int(m.sum()) for m in self.masks()) / max(total, 1)

    def metrics(self) -> dict:
        return {"sparsity_target": round(float(self.level), 4),
                "sparsity": round(self.sparsity(), 4)}

    def mask_records(self) -> list[dict]:
        """Kept fraction of every pruned tensor, grouped by encoder block (the Masks page)."""
        rows, blocks = [], {}
        for name, m in zip(self.names, self.masks()):
            block, module = _where(name)
            kept = int(m.sum())
            rows.append({"block": block, "module": module, "unit": "weights", "tensor": name,
                         "kept_fraction": kept / m.numel(), "size": m.numel()})
            full, k = blocks.get(block, (0, 0))
            blocks[block] = (full + m.numel(), k + kept)
        for block, (full, k) in sorted(blocks.items()):
            rows.append({"block": block, "module": "block", "unit": "params", "size": full,
                         "kept_fraction": k / max(full, 1)})
        return rows


def _where(name: str) -> tuple[int, str]:
    """(encoder block or -1, module) of a parameter name such as encoder.blocks.2.ffn1.up.weight."""
    parts = name.split(".")
    if parts[0] == "encoder" and len(parts) > 3 and parts[1] == "blocks":
        return int(parts[2]), ".".join(parts[3:-1])
    return -1, ".".join(parts[:-1])
