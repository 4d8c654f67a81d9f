"""Two stages side by side at one thread each, or one at a time with every core: which trains more
audio per second on this machine? (The supervisor's choice of workers and threads.)

    .venv/bin/python benchmarks/bench_threads.py [--corpus lab/corpora/demo] [--preset student-s]
                                                 [--steps 20]

Measures, for the preset, training throughput (seconds of audio per second of wall time, the
pruned loss, real batches of the corpus) of one process with all cores' threads, and of as many
one-thread processes as there are cores, started together on the same batches; the aggregate of
those is what side-by-side stages get. Appends a section to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_data import report  # noqa: E402


def one(corpus: str, preset_name: str, steps: int, threads: int, start_at: float) -> dict:
    """Runs in a child: ``steps`` training steps at ``threads``; audio seconds and wall time."""
    import torch

    torch.set_num_threads(threads)
    from bench_train import batches

    from engine.data.features import train_cmvn
    from engine.models.build import build, preset
    from engine.stages import corpus_tokenizer

    tok = corpus_tokenizer(Path(corpus), 256, "unigram")
    data = batches(Path(corpus), tok, 40.0, steps + 2)
    torch.manual_seed(0)
    model = build(preset(preset_name, vocab_size=tok.vocab_size), train_cmvn(Path(corpus)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step(b):
        out = model(b["features"], b["feature_lens"], b["tokens"], b["token_lens"])
        opt.zero_grad()
        (out["loss"] / b["features"].shape[0]).backward()
        opt.step()

    for b, _ in data[:2]:  # warm-up, not timed
        step(b)
    while time.time() < start_at:  # every process starts its timed steps together
        time.sleep(0.01)
    t0, audio = time.perf_counter(), 0.0
    for b, a in data[2:]:
        step(b)
        audio += a
    return {"audio": audio, "seconds": time.perf_counter() - t0}


def run(corpus: str, preset_name: str, steps: int, procs: int, threads: int) -> list[dict]:
    start_at = time.time() + 60.0  # after every child has loaded and warmed up
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from bench_threads import one; "
            "print(json.dumps(one(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), "
            "float(sys.argv[6]))))")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    ps = [subprocess.Popen([sys.executable, "-c", code, str(ROOT / "benchmarks"), corpus,
                            preset_name, str(steps), str(threads), str(start_at)],
                           stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
          for _ in range(procs)]
    out = []
    for p in ps:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a child failed (rc {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default=str(ROOT / "lab" / "corpora" / "demo"))
    ap.add_argument("--preset", default="student-s")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    cores = os.cpu_count() or 2
    together = run(args.corpus, args.preset, args.steps, 1, cores)[0]
    apart = run(args.corpus, args.preset, args.steps, cores, 1)
    one_rate = together["audio"] / together["seconds"]
    rates = [r["audio"] / r["seconds"] for r in apart]
    agg = sum(rates)
    rows = [(f"{args.preset}: 1 process x {cores} threads",
             f"{one_rate:.0f} audio s/s ({together['seconds']:.1f} s for {args.steps} steps)"),
            (f"{args.preset}: {cores} processes x 1 thread, side by side",
             f"{agg:.0f} audio s/s together ({', '.join(f'{r:.0f}' for r in rates)} each)"),
            ("side by side / one at a time", f"{agg / one_rate:.2f}x")]
    report("Threads: stages side by side or one at a time",
           f"`benchmarks/bench_threads.py --preset {args.preset} --steps {args.steps}`", rows)


if __name__ == "__main__":
    main()
