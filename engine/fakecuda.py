"""CUDA tensors on a machine without a GPU: the lab's CUDA paths run, with real numbers, in tests.

``with FakeCuda() as fc:`` makes ``torch.cuda`` report ``devices`` GPUs, and every tensor put on
``cuda`` / ``cuda:N`` (a factory's ``device=``, ``.to``, ``.cuda()``, ``Module.to``, a
``torch.device`` context) becomes a ``CudaTensor``: a tensor that says it is on that GPU and
holds its values in an ordinary CPU tensor. Every operation on them is checked the way the CUDA
backend checks it, then computed on the CPU:

- tensors of one operation must be on one device (a CPU tensor of 0 dimensions is a scalar and
  may join, as on CUDA; ``copy_`` and ``.to`` cross devices; CPU indices may index a GPU
  tensor), else ``RuntimeError: Expected all tensors to be on the same device, but found at
  least two devices, cuda:0 and cpu!``, the message CUDA gives;
- a random op's generator must be a CUDA one;
- every **host sync** is counted (``fc.syncs``, by operation and by the line of lab code that
  caused it): a value read back to Python (``.item()``, ``float()``, ``int()``, ``bool()``,
  ``if t:``, ``.tolist()``), a copy to the CPU, an op whose output size depends on the data
  (``nonzero``, boolean indexing, ``masked_select``, ``unique``, ``repeat_interleave`` without
  its size);
- every operation on a GPU tensor is counted as one kernel launch (``fc.kernels``): an upper
  bound of what the GPU would launch (views launch nothing; fused kernels launch fewer).

What it does not check: numerics of CUDA kernels (they are the CPU's here), cuDNN and NCCL
themselves, memory, and speed. ``torch.autocast("cuda", torch.bfloat16)`` is honoured: the
CUDA autocast rules apply to these tensors (a CUDA-only cast such as an fp32 cuDNN LSTM input
shows up), and the CPU then computes in the dtypes they chose.

The alternative, torch's ``FakeTensorMode``, has no values: it stops at the first ``.item()``
and at every data-dependent shape, and the lab's losses and pruners have those, so a whole
stage cannot run under it. This runs whole stages (``benchmarks/bench_devices.py --check``).
"""

from __future__ import annotations

import collections
import contextlib
import traceback
from pathlib import Path
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, return_and_correct_aliasing
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten
ROOT = Path(__file__).resolve().parents[1]

# outputs whose size depends on the values: the host must wait for the device
DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
                  aten.unique_dim.default, aten.unique_consecutive.default,
                  aten.repeat_interleave.Tensor, aten.nonzero_static.default}
# values read back into Python
READBACK = {aten._local_scalar_dense.default, aten.equal.default, aten.is_nonzero.default}
# views and metadata: no kernel on a GPU
NO_KERNEL_TAGS = (torch.Tag.view_copy,)
NO_KERNEL = {aten.view.default, aten._unsafe_view.default, aten.reshape.default,
             aten.t.default, aten.transpose.int, aten.permute.default, aten.expand.default,
             aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.default, aten.squeeze.dims,
             aten.select.int, aten.slice.Tensor, aten.detach.default, aten.alias.default,
             aten.as_strided.default, aten.split.Tensor, aten.split_with_sizes.default,
             aten.unbind.int, aten.chunk.default, aten.narrow.default, aten.diagonal.default,
             aten.unfold.default, aten.view_as_real.default, aten.view_as_complex.default,
             aten.lift_fresh.default, aten._reshape_alias.default, aten.set_.source_Tensor,
             aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default,
             aten.new_empty.default, aten.new_empty_strided.default, aten.resize_.default,
             aten._to_copy.default, aten.copy_.default}
CROSS_DEVICE = {aten._to_copy.default, aten.copy_.default, aten.to.dtype_layout,
                aten.to.device, aten._copy_from.default, aten._copy_from_and_resize.default}
INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
            aten._index_put_impl_.default}


