"""The transducer lattice in one kernel: loss and gradients of every utterance in one launch.

``rnnt_lattice(emit, blank, logit_lengths, target_lengths) -> (loss, grad_emit, grad_blank)``
is a torch custom op (``asrlab::rnnt_lattice``) over the two per-node log-probabilities of a
transducer lattice, emit (B, T, U+1) = log P(y_{u+1} | t, u) and blank (B, T, U+1). It computes
the forward variable alpha, the backward variable beta, the loss -log P(y | x) = -beta(0, 0)
and the gradients of the loss with respect to both inputs (the occupation probabilities, which
the pruned loss also uses to choose its band), the way torchaudio's and warp-transducer's
kernels compute gradients in the forward pass. ``lattice_loss`` wraps it with autograd.

Kernels, chosen by the device of the inputs:

- **CPU: Numba** (``@njit``, one utterance after another, float64; no ``parallel=True``: its
  OpenMP threads spin beside torch's and halved the test suite's speed on two cores): the lattice is a
  scalar recurrence, which compiled loops do at memory speed and the Python loop of frames it
  replaces (``rnnt.py``'s reference, one cumsum and one logcumsumexp per frame) did at a few
  thousand operator dispatches per step. A C++ extension would need a compiler at install time;
  NeMo computes its transducer loss with Numba too.
- **CUDA: Triton** (comes with torch's CUDA wheel): one program per utterance walks the lattice
  along its anti-diagonals (every cell of a diagonal at once, the lanes of the program), first
  alpha, then beta, then the gradients row by row, in float64 like the reference. The same
  kernel runs on CPU tensors in Triton's interpreter, which is how the tests check it here.

Conventions are the reference's (``rnnt.py``): inputs are clamped at ``LOG_ZERO`` (an impossible
cell is exp(-1e5), an exact 0 next to any real path, and gets no gradient), emit at u >= U is
ignored, and an utterance whose loss reaches ``ZEROED_AT`` (no path at all) is zeroed by the
caller with no gradient.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

LOG_ZERO = -1e5  # as engine.losses.rnnt
_NEG = -1e300  # an absent neighbour: exp(_NEG - anything finite) is 0, never NaN


# ----- CPU: Numba ---------------------------------------------------------------------------------
_cpu_kernel = None


def _numba_kernel():
    global _cpu_kernel
    if _cpu_kernel is None:
        import numba

        @numba.njit(cache=True)
        def kernel(emit, blank, tlen, ulen, loss, gemit, gblank):  # pragma: no cover - compiled
            n_b, t_max, u1 = emit.shape
            for b in range(n_b):
                tb, ub = tlen[b], ulen[b]
                if tb <= 0:
                    loss[b] = 0.0
                    continue
                alpha = np.empty((tb, ub + 1))
                beta = np.empty((tb, ub + 1))
                alpha[0, 0] = 0.0
                for u in range(1, ub + 1):
                    alpha[0, u] = alpha[0, u - 1] + max(emit[b, 0, u - 1], LOG_ZERO)
                for t in range(1, tb):
                    alpha[t, 0] = alpha[t - 1, 0] + max(blank[b, t - 1, 0], LOG_ZERO)
                    for u in range(1, ub + 1):
                        x = alpha[t - 1, u] + max(blank[b, t - 1, u], LOG_ZERO)
                        y = alpha[t, u - 1] + max(emit[b, t, u - 1], LOG_ZERO)
                        m = max(x, y)
                        alpha[t, u] = m + math.log(math.exp(x - m) + math.exp(y - m))
                beta[tb - 1, ub] = max(blank[b, tb - 1, ub], LOG_ZERO)
                for u in range(ub - 1, -1, -1):
                    beta[tb - 1, u] = beta[tb - 1, u + 1] + max(emit[b, tb - 1, u], LOG_ZERO)
                for t in range(tb - 2, -1, -1):
                    beta[t, ub] = beta[t + 1, ub] + max(blank[b, t, ub], LOG_ZERO)
                    for u in range(ub - 1, -1, -1):
                        x = beta[t + 1, u] + max(blank[b, t, u], LOG_ZERO)
                        y = beta[t, u + 1] + max(emit[b, t, u], LOG_ZERO)
                        m = max(x, y)
                        beta[t, u] = m + math.log(math.exp(x - m) + math.exp(y - m))
                log_z = beta[0, 0]
                loss[b] = -log_z
                for t in range(tb):
                    for u in range(ub + 1):
                        bl = blank[b, t, u]
                        if bl >= LOG_ZERO:
                            if t < tb - 1:
                                up = beta[t + 1, u]
                            elif u == ub:
                                up = 0.0
                            else:
                                up = _NEG
                            gblank[b, t, u] = -math.exp(alpha[t, u] + bl + up - log_z)
                        if u < ub:
                            e = emit[b, t, u]
                            if e >= LOG_ZERO:
                                gemit[b, t, u] = -math.exp(alpha[t, u] + e + beta[t, u + 1]
                                                           - log_z)

        _cpu_kernel = kernel
    return _cpu_kernel


def _lattice_cpu(emit: Tensor, blank: Tensor, tlen: Tensor, ulen: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    # the inputs as they are (float32 in training; the kernel computes in float64 inside)
    e = emit.detach().contiguous().numpy()
    bl = blank.detach().to(emit.dtype).contiguous().numpy()
    loss = np.zeros(e.shape[0])
    ge, gb = np.zeros_like(e), np.zeros_like(bl)
    _numba_kernel()(e, bl, tlen.to(torch.int64).numpy(), ulen.to(torch.int64).numpy(), loss, ge, gb)
    return torch.from_numpy(loss).to(emit.dtype), torch.from_numpy(ge), torch.from_numpy(gb)


# ----- CUDA: Triton -------------------------------------------------------------------------------
def _triton_source():
    import triton.language as tl

    def lattice_kernel(emit, blank, tlen, ulen, alpha, beta, loss, gemit, gblank, t_max, u1,
                       BLOCK_U: tl.constexpr):
        b = tl.program_id(0)
        T = tl.load(tlen + b).to(tl.int32)
        U = tl.load(ulen + b).to(tl.int32)
        off = b.to(tl.int64) * t_max * u1
        u = tl.arange(0, BLOCK_U)
        in_u = u <= U
        # alpha along anti-diagonals d = t + u: each cell needs the previous diagonal only
        for d in range(0, t_max + u1 - 1):
            t = d - u
            on = in_u & (t >= 0) & (t < T)
            left = on & (u >= 1)
            x = tl.load(alpha + off + t * u1 + u - 1, mask=left, other=-1e300) + tl.maximum(
                tl.load(emit + off + t * u1 + u - 1, mask=left, other=-1e5).to(tl.float64),
                -1e5)
            down = on & (t >= 1)
            y = tl.load(alpha + off + (t - 1) * u1 + u, mask=down, other=-1e300) + tl.maximum(
                tl.load(blank + off + (t - 1) * u1 + u, mask=down, other=-1e5).to(tl.float64),
                -1e5)
            m = tl.maximum(x, y)
            val = m + tl.log(tl.exp(x - m) + tl.exp(y - m))
            val = tl.where((t == 0) & (u == 0), 0.0, val)
            tl.store(alpha + off + t * u1 + u, val, mask=on)
            tl.debug_barrier()
        # beta along the anti-diagonals backwards
        for i in range(0, t_max + u1 - 1):
            d = T - 1 + U - i
            t = d - u
            on = in_u & (t >= 0) & (t < T) & (d >= 0)
            right = on & (u < U)
            x = tl.load(beta + off + t * u1 + u + 1, mask=right, other=-1e300) + tl.maximum(
                tl.load(emit + off + t * u1 + u, mask=right, other=-1e5).to(tl.float64), -1e5)
            bl = tl.maximum(tl.load(blank + off + t * u1 + u, mask=on, other=-1e5).to(
                tl.float64), -1e5)
            up = on & (t < T - 1)
            y = tl.load(beta + off + (t + 1) * u1 + u, mask=up, other=-1e300) + bl
            y = tl.where((t == T - 1) & (u == U), bl, y)
            m = tl.maximum(x, y)
            val = m + tl.log(tl.exp(x - m) + tl.exp(y - m))
            tl.store(beta + off + t * u1 + u, val, mask=on)
            tl.debug_barrier()
        log_z = tl.load(beta + off)
        tl.store(loss + b, -log_z)
        # gradients: minus the occupation probability of each arc
        for t in range(0, t_max):
            row = off + t * u1
            on = in_u & (t < T)
            a = tl.load(alpha + row + u, mask=on, other=-1e300)
            bl_raw = tl.load(blank + row + u, mask=on, other=-3e38).to(tl.float64)
            up = tl.load(beta + row + u1 + u, mask=on & (t < T - 1), other=-1e300)
            up = tl.where((t == T - 1) & (u == U), 0.0, up)
            gb = tl.where(bl_raw >= -1e5, -tl.exp(a + bl_raw + up - log_z), 0.0)
            e_on = on & (u < U)
            e_raw = tl.load(emit + row + u, mask=e_on, other=-3e38).to(tl.float64)
            right = tl.load(beta + row + u + 1, mask=e_on, other=-1e300)
            ge = tl.where(e_on & (e_raw >= -1e5), -tl.exp(a + e_raw + right - log_z), 0.0)
            tl.store(gblank + row + u, gb, mask=on)
            tl.store(gemit + row + u, ge, mask=on)

    return lattice_kernel


_triton_kernels: dict[bool, object] = {}


def _fix_interpreter_index(interpreter) -> None:
    """Triton 3.6's interpreter turns a scalar argument into a 1-element array and a loop bound
    into ``int(array)``, which NumPy 2.4 refuses for arrays with a dimension: read the element."""
    if getattr(interpreter, "_asrlab_index_fixed", False):
        return
    patch = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patched
    interpreter._asrlab_index_fixed = True


def _compiled(cache: dict, source, interpret: bool):
    """A Triton kernel from ``source()``, compiled for the GPU or (``interpret``) run by
    Triton's interpreter on CPU tensors (the tests), made once."""
    if interpret not in cache:
        if interpret:
            from triton.runtime import interpreter

            _fix_interpreter_index(interpreter)
            cache[interpret] = interpreter.InterpretedFunction(source())
        else:
            from triton.runtime.jit import JITFunction

            cache[interpret] = JITFunction(source())
    return cache[interpret]


