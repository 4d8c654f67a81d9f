"""Accuracy of a finished training run against wall-clock minutes: every kept checkpoint (and the
final, averaged model) decoded greedily on dev/test splits, WER with 95% intervals.

    .venv/bin/python benchmarks/bench_teacher.py lab/runs/teacher [--stage teacher]
        [--corpus lab/corpora/full] [--max-utterances 400]

Appends the curve to BENCHMARKS.md. Use ``keep_checkpoints`` large enough in the experiment to
keep the points you want on the curve.

    .venv/bin/python benchmarks/bench_teacher.py --store RUN_ID [--stage teacher]
        [--against RUN_ID ...]

reads the curve from the lab's store instead of decoding again: the train stage's periodic
probes (``eval_every``: the exported weights of step N on the first ``eval_utterances`` of each
probe split), then its evaluate stages on the full splits and the training slice, each beside
its training minutes; ``--against`` adds the paired-bootstrap difference on the same utterances
to another run's model (e.g. the student-s demo recipe), split by split.
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
    ap.add_argument("run", nargs="?")
    ap.add_argument("--store", default=None, help="a run id: read its curve from the store")
    ap.add_argument("--against", action="append", default=[], help="run id to compare with")
    ap.add_argument("--stage", default="teacher")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--splits", default="test-clean,test-other")
    ap.add_argument("--max-utterances", type=int, default=400)
    ap.add_argument("--label", default=None)
    ap.add_argument("--every", type=int, default=1, help="evaluate every Nth checkpoint")
    args = ap.parse_args()
    if args.store:
        return from_store(args)

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


def from_store(args) -> None:
    from bench_data import report
    from bench_progressive import utterances

    from engine.evaluate import paired_bootstrap
    from engine.stages import lab_home
    from engine.store import read

    db = lab_home() / "lab.duckdb"
    run_dir = lab_home() / "runs" / args.store
    metrics = [json.loads(l) for l in (run_dir / args.stage / "metrics.jsonl").read_text()
               .splitlines() if l]
    minutes = {m["step"]: m["train_minutes"] for m in metrics if "train_minutes" in m}
    rows = []
    probes = read(db, """SELECT step, split, wer, wer_lo, wer_hi, utterances FROM evals
                         WHERE run_id = ? AND stage = ? ORDER BY step, split""",
                  [args.store, args.stage])
    for step in sorted({p["step"] for p in probes}):
        cells = [f"{p['split']} {p['wer']:.1f} [{p['wer_lo']:.1f}, {p['wer_hi']:.1f}] "
                 f"({p['utterances']} utts)" for p in probes if p["step"] == step]
        rows.append((f"step {step} probe, {minutes.get(step, float('nan')):.1f} min",
                     "; ".join(cells)))
    finals = read(db, """SELECT stage, split, step, wer, wer_lo, wer_hi, utterances, summary
                         FROM evals WHERE run_id = ? AND model_stage = ? AND stage <> ?
                         ORDER BY stage, split""", [args.store, args.stage, args.stage])
    for e in finals:
        s = json.loads(e["summary"] or "{}")
        sdi = (f" S/D/I {s.get('substitutions')}/{s.get('deletions')}/{s.get('insertions')}"
               if "deletions" in s else "")
        rows.append((f"final model (step {e['step']}), {e['split']}",
                     f"{e['wer']:.1f} [{e['wer_lo']:.1f}, {e['wer_hi']:.1f}] on "
                     f"{e['utterances']} utterances{sdi}"))
    for other in args.against:
        for e in finals:
            if e["split"] == "train":
                continue  # each run scores its own spread of training cuts: not paired
            src = read(db, """SELECT stage FROM evals WHERE run_id = ? AND split = ?
                              AND stage NOT IN (SELECT name FROM stages WHERE run_id = ?
                                                AND kind <> 'evaluate')""",
                       [other, e["split"], other])
            if not src:
                continue
            d = paired_bootstrap(utterances(db, (other, src[0]["stage"]), e["split"]),
                                 utterances(db, (args.store, e["stage"]), e["split"]))
            verdict = "better" if d["ci"][1] < 0 else "worse" if d["ci"][0] > 0 else "n.s."
            rows.append((f"teacher - {other}, {e['split']}",
                         f"{d['delta']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}] {verdict}"))
    rate = sorted(m["audio_s_per_s"] for m in metrics)[len(metrics) // 2] if metrics else 0
    rows.append(("training", f"{metrics[-1]['step']} updates in "
                             f"{metrics[-1]['train_minutes']:.1f} min, median {rate:.0f} s of "
                             f"audio/s"))
    report(f"Teacher: WER against updates, run {args.store}",
           f"`benchmarks/bench_teacher.py --store {args.store}` (greedy; WER % [95% bootstrap]; "
           f"probes on the first utterances of each split; differences: paired bootstrap on the "
           f"same utterances, points)", rows)


if __name__ == "__main__":
    main()
