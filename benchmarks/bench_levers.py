"""The training recipe's levers, one at a time, side by side in one run on this machine.

    .venv/bin/python benchmarks/bench_levers.py [--minutes 4 | --steps 400]
        [--variants baseline,torchaudio,4x,no-ctc,big-batch,vocab-400,no-noise]
        [--corpus lab/corpora/demo] [--max-utterances 300]

Every variant starts from ``experiments/demo.toml`` (student-s on the demo corpus) and changes one
thing. All train with the same seed and the same budget, either the same wall-clock minutes
(``--minutes``: what a lever buys on two cores, where updates per hour are the limit) or the same
number of updates (``--steps``: whether a lever hurts learning per update, as issue 5 asks of the
pruned loss). Each is then decoded greedily on test-clean and test-other; the table gives WER
with its bootstrap 95% interval and, for every variant, the paired-bootstrap interval of its WER
minus the baseline's on the same utterances. A difference whose interval excludes 0 is
significant.

Appends a dated section to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_data import report  # noqa: E402

# name -> (what it changes, {section: {key: value}} merged into the train stage / data)
VARIANTS: dict[str, tuple[str, dict]] = {
    "baseline": ("demo recipe: pruned loss, 12.5 Hz joiner, CTC 0.3, 40 s batches, lr 4e-3, "
                 "noise 0.2", {}),
    "torchaudio": ("torchaudio's full-lattice loss instead of the pruned loss",
                   {"model": {"loss": "torchaudio"}}),
    "full": ("our pure-PyTorch full-lattice loss", {"model": {"loss": "full"}}),
    "4x": ("no time reduction: 25 Hz into the joiner", {"model": {"time_reduction": False}}),
    "no-ctc": ("no auxiliary CTC head", {"model": {"ctc_weight": 0.0}}),
    "big-batch": ("100 s batches at peak lr 2e-3 (fewer, larger updates)",
                  {"train": {"max_duration": 100.0, "peak_lr": 2e-3}}),
    "vocab-400": ("vocabulary 400 instead of 256 (fewer tokens per word)",
                  {"data": {"vocab_size": 400}}),
    "no-noise": ("no noise augmentation in training", {"train": {"noise_p": 0.0}}),
}


def experiment(variant: str, corpus: str, minutes: float | None, steps: int | None,
               max_utts: int) -> dict:
    exp = tomllib.loads((ROOT / "experiments" / "demo.toml").read_text())
    exp["name"] = f"lever-{variant}"
    exp["data"]["corpus"] = corpus
    change = VARIANTS[variant][1]
    exp["data"].update(change.get("data", {}))
    train = exp["stages"][0]
    train["model"].update(change.get("model", {}))
    train["train"].update(change.get("train", {}))
    train["train"]["max_minutes"] = minutes if minutes else None
    train["train"]["max_steps"] = steps if steps else 10**7
    train["train"] = {k: v for k, v in train["train"].items() if v is not None}
    train["train"]["checkpoint_every"] = 10**6  # one checkpoint, at the end: no averaging
    train["train"]["average_last"] = 1
    train["train"]["threads"] = 2
    return {**exp, "stages": [train, {"kind": "evaluate", "name": "eval", "model": "model",
                                      "splits": ["test-clean", "test-other"],
                                      "max_utterances": max_utts}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variants", default="baseline,torchaudio,4x,no-ctc,big-batch,vocab-400,"
                                          "no-noise")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None)
    budget.add_argument("--steps", type=int, default=None)
    ap.add_argument("--corpus", default="builtin:demo")
    ap.add_argument("--max-utterances", type=int, default=300)
    ap.add_argument("--work", default=str(ROOT / "lab" / "bench" / "levers"))
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    if args.minutes is None and args.steps is None:
        args.minutes = 4.0
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")

    from engine.config import parse_experiment
    from engine.evaluate import UtteranceResult, paired_bootstrap
    from engine.stages import run_experiment

    budget_tag = f"{args.minutes:g}min" if args.minutes else f"{args.steps}steps"
    results = {}
    for name in names:
        out = Path(args.work) / budget_tag / name
        exp = parse_experiment(experiment(name, args.corpus, args.minutes, args.steps,
                                          args.max_utterances), f"lever {name}")
        outputs = run_experiment(exp, out, progress=False, log=lambda s: print(f"[{name}] {s}"))
        metrics = [json.loads(l) for l in (out / "model" / "metrics.jsonl").read_text().splitlines()
                   if l]
        hyps = {}
        for split in ("test-clean", "test-other"):
            hyps[split] = [UtteranceResult(**{k: u[k] for k in UtteranceResult.__dataclass_fields__})
                           for u in map(json.loads, (out / "eval" / f"hyps_{split}.jsonl")
                                        .read_text().splitlines())]
        results[name] = {"outputs": outputs, "hyps": hyps,
                         "rate": statistics.median(m["audio_s_per_s"] for m in metrics),
                         "audio_h": metrics[-1]["audio_hours"], "minutes": metrics[-1]["train_minutes"]}
        print(f"[{name}] {outputs['model']['steps']} steps, "
              f"{results[name]['rate']:.0f} s audio/s", flush=True)

    base = results[names[0]]
    rows = []
    for name in names:
        r = results[name]
        cells = []
        for split in ("test-clean", "test-other"):
            s = r["outputs"]["eval"]["results"][split]
            cell = f"{split} {s['wer']:.1f} [{s['wer_ci'][0]:.1f}, {s['wer_ci'][1]:.1f}]"
            if name != names[0]:
                d = paired_bootstrap(base["hyps"][split], r["hyps"][split])
                cell += f", vs {names[0]} {d['delta']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"
            cells.append(cell)
        rows.append((f"{name}: {VARIANTS[name][0]}",
                     f"{r['outputs']['model']['steps']} steps, {r['minutes']:.1f} min, "
                     f"{r['audio_h']:.2f} h of audio seen, {r['rate']:.0f} s audio/s; WER % "
                     + "; ".join(cells)))
    what = (f"same {args.minutes:g} minutes of training each" if args.minutes
            else f"same {args.steps} updates each")
    report(f"Training levers, {what}{' ' + args.label if args.label else ''}",
           f"`benchmarks/bench_levers.py {'--minutes ' + format(args.minutes, 'g') if args.minutes else '--steps ' + str(args.steps)}` "
           f"(student-s, demo corpus, seed 0, greedy, first {args.max_utterances} utterances per "
           f"split; brackets: bootstrap 95% interval of WER, and paired-bootstrap 95% interval of "
           f"the difference to {names[0]})", rows)


if __name__ == "__main__":
    main()