def triton_kernel(interpret: bool = False):
    """The lattice's Triton kernel (``_compiled``)."""
    return _compiled(_triton_kernels, _triton_source, interpret)


def lattice_triton(emit: Tensor, blank: Tensor, tlen: Tensor, ulen: Tensor,
                   interpret: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, grad_emit, grad_blank) by the Triton kernel, one launch for the batch."""
    import triton

    b, t_max, u1 = emit.shape
    emit, blank = emit.contiguous(), blank.contiguous()
    alpha = torch.empty(b, t_max, u1, dtype=torch.float64, device=emit.device)
    beta = torch.empty_like(alpha)
    loss = torch.empty(b, dtype=torch.float64, device=emit.device)
    ge = torch.zeros(b, t_max, u1, dtype=torch.float64, device=emit.device)
    gb = torch.zeros_like(ge)
    block = triton.next_power_of_2(max(u1, 2))
    triton_kernel(interpret)[(b,)](emit, blank, tlen.to(torch.int64).contiguous(),
                                   ulen.to(torch.int64).contiguous(), alpha, beta, loss, ge, gb,
                                   t_max, u1, BLOCK_U=block)
    return loss.to(emit.dtype), ge.to(emit.dtype), gb.to(blank.dtype)


# ----- the op -------------------------------------------------------------------------------------
@torch.library.custom_op("asrlab::rnnt_lattice", mutates_args=())
def rnnt_lattice(emit: Tensor, blank: Tensor, logit_lengths: Tensor, target_lengths: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(loss (B,), d loss / d emit, d loss / d blank), both (B, T, U+1); on the CPU."""
    return _lattice_cpu(emit, blank, logit_lengths.cpu(), target_lengths.cpu())


