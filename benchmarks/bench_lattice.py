"""The transducer lattice in kernels against the per-frame PyTorch reference, side by side in one
run: aten operations (each a kernel launch on a GPU), step time and the loss's peak memory.

    .venv/bin/python benchmarks/bench_lattice.py

- **Operations per step**: a dispatch counter around one forward and backward of the teacher
  preset (batch 4, U 80, vocabulary 256, pruned loss) at T' = 125, 250 and 500 frames after
  subsampling (5, 10 and 20 s), with the lattice kernels (``engine/losses/lattice.py``) and with
  the reference (``engine.losses.rnnt.reference_lattice``: the loop over frames, the float64
  ``autograd.grad`` pass for the band). Target: at most 5,000 at each T', growing at most 10%
  from 125 to 500.
- **CPU step time** (forward + backward, median of 3 after a warm-up, 2 threads): the teacher on
  20 s utterances, and student-s on the demo's batches (8 x 5 s, U 25).
- **Peak memory of the pruned loss** (simple loss, band, joiner on the band, lattice; B 4,
  T' 250, U 80, V 256, joiner 256): growth of the resident set in a fresh process.

Each figure comes from its own process; nothing else should run beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _context(impl: str):
    import contextlib

    from engine.losses.rnnt import reference_lattice

    return reference_lattice() if impl == "reference" else contextlib.nullcontext()


def _batch(b: int, frames: int, u: int, vocab: int = 256):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, frames, 80, generator=g)
    x_lens = torch.tensor([frames - i * frames // 10 for i in range(b)])
    tokens = torch.randint(1, vocab, (b, u), generator=g)
    token_lens = torch.tensor([u - i * u // 10 for i in range(b)])
    return x, x_lens, tokens, token_lens


def ops(impl: str, t_prime: int) -> dict:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from engine.models.build import build, preset

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = build(preset("teacher", vocab_size=256)).train()
    batch = _batch(4, 8 * t_prime, 80)
    with _context(impl):
        model(*batch)["loss"].backward()  # warm-up (Numba compiles or loads its cache)
        with Count():
            model(*batch)["loss"].backward()
    return {"ops": Count.n}


def step(impl: str, preset_name: str, b: int, frames: int, u: int, threads: int) -> dict:
    import torch

    from engine.models.build import build, preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(preset(preset_name, vocab_size=256)).train()
    batch = _batch(b, frames, u)
    times = []
    with _context(impl):
        for i in range(4):
            t0 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            model(*batch)["loss"].backward()
            if i:
                times.append(time.perf_counter() - t0)
    return {"ms": 1000 * statistics.median(times)}


def memory(impl: str) -> dict:
    import torch

    from engine.losses.pruned import prune_ranges, pruned_rnnt_loss, simple_logprobs
    from engine.losses.rnnt import lattice

    def run(b, t, u, v=256, j=256):
        torch.manual_seed(0)
        enc = torch.randn(b, t, j, requires_grad=True)
        pred = torch.randn(b, u + 1, j, requires_grad=True)
        out, am, lm = torch.nn.Linear(j, v), torch.nn.Linear(j, v), torch.nn.Linear(j, v)
        targets = torch.randint(1, v, (b, u))
        t_lens, u_lens = torch.full((b,), t), torch.full((b,), u)
        e, bl = simple_logprobs(am(enc), lm(pred), targets)
        simple, occ = lattice(e, bl, t_lens, u_lens)
        ranges = prune_ranges(occ, t_lens, u_lens, 5)
        total = 0.5 * simple.sum() + pruned_rnnt_loss(
            enc, pred, lambda h: out(torch.tanh(h)), targets, t_lens, u_lens, ranges, 5).sum()
        total.backward()

    with _context(impl):
        run(1, 12, 4)  # a tiny one first: Numba's compiled code and torch's kernels loaded
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run(4, 250, 80)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": (peak - base) / 1024}


def child(args: list[str]) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode:
        raise SystemExit(f"{args}: failed\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(args, r, flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = json.loads(a.child)
        fn = {"ops": ops, "step": step, "memory": memory}[kind]
        print(json.dumps(fn(*rest)))
        return
    from bench_data import report

    rows = []
    counts = {}
    for impl in ("reference", "kernels"):
        counts[impl] = {t: child(["ops", impl, t])["ops"] for t in (125, 250, 500)}
    for impl in ("reference", "kernels"):
        c = counts[impl]
        growth = c[500] / c[125] - 1
        rows.append((f"aten ops per teacher step, {impl} (T' 125 / 250 / 500)",
                     f"{c[125]:,} / {c[250]:,} / {c[500]:,} (+{growth:.0%} from 125 to 500)"))
    k = counts["kernels"]
    ok = max(k.values()) <= 5000 and k[500] / k[125] - 1 <= 0.10
    rows.append(("target: at most 5,000 at each T', at most +10% from 125 to 500",
                 "met" if ok else "NOT met"))
    for label, args in (("teacher, B 4 x 20 s (T' 250), U 80", ["teacher", 4, 2000, 80]),
                        ("student-s, demo batch 8 x 5 s, U 25", ["student-s", 8, 500, 25])):
        ms = {}
        for rep in range(2):  # interleaved, so that drift hits both alike
            for impl in ("reference", "kernels"):
                ms.setdefault(impl, []).append(
                    child(["step", impl, *args, a.threads])["ms"])
        ref, ker = statistics.median(ms["reference"]), statistics.median(ms["kernels"])
        rows.append((f"CPU step (forward + backward), {label}",
                     f"reference {ref:.0f} ms, kernels {ker:.0f} ms ({ref / ker:.2f}x faster; "
                     f"medians of 2 processes each, interleaved, {a.threads} threads)"))
    mem = {impl: child(["memory", impl])["peak_mb"] for impl in ("reference", "kernels")}
    rows.append(("peak memory of the pruned loss (B 4, T' 250, U 80, V 256)",
                 f"reference {mem['reference']:.0f} MB, kernels {mem['kernels']:.0f} MB"))
    rows.append(("setup", "teacher preset, vocabulary 256, pruned loss; dispatch counter over "
                          "one forward + backward after a warm-up"))
    report("The transducer lattice in kernels", "`benchmarks/bench_lattice.py`", rows)


if __name__ == "__main__":
    main()
