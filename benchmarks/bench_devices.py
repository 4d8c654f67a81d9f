"""Training step on every device this machine has: fp32 vs bf16 autocast vs torch.compile, on the
CPU (at the lab's thread count) and on CUDA when present, against the device's matmul bound.

Each configuration runs in its own process: a model preset (default: the teacher's) trains on a
fixed random batch shaped like the recipe's (8 utterances of 5 s = 40 s of audio, 25 tokens each,
vocabulary 256, the pruned loss); after warm-up steps (more for compile) the median of ``--steps``
timed steps (forward + loss + backward + clip + AdamW) is reported, with its phases, the step's
FLOPs counted by torch's FlopCounterMode (fp32, forward + backward) and the share of the device's
dense fp32 matmul rate (2,048^3 matmuls) that this makes.

``--recipe`` (CUDA only) also trains ``experiments/teacher.toml`` on the GPU for its fixed number
of updates and evaluates it (`asrlab train --device cuda`), writing the WERs beside the timings.

``--check`` is the **device check** (other scripts call it by that exact command), a few minutes:

1. a teacher training step (B 4 x 20 s, U 80, vocabulary 256, dropout 0) on CUDA against the
   CPU from the same weights and batch: loss and every gradient within 1e-4 relative in fp32
   (TF32 off), bf16 autocast finite and within 1% of fp32; its time, kernels (aten operations on
   GPU tensors, views excluded) and host syncs (``torch.cuda.set_sync_debug_mode``) per step;
2. every stage kind's tiny twin (``experiments/tiny_devices.toml``) with ``--device cuda``;
3. one ``nproc = 2`` stage over NCCL (torchrun, through the supervisor) where two GPUs exist.

On a machine without CUDA it says so and runs the same step and twin on fake CUDA tensors
(``engine.fakecuda``: CUDA's device rules, values computed on the CPU), which counts the step's
kernels and host syncs, and names the lines of lab code that sync.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def matmul_rate(device: str, dtype: str, threads: int) -> float:
    """FLOP/s of a dense n^3 matmul (the bound a training step is measured against)."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    reps = 5 if device == "cpu" else 50
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def one(preset_name: str, device: str, precision: str, compiled: bool, steps: int,
        threads: int, torch_dropout: bool = False) -> dict:
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from engine import devices
    from engine.models.build import build, preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build(preset(preset_name, vocab_size=256)).to(dev).train()
    if torch_dropout:  # the baseline the lab's cheaper CPU dropout mask is measured against
        for m in model.modules():
            for name, child in m.named_children():
                if isinstance(child, nn.Dropout):
                    setattr(m, name, nn.Dropout(child.p))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    b, t, u = 8, 500, 25
    x = torch.randn(b, t, 80, generator=g).to(dev)
    x_lens = torch.full((b,), t, device=dev)
    tokens = torch.randint(1, 256, (b, u), generator=g).to(dev)
    token_lens = torch.full((b,), u, device=dev)
    fwd = torch.compile(model) if compiled else model
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step() -> dict:
        sync()
        t0 = time.perf_counter()
        with devices.autocast(dev, precision):
            out = fwd(x, x_lens, tokens, token_lens)
        sync()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sync()
        t3 = time.perf_counter()
        return {"step": t3 - t0, "forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2,
                "loss": float(out["loss"])}

    t_start = time.perf_counter()
    for _ in range(4 if compiled else 2):
        step()
    warm_s = time.perf_counter() - t_start
    runs = [step() for _ in range(steps)]
    with FlopCounterMode(display=False) as fc:
        out = model(x, x_lens, tokens, token_lens)
        out["loss"].backward()
    flops = fc.get_total_flops()
    med = {k: statistics.median(r[k] for r in runs) for k in ("step", "forward", "backward",
                                                             "optimizer")}
    return {"preset": preset_name, "device": device, "precision": precision, "compiled": compiled,
            **{f"{k}_s": v for k, v in med.items()}, "warmup_s": warm_s, "flops": flops,
            "audio_s_per_s": b * t / 100 / med["step"],
            "loss_finite": all(r["loss"] == r["loss"] for r in runs)}


