"""The training recipe, one lever at a time, through the lab's own sweeps (issue 18).

    .venv/bin/python benchmarks/bench_recipe.py [--submit] [--experiment recipe]
        [--lever stages.model.train.spec_augment=false ...]

``--submit`` queues ``experiments/recipe.toml`` (the base recipe) and one ``asrlab sweep`` per
lever, each changing exactly one field, all with ``--reuse`` so the base is computed once, and
waits. Start the supervisor with ``ASRLAB_WORKERS=2 ASRLAB_THREADS=1`` to run two at a time on
two cores (the budget is in steps, so side by side changes the wall-clock, not the result).

Then, for every finished run of the experiment, it reads the store: the field that differs from
the base run (from the stored resolved configs), updates and training minutes, WER on dev,
test-clean, test-other and on an evenly spread slice of the training set (with 95% bootstrap
intervals), substitutions / deletions / insertions, and the paired-bootstrap interval of each
lever's WER minus the base's on the same utterances. A difference whose interval excludes 0 is
significant. Appends a dated section to BENCHMARKS.md.
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
from bench_progressive import utterances  # noqa: E402

from engine.evaluate import paired_bootstrap  # noqa: E402
from engine.stages import lab_home  # noqa: E402
from engine.store import read  # noqa: E402

# study v1 (base with SpecAugment on, the old regime): inv_sqrt, spec_augment=false (the winner,
# now the default), ctc_layer=top, peak_lr=2e-3, loss_warmup_steps=1000 (BENCHMARKS.md).
# Study v2: the base is the shipped recipe (SpecAugment off); it fits the training set (0.6%
# train WER against 11% dev) and test-other's unseen, noisy voices stay at 55%, so these levers
# regularise. A lever is one or more FIELD=VALUE joined by ";" (one arm).
LEVERS = [
    "stages.model.train.noise_p=0.5",
    "stages.model.train.spec_augment=true;stages.model.train.spec_augment_from=1000",
]
SPLITS = ("dev", "test-clean", "test-other", "train")


def flat(d, prefix="") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d and isinstance(d[0], dict) and "name" in d[0]:
        for v in d:  # stages by name, as the sweep grid names them
            out.update(flat(v, f"{prefix}{v['name']}."))
    else:
        out[prefix[:-1]] = d
    return out


def submit(toml: Path, levers: list[str]) -> None:
    cli = [sys.executable, "-m", "engine.cli"]
    subprocess.run(cli + ["run", str(toml), "--reuse"], check=True)
    for lever in levers:
        grids = [x for field in lever.split(";") for x in ("--grid", field)]
        subprocess.run(cli + ["sweep", str(toml), "--reuse", *grids], check=True)
    ids = [r["run_id"] for r in read(lab_home() / "lab.duckdb",
                                     "SELECT run_id FROM runs WHERE name = ?", [toml.stem])]
    subprocess.run(cli + ["status"], check=False)
    while True:  # --wait of the CLI follows one run; here every run of the study
        import time

        states = read(lab_home() / "lab.duckdb", f"""SELECT state FROM stages WHERE run_id IN
                      ({','.join('?' * len(ids))})""", ids)
        if all(s["state"] in ("done", "failed", "cancelled") for s in states):
            return
        time.sleep(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="recipe")
    ap.add_argument("--submit", action="store_true")
    ap.add_argument("--lever", action="append", help="FIELD=VALUE (default: the study's levers)")
    a = ap.parse_args()
    if a.submit:
        submit(ROOT / "experiments" / f"{a.experiment}.toml", a.lever or LEVERS)
    db = lab_home() / "lab.duckdb"
    runs = read(db, "SELECT run_id, sweep_id, config FROM runs WHERE name = ? ORDER BY created",
                [a.experiment])
    base = [r for r in runs if r["sweep_id"] is None]
    if not base:
        sys.exit(f"no base run of {a.experiment} (one submitted with `asrlab run`) in {db}")
    base_cfg = flat(json.loads(base[-1]["config"]))
    arms: dict[str, str] = {}  # label -> run id (newest wins)
    for r in runs:
        cfg = flat(json.loads(r["config"]))
        # a key only one side has is a field added later, at its default: not a lever
        diff = sorted(f"{k.removeprefix('stages.')}={cfg.get(k)}" for k in set(cfg) & set(base_cfg)
                      if cfg.get(k) != base_cfg.get(k) and k != "name")
        arms[", ".join(diff) or "base"] = r["run_id"]
    rows, results = [], {}
    for label, run in arms.items():
        evals = read(db, """
            WITH src AS (
                SELECT name, coalesce(split_part(reused_from, '/', 1), run_id) AS src_run,
                       coalesce(split_part(reused_from, '/', 2), name) AS src_stage
                FROM stages WHERE run_id = ? AND kind = 'evaluate' AND state = 'done')
            SELECT src.src_run, e.stage, e.split, e.wer, e.wer_lo, e.wer_hi, e.utterances,
                   e.summary FROM src JOIN evals e
              ON e.run_id = src.src_run AND e.stage = src.src_stage""", [run])
        train = read(db, """SELECT last_metrics FROM stages WHERE run_id = ? AND name = 'model'""",
                     [run])
        m = json.loads(train[0]["last_metrics"] or "{}") if train else {}
        if not evals:
            rows.append((label, f"run {run}: not evaluated yet"))
            continue
        parts = [f"step {m.get('step', '?')}, {m.get('train_minutes', 0):.1f} min"]
        for split in SPLITS:
            e = next((x for x in evals if x["split"] == split), None)
            if e is None:
                continue
            s = json.loads(e["summary"] or "{}")
            results[(label, split)] = (e["src_run"], e["stage"])
            sdi = (f" S/D/I {s.get('substitutions')}/{s.get('deletions')}/{s.get('insertions')}"
                   if "deletions" in s else "")
            parts.append(f"{split} {e['wer']:.1f} [{e['wer_lo']:.1f}, {e['wer_hi']:.1f}]{sdi}")
        rows.append((label, f"run {run}: " + "; ".join(parts)))
    for label in arms:
        if label == "base":
            continue
        diffs = []
        for split in SPLITS:
            if (label, split) not in results or ("base", split) not in results:
                continue
            d = paired_bootstrap(utterances(db, results[("base", split)], split),
                                 utterances(db, results[(label, split)], split))
            verdict = ("better" if d["ci"][1] < 0 else "worse" if d["ci"][0] > 0 else "n.s.")
            diffs.append(f"{split} {d['delta']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}] "
                         f"{verdict}")
        if diffs:
            rows.append((f"{label} - base", "; ".join(diffs)))
    for k, v in rows:
        print(f"{k}: {v}")
    report(f"Recipe study: {a.experiment}, one lever at a time",
           f"`benchmarks/bench_recipe.py --experiment {a.experiment}` (student-s, builtin:demo, "
           f"same updates each, greedy; WER % [95% bootstrap]; lever - base: paired bootstrap, "
           f"points)", rows)


if __name__ == "__main__":
    main()
