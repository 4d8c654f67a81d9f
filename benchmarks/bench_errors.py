"""What limits a model on a split: its WER broken down by what the corpus says about each
utterance (the built-in corpus records voice, TTS engine, noise, SNR and effect per cut).

    .venv/bin/python benchmarks/bench_errors.py RUN [RUN ...] [--split test-other] [--stage eval]

For each run, reads the per-utterance results of its evaluate stage from the lab's store (no
decoding) and joins them with the corpus manifest by cut id. Rows: WER % [95% bootstrap] and
S/D/I per group (effect, SNR band, noise kind, engine), so "test-other is hard" becomes
"unseen voices cost X at high SNR, 5-10 dB costs Y more". Written to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def groups_of(sup: dict) -> dict[str, str]:
    """The groups one utterance belongs to, by attribute."""
    custom = sup.get("custom") or {}
    voice = custom.get("voice") or {}
    out = {"engine": voice.get("engine", "?")}
    c = custom.get("corruption")
    if c:
        snr = c["snr_db"]
        out["effect"] = c["effect"]
        out["snr"] = "5-10 dB" if snr < 10 else "10-15 dB" if snr < 15 else "15-20+ dB"
        out["noise"] = c["noise"]
    else:
        out["effect"] = "clean"
    return out


def breakdown(results, sups: dict[str, dict]) -> dict[tuple[str, str], list]:
    by = defaultdict(list)
    for r in results:
        sup = sups.get(r.cut_id)
        if sup is None:
            raise SystemExit(f"cut {r.cut_id!r} is not in the corpus manifest: the run scored "
                             f"another corpus than the one given")
        for attr, value in groups_of(sup).items():
            by[(attr, value)].append(r)
        by[("all", "all")].append(r)
    return by


def main() -> None:
    from bench_data import report
    from bench_progressive import utterances

    from engine.data.corpus import load_supervisions
    from engine.evaluate import bootstrap_ci
    from engine.stages import lab_home, resolve_corpus
    from engine.store import read

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="test-other")
    ap.add_argument("--stage", default="eval", help="the evaluate stage whose results to read")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()

    db = lab_home() / "lab.duckdb"
    rows: list[tuple[str, str]] = []
    for run in args.runs:
        cfg = read(db, "SELECT config FROM runs WHERE run_id = ?", [run])
        if not cfg:
            raise SystemExit(f"run {run!r} is not in the store {db}")
        corpus = resolve_corpus(json.loads(cfg[0]["config"])["data"]["corpus"])
        sups = {s.id: s.to_dict() for s in load_supervisions(corpus, args.split)}
        res = utterances(db, (run, args.stage), args.split)
        if not res:
            raise SystemExit(f"run {run!r} has no {args.split} results from stage {args.stage!r}")
        for (attr, value), rs in sorted(breakdown(res, sups).items()):
            words = sum(r.ref_words for r in rs)
            s, d, i = (sum(r.substitutions for r in rs), sum(r.deletions for r in rs),
                       sum(r.insertions for r in rs))
            lo, hi = bootstrap_ci(rs)
            rows.append((f"{run} {attr}={value}",
                         f"{100 * (s + d + i) / max(words, 1):.1f} [{lo:.1f}, {hi:.1f}] on "
                         f"{len(rs)} utterances, S/D/I {s}/{d}/{i}"))
    if args.no_write:
        for k, v in rows:
            print(f"{k}  {v}")
        return
    report(f"Errors by utterance attribute, {args.split}",
           f"`benchmarks/bench_errors.py {' '.join(args.runs)} --split {args.split}` (greedy; "
           f"WER % [95% bootstrap] per group, from the corpus manifest's per-cut voice and "
           f"corruption)", rows)


if __name__ == "__main__":
    main()