class CudaTensor(torch.Tensor):
    """A tensor that says it is on a CUDA device and keeps its values in a CPU tensor."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor, device: torch.device):
        assert elem.device.type == "cpu" and not isinstance(elem, CudaTensor), elem.device
        # to torch's C++ side (autograd's streams, its device threads) the wrapper is a meta
        # tensor, which needs no driver; to Python code it is on `device`
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device="meta",
            requires_grad=elem.requires_grad)
        r.elem = elem
        r._fake_device = device
        return r

    @property
    def device(self) -> torch.device:
        return self._fake_device

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_meta(self) -> bool:
        return False

    def get_device(self) -> int:
        return self._fake_device.index or 0

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"CudaTensor({self.elem!r}, device='{self.device}')"

    def __tensor_flatten__(self):
        return ["elem"], self._fake_device

    @staticmethod
    def __tensor_unflatten__(inner, device, outer_size, outer_stride):
        return CudaTensor(inner["elem"], device)

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        state = _ACTIVE[-1] if _ACTIVE else FakeCuda(record=False)
        return state.call(func, args, kwargs or {})


_ACTIVE: list["FakeCuda"] = []


def _is_cuda(dev) -> bool:
    """A device setting that means the fake GPU: ``cuda``, or ``meta`` (what torch's C++ code
    passes on when it makes a tensor "like" a wrapper, which it sees as a meta tensor)."""
    if dev is None:
        return False
    return torch.device(dev).type in ("cuda", "meta")


def _norm(dev) -> torch.device:
    dev = torch.device(dev)
    return torch.device("cuda", dev.index or 0) if dev.type in ("cuda", "meta") else dev


class _Mode(TorchDispatchMode):
    def __init__(self, state: "FakeCuda") -> None:
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.state.call(func, args, kwargs or {})


class _ToMode(TorchFunctionMode):
    """``Tensor.to`` / ``.cuda()`` / ``.cpu()``: torch's binding initialises CUDA before it
    dispatches, so these become the ``_to_copy`` they stand for."""

    def __init__(self, state: "FakeCuda") -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            self_ = args[0]
            if func is torch.Tensor.to:
                device, dtype, non_blocking, fmt = torch._C._nn._parse_to(*args[1:], **kwargs)
                copy = kwargs.get("copy", False)
            else:
                dev = (args[1] if len(args) > 1 else kwargs.get("device")) or "cuda"
                device = torch.device("cpu") if func is torch.Tensor.cpu else _norm(dev)
                dtype, non_blocking, fmt, copy = None, kwargs.get("non_blocking", False), None, False
            if device is not None and device.type == "cuda":
                device = _norm(device)
            same_dev = device is None or self_.device == device
            same_dtype = dtype is None or self_.dtype == dtype
            if same_dev and same_dtype and not copy and fmt in (None, torch.preserve_format):
                return self_
            if isinstance(self_, CudaTensor) or (device is not None and device.type == "cuda"):
                return torch.ops.aten._to_copy(
                    self_, dtype=dtype, device=device, non_blocking=bool(non_blocking),
                    **({"memory_format": fmt} if fmt is not None else {}))
        if func is torch.Tensor.tolist and isinstance(args[0], CudaTensor):
            self.state._sync("tolist")
            return args[0].elem.tolist()
        if func is torch.Tensor.numpy and isinstance(args[0], CudaTensor):
            raise TypeError(f"can't convert {args[0].device} device type tensor to numpy. Use "
                            f"Tensor.cpu() to copy the tensor to host memory first. (fake CUDA)")
        if func is torch.Tensor.new_tensor and isinstance(args[0], CudaTensor):
            kw = {k: v for k, v in kwargs.items() if k != "device"}
            kw.setdefault("dtype", args[0].dtype)
            dev = kwargs.get("device", args[0].device)
            return torch.ops.aten._to_copy(torch.tensor(args[1], **kw), device=_norm(dev))
        if func in (torch.tensor, torch.as_tensor) and _is_cuda(kwargs.get("device")):
            dev = _norm(kwargs["device"])
            kw = {k: v for k, v in kwargs.items() if k != "device"}
            return torch.ops.aten._to_copy(func(*args, **kw), device=dev)
        return func(*args, **kwargs)


class FakeCuda:
    """The context manager (see the module docstring). ``devices``: how many GPUs
    ``torch.cuda.device_count()`` reports."""

    def __init__(self, devices: int = 1, record: bool = True) -> None:
        self.devices = devices
        self.record = record
        self.kernels = 0
        self.syncs: collections.Counter[str] = collections.Counter()
        self.sync_sites: collections.Counter[str] = collections.Counter()
        self._stack = contextlib.ExitStack()
        self._rng = {}

    # ----- bookkeeping ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.kernels = 0
        self.syncs.clear()
        self.sync_sites.clear()

    @property
    def host_syncs(self) -> int:
        return sum(self.syncs.values())

    def _sync(self, what: str) -> None:
        if not self.record:
            return
        self.syncs[what] += 1
        self.sync_sites[_lab_frame()] += 1

    # ----- the dispatch --------------------------------------------------------------------------
    def call(self, func, args, kwargs):
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        fake = [t for t in tensors if isinstance(t, CudaTensor)]
        want = kwargs.get("device")
        to_cuda = _is_cuda(want)
        if not fake and not to_cuda:  # nothing on the fake GPU: an ordinary CPU op
            return func(*args, **kwargs)
        if not fake or func in CROSS_DEVICE:
            out_dev = _norm(want) if to_cuda else (fake[0].device if fake and want is None
                                                   and func is not aten.copy_.default else None)
        else:
            out_dev = fake[0].device
        self._check(func, args, kwargs, tensors, fake)
        if fake and func in READBACK | DATA_DEPENDENT:
            self._sync(str(func.overloadpacket.__name__))
        if fake and func is aten.index.Tensor and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
                for i in args[1]):
            self._sync("boolean index")  # the output's size is the mask's count
        if func is aten._to_copy.default and fake and not to_cuda and (
                want is not None and torch.device(want).type == "cpu"):
            self._sync("copy to cpu")
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            if isinstance(src, CudaTensor) and not isinstance(dst, CudaTensor):
                self._sync("copy to cpu")
            if not isinstance(dst, CudaTensor):  # into a CPU tensor: computed as on the CPU
                dst.copy_(_unwrap(src), *args[2:], **kwargs)
                return dst
            out_dev = dst.device
        if self.record and fake and func not in NO_KERNEL and not any(
                t in func.tags for t in NO_KERNEL_TAGS):
            self.kernels += 1
        if to_cuda:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        uargs, ukwargs = tree_map(_unwrap, (args, kwargs))
        out = func(*uargs, **ukwargs)
        if out_dev is None:
            return out
        out = tree_map(lambda t: CudaTensor(t, out_dev) if isinstance(t, torch.Tensor)
                       and not isinstance(t, CudaTensor) else t, out)
        if fake:  # in-place ops return their input, views alias it (as autograd expects)
            return return_and_correct_aliasing(func, args, kwargs, out)
        return out

    def _check(self, func, args, kwargs, tensors, fake) -> None:
        devs = {t.device for t in fake}
        if func in CROSS_DEVICE:
            if len(devs) > 1 and func is aten.copy_.default:
                return  # GPU to GPU copies are allowed
            return
        gen = kwargs.get("generator")
        if gen is not None and gen.device.type != "cuda":
            raise RuntimeError(f"Expected a 'cuda' device type for generator but found "
                               f"'{gen.device.type}'")
        want = kwargs.get("device")
        if want is not None and _is_cuda(want):
            devs.add(_norm(want))
        skip = set()
        if func in INDEXING:  # indices may live on the CPU
            idx = args[1] if len(args) > 1 else kwargs.get("indices", [])
            skip = {id(t) for t in idx if isinstance(t, torch.Tensor)}
        for t in tensors:
            if isinstance(t, CudaTensor) or id(t) in skip:
                continue
            if t.device.type == "cpu" and t.dim() == 0:
                continue  # a CPU scalar is a kernel argument on CUDA
            devs.add(t.device)
        if len(devs) > 1:
            a, b = sorted(str(d) for d in devs)[:2]
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at "
                               f"least two devices, {a} and {b}! (in {func}, fake CUDA)")

    # ----- torch.cuda as a machine with GPUs -------------------------------------------------------
    def __enter__(self) -> "FakeCuda":
        cuda = torch.cuda
        n = self.devices
        patches = {
            "is_available": lambda: True, "device_count": lambda: n,
            "is_initialized": lambda: True, "current_device": lambda: 0,
            "set_device": lambda d: None, "synchronize": lambda d=None: self._sync("synchronize"),
            "is_bf16_supported": lambda *a, **k: True,
            "get_rng_state_all": lambda: [self._rng.get(i, torch.get_rng_state())
                                          for i in range(n)],
            "set_rng_state_all": lambda states: self._rng.update(enumerate(states)),
            "get_rng_state": lambda device="cuda": self._rng.get(0, torch.get_rng_state()),
            "set_rng_state": lambda s, device="cuda": self._rng.update({0: s}),
            "manual_seed": lambda s: None, "manual_seed_all": lambda s: None,
            "memory_allocated": lambda d=None: 0, "max_memory_allocated": lambda d=None: 0,
            "reset_peak_memory_stats": lambda d=None: None, "empty_cache": lambda: None,
            "get_device_name": lambda d=None: "fake CUDA (CPU)",
            "get_device_capability": lambda d=None: (9, 0),
            "_lazy_init": lambda: None,
            "is_current_stream_capturing": lambda: False,  # torch initialises CUDA before `.to("cuda")`
        }
        for name, fn in patches.items():
            self._stack.enter_context(mock.patch.object(cuda, name, fn))
        self._stack.enter_context(mock.patch("torch.cuda.random.manual_seed_all",
                                             lambda s: None))
        self._stack.enter_context(_Mode(self))
        self._stack.enter_context(_ToMode(self))
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        self._stack.close()


def _unwrap(t):
    return t.elem if isinstance(t, CudaTensor) else t


def _lab_frame() -> str:
    """file:line of the innermost frame of the lab's own code (where a sync comes from)."""
    for fr in reversed(traceback.extract_stack()[:-3]):
        p = Path(fr.filename)
        try:
            rel = p.resolve().relative_to(ROOT)
        except ValueError:
            continue
        if rel.parts[0] in ("engine", "benchmarks") and rel.name != "fakecuda.py":
            return f"{rel}:{fr.lineno}"
    return "?"