@rnnt_lattice.register_kernel("cuda")
def _(emit, blank, logit_lengths, target_lengths):
    return lattice_triton(emit, blank, logit_lengths, target_lengths)


@rnnt_lattice.register_fake
def _(emit, blank, logit_lengths, target_lengths):
    return emit.new_empty(emit.shape[0]), torch.empty_like(emit), torch.empty_like(blank)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])


def _backward(ctx, g_loss, _g_emit, _g_blank):
    ge, gb = ctx.saved_tensors
    g = g_loss[:, None, None]
    return ge * g, gb * g, None, None


rnnt_lattice.register_autograd(_backward, setup_context=_setup)


# ----- the pruned loss's band: monotonic, connected, reaching U ------------------------------------
_cpu_band = None


def _numba_band():
    global _cpu_band
    if _cpu_band is None:
        import numba

        @numba.njit(cache=True)
        def band(start, tlen, hi, s, out):  # pragma: no cover - compiled
            n_b, t_max = start.shape
            for b in range(n_b):
                # monotonic and connected: frame t's band starts within s - 1 of frame t-1's
                prev = 0
                out[b, 0] = 0
                for t in range(1, t_max):
                    prev = min(max(start[b, t], prev), prev + s - 1)
                    out[b, t] = prev
                # the last frame's band holds U: raise earlier bands as far as needed
                lower = -(10 ** 9)
                last = tlen[b] - 1
                need = max(hi[b], 0)
                for t in range(t_max - 1, -1, -1):
                    if t == last:
                        lower = need
                    v = max(out[b, t], lower)
                    out[b, t] = min(v, hi[b])
                    lower = v - (s - 1)

        _cpu_band = band
    return _cpu_band


