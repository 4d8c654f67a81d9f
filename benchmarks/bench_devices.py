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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