# ----- the device check (--check) -----------------------------------------------------------------
def _step_setup(device: str, precision: str = "fp32"):
    """The teacher preset (dropout 0, seeded) and one fixed batch on ``device``."""
    import torch

    from engine.models.build import build, preset

    torch.manual_seed(0)
    model = build(preset("teacher", vocab_size=256, dropout=0.0)).train()
    g = torch.Generator().manual_seed(0)
    b, t, u = 4, 2000, 80
    x = torch.randn(b, t, 80, generator=g)
    x_lens = torch.tensor([t, t - 200, t - 400, t - 600])
    tokens = torch.randint(1, 256, (b, u), generator=g)
    token_lens = torch.tensor([u, u - 8, u - 16, u - 24])
    dev = torch.device(device)
    return (model.to(dev), x.to(dev), x_lens.to(dev), tokens.to(dev), token_lens.to(dev))


def _one_step(device: str, precision: str, counter=None) -> dict:
    """Loss and gradients of one forward + backward (no optimizer: what is compared)."""
    import torch

    from engine import devices

    model, *batch = _step_setup(device)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = []
    for i in range(3):  # the first is warm-up; the figures are from the last
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        ctx = counter() if (counter and i == 2) else _null()
        with ctx as c:
            with devices.autocast(dev, precision):
                out = model(*batch, warmup=1.0)
            out["loss"].backward()
            sync()
        times.append(time.perf_counter() - t0)
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()
             if p.grad is not None}
    return {"loss": float(out["loss"].detach()), "grads": grads, "step_s": statistics.median(times[1:]),
            "counted": c}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _grad_diff(got: dict, ref: dict) -> tuple[float, float, str]:
    """(relative difference of all gradients as one vector, the worst parameter's, its name)."""
    import torch

    keys = sorted(ref)
    whole = _rel(torch.cat([got[k].flatten() for k in keys]),
                 torch.cat([ref[k].flatten() for k in keys]))
    worst, name = max((_rel(got[k], ref[k]), k) for k in keys)
    return whole, worst, name


def _cuda_counter():
    """Kernels (aten ops on a GPU tensor, views excluded) and host syncs of what runs inside."""
    import warnings

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from engine.fakecuda import NO_KERNEL

    class Counter(TorchDispatchMode):
        kernels = 0
        syncs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            flat, _ = tree_flatten((args, kwargs, out))
            if func not in NO_KERNEL and any(isinstance(t, torch.Tensor) and t.is_cuda
                                             for t in flat):
                self.kernels += 1
            return out

        def __enter__(self):
            self._w = warnings.catch_warnings(record=True)
            self._rec = self._w.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            return super().__enter__()

        def __exit__(self, *exc):
            super().__exit__(*exc)
            torch.cuda.set_sync_debug_mode("default")
            self.syncs = sum("synchroniz" in str(w.message) for w in self._rec)
            self._w.__exit__(*exc)
            return False

    return Counter()


def _trainer_steps(corpus: Path, device: str, counting) -> tuple[int, int, float]:
    """(kernels, host syncs, seconds) of the trainer's third update (``Trainer._step``: batch
    to the device, forward, loss, backward, clip, AdamW, the logged terms) on the tiny corpus,
    the tiny preset; ``counting()`` gives the counter to enter around it."""
    import torch

    from engine.config import TrainConfig
    from engine.data.corpus import load_cuts
    from engine.models.build import build, preset
    from engine.testing import tiny_tokenizer
    from engine.train import Trainer

    import tempfile

    tok = tiny_tokenizer(corpus)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(build(preset("tiny", vocab_size=tok.vocab_size)),
                          load_cuts(corpus, "train"), tok,
                          TrainConfig(max_duration=20.0, device=device, warmup_steps=2), tmp)
        window = {"loss": 0.0, "rnnt": 0.0, "ctc": 0.0, "simple": 0.0, "tokens": 0,
                  "audio": 0.0, "time": 0.0, "grad": 0.0, "steps": 0, "zeroed": 0,
                  "utterances": 0}
        trainer.model.train()
        for i, cuts in enumerate(trainer._sampler(0)):
            if i < 2:
                trainer._step(cuts, window)
                continue
            c = counting()
            t0 = time.perf_counter()
            with c:
                trainer._step(cuts, window)
            return c.kernels, (c.syncs if isinstance(c.syncs, int) else c.host_syncs), \
                time.perf_counter() - t0
    raise RuntimeError("the tiny corpus gave fewer than 3 batches")


