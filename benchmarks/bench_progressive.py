"""Does distillation help, and how far does the progressive chain compress? Reads a finished run
of ``experiments/progressive.toml`` (or ``yblank_vs_full.toml``, ``sparse_kd.toml``,
``l0_structured.toml``) from the store and reports, on test-clean and test-other:

- each model's WER with its 95% interval, artifact bytes and compression against the teacher;
- paired-bootstrap differences: the chain's last student against the same student trained from
  scratch and distilled directly from the teacher (same steps), each distilled student of
  yblank_vs_full against no KD;
- the headline: the largest compression (bytes) whose WER is inside the teacher's interval or
  within 5% relative of the teacher's WER (the paper reports > 60% without significant loss).

``python benchmarks/bench_progressive.py [--run RUN_ID] [--submit]``: without ``--run`` the newest
run of the experiment is used; ``--submit`` runs it first and waits (about 75 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import report  # noqa: E402

from engine.evaluate import UtteranceResult, paired_bootstrap  # noqa: E402
from engine.stages import lab_home  # noqa: E402
from engine.store import read  # noqa: E402

PAIRS = {"progressive": [("s3-scratch", "s3"), ("s3-scratch", "s3-direct"), ("s3-direct", "s3"),
                         ("teacher", "s3")],
         "yblank-vs-full": [("no-kd", "yblank"), ("no-kd", "full"), ("full", "yblank")],
         "sparse-kd": [("sparse-60", "sparse-60-kd"), ("sparse-90", "sparse-90-kd"),
                       ("teacher", "sparse-60-kd"), ("teacher", "sparse-90-kd")],
         "l0-structured": [("l0-30", "l0-30-kd"), ("l0-50", "l0-50-kd"), ("l0-70", "l0-70-kd"),
                           ("teacher", "l0-50-kd")]}
PAPER = {"sparse-kd": "paper: KD gives 4.3% / 12.1% relative WER gain at 60% / 90% sparsity",
         "l0-structured": "paper: 50% smaller, 28% less inference cost"}


def utterances(db: Path, source: tuple[str, str], split: str) -> list[UtteranceResult]:
    rows = read(db, """SELECT cut_id, reference, hypothesis, ref_words, substitutions, deletions,
                              insertions FROM hyps WHERE run_id = ? AND stage = ? AND split = ?""",
                [source[0], source[1], split])
    return [UtteranceResult(**r) for r in rows]


def pick_run(db: Path, experiment: str, run: str | None, submit: bool) -> str:
    """``run``, else the newest run of ``experiment`` (submitted first and waited for with
    ``submit``)."""
    if submit:
        toml = ROOT / "experiments" / f"{experiment.replace('-', '_')}.toml"
        subprocess.run([sys.executable, "-m", "engine.cli", "run", str(toml), "--wait", "--reuse"],
                       check=True)
    if run is None:
        runs = read(db, "SELECT run_id FROM runs WHERE name = ? ORDER BY created DESC",
                    [experiment])
        if not runs:
            sys.exit(f"no run of {experiment} in {db}; pass --submit")
        run = runs[0]["run_id"]
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="progressive", choices=sorted(PAIRS))
    ap.add_argument("--run")
    ap.add_argument("--submit", action="store_true")
    a = ap.parse_args()
    home = lab_home()
    db = home / "lab.duckdb"
    a.run = pick_run(db, a.experiment, a.run, a.submit)
    # an evaluate stage reused from another run (``asrlab run --reuse``) has its rows there
    evals = read(db, """
        WITH src AS (
            SELECT name, coalesce(split_part(reused_from, '/', 1), run_id) AS src_run,
                   coalesce(split_part(reused_from, '/', 2), name) AS src_stage
            FROM stages WHERE run_id = ? AND kind = 'evaluate')
        SELECT src.src_run, e.stage, coalesce(e.model_stage, e.stage) AS model, e.split, e.wer,
               e.wer_lo, e.wer_hi, e.bytes, e.params, e.utterances, e.step, e.macs_per_second,
               e.rtf
        FROM src JOIN evals e ON e.run_id = src.src_run AND e.stage = src.src_stage""", [a.run])
    if not evals:
        sys.exit(f"run {a.run} has no evaluations yet")
    by = {(r["model"], r["split"]): r for r in evals}
    stage_of = {r["model"]: (r["src_run"], r["stage"]) for r in evals}
    rows = []
    for split in ("test-clean", "test-other"):
        teacher = by.get(("teacher", split))
        for (model, sp), r in sorted(by.items()):
            if sp != split:
                continue
            comp = (1 - r["bytes"] / teacher["bytes"]) if teacher and r["bytes"] else None
            rows.append((f"{split}: {model}",
                         f"WER {r['wer']:.1f}% [{r['wer_lo']:.1f}, {r['wer_hi']:.1f}], "
                         f"{r['params']:,} params, {r['bytes']:,} bytes, "
                         f"{r['macs_per_second'] / 1e6:.1f} M MACs/s, RTF {r['rtf']:.4f}"
                         + (f", {comp:.0%} smaller than the teacher" if comp is not None
                            and model != "teacher" else "")
                         + f" ({r['utterances']} utterances, step {r['step']})"))
        for base, other in PAIRS[a.experiment]:
            if base not in stage_of or other not in stage_of:
                continue
            d = paired_bootstrap(utterances(db, stage_of[base], split),
                                 utterances(db, stage_of[other], split))
            verdict = ("better" if d["ci"][1] < 0 else "worse" if d["ci"][0] > 0
                       else "no significant difference")
            base_wer = by[(base, split)]["wer"] if (base, split) in by else None
            rel = (f", {d['delta'] / base_wer:+.1%} relative" if base_wer else "")
            rows.append((f"{split}: {other} - {base}",
                         f"{d['delta']:+.1f} points [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]{rel} "
                         f"({verdict}; {other} better in {d['p_b_better']:.0%} of resamples)"))
        if teacher and a.experiment == "l0-structured" and ("l0-50-kd", split) in by:
            r = by[("l0-50-kd", split)]
            rows.append((f"{split}: the 50% model (with KD) against the teacher",
                         f"{1 - r['bytes'] / teacher['bytes']:.0%} fewer bytes, "
                         f"{1 - r['macs_per_second'] / teacher['macs_per_second']:.0%} fewer MACs, "
                         f"{1 - r['rtf'] / teacher['rtf']:.0%} less time at 1 thread "
                         f"(paper: 50% smaller, 28% less inference cost)"))
        if teacher and a.experiment == "progressive":
            ok = [(1 - r["bytes"] / teacher["bytes"], m) for (m, sp), r in by.items()
                  if sp == split and m != "teacher" and r["bytes"]
                  and (r["wer"] <= teacher["wer_hi"] or r["wer"] <= 1.05 * teacher["wer"])]
            rows.append((f"{split}: headline",
                         (f"largest compression within the teacher's interval or 5% relative: "
                          f"{max(ok)[0]:.0%} ({max(ok)[1]})" if ok else
                          "no student is within the teacher's interval or 5% relative of it")
                         + " (paper: > 60%)"))
    if a.experiment in PAPER:
        rows.append(("reference", PAPER[a.experiment]))
    for k, v in rows:
        print(f"{k}: {v}")
    report(f"Distillation: {a.experiment} (run {a.run})",
           f"`benchmarks/bench_progressive.py --experiment {a.experiment}`", rows)


if __name__ == "__main__":
    main()
