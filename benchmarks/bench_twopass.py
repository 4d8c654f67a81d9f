"""Two-pass compression: does rescoring help, does each stage help, how much smaller is the
student? Reads a finished run of ``experiments/twopass.toml`` from the store and reports, on
test-clean and test-other:

- every model's first-pass and second-pass WER with 95% intervals, and the whole two-pass
  model's bytes (one file: the shared encoder counted once) against the teacher's;
- paired-bootstrap differences: second pass against first pass of each two-pass model (the
  first pass of an utterance is the top of its stored n-best), and stage against stage
  (student after stage 1 -> 2 -> 3, student against teacher);
- the compression ratio next to the paper's 55% (Dawalatabad et al., ASRU 2021).

``python benchmarks/bench_twopass.py [--run RUN_ID] [--submit]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import report  # noqa: E402

from engine.evaluate import (UtteranceResult, bootstrap_ci, corpus_wer,  # noqa: E402
                             paired_bootstrap, score_utterance)
from engine.stages import lab_home  # noqa: E402
from engine.store import read  # noqa: E402

MODELS = ["teacher-las", "yblank", "student-las-kd", "student-deep"]
STAGES = [("yblank", "student-las-kd"), ("student-las-kd", "student-deep"),
          ("teacher-las", "student-deep")]


def passes(db: Path, run: str, stage: str, split: str) -> tuple[list, list]:
    """(second-pass results, first-pass results) per utterance; a one-pass model has only
    the first."""
    rows = read(db, """SELECT cut_id, reference, hypothesis, ref_words, substitutions, deletions,
                              insertions, nbest FROM hyps
                       WHERE run_id = ? AND stage = ? AND split = ? ORDER BY cut_id""",
                [run, stage, split])
    final = [UtteranceResult(**{k: r[k] for k in r if k != "nbest"}) for r in rows]
    if not rows or rows[0]["nbest"] is None:
        return [], final
    first = [score_utterance(r["cut_id"], r["reference"], json.loads(r["nbest"])["list"][0]["text"])
             for r in rows]
    return final, first


def fmt(results) -> str:
    lo, hi = bootstrap_ci(results)
    return f"{corpus_wer(results):.1f}% [{lo:.1f}, {hi:.1f}]"


def diff(a, b) -> str:
    d = paired_bootstrap(a, b)
    verdict = ("better" if d["ci"][1] < 0 else "worse" if d["ci"][0] > 0
               else "no significant difference")
    return f"{d['delta']:+.1f} points [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}] ({verdict})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run")
    ap.add_argument("--submit", action="store_true")
    a = ap.parse_args()
    db = lab_home() / "lab.duckdb"
    if a.submit:
        subprocess.run([sys.executable, "-m", "engine.cli", "run",
                        str(ROOT / "experiments" / "twopass.toml"), "--wait", "--reuse"], check=True)
    if a.run is None:
        runs = read(db, "SELECT run_id FROM runs WHERE name = 'twopass' ORDER BY created DESC")
        if not runs:
            sys.exit(f"no run of twopass in {db}; pass --submit")
        a.run = runs[0]["run_id"]
    ev = {(r["model_stage"], r["split"]): r for r in read(db, """
        SELECT coalesce(model_stage, stage) AS model_stage, stage, split, bytes, params, summary
        FROM evals WHERE run_id = ? AND stage LIKE 'eval-%'""", [a.run])}
    rows = []
    for split in ("test-clean", "test-other"):
        res = {m: passes(db, a.run, f"eval-{m}", split) for m in MODELS if (m, split) in ev}
        for m, (second, first) in res.items():
            e = ev[(m, split)]
            s = json.loads(e["summary"])
            line = (f"first pass {fmt(first)}" + (f", second pass {fmt(second)} (lambda "
                    f"{s.get('las_lambda')}, n {s.get('nbest')}, rescoring RTF "
                    f"{s.get('rescore_rtf')})" if second else " (no second pass)")
                    + f"; {e['params']:,} params, {e['bytes']:,} bytes")
            if ("teacher-las", split) in ev and m != "teacher-las":
                line += f", {1 - e['bytes'] / ev[('teacher-las', split)]['bytes']:.0%} smaller"
            rows.append((f"{split}: {m}", line))
            if second:
                rows.append((f"{split}: {m}, second - first pass", diff(first, second)))
        best = lambda m: res[m][0] or res[m][1]  # noqa: E731 - each model's final output
        for x, y in STAGES:
            if x in res and y in res:
                rows.append((f"{split}: {y} - {x} (final outputs)", diff(best(x), best(y))))
    rows.append(("reference", "paper: 55% smaller two-pass model without significant WER loss"))
    for k, v in rows:
        print(f"{k}: {v}")
    report(f"Two-pass compression (run {a.run})", "`benchmarks/bench_twopass.py`", rows)


if __name__ == "__main__":
    main()
