"""Structured pruning with hard-concrete L0 gates (Louizos et al. 2018), as Jiang et al.
(Interspeech 2023, arXiv 2305.19549) prune Conformers, with CoFi's / DPHuBERT's constants.

Gates, per encoder block (``units`` chooses which kinds):

- ``modules``: one gate on each of the block's FFN1, attention, convolution and FFN2 modules;
- ``heads``: one per attention head; ``ffn``: one per FFN hidden unit; ``conv``: one per
  convolution channel.

A gate z = min(1, max(0, sigmoid((log u - log(1-u) + log_alpha) / beta) (zeta - gamma) + gamma))
is sampled per batch in training; P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta)). At
evaluation a group keeps its round(E[L0]) units of largest log_alpha with
z = clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1), the rest are 0. A module gate is
all or nothing, and rounding each at P = 0.5 on its own lands anywhere within a few modules'
size of the expected model (measured on the tiny twin: expected 50.1%, masks 53.8%, flipping at
the last step), so the module decisions are rounded together (``deterministic_gates``): in
order of P, modules are opened or closed while that brings the masks' size nearer the
expected size the Lagrangian controls.

The gates act through forward hooks on the student's own modules (the model code stays as it
is): a unit gate scales the input of the module's last projection, a module gate its output. A
convolution channel passes through the LayerNorm over channels, so that norm is computed over
the channels a sample keeps (exactly what the smaller model computes).

Expected size: every prunable parameter of a block written in terms of the gates' P(z != 0)
(``expected_params``); the expected sparsity is 1 - expected / full. A Lagrangian
lambda1 (s - t) + (lambda2 + rho) (s - t)^2 with learned multipliers (dual ascent, in proportion
to the gap) and a fixed penalty rho (damping: without it the gates overshoot the target) pulls it
to a target t that rises linearly from 0 over ``warmup_steps``.

``prune_to_dense`` folds the deterministic gate values into the weights and physically removes
every zero unit and module: the result is a real, smaller dense Conformer with per-block sizes,
giving the same outputs as the masked model (tested).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BETA, GAMMA, ZETA, EPS = 2.0 / 3.0, -0.1, 1.1, 1e-6
MODULES = ("ffn1", "attn", "conv", "ffn2")
UNIT_OF = {"ffn1": "units", "ffn2": "units", "attn": "heads", "conv": "channels"}
UNIT_KIND = {"ffn1": "ffn", "ffn2": "ffn", "attn": "heads", "conv": "conv"}


class HardConcrete(nn.Module):
    """``n`` hard-concrete gates."""

    def __init__(self, n: int, init_keep: float = 0.95) -> None:
        """Gates that start open with probability ``init_keep`` (``p_open`` of the initial
        log-alpha; without the stretch term below, 0.95 gave 0.989)."""
        super().__init__()
        la = math.log(init_keep / (1 - init_keep)) + BETA * math.log(-GAMMA / ZETA)
        self.log_alpha = nn.Parameter(torch.full((n,), la) + 0.01 * torch.randn(n))

    def p_open(self) -> Tensor:
        """P(z != 0) per gate (differentiable)."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

    def sample(self) -> Tensor:
        u = torch.empty_like(self.log_alpha).uniform_(EPS, 1 - EPS)
        s = torch.sigmoid((u.log() - (1 - u).log() + self.log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    @torch.no_grad()
    def value(self) -> Tensor:
        """What a kept gate is at evaluation: clamp(sigmoid(log_alpha) (zeta - gamma) + gamma)."""
        return (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    @torch.no_grad()
    def deterministic(self) -> Tensor:
        """The evaluation gates: the round(E[L0]) largest log-alphas keep their value."""
        n = self.log_alpha.numel()
        k = int(round(float(self.p_open().sum())))
        z = self.value()
        keep = torch.zeros(n, dtype=torch.bool, device=z.device)
        if k > 0:
            keep[self.log_alpha.topk(min(k, n)).indices] = True
        return torch.where(keep, z, torch.zeros_like(z))

    def forward(self) -> Tensor:
        return self.sample() if self.training else self.deterministic()


def _sizes(block, d: int) -> dict[str, tuple[int, int, int]]:
    """Per present module: (units, parameters per unit, parameters that go only with the
    whole module)."""
    out = {}
    for name in ("ffn1", "ffn2"):
        m = getattr(block, name)
        if m is not None:
            out[name] = (m.hidden, 2 * d + 1, 3 * d)
    if block.attn is not None:
        hd = block.attn.head_dim
        out["attn"] = (block.attn.heads, 4 * d * hd + 3 * hd, 3 * d)
    if block.conv is not None:
        out["conv"] = (block.conv.channels, 3 * d + block.conv.kernel + 5, 3 * d)
    return out


def prunable_params(model) -> int:
    """Parameters of the encoder blocks that structured pruning can remove."""
    d = model.encoder.cfg.d_model
    return sum(n * per + extra for blk in model.encoder.blocks
               for n, per, extra in _sizes(blk, d).values())


class L0Pruner(nn.Module):
    """Wraps the trained module (a ``Transducer``, or a ``Distiller`` for layerwise KD from the
    unpruned teacher), gates the student's encoder blocks and adds the size Lagrangian."""

    def __init__(self, inner: nn.Module, cfg, max_steps: int) -> None:
        super().__init__()
        self.inner, self.cfg = inner, cfg
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.6 * max_steps)
        student = self.student
        self.d = student.encoder.cfg.d_model
        self.gates = nn.ModuleDict()
        self.layout: list[dict[str, tuple[int, int, int]]] = []
        for i, blk in enumerate(student.encoder.blocks):
            sizes = _sizes(blk, self.d)
            self.layout.append(sizes)
            for name, (n, _, _) in sizes.items():
                if "modules" in cfg.units:
                    self.gates[f"{i}_{name}"] = HardConcrete(1, cfg.init_keep)
                if UNIT_KIND[name] in cfg.units:
                    self.gates[f"{i}_{name}_{UNIT_OF[name]}"] = HardConcrete(n, cfg.init_keep)
        self.full = float(prunable_params(student))
        # the multipliers: buffers moved by dual (gradient) ascent after each step, in proportion
        # to the gap (Adam would move them at a constant speed and overshoot)
        self.register_buffer("lambda1", torch.zeros(()))
        self.register_buffer("lambda2", torch.zeros(()))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._gap: Tensor | float = 0.0
        self._z: dict[str, Tensor] = {}
        self._last: dict[str, float] = {}
        self._hooks = self._install(student)

    # ----- wiring ------------------------------------------------------------------------------
    @property
    def student(self):
        return getattr(self.inner, "student", self.inner)

    def config(self):
        return self.student.config()

    def param_groups(self, peak_lr: float) -> list[dict]:
        return [{"params": [g.log_alpha for g in self.gates.values()], "lr": self.cfg.gate_lr,
                 "weight_decay": 0.0}]

    def _gate(self, key: str) -> Tensor | None:
        return self._z.get(key)

    def _install(self, student) -> list:
        hooks = []
        for i, blk in enumerate(student.encoder.blocks):
            for name in self.layout[i]:
                mod = getattr(blk, name)
                mk, uk = f"{i}_{name}", f"{i}_{name}_{UNIT_OF[name]}"
                if uk in self.gates:
                    if name in ("ffn1", "ffn2"):
                        hooks.append(mod.down.register_forward_pre_hook(self._scale_input(uk, 1)))
                    elif name == "attn":
                        hooks.append(mod.out.register_forward_pre_hook(
                            self._scale_input(uk, mod.head_dim)))
                    else:
                        hooks.append(mod.dw_norm.register_forward_hook(self._masked_norm(uk)))
                if mk in self.gates or uk in self.gates:
                    hooks.append(mod.register_forward_hook(self._scale_output(mk, uk)))
        return hooks

    def _scale_input(self, key: str, repeat: int):
        def hook(_m, args):
            z = self._gate(key)
            if z is None:
                return None
            return (args[0] * (z.repeat_interleave(repeat) if repeat > 1 else z).to(args[0].dtype),)
        return hook

    def _scale_output(self, key: str, unit_key: str):
        """The module gate; a module whose every unit is off is off too (its output bias would
        otherwise stay, and the smaller model has no such module)."""
        def hook(_m, _args, out):
            zm, zu = self._gate(key), self._gate(unit_key)
            if zm is None and zu is None:
                return None
            ref = out[0] if isinstance(out, tuple) else out
            z = zm if zm is not None else torch.ones(1, device=ref.device)
            if zu is not None:
                z = z * (zu > 0).any().to(z.dtype)
            if isinstance(out, tuple):
                return (out[0] * z, *out[1:])
            return out * z
        return hook

    def _masked_norm(self, key: str):
        def hook(norm, args, _out):
            z = self._gate(key)
            if z is None:
                return None
            h = args[0]
            w = (z > 0).to(h.dtype)
            n = w.sum().clamp(min=1.0)
            mean = (h * w).sum(-1, keepdim=True) / n
            var = ((h - mean).pow(2) * w).sum(-1, keepdim=True) / n
            y = (h - mean) * torch.rsqrt(var + norm.eps) * norm.weight + norm.bias
            return y * z
        return hook

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # ----- the size model ----------------------------------------------------------------------
    def expected_params(self, deterministic: bool = False) -> Tensor:
        """Expected remaining prunable parameters (or, deterministic, those the masks keep)."""
        if deterministic:
            return torch.tensor(float(sum(self._kept_sizes(self.deterministic_gates()).values())))
        total = torch.zeros(())
        for i, sizes in enumerate(self.layout):
            for name, (n, per, extra) in sizes.items():
                mk, uk = f"{i}_{name}", f"{i}_{name}_{UNIT_OF[name]}"
                pm = self.gates[mk].p_open().sum() if mk in self.gates else torch.ones(())
                pu = self.gates[uk].p_open().sum() if uk in self.gates else torch.tensor(float(n))
                total = total + pm * (extra + pu * per)
        return total

    def _kept_sizes(self, z: dict[str, Tensor], force: dict[str, bool] | None = None
                    ) -> dict[str, int]:
        """Parameters each module keeps under the gate values ``z`` (``force``: module key ->
        open or closed, overriding its gate); a module with no unit left goes."""
        out = {}
        for i, sizes in enumerate(self.layout):
            for name, (n, per, extra) in sizes.items():
                mk, uk = f"{i}_{name}", f"{i}_{name}_{UNIT_OF[name]}"
                on = bool(z[mk][0] > 0) if mk in z else True
                if force and mk in force:
                    on = force[mk]
                units = int((z[uk] > 0).sum()) if uk in z else n
                out[mk] = (extra + units * per) if on and units > 0 else 0
        return out

    @torch.no_grad()
    def deterministic_gates(self) -> dict[str, Tensor]:
        """Every gate's evaluation value: units as ``HardConcrete.deterministic``; module gates
        rounded together so that the masks keep about the expected size (the module docstring)."""
        z = {k: g.deterministic() for k, g in self.gates.items()}
        mods = [f"{i}_{name}" for i, sizes in enumerate(self.layout) for name in sizes
                if f"{i}_{name}" in self.gates]
        if not mods:
            return z
        expected = float(self.expected_params())
        p = {k: float(self.gates[k].p_open()[0]) for k in mods}
        value = {k: float(self.gates[k].value()[0]) for k in mods}
        force = {k: bool(z[k][0] > 0) for k in mods}
        # what each module weighs when open, whatever its gate says now
        weight = self._kept_sizes(z, {k: True for k in mods})
        kept = lambda: sum(self._kept_sizes(z, force).values())  # noqa: E731
        while True:
            gap = kept() - expected
            if gap < 0:  # smaller than expected: open the most probable closed module
                cand = sorted((k for k in mods if not force[k] and value[k] > 0 and weight[k]),
                              key=lambda k: -p[k])
                step = +1
            else:  # larger: close the least probable open module
                cand = sorted((k for k in mods if force[k] and weight[k]), key=lambda k: p[k])
                step = -1
            if not cand or abs(gap + step * weight[cand[0]]) >= abs(gap):
                break
            force[cand[0]] = step > 0
        for k in mods:
            z[k] = torch.full_like(z[k], value[k]) if force[k] else torch.zeros_like(z[k])
        return z

    def target(self, step: int | None = None) -> float:
        step = int(self.step) if step is None else step
        ramp = 1.0 if self.warmup <= 0 else min(1.0, step / self.warmup)
        return self.cfg.target * ramp

    def expected_sparsity(self) -> Tensor:
        return 1.0 - self.expected_params() / self.full

    @torch.no_grad()
    def reached_sparsity(self) -> float:
        return float(1.0 - self.expected_params(deterministic=True) / self.full)

    # ----- training ----------------------------------------------------------------------------
    def forward(self, x: Tensor, *args, **kwargs) -> dict[str, Tensor]:
        if self.training:
            self._z = {k: g() for k, g in self.gates.items()}  # one sample per batch
        elif not self._z:
            self._z = self.deterministic_gates()
        out = self.inner(x, *args, **kwargs)
        s = self.expected_sparsity()
        gap = s - self.target()
        lag = self.lambda1 * gap + (self.lambda2 + self.cfg.penalty) * gap * gap
        # the trainer divides the loss by the batch size; the Lagrangian is per batch
        out["loss"] = out["loss"] + lag * x.shape[0]
        # kept as tensors: read when logged, not every step (a GPU would wait for the host)
        self._gap = gap.detach()
        self._last = {"expected_sparsity": s.detach(), "lagrangian": lag.detach()}
        return out

    def train(self, mode: bool = True):
        super().train(mode)
        self._z = {}  # evaluation recomputes deterministic gates on its first call
        if not mode:
            self._z = self.deterministic_gates()
        return self

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Dual ascent on the multipliers: d L / d lambda1 = s - t, d L / d lambda2 = (s - t)^2."""
        self.step.fill_(step)
        if self.training and torch.is_tensor(self._gap):
            self.lambda1.add_(self.cfg.lambda_lr * self._gap)
            self.lambda2.add_(self.cfg.lambda_lr * self._gap ** 2)

    def metrics(self) -> dict:
        return {"target_sparsity": round(self.target(), 4),
                "expected_sparsity": round(float(self.expected_sparsity().detach()), 4),
                "sparsity": round(self.reached_sparsity(), 4),
                "lambda1": round(float(self.lambda1), 4), "lambda2": round(float(self.lambda2), 4),
                **({"lagrangian": round(float(self._last["lagrangian"]), 5)} if self._last
                   else {})}

    @torch.no_grad()
    def mask_records(self) -> list[dict]:
        """Per block and module: the gate probabilities and what the deterministic masks keep
        (module, heads, FFN units, conv channels), for the Masks page."""
        rows, z = [], self.deterministic_gates()
        kept_sizes = self._kept_sizes(z)
        for i, sizes in enumerate(self.layout):
            full = kept_params = 0
            for name, (n, per, extra) in sizes.items():
                mk, uk = f"{i}_{name}", f"{i}_{name}_{UNIT_OF[name]}"
                on = kept_sizes[mk] > 0
                full += n * per + extra
                kept_params += kept_sizes[mk]
                if mk in self.gates:
                    p = self.gates[mk].p_open()
                    rows.append({"block": i, "module": name, "unit": "module", "size": 1,
                                 "prob": [round(float(p[0]), 4)], "kept": [int(on)],
                                 "kept_fraction": float(on)})
                if uk in self.gates:
                    p = self.gates[uk].p_open()
                    kept = (z[uk] > 0) & on
                    rows.append({"block": i, "module": name, "unit": UNIT_OF[name], "size": n,
                                 "prob": [round(float(v), 4) for v in p],
                                 "kept": [int(v) for v in kept],
                                 "kept_fraction": float(kept.float().mean())})
                elif not on:
                    rows.append({"block": i, "module": name, "unit": UNIT_OF[name], "size": n,
                                 "prob": None, "kept": [0] * n, "kept_fraction": 0.0})
            rows.append({"block": i, "module": "block", "unit": "params", "size": full,
                         "kept_fraction": kept_params / max(full, 1)})
        return rows

    # ----- the smaller model -------------------------------------------------------------------
    @torch.no_grad()
    def pruned_copy(self, model=None):
        """The smaller dense model of ``model``'s (default: the student's) current weights and
        the current gates; the student itself is left as it is."""
        from engine.models.build import build

        src = model if model is not None else self.student
        clone = build(src.config())
        clone.load_state_dict(src.state_dict())
        return self.prune_to_dense(clone.eval())

    @torch.no_grad()
    def prune_to_dense(self, model=None):
        """Fold the deterministic gates into ``model``'s weights (default: the student, whose
        hooks are removed) and remove every zero unit and module, in place; returns it."""
        if model is None:
            self.remove_hooks()
            model = self.student
        dev = next(model.parameters()).device
        # the gates live where training ran; ``model`` may be a CPU copy (the averaged file)
        z = {k: v.to(dev) for k, v in self.deterministic_gates().items()}
        for i, blk in enumerate(model.encoder.blocks):
            for name in self.layout[i]:
                mod = getattr(blk, name)
                zm = z.get(f"{i}_{name}", torch.ones(1, device=dev))[0]
                zu = z.get(f"{i}_{name}_{UNIT_OF[name]}")
                if name in ("ffn1", "ffn2"):
                    zu = zu if zu is not None else torch.ones(mod.hidden, device=dev)
                    mod.down.weight.mul_(zu[None] * zm)
                    mod.down.bias.mul_(zm)
                    keep = zu.nonzero().flatten()
                    if zm == 0 or keep.numel() == 0:
                        setattr(blk, name, None)
                    else:
                        mod.prune(keep)
                elif name == "attn":
                    zu = zu if zu is not None else torch.ones(mod.heads, device=dev)
                    mod.out.weight.mul_(zu.repeat_interleave(mod.head_dim)[None] * zm)
                    mod.out.bias.mul_(zm)
                    keep = zu.nonzero().flatten()
                    if zm == 0 or keep.numel() == 0:
                        blk.attn = None
                    else:
                        mod.prune(keep)
                else:
                    zu = zu if zu is not None else torch.ones(mod.channels, device=dev)
                    mod.dw_norm.weight.mul_(zu)
                    mod.dw_norm.bias.mul_(zu)
                    mod.pw2.weight.mul_(zm)
                    mod.pw2.bias.mul_(zm)
                    keep = zu.nonzero().flatten()
                    if zm == 0 or keep.numel() == 0:
                        blk.conv = None
                    else:
                        mod.prune(keep)
        return model