def _band_source():
    import triton.language as tl

    def band_kernel(start, tlen, hi, out, t_max, s, n_b, BLOCK_B: tl.constexpr):
        b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        on = b < n_b
        last = tl.load(tlen + b, mask=on, other=1) - 1
        h = tl.load(hi + b, mask=on, other=0)
        prev = tl.full([BLOCK_B], 0, tl.int64)
        tl.store(out + b * t_max, prev, mask=on)
        for t in range(1, t_max):
            st = tl.load(start + b * t_max + t, mask=on, other=0)
            prev = tl.minimum(tl.maximum(st, prev), prev + s - 1)
            tl.store(out + b * t_max + t, prev, mask=on)
        lower = tl.full([BLOCK_B], -1000000000, tl.int64)
        need = tl.maximum(h, 0)
        for i in range(0, t_max):
            t = t_max - 1 - i
            lower = tl.where(last == t, need, lower)
            v = tl.maximum(tl.load(out + b * t_max + t, mask=on, other=0), lower)
            tl.store(out + b * t_max + t, tl.minimum(v, h), mask=on)
            lower = v - (s - 1)

    return band_kernel


_band_kernels: dict[bool, object] = {}


def band_triton(start: Tensor, tlen: Tensor, hi: Tensor, s: int, interpret: bool = False
                ) -> Tensor:
    kernel = _compiled(_band_kernels, _band_source, interpret)
    n_b, t_max = start.shape
    out = torch.empty(n_b, t_max, dtype=torch.int64, device=start.device)
    block = 16
    kernel[((n_b + block - 1) // block,)](
        start.to(torch.int64).contiguous(), tlen.to(torch.int64).contiguous(),
        hi.to(torch.int64).contiguous(), out, t_max, s, n_b, BLOCK_B=block)
    return out


@torch.library.custom_op("asrlab::prune_band", mutates_args=())
def prune_band(start: Tensor, logit_lengths: Tensor, hi: Tensor, s: int) -> Tensor:
    """Band starts (B, T) made monotonic and connected (a path in frame t's band reaches frame
    t+1's), raised so that each utterance's last frame holds its U, capped at ``hi`` (B,)
    (U + 1 - s): k2's ``get_rnnt_prune_ranges`` constraints, in one kernel."""
    out = torch.empty(start.shape, dtype=torch.int64)
    _numba_band()(start.to(torch.int64).numpy(), logit_lengths.to(torch.int64).cpu().numpy(),
                  hi.to(torch.int64).cpu().numpy(), s, out.numpy())
    return out


@prune_band.register_kernel("cuda")
def _(start, logit_lengths, hi, s):
    return band_triton(start, logit_lengths, hi, s)


@prune_band.register_fake
def _(start, logit_lengths, hi, s):
    return torch.empty(start.shape, dtype=torch.int64, device=start.device)