def check(corpus: str | None) -> None:
    import tempfile

    import torch

    from bench_data import report

    from engine import devices

    n = devices.cuda_count()
    rows = []
    where = (f"{n} x {torch.cuda.get_device_name(0)}" if n else
             "no CUDA device on this machine: the fake-CUDA part (engine.fakecuda) ran")
    print(f"device check: {where}", flush=True)
    rows.append(("devices", where))
    setup = "teacher preset, B 4 x 20 s (T' 250), U 80, vocabulary 256, dropout 0, pruned loss"
    cpu = _one_step("cpu", "fp32")
    rows.append(("cpu: teacher step (forward + backward)", f"{cpu['step_s'] * 1000:.0f} ms"))
    if n:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        fp32 = _one_step("cuda", "fp32", _cuda_counter)
        whole, worst, name = _grad_diff(fp32["grads"], cpu["grads"])
        loss_rel = abs(fp32["loss"] - cpu["loss"]) / abs(cpu["loss"])
        ok = loss_rel <= 1e-4 and whole <= 1e-4
        rows.append(("cuda fp32 vs cpu: loss, gradients (relative)",
                     f"loss {loss_rel:.1e}, gradients {whole:.1e} ({'within' if ok else 'OUTSIDE'}"
                     f" 1e-4; TF32 off); worst parameter {name} {worst:.1e}"))
        bf16 = _one_step("cuda", "bf16", _cuda_counter)
        rel = abs(bf16["loss"] - fp32["loss"]) / abs(fp32["loss"])
        finite = all(torch.isfinite(g).all() for g in bf16["grads"].values())
        rows.append(("cuda bf16 vs fp32: loss (relative), gradients finite",
                     f"{rel:.2%} ({'within' if rel <= 0.01 else 'OUTSIDE'} 1%), "
                     f"{'finite' if finite else 'NOT FINITE'}"))
        for name, r in (("fp32", fp32), ("bf16", bf16)):
            c = r["counted"]
            rows.append((f"cuda {name}: teacher step (forward + backward)",
                         f"{r['step_s'] * 1000:.1f} ms; {c.kernels:,} kernels; {c.syncs} host "
                         f"syncs"))
    else:
        from engine.fakecuda import FakeCuda

        fc = FakeCuda()
        with fc:
            fake = _one_step("cuda", "fp32")
            fc.reset()
            model, *batch = _step_setup("cuda")
            out = model(*batch, warmup=1.0)
            out["loss"].backward()
        whole, worst, name = _grad_diff(fake["grads"], cpu["grads"])
        rows.append(("fake cuda vs cpu: loss, gradients (relative)",
                     f"loss {abs(fake['loss'] - cpu['loss']) / abs(cpu['loss']):.1e}, gradients "
                     f"{whole:.1e}, worst parameter {name} {worst:.1e} (CPU kernels both, but "
                     f"attention takes torch's math path on the fake device, as CUDA takes its "
                     f"own: this checks the device rules, not CUDA's numbers)"))
        sites = ", ".join(f"{k} x{v}" for k, v in fc.sync_sites.most_common(4))
        rows.append(("fake cuda: teacher step (forward + backward)",
                     f"{fc.kernels:,} kernels (aten ops on GPU tensors, views excluded); "
                     f"{fc.host_syncs} host syncs ({dict(fc.syncs)}; most from {sites})"))
    # a whole trainer update, and every stage kind's twin, on the tiny corpus
    twin = ROOT / "experiments" / "tiny_devices.toml"
    with tempfile.TemporaryDirectory(dir=ROOT / "lab" if (ROOT / "lab").is_dir() else None) as tmp:
        from engine.testing import tiny_corpus

        data = Path(corpus) if corpus else tiny_corpus(Path(tmp) / "tiny")
        if n:
            k, syncs, secs = _trainer_steps(data, "cuda", _cuda_counter)
        else:
            from engine.fakecuda import FakeCuda

            fake_cuda = FakeCuda()

            class _Counting:
                def __enter__(self):
                    fake_cuda.reset()
                    return self

                def __exit__(self, *exc):
                    self.kernels, self.syncs = fake_cuda.kernels, fake_cuda.host_syncs
                    self.sites = fake_cuda.sync_sites.most_common(5)
                    return False

            with fake_cuda:
                last = _Counting()
                k, syncs, secs = _trainer_steps(data, "cuda", lambda: last)
        rows.append((f"{'cuda' if n else 'fake cuda'}: one trainer update (tiny preset, tiny "
                     f"corpus, max_duration 20 s)",
                     f"{k:,} kernels; {syncs} host syncs"
                     + (f" ({', '.join(f'{a} x{b}' for a, b in last.sites)})" if not n else
                        f"; {secs * 1000:.1f} ms")))
        t0 = time.perf_counter()
        if n:
            exp_path = twin
            if corpus:
                text = twin.read_text().replace('corpus = "builtin:tiny"', f'corpus = "{corpus}"')
                exp_path = Path(tmp) / "tiny_devices.toml"
                exp_path.write_text(text)
            p = subprocess.run([sys.executable, "-m", "engine.cli", "train", str(exp_path),
                                "--device", "cuda", "--out", str(Path(tmp) / "twin"), "--quiet"],
                               capture_output=True, text=True)
            ok = p.returncode == 0
            detail = "" if ok else f": {p.stderr.strip()[-400:]}"
            out_dir = Path(tmp) / "twin"
            stages = sorted(d.name for d in out_dir.iterdir() if d.is_dir()) if ok else []
        else:
            from engine.config import load_experiment, parse_experiment
            from engine.fakecuda import FakeCuda
            from engine.testing import run_on_fake_cuda

            exp = load_experiment(twin).model_dump()
            exp["data"]["corpus"] = str(data)
            try:
                outs = run_on_fake_cuda(parse_experiment(exp), Path(tmp) / "twin", FakeCuda())
                ok, detail, stages = True, "", sorted(outs)
            except Exception as e:  # noqa: BLE001 - the check reports what failed
                ok, detail, stages = False, f": {type(e).__name__}: {e}"[:400], []
    kinds = "train, distill (y/blank/rest, full, layerwise), share, prune_magnitude, "             "prune_l0 + fold + fine-tuning, las_train, las_distill, finetune, export, "             "evaluate (greedy, beam, two-pass, sherpa-onnx int8)"
    rows.append((f"{'cuda' if n else 'fake cuda'}: every stage kind's twin "
                 f"(experiments/tiny_devices.toml)",
                 f"{'passed' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s, "
                 f"{len(stages)} stages: {kinds}{detail}"))
    # one data-parallel stage over NCCL
    if n >= 2:
        rows.append(("cuda: nproc = 2 over NCCL (torchrun, supervisor)", _nccl_step(corpus)))
    else:
        rows.append(("cuda: nproc = 2 over NCCL", "not run: needs two GPUs"))
    rows.append(("setup", setup))
    report("Device check", "`benchmarks/bench_devices.py --check`", rows)
    if any("FAILED" in v or "OUTSIDE" in v or "NOT FINITE" in v for _, v in rows):
        sys.exit(1)


