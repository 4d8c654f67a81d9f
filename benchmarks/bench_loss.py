"""Transducer loss + joiner, forward + backward: torchaudio vs our full loss vs the pruned loss,
at several vocabulary sizes, side by side in one run.

    .venv/bin/python benchmarks/bench_loss.py [--batch 16 --frames 100 --tokens 30]

Each configuration runs in its own process so its peak memory (growth of the resident set over
the process's baseline after set-up) is its own. Step time is the median of 7 after 2 warm-ups.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_data import report  # noqa: E402


def one(loss: str, v: int, b: int, t: int, u: int, j: int, threads: int) -> dict:
    import torch

    from engine.losses.pruned import prune_ranges, pruned_rnnt_loss, simple_logprobs
    from engine.losses.rnnt import rnnt_loss, rnnt_loss_from_logprobs

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    enc = torch.randn(b, t, j, requires_grad=True)
    pred = torch.randn(b, u + 1, j, requires_grad=True)
    out = torch.nn.Linear(j, v)
    am, lm = torch.nn.Linear(j, v), torch.nn.Linear(j, v)
    targets = torch.randint(1, v, (b, u))
    t_lens = torch.full((b,), t)
    u_lens = torch.full((b,), u)

    def step():
        if loss == "pruned":
            e, bl = simple_logprobs(am(enc), lm(pred), targets)
            simple = rnnt_loss_from_logprobs(e, bl, t_lens, u_lens).sum()
            ranges = prune_ranges(e, bl, t_lens, u_lens, 5)
            total = 0.5 * simple + pruned_rnnt_loss(
                enc, pred, lambda h: out(torch.tanh(h)), targets, t_lens, u_lens, ranges, 5).sum()
        else:
            logits = out(torch.tanh(enc[:, :, None] + pred[:, None]))
            if loss == "full":
                total = rnnt_loss(logits, targets, t_lens, u_lens).sum()
            else:
                import torchaudio

                total = torchaudio.functional.rnnt_loss(logits, targets.int(), t_lens.int(),
                                                        u_lens.int(), blank=0, reduction="sum")
        total.backward()

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(9):
        t0 = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"ms": 1000 * statistics.median(times), "peak_mb": (peak - base) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--joiner", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]), args.batch, args.frames,
                             args.tokens, args.joiner, args.threads)))
        return
    rows = []
    for v in (256, 500, 1000):
        res = {}
        for loss in ("torchaudio", "full", "pruned"):
            p = subprocess.run([sys.executable, __file__, "--child", loss, str(v), "--batch",
                                str(args.batch), "--frames", str(args.frames), "--tokens",
                                str(args.tokens), "--joiner", str(args.joiner), "--threads",
                                str(args.threads)], capture_output=True, text=True, cwd=ROOT)
            if p.returncode != 0:
                raise SystemExit(p.stderr)
            res[loss] = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append((f"V = {v}: joiner + loss, fwd + bwd",
                     ", ".join(f"{k} {r['ms']:.0f} ms / {r['peak_mb']:.0f} MB" for k, r in res.items())
                     + f"; pruned {res['torchaudio']['ms'] / res['pruned']['ms']:.1f}x faster "
                       f"than torchaudio"))
    report("Transducer loss", f"`benchmarks/bench_loss.py` (B {args.batch}, T {args.frames}, "
           f"U {args.tokens}, joiner {args.joiner}, {args.threads} threads)", rows)


if __name__ == "__main__":
    main()
