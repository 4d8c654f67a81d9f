"""The five papers' claims, measured on one teacher: reads the seed sweep of
``experiments/seeds.toml`` (``asrlab sweep experiments/seeds.toml --grid seed=0,1 --reuse``) from
the store and reports, per claim, the paper's figure, the lab's figure with its paired-bootstrap
interval on every seed and the spread between seeds, and a verdict.

A difference between two arms (b - a, WER points on the same utterances) is called real only when
every seed's 95% paired-bootstrap interval excludes zero on the same side *and* the mean
difference is larger than the spread of the per-seed differences (max - min): the bootstrap covers
the test utterances, the spread covers training noise. With one seed the spread is unmeasured
and the verdict says so.

Claims (test-clean; test-other beside where it matters):

1. progressive KD (Rathod et al.): s3 by the chain vs s3 distilled directly vs from scratch; the
   largest compression with no significant loss against the teacher (paper: > 60%);
2. two-pass (Dawalatabad et al.): the student's second pass vs its first pass, its bytes against
   the two-pass teacher's (paper: 55% smaller);
3. sparse KD (Panchapagesan et al.): 3-way KD vs none at 60% and 90% sparsity (paper: 4.3% /
   12.1% relative), full-vocabulary KD beside;
4. L0 structured pruning (Jiang et al.): layerwise KD vs none at 50%; bytes, MACs and time
   against the teacher (paper: 50% smaller, >= 28% less inference cost, within 5% relative);
5. sharing + sparsity + int8 (Gao et al.): deployed sherpa-onnx bytes against the teacher's fp32
   files and WER within 5% relative (target >= 10x).

``--beta`` reads the newest sweep of ``experiments/seeds_beta.toml`` instead, over the KD weight
(``--grid stages.s3-direct.kd.weight=1,2.5,5,10``) or temperature (``--grid
stages.s3-direct.kd.temperature=1,2,4``): the dev WER of s3 distilled directly at each setting,
each against the study's setting with a paired bootstrap on the dev utterances, and the setting
dev picks. ``--horizon`` reads the newest sweep of ``experiments/seeds_horizon.toml``: the s3
students (KD and scratch) at the study's 2,000 updates and at the longer horizon, their dev
probe curves and paired differences. Neither reads a test set.

``python benchmarks/bench_seeds.py [--sweep SWEEP_ID | --runs RUN_ID ...] [--beta | --horizon]
[--dry]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import report  # noqa: E402

from engine.config import load_experiment, toml_data  # noqa: E402
from engine.evaluate import (UtteranceResult, corpus_wer, paired_bootstrap,  # noqa: E402
                             score_utterance)
from engine.runner.graph import expand_grid, parse_grid, stage_hashes  # noqa: E402
from engine.stages import lab_home  # noqa: E402
from engine.store import read  # noqa: E402

SPLITS = ("test-clean", "test-other")
# a run's stages and where each was computed: a stage reused from another run has its rows there
SOURCES = """SELECT name, position, coalesce(split_part(reused_from, '/', 1), run_id) AS src_run,
                    coalesce(split_part(reused_from, '/', 2), name) AS src_stage
             FROM stages WHERE run_id = ?"""


def pick_runs(db: Path, sweep: str | None, runs: list[str] | None) -> list[dict]:
    """The runs to read, each {run_id, seed}, by seed: ``runs``, else the sweep's, else the
    newest sweep of the experiment named "seeds"."""
    if runs:
        got = read(db, f"SELECT run_id, seed FROM runs WHERE run_id IN "
                       f"({', '.join('?' * len(runs))}) ORDER BY seed", runs)
        missing = set(runs) - {r["run_id"] for r in got}
        if missing:
            sys.exit(f"no run {sorted(missing)[0]} in {db}")
        return got
    if sweep is None:
        newest = read(db, """SELECT sweep_id FROM runs WHERE name = 'seeds' AND sweep_id IS NOT NULL
                             ORDER BY created DESC LIMIT 1""")
        if not newest:
            sys.exit(f"no sweep of experiments/seeds.toml in {db}: run `asrlab sweep "
                     f"experiments/seeds.toml --grid seed=0,1 --reuse` first")
        sweep = newest[0]["sweep_id"]
    got = read(db, "SELECT run_id, seed FROM runs WHERE sweep_id = ? ORDER BY seed", [sweep])
    if not got:
        sys.exit(f"no run in sweep {sweep}")
    return got


class Run:
    """One run's final evaluations, by evaluate stage and split, wherever they were computed
    (a reused stage's rows are under the run that computed it)."""

    def __init__(self, db: Path, run_id: str, seed: int) -> None:
        self.db, self.run_id, self.seed = db, run_id, seed
        rows = read(db, f"""
            WITH src AS ({SOURCES} AND kind = 'evaluate' AND state = 'done')
            SELECT src.name AS eval_stage, src.src_run, src.src_stage, e.split, e.wer, e.wer_lo,
                   e.wer_hi, e.bytes, e.params, e.nonzero_params, e.macs_per_second, e.rtf,
                   e.utterances, e.summary
            FROM src JOIN evals e ON e.run_id = src.src_run AND e.stage = src.src_stage""",
                    [run_id])
        self.evals = {(r["eval_stage"], r["split"]): r for r in rows}
        self._utts: dict[tuple, list] = {}

    def has(self, stage: str, split: str) -> bool:
        return (stage, split) in self.evals

    def utterances(self, stage: str, split: str, first_pass: bool = False) -> list:
        key = (stage, split, first_pass)  # an evaluation enters several comparisons
        if key not in self._utts:
            self._utts[key] = self._read_utterances(stage, split, first_pass)
        return self._utts[key]

    def _read_utterances(self, stage: str, split: str, first_pass: bool) -> list:
        r = self.evals[(stage, split)]
        rows = read(self.db, """SELECT cut_id, reference, hypothesis, ref_words, substitutions,
                                       deletions, insertions, nbest FROM hyps
                                WHERE run_id = ? AND stage = ? AND split = ? ORDER BY cut_id""",
                    [r["src_run"], r["src_stage"], split])
        if first_pass:  # the top of the first pass's n-best, before the LAS rescored it
            return [score_utterance(h["cut_id"], h["reference"],
                                    json.loads(h["nbest"])["list"][0]["text"])
                    for h in rows if h["nbest"]]
        return [UtteranceResult(**{k: h[k] for k in h if k != "nbest"}) for h in rows]


def compare(runs: list[Run], a: str, b: str, split: str, a_first: bool = False,
            b_first: bool = False) -> dict | None:
    """b - a on every seed that has both: per-seed deltas with intervals, the mean, the spread
    and the verdict."""
    per, seen, sources = [], set(), {"a": set(), "b": set()}
    for r in runs:
        if not (r.has(a, split) and r.has(b, split)):
            continue
        src_a = (r.evals[(a, split)]["src_run"], r.evals[(a, split)]["src_stage"])
        src_b = (r.evals[(b, split)]["src_run"], r.evals[(b, split)]["src_stage"])
        if (src_a, src_b) in seen:  # both arms pinned: the same evaluations under every run
            continue
        seen.add((src_a, src_b))
        ua, ub = r.utterances(a, split, a_first), r.utterances(b, split, b_first)
        common = {u.cut_id for u in ua} & {u.cut_id for u in ub}
        ua = [u for u in ua if u.cut_id in common]
        ub = [u for u in ub if u.cut_id in common]
        if not common:
            continue
        sources["a"].add(src_a)
        sources["b"].add(src_b)
        d = paired_bootstrap(ua, ub)
        per.append({"seed": r.seed, "delta": d["delta"], "ci": d["ci"],
                    "a": corpus_wer(ua), "b": corpus_wer(ub)})
    if not per:
        return None
    # an arm pinned to one seed (the teacher, full KD) adds no training noise of its own
    shared = [arm for arm in ("a", "b") if len(per) > 1 and len(sources[arm]) == 1]
    mean = statistics.mean(p["delta"] for p in per)
    spread = max(p["delta"] for p in per) - min(p["delta"] for p in per) if len(per) > 1 else None
    below = all(p["ci"][1] < 0 for p in per)
    above = all(p["ci"][0] > 0 for p in per)
    if not (below or above):
        verdict = "no significant difference"
    elif spread is None:
        verdict = f"{'better' if below else 'worse'} on one seed (seed spread unmeasured)"
    elif abs(mean) > spread:
        verdict = "better" if below else "worse"
    else:
        verdict = "within the seed spread"
    return {"per": per, "mean": mean, "spread": spread, "verdict": verdict, "shared": shared,
            "a": statistics.mean(p["a"] for p in per), "b": statistics.mean(p["b"] for p in per)}


# [stages.kd]'s defaults, for a run that leaves a key out, and experiments/seeds.toml's
# s3-direct (what each setting is compared with; before the schedule sweep, the constant one)
KD_DEFAULTS = {"weight": 1.0, "temperature": 1.0, "schedule": "constant", "final_weight": 0.0}
STUDY_KD = {**KD_DEFAULTS, "schedule": "cosine"}
LEVERS = {"weight": "KD weight", "temperature": "KD temperature", "schedule": "KD schedule",
          "final_weight": "final KD weight"}


def kd_key(kd: dict) -> tuple:
    """A run's s3-direct KD setting as a tuple in STUDY_KD's order (its defaults filled in)."""
    return tuple(type(v)(kd[k]) if kd.get(k) is not None else v for k, v in KD_DEFAULTS.items())


def kd_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def newest_sweep(db: Path, experiment: str, command: str) -> str:
    newest = read(db, """SELECT sweep_id FROM runs WHERE name = ? AND sweep_id IS NOT NULL
                         ORDER BY created DESC LIMIT 1""", [experiment])
    if not newest:
        sys.exit(f"no sweep of the experiment {experiment!r} in {db}: run `{command}` first")
    return newest[0]["sweep_id"]


def stage_config(run_config: str, name: str, run_id: str) -> dict:
    st = next((st for st in json.loads(run_config)["stages"] if st["name"] == name), None)
    if st is None:
        sys.exit(f"run {run_id} has no stage {name!r}: is its sweep one of the experiment this "
                 f"mode reads?")
    return st


def lever_rows(db: Path, sweep: str | None) -> tuple[str, list[tuple[str, str]]]:
    """Dev WER of s3-direct per KD setting (a sweep of experiments/seeds_beta.toml over its
    weight, temperature or schedule), each against the study's setting on the same dev utterances, what
    KD gains over the same seed's s3 from scratch at each, and the setting dev picks. Returns
    the lever's name and the rows."""
    sweep = sweep or newest_sweep(db, "seeds-beta", "asrlab sweep experiments/seeds_beta.toml "
                                                    "--grid stages.s3-direct.kd.weight=1,2.5,5,10 "
                                                    "--reuse")
    by_kd: dict[tuple, Run] = {}
    got = read(db, "SELECT run_id, seed, config FROM runs WHERE sweep_id = ?", [sweep])
    if not got:
        sys.exit(f"no run in sweep {sweep}")
    if len({r["seed"] for r in got}) > 1:
        sys.exit(f"sweep {sweep} has several seeds: the dev choice reads one seed's runs")
    for r in got:
        kd = stage_config(r["config"], "s3-direct", r["run_id"]).get("kd", {})
        by_kd[kd_key(kd)] = Run(db, r["run_id"], r["seed"])
    varied = [i for i, k in enumerate(KD_DEFAULTS) if len({key[i] for key in by_kd}) > 1] or [0]
    names = [list(KD_DEFAULTS)[i] for i in varied]
    lever = " and ".join(LEVERS[n] for n in names)

    def label(key: tuple) -> str:
        return ", ".join(f"{LEVERS[list(KD_DEFAULTS)[i]]} {kd_value(key[i])}" for i in varied)

    done = {k: r for k, r in by_kd.items() if r.has("eval-s3-direct-dev", "dev")}
    rows = [("sweep", f"{sweep}: {'; '.join(label(k) for k in sorted(by_kd))}; evaluated on "
                      f"dev: {'; '.join(label(k) for k in sorted(done)) or 'none yet'}")]
    # compared with the study's setting, or where the sweep lacks it the constant default (the
    # study's setting before the schedule sweep)
    study = tuple(STUDY_KD.values())
    if study not in done:
        study = tuple(KD_DEFAULTS.values())
    base = done.get(study)
    for key, r in sorted(done.items()):
        e = r.evals[("eval-s3-direct-dev", "dev")]
        line = f"WER {e['wer']:.1f}% [{e['wer_lo']:.1f}, {e['wer_hi']:.1f}] on {e['utterances']} utterances"
        if base is not None and key != study:
            ua, ub = (x.utterances("eval-s3-direct-dev", "dev") for x in (base, r))
            d = paired_bootstrap(ua, ub)
            line += (f"; against the study's {label(study)}: {d['delta']:+.1f} "
                     f"[{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]")
        rows.append((f"dev: s3-direct, {label(key)}", line))
    # the study's s3 from scratch (same seed, same updates, found by identity) on the same dev
    # utterances: what KD gains at each setting
    first = got[0]
    steps = int(stage_config(first["config"], "s3-direct", first["run_id"])["train"]["max_steps"])
    found = scratch_at(db, first["seed"], steps)
    if found is not None:
        scratch, scratch_eval = found
        us = scratch.utterances(scratch_eval, "dev")
        for key, r in sorted(done.items()):
            d = paired_bootstrap(us, r.utterances("eval-s3-direct-dev", "dev"))
            rows.append((f"dev: s3-direct at {label(key)} - s3-scratch, {steps:,} updates "
                         f"({scratch.run_id})",
                         f"{corpus_wer(us):.1f}% -> {d['delta'] + corpus_wer(us):.1f}%: "
                         f"{d['delta']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"))
    if done:
        best = min(done, key=lambda k: done[k].evals[("eval-s3-direct-dev", "dev")]["wer"])
        rows.append(("dev picks", f"{label(best)} (lowest dev WER of {len(done)}; the study "
                                  f"uses {label(study)})"))
    return lever, rows


def probes(db: Path, run_id: str, stage: str) -> list[dict]:
    """A training stage's dev probes (step, WER), wherever it was computed."""
    return read(db, f"""
        WITH src AS ({SOURCES} AND name = ?)
        SELECT e.step, e.wer FROM src JOIN evals e ON e.run_id = src.src_run
            AND e.stage = src.src_stage
        WHERE e.split = 'dev' AND e.step IS NOT NULL ORDER BY e.step""", [run_id, stage])


def evaluated_by_identity(db: Path, arm: str, stage_hash: str) -> tuple[Run, str] | None:
    """A run holding the training stage ``arm`` with identity ``stage_hash`` (done) and an
    evaluation of it on dev, newest first: (the run, its evaluate stage), whichever run computed
    or reused it -- never found by run name, so it is the same model whatever ran since."""
    hit = read(db, """SELECT s.run_id, r.seed FROM stages s JOIN runs r USING (run_id)
                      WHERE s.name = ? AND s.stage_hash = ? AND s.state = 'done'
                      ORDER BY r.created DESC""", [arm, stage_hash])
    for h in hit:
        run = Run(db, h["run_id"], h["seed"])
        ev = next((e for e in (f"eval-{arm}", f"eval-{arm}-dev") if run.has(e, "dev")), None)
        if ev:
            return run, ev
    return None


def scratch_at(db: Path, seed: int, steps: int) -> tuple[Run, str] | None:
    """s3 from scratch of the study's recipe at ``steps`` updates and ``seed``, evaluated on dev
    (experiments/seeds_horizon.toml's s3-scratch, which is seeds.toml's at its horizon)."""
    path = ROOT / "experiments" / "seeds_horizon.toml"
    exp = expand_grid(toml_data(path.read_text(), str(path)),
                      parse_grid([f"stages.s3-scratch.train.max_steps={steps}", f"seed={seed}"]),
                      str(path))[0][1]
    return evaluated_by_identity(db, "s3-scratch", stage_hashes(exp)["s3-scratch"])


def horizon_rows(db: Path, sweep: str | None) -> list[tuple[str, str]]:
    """The students' horizon on dev: s3 distilled directly and s3 from scratch at the study's
    2,000 updates (the seeds sweep's run of the same seed) and at each horizon of
    experiments/seeds_horizon.toml's sweep: their dev probe curves, the final dev WER on the
    whole dev set, longer - shorter per arm and KD - scratch per horizon (paired bootstrap)."""
    sweep = sweep or newest_sweep(db, "seeds-horizon", "asrlab sweep experiments/seeds_horizon.toml "
                                                       "--grid stages.s3-direct.train.max_steps=6000 "
                                                       "--grid stages.s3-scratch.train.max_steps=6000 "
                                                       "--reuse")
    arms = {"s3-direct": "eval-s3-direct-dev", "s3-scratch": "eval-s3-scratch-dev"}
    # (arm, updates) -> (run, its evaluate stage)
    at: dict[tuple[str, int], tuple[Run, str]] = {}
    got = read(db, "SELECT run_id, seed, config FROM runs WHERE sweep_id = ?", [sweep])
    if not got:
        sys.exit(f"no run in sweep {sweep}")
    if len({r["seed"] for r in got}) > 1:
        sys.exit(f"sweep {sweep} has several seeds: the horizon reads one seed's runs")
    seed = got[0]["seed"]
    for r in got:
        run = Run(db, r["run_id"], r["seed"])
        for arm, ev in arms.items():
            steps = stage_config(r["config"], arm, r["run_id"])["train"]["max_steps"]
            at[(arm, int(steps))] = (run, ev)
    # the study's own horizon: the stages experiments/seeds_horizon.toml has at the study's
    # updates, found by identity (whichever run computed or reused them), never by run name
    exp = load_experiment(ROOT / "experiments" / "seeds_horizon.toml")
    hashes = stage_hashes(exp.model_copy(update={"seed": seed}))
    refs = []
    for arm in arms:
        n = int(next(st for st in exp.stages if st.name == arm).train.max_steps)
        if (arm, n) in at:
            continue
        found = evaluated_by_identity(db, arm, hashes[arm])
        if found:
            at[(arm, n)] = found
            refs.append(found[0].run_id)
    rows = [("sweep", f"{sweep} (seed {seed}); the study's horizon from "
                      f"{', '.join(dict.fromkeys(refs)) or 'no run yet'}")]
    for (arm, n), (run, ev) in sorted(at.items()):
        curve = ", ".join(f"{p['step']}: {p['wer']:.1f}" for p in probes(db, run.run_id, arm))
        rows.append((f"dev WER by update (100-utterance probes): {arm}, {n:,} updates",
                     curve or "no probes yet"))
        if run.has(ev, "dev"):
            e = run.evals[(ev, "dev")]
            rows.append((f"dev: {arm}, {n:,} updates",
                         f"WER {e['wer']:.1f}% [{e['wer_lo']:.1f}, {e['wer_hi']:.1f}] on "
                         f"{e['utterances']} utterances ({run.run_id})"))

    def delta(a: tuple[Run, str], b: tuple[Run, str]) -> str | None:
        if not (a[0].has(a[1], "dev") and b[0].has(b[1], "dev")):
            return None
        ua, ub = a[0].utterances(a[1], "dev"), b[0].utterances(b[1], "dev")
        d = paired_bootstrap(ua, ub)
        return (f"{corpus_wer(ua):.1f}% -> {corpus_wer(ub):.1f}%: {d['delta']:+.1f} "
                f"[{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]")

    for arm in arms:
        ns = sorted(n for a, n in at if a == arm)
        for short, long in zip(ns, ns[1:]):
            d = delta(at[(arm, short)], at[(arm, long)])
            if d:
                rows.append((f"dev: {arm}, {long:,} - {short:,} updates", d))
    for n in sorted({n for _, n in at}):
        if ("s3-direct", n) in at and ("s3-scratch", n) in at:
            d = delta(at[("s3-scratch", n)], at[("s3-direct", n)])
            if d:
                rows.append((f"dev: KD - scratch at {n:,} updates", d))
    return rows


def fmt(c: dict | None) -> str:
    if c is None:
        return "not measured yet (the stages have not finished)"
    seeds = "; ".join(f"seed {p['seed']}: {p['delta']:+.1f} [{p['ci'][0]:+.1f}, {p['ci'][1]:+.1f}]"
                      for p in c["per"])
    spread = (f", seed spread {c['spread']:.1f}" if c["spread"] is not None else "")
    if c["shared"]:
        spread += " (one arm on one seed: the spread is the other arm's)"
    rel = f", {c['mean'] / c['a']:+.1%} relative" if c["a"] else ""
    return (f"{c['a']:.1f}% -> {c['b']:.1f}%: {c['mean']:+.1f} points{rel} ({seeds}{spread}): "
            f"**{c['verdict']}**")


def size(runs: list[Run], model: str, base: str, split: str = "test-clean") -> str:
    r = next((r for r in runs if r.has(model, split) and r.has(base, split)), None)
    if r is None:
        return "not measured yet"
    m, t = r.evals[(model, split)], r.evals[(base, split)]
    return (f"{m['bytes']:,} against {t['bytes']:,} bytes ({1 - m['bytes'] / t['bytes']:.0%} "
            f"fewer, {t['bytes'] / m['bytes']:.1f}x), {m['macs_per_second'] / 1e6:.1f} against "
            f"{t['macs_per_second'] / 1e6:.1f} M MACs/s "
            f"({1 - m['macs_per_second'] / t['macs_per_second']:.0%} fewer), RTF {m['rtf']:.4f} "
            f"against {t['rtf']:.4f} at one thread")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep")
    ap.add_argument("--runs", nargs="+")
    ap.add_argument("--dry", action="store_true", help="print only; leave BENCHMARKS.md alone")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--beta", action="store_true",
                      help="the KD weight, temperature or schedule on dev (a sweep of "
                           "experiments/seeds_beta.toml) instead")
    mode.add_argument("--horizon", action="store_true",
                      help="the students' horizon on dev (a sweep of "
                           "experiments/seeds_horizon.toml) instead")
    a = ap.parse_args()
    db = lab_home() / "lab.duckdb"
    if a.beta or a.horizon:
        if a.beta:
            lever, rows = lever_rows(db, a.sweep)
            title = f"The seeds study's {lever}, chosen on dev (experiments/seeds_beta.toml)"
        else:
            rows = horizon_rows(db, a.sweep)
            title = "The seeds study's horizon on dev (experiments/seeds_horizon.toml)"
        for k, v in rows:
            print(f"{k}: {v}")
        if not a.dry:
            report(title, f"`benchmarks/bench_seeds.py {'--beta' if a.beta else '--horizon'}`",
                   rows)
        return
    picked = pick_runs(db, a.sweep, a.runs)
    runs = [Run(db, r["run_id"], r["seed"]) for r in picked]
    rows = [("runs", ", ".join(f"{r.run_id} (seed {r.seed})" for r in runs))]
    for split in SPLITS:
        for r in runs[:1]:
            for (stage, sp), e in sorted(r.evals.items()):
                if sp == split:
                    rows.append((f"{split}: {stage} (seed {r.seed})",
                                 f"WER {e['wer']:.1f}% [{e['wer_lo']:.1f}, {e['wer_hi']:.1f}], "
                                 f"{e['params']:,} params, {e['bytes']:,} bytes, "
                                 f"{(e['macs_per_second'] or 0) / 1e6:.1f} M MACs/s, "
                                 f"{e['utterances']} utterances"))
    # the horizon: each student's dev probes (every 500 updates) on every seed
    shown: set = set()
    for r in runs:
        probes = read(db, f"""
            WITH src AS ({SOURCES} AND kind NOT IN ('evaluate', 'export'))
            SELECT src.name AS stage, src.src_run, e.step, e.wer FROM src JOIN evals e
                ON e.run_id = src.src_run AND e.stage = src.src_stage
            WHERE e.split = 'dev' ORDER BY src.position, e.step""", [r.run_id])
        curves: dict[str, list[str]] = {}
        for p in probes:
            if (p["src_run"], p["stage"]) in shown:  # a pinned stage: once, not per seed
                continue
            curves.setdefault(p["stage"], []).append(f"{p['step']}: {p['wer']:.1f}")
        shown |= {(p["src_run"], p["stage"]) for p in probes}
        for stage, points in curves.items():
            rows.append((f"dev WER by update: {stage} (seed {r.seed})", ", ".join(points)))
    claims = [
        ("1. progressive: s3 by the chain - s3 distilled directly", "eval-s3-direct", "eval-s3"),
        ("1. progressive: s3 by the chain - s3 from scratch", "eval-s3-scratch", "eval-s3"),
        ("1. progressive: s3 distilled directly - s3 from scratch", "eval-s3-scratch",
         "eval-s3-direct"),
        ("1. progressive: s3 by the chain - the teacher", "eval", "eval-s3"),
        ("1. progressive: s3 distilled directly - the teacher", "eval", "eval-s3-direct"),
        ("1. progressive: s3 from scratch - the teacher", "eval", "eval-s3-scratch"),
        ("1. progressive: s2 by the chain - the teacher", "eval", "eval-s2"),
        ("3. sparse 60%: 3-way KD - no KD", "eval-sparse-60", "eval-sparse-60-kd"),
        ("3. sparse 90%: 3-way KD - no KD", "eval-sparse-90", "eval-sparse-90-kd"),
        ("3. sparse 60%: full KD - 3-way KD", "eval-sparse-60-kd", "eval-sparse-60-fullkd"),
        ("3. sparse 90%: full KD - 3-way KD", "eval-sparse-90-kd", "eval-sparse-90-fullkd"),
        ("4. L0 50%: layerwise KD - none", "eval-l0-50", "eval-l0-50-kd"),
        ("4. L0 50% with layerwise KD - the teacher", "eval", "eval-l0-50-kd"),
    ]
    for split in SPLITS:
        for name, base, other in claims:
            rows.append((f"{split}: {name}", fmt(compare(runs, base, other, split))))
        rows.append((f"{split}: 2. two-pass: teacher-las second pass - its first pass",
                     fmt(compare(runs, "eval-teacher-las", "eval-teacher-las", split,
                                 a_first=True))))
        rows.append((f"{split}: 2. two-pass: s3-las (stage 2, frozen encoder) second pass - its "
                     f"first pass",
                     fmt(compare(runs, "eval-s3-las", "eval-s3-las", split, a_first=True))))
        rows.append((f"{split}: 2. two-pass: s3-las first pass (beam search) - s3-direct, the "
                     f"same encoder (greedy)",
                     fmt(compare(runs, "eval-s3-direct", "eval-s3-las", split, b_first=True))))
        rows.append((f"{split}: 2. two-pass: s3-las second pass - the teacher's second pass",
                     fmt(compare(runs, "eval-teacher-las", "eval-s3-las", split))))
        rows.append((f"{split}: 2. two-pass: s3-deep (stage 3, deep finetuning) - s3-las",
                     fmt(compare(runs, "eval-s3-las", "eval-s3-deep", split))))
        rows.append((f"{split}: 2. two-pass: s3-deep second pass - its first pass",
                     fmt(compare(runs, "eval-s3-deep", "eval-s3-deep", split, a_first=True))))
        rows.append((f"{split}: 2. two-pass: s3-deep second pass - the teacher's second pass",
                     fmt(compare(runs, "eval-teacher-las", "eval-s3-deep", split))))
    rows.append(("sizes: s3 against the teacher", size(runs, "eval-s3", "eval")))
    rows.append(("sizes: s2 against the teacher", size(runs, "eval-s2", "eval")))
    rows.append(("sizes: s3-deep (two-pass) against teacher-las (two-pass)",
                 size(runs, "eval-s3-deep", "eval-teacher-las")))
    rows.append(("sizes: L0 50% with KD against the teacher", size(runs, "eval-l0-50-kd", "eval")))
    rows.append(("5. the teacher in int8 against fp32 (sherpa-onnx files)",
                 size(runs, "eval-teacher-sherpa-int8", "eval-teacher-sherpa")))
    rows.append(("test-clean: 5. the teacher in int8 - fp32 (sherpa-onnx)",
                 fmt(compare(runs, "eval-teacher-sherpa", "eval-teacher-sherpa-int8",
                             "test-clean"))))
    rows.append(("5. sharing + L0 + int8: deployed sherpa-onnx files against the teacher's fp32",
                 size(runs, "eval-share3-l0-sherpa-int8", "eval-teacher-sherpa")))
    rows.append(("test-clean: 5. sharing + L0 + int8 (sherpa-onnx) - the teacher (sherpa-onnx fp32)",
                 fmt(compare(runs, "eval-teacher-sherpa", "eval-share3-l0-sherpa-int8",
                             "test-clean"))))
    for k, v in rows:
        print(f"{k}: {v}")
    if not a.dry:
        report("The five papers on one teacher (experiments/seeds.toml)",
               "`benchmarks/bench_seeds.py`", rows)


if __name__ == "__main__":
    main()
