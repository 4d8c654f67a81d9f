"""Accuracy of a finished training run against wall-clock minutes: every kept checkpoint (and the
final, averaged model) decoded greedily on dev/test splits, WER with 95% intervals.

    .venv/bin/python benchmarks/bench_teacher.py lab/runs/teacher [--stage teacher]
        [--corpus lab/corpora/full] [--max-utterances 400]

Appends the curve to BENCHMARKS.md. Use ``keep_checkpoints`` large enough in the experiment to
keep the points you want on the curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_data import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run")
    ap.add_argument("--stage", default="teacher")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--splits", default="test-clean,test-other")
    ap.add_argument("--max-utterances", type=int, default=400)
    ap.add_argument("--label", default=None)
    ap.add_argument("--every", type=int, default=1, help="evaluate every Nth checkpoint")
    args = ap.parse_args()

    from engine.checkpoint import load_model
    from engine.stages import evaluate_model, model_tokenizer

    run = Path(args.run)
    stage = run / args.stage
    final, meta = load_model(stage / "model.pt")
    tok = model_tokenizer(meta)
    corpus = Path(args.corpus or meta["corpus"])
    splits = args.splits.split(",")
    points = []
    for ckpt in sorted((stage / "checkpoints").glob("step-*.pt"))[:: args.every]:
        st = torch.load(ckpt, map_location="cpu", weights_only=True)
        model, _ = load_model(ckpt)
        points.append((st["progress"]["train_seconds"] / 60, st["progress"]["step"], ckpt.name,
                       model))
    points.append((meta.get("train_minutes", float("nan")), meta.get("step"), "model.pt "
                   f"(average of {len(meta.get('averaged', []))})", final))
    rows = []
    for minutes, step, name, model in points:
        cells = []
        for split in splits:
            s = evaluate_model(model, tok, corpus, split, max_utterances=args.max_utterances,
                               accounting_utterances=2)["summary"]
            cells.append(f"{s['wer']:.1f} [{s['wer_ci'][0]:.1f}, {s['wer_ci'][1]:.1f}]")
        rows.append((f"{minutes:.1f}", str(step), name, *cells))
        print(" | ".join(rows[-1]), flush=True)
    metrics = [json.loads(l) for l in (stage / "metrics.jsonl").read_text().splitlines() if l]
    rate = sorted(m["audio_s_per_s"] for m in metrics)[len(metrics) // 2] if metrics else 0
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        f.write(f"\n## WER against training minutes: {args.label or run.name} ({stamp})\n\n"
                f"`benchmarks/bench_teacher.py {args.run}` on {machine()}; corpus {corpus.name}, "
                f"greedy search, first {args.max_utterances} utterances per split, 95% bootstrap "
                f"intervals; median training throughput {rate:.0f} s of audio/s\n\n"
                f"| minutes | step | model | " + " | ".join(f"WER {s} %" for s in splits)
                + " |\n|---|---|---|" + "---|" * len(splits) + "\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")


if __name__ == "__main__":
    main()