def _nccl_step(corpus: str | None) -> str:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "ddp.toml"
        exp.write_text(f"""name = "ddp-check"
[data]
corpus = "{corpus or 'builtin:tiny'}"
vocab_size = 64
[[stages]]
kind = "train"
name = "model"
nproc = 2
[stages.model]
preset = "tiny"
[stages.train]
max_steps = 4
max_duration = 20.0
warmup_steps = 2
log_every = 2
checkpoint_every = 2
device = "cuda"
""")
        env = {**os.environ, "ASRLAB_HOME": str(Path(tmp) / "lab")}
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(exp), "--wait"],
                           capture_output=True, text=True, env=env, timeout=600)
        subprocess.run([sys.executable, "-m", "engine.cli", "supervisor", "stop"], env=env,
                       capture_output=True)
        if p.returncode:
            return f"FAILED: {(p.stdout + p.stderr).strip()[-400:]}"
        return f"passed: 4 updates on 2 GPUs in {time.perf_counter() - t0:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="the device check: CUDA against the CPU, every stage kind on CUDA, "
                         "NCCL (fake CUDA on a machine without a GPU)")
    ap.add_argument("--corpus", help="--check: a corpus folder for the twin (default "
                                     "builtin:tiny, synthesized with espeak-ng)")
    ap.add_argument("--preset", default="teacher")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--recipe", action="store_true",
                    help="CUDA: also train and evaluate experiments/teacher.toml on the GPU")
    ap.add_argument("--one", nargs=4, metavar=("DEVICE", "PRECISION", "COMPILED", "PRESET"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--torch-dropout", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rate", nargs=2, metavar=("DEVICE", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.check:
        check(a.corpus)
        return
    if a.rate:
        print(json.dumps({"rate": matmul_rate(a.rate[0], a.rate[1], a.threads)}))
        return
    if a.one:
        print(json.dumps(one(a.one[3], a.one[0], a.one[1], a.one[2] == "1", a.steps, a.threads,
                             a.torch_dropout)))
        return
    from bench_data import report

    from engine import devices

    def sub(args: list[str], timeout: float = 1800) -> dict | None:
        try:
            p = subprocess.run([sys.executable, __file__, *args, "--steps", str(a.steps),
                                "--threads", str(a.threads)], capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"{args}: timed out after {timeout:.0f} s", flush=True)
            return None
        if p.returncode:
            print(f"{args}: failed\n{p.stderr[-3000:]}", flush=True)
            return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
        r = json.loads(p.stdout.strip().splitlines()[-1])
        print(r, flush=True)
        return r

    targets = ["cpu"] + (["cuda"] if devices.cuda_count() else [])
    rows = []
    for dev in targets:
        bound = {dt: sub(["--rate", dev, dt])["rate"] for dt in ("fp32", "bf16")}
        rows.append((f"{dev}: dense matmul 2048^3", f"fp32 {bound['fp32'] / 1e9:.0f} GFLOP/s, "
                     f"bf16 {bound['bf16'] / 1e9:.0f} GFLOP/s "
                     f"({bound['bf16'] / bound['fp32']:.2f}x)"))
        base = None
        for precision, compiled in (("fp32", False), ("bf16", False), ("fp32", True),
                                    ("bf16", True)):
            if compiled and a.no_compile:
                continue
            r = sub(["--one", dev, precision, "1" if compiled else "0", a.preset])
            name = f"{dev}: {a.preset} step, {precision}{' + torch.compile' if compiled else ''}"
            if r is None or "error" in r:
                rows.append((name, f"did not run: {(r or {}).get('error', 'timed out')}"))
                continue
            base = base or r
            rows.append((name, (
                f"{r['step_s'] * 1000:.0f} ms (forward {r['forward_s'] * 1000:.0f}, backward "
                f"{r['backward_s'] * 1000:.0f}, clip + AdamW {r['optimizer_s'] * 1000:.0f}); "
                f"{r['audio_s_per_s']:.0f} s of audio/s; {base['step_s'] / r['step_s']:.2f}x "
                f"the fp32 step; {r['flops'] / r['step_s'] / bound['fp32']:.0%} of the fp32 "
                f"matmul bound ({r['flops'] / 1e9:.0f} GFLOP a step)"
                + (f"; warm-up incl. compile {r['warmup_s']:.0f} s" if compiled else ""))))
        if dev == "cpu":
            # the lab's dropout mask against torch's, interleaved so that drift hits both alike
            lab, tor = [], []
            for _ in range(3):
                for runs, extra in ((tor, ["--torch-dropout"]), (lab, [])):
                    r = sub(["--one", dev, "fp32", "0", a.preset, *extra])
                    if r and "error" not in r:
                        runs.append(r["step_s"])
            if lab and tor:
                ml, mt = statistics.median(lab), statistics.median(tor)
                rows.append((f"cpu: {a.preset} step, fp32, torch's nn.Dropout vs the lab's mask",
                             f"{mt * 1000:.0f} ms vs {ml * 1000:.0f} ms ({mt / ml:.2f}x; medians "
                             f"of {len(tor)} and {len(lab)} processes, interleaved)"))
    if "cuda" not in targets:
        rows.append(("cuda", "no CUDA device on this machine: CPU figures only"))
    elif a.recipe:
        out = ROOT / "lab" / "bench-devices-teacher"
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "engine.cli", "train",
                            str(ROOT / "experiments" / "teacher.toml"), "--device", "cuda",
                            "--out", str(out), "--quiet"], capture_output=True, text=True)
        minutes = (time.perf_counter() - t0) / 60
        if p.returncode:
            rows.append(("cuda: teacher recipe", f"failed: {p.stderr.strip()[-300:]}"))
        else:
            wers = {}
            for f in sorted((out / "eval").glob("results_*.json")):
                s = json.loads(f.read_text())
                wers[s["split"]] = f"{s['wer']:.1f} [{s['wer_ci'][0]:.1f}, {s['wer_ci'][1]:.1f}]"
            rows.append(("cuda: teacher recipe (experiments/teacher.toml, --device cuda)",
                         f"{minutes:.1f} min incl. corpus and evaluation; WER "
                         + ", ".join(f"{k} {v}" for k, v in wers.items())))
    rows.append(("setup", f"{a.preset} preset, vocabulary 256, pruned loss, B 8 x 5 s, U 25, "
                          f"median of {a.steps} steps after warm-up, {a.threads} CPU threads"))
    report("Devices and precision: the training step", "`benchmarks/bench_devices.py`", rows)


if __name__ == "__main__":
    main()
