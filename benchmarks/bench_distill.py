"""Cost of transducer distillation: step time and peak memory of plain training, 3-way (yblank)
KD and full-vocabulary KD, at vocabulary 256 and 1,000, with the student's pruned loss (KD on its
band) and with the whole-lattice torchaudio loss (KD on every node).

Each configuration runs in its own process (so its peak resident memory is its own): a student-s
student, a frozen teacher-preset teacher, random 4 s utterances (B 8) with 30 tokens each, 2
warm-up steps then ``--steps`` timed forward + backward + optimizer steps, at 2 threads. The
median step time and the process's peak RSS are reported side by side in one run.
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


def one(loss: str, kd: str, vocab: int, steps: int, threads: int) -> dict:
    import torch

    from engine.compress.distill import Distiller
    from engine.config import KDConfig
    from engine.models.build import build, preset

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    student = build(preset("student-s", vocab_size=vocab, loss=loss))
    model = student
    if kd != "none":
        teacher = build(preset("teacher", vocab_size=vocab))
        model = Distiller(student, teacher, KDConfig(loss=kd))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    b, t, u = 8, 400, 30
    x = torch.randn(b, t, 80, generator=g)
    x_lens = torch.full((b,), t)
    tokens = torch.randint(1, vocab, (b, u), generator=g)
    token_lens = torch.full((b,), u)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        out = model(x, x_lens, tokens, token_lens)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"loss": loss, "kd": kd, "vocab": vocab, "step_s": statistics.median(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=3, metavar=("LOSS", "KD", "VOCAB"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], int(a.one[2]), a.steps, a.threads)))
        return
    from bench_data import report

    results = []
    for loss in ("pruned", "torchaudio"):
        for vocab in (256, 1000):
            for kd in ("none", "yblank", "full"):
                p = subprocess.run([sys.executable, __file__, "--one", loss, kd, str(vocab),
                                    "--steps", str(a.steps), "--threads", str(a.threads)],
                                   capture_output=True, text=True, check=True)
                r = json.loads(p.stdout.strip().splitlines()[-1])
                print(r, flush=True)
                results.append(r)
    rows = []
    for loss in ("pruned", "torchaudio"):
        for vocab in (256, 1000):
            rs = {r["kd"]: r for r in results if r["loss"] == loss and r["vocab"] == vocab}
            base = rs["none"]
            cells = []
            for kd in ("none", "yblank", "full"):
                r = rs[kd]
                extra = "" if kd == "none" else (
                    f" ({r['step_s'] / base['step_s']:.2f}x time, "
                    f"+{r['peak_rss_mb'] - base['peak_rss_mb']:.0f} MB)")
                cells.append(f"{kd} {r['step_s'] * 1000:.0f} ms / {r['peak_rss_mb']:.0f} MB{extra}")
            rows.append((f"student loss {loss}, V {vocab}", "; ".join(cells)))
    rows.append(("setup", f"student-s student, teacher-preset teacher (frozen, no_grad), B 8 x 4 s, "
                          f"U 30, median of {a.steps} steps after 2 warm-up, {a.threads} threads; "
                          f"memory = peak RSS of the process (the teacher's weights included)"))
    report("Distillation cost: plain vs 3-way (yblank) vs full KD", "`benchmarks/bench_distill.py`",
           rows)


if __name__ == "__main__":
    main()
