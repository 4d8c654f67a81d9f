"""Every query the explorer makes, and nothing else.

Each function opens the store read-only for one query (``engine.store.read``: short-lived, retried
while the supervisor is flushing) and returns a DataFrame or plain data. Nothing here is cached
across reruns: a cached DuckDB connection would lock the supervisor out (measured: DuckDB has no busy timeout).

A **model** in the explorer is one set of weights evaluated by one stage at one training step:
``run_id/stage/step`` (``model_key``). The evaluations of the weights a train stage produces, its
periodic dev evaluations and the evaluate stages that read its final file, are grouped by
``model_stage`` (the stage whose weights were evaluated) so the Pareto page can choose which of
them counts: the final one, the best on dev, or the one at step N.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from engine.evaluate import UtteranceResult, paired_bootstrap
from engine.runner import client
from engine.runner.supervisor import lab_paths
from engine.store import read

CHOICES = {"final": "final (last step)", "best-dev": "best on dev", "step": "at step N"}
AXES = {"bytes": "size (bytes of the artifact)", "params": "parameters",
        "macs_per_second": "MACs per second of audio"}


def db_path(home: Path) -> Path:
    return lab_paths(home)["db"]


def model_key(run_id: str, stage: str, step: int) -> str:
    return f"{run_id}/{stage}/{int(step)}"


def parse_model_key(key: str) -> tuple[str, str, int]:
    try:
        run_id, stage, step = key.rsplit("/", 2)
        return run_id, stage, int(step)
    except ValueError:
        raise ValueError(f"not a model id: {key!r} (expected run/stage/step)") from None


def model_label(run_id: str, run_name: str, model_stage: str, step) -> str:
    """Short and unique: runs of one experiment share a name, so the run id's tail is kept."""
    return f"{run_name}#{run_id.rsplit('-', 1)[-1]} · {model_stage} @ {int(step)}"


def corpus_of(config: str | dict | None, home: Path | None = None) -> str:
    """Which corpus a run's evaluations scored: its ``data.corpus``, a built-in tier's folder
    under the lab named as the tier (``builtin:demo`` and ``LAB/corpora/demo`` are one corpus).
    Every built-in tier names its cuts ``{split}-{i:06d}``: results pair only within one corpus."""
    try:
        cfg = json.loads(config) if isinstance(config, str) else (config or {})
    except ValueError:
        cfg = {}
    corpus = str((cfg.get("data") or {}).get("corpus") or "builtin:tiny")
    if home is not None and not corpus.startswith("builtin:"):
        p = Path(corpus)
        tiers = Path(home).resolve() / "corpora"
        if p.parent.resolve() == tiers and p.name in ("tiny", "demo", "full"):
            return f"builtin:{p.name}"
    return corpus


def run_corpora(home: Path) -> dict[str, str]:
    """run id -> the corpus its evaluations scored."""
    return {r["run_id"]: corpus_of(r["config"], home)
            for r in read(db_path(home), "SELECT run_id, config FROM runs")}


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)


# ----- runs ---------------------------------------------------------------------------------------
def runs(home: Path) -> list[dict]:
    """Every run with its stages (state, progress, last metrics), newest first."""
    return list(reversed(client.status(home)))


def stage_table(runs: list[dict]) -> pd.DataFrame:
    """One row per stage of ``runs`` with its state, progress and last training metrics."""
    rows = []
    for r in runs:
        for s in r["stages"]:
            m = s.get("last_metrics") or {}
            rows.append({"run": r["run_id"], "run state": r["state"], "stage": s["name"],
                         "kind": s["kind"], "state": s["state"], "progress": s["progress"],
                         "step": m.get("step"), "loss": m.get("loss"),
                         "minutes": m.get("train_minutes"), "attempt": s["attempt"],
                         "executor": s.get("executor") or "local",
                         "error": s.get("error") or ""})
    return pd.DataFrame(rows)


def run_tags(home: Path) -> dict[str, list[str]]:
    rows = read(db_path(home), "SELECT run_id, config FROM runs")
    out = {}
    for r in rows:
        try:
            out[r["run_id"]] = list(json.loads(r["config"] or "{}").get("tags") or [])
        except ValueError:
            out[r["run_id"]] = []
    return out


def run_stages(home: Path, run_ids: list[str]) -> set[tuple[str, str]]:
    """(run, stage) of every stage of these runs where it was computed: a stage a run reused
    (``--reuse``, or a twin in its sweep) is the other run's, so filtering models by run keeps
    the models the run took from others."""
    if not run_ids:
        return set()
    rows = read(db_path(home), f"""
        SELECT coalesce(split_part(reused_from, '/', 1), run_id) AS src_run,
               coalesce(split_part(reused_from, '/', 2), name) AS src_stage
        FROM stages WHERE run_id IN ({', '.join('?' * len(run_ids))})""", list(run_ids))
    return {(r["src_run"], r["src_stage"]) for r in rows}


def runs_reusing(home: Path, run_ids: list[str]) -> list[str]:
    """Runs, oldest first, that reused a stage of ``run_ids`` and are not among them."""
    if not run_ids:
        return []
    rows = read(db_path(home), f"""
        SELECT s.run_id FROM stages s JOIN runs r USING (run_id)
        WHERE split_part(s.reused_from, '/', 1) IN ({', '.join('?' * len(run_ids))})
        GROUP BY s.run_id ORDER BY min(r.created)""", list(run_ids))
    return [r["run_id"] for r in rows if r["run_id"] not in run_ids]


def training_curve(home: Path, run_id: str, stage: str) -> pd.DataFrame:
    """One row per logged step of a train stage; columns from its metrics."""
    rows = read(db_path(home), "SELECT step, ts, data FROM metrics WHERE run_id = ? AND stage = ? "
                               "ORDER BY step", [run_id, stage])
    return pd.DataFrame([{"step": r["step"], **json.loads(r["data"])} for r in rows])


def zeroed_losses(curve: pd.DataFrame) -> dict | None:
    """How many training utterances of a stage got a zeroed loss (no gradient), from its logged
    windows; None when none did (or the stage logs no count)."""
    if "zeroed_losses" not in curve or not curve["zeroed_losses"].fillna(0).sum():
        return None
    z, n = curve["zeroed_losses"].fillna(0), curve["utterances"].fillna(0)
    return {"zeroed": int(z.sum()), "utterances": int(n.sum()),
            "share": float(z.sum() / max(n.sum(), 1)),
            "worst_step": int(curve.loc[(z / n.clip(lower=1)).idxmax(), "step"])}


def stage_evals(home: Path, run_id: str, stage: str) -> pd.DataFrame:
    """The WER of every evaluation of the weights ``stage`` produced, by step and split."""
    rows = read(db_path(home), """
        SELECT step, split, wer, wer_lo, wer_hi, utterances, stage AS evaluated_by
        FROM evals WHERE run_id = ? AND coalesce(model_stage, stage) = ?
        ORDER BY step, split""", [run_id, stage])
    return _frame(rows, ["step", "split", "wer", "wer_lo", "wer_hi", "utterances", "evaluated_by"])


def stage_log(home: Path, run_id: str, stage: str, lines: int = 30) -> list[str]:
    rows = read(db_path(home), "SELECT line FROM logs WHERE run_id = ? AND stage = ? "
                               "ORDER BY ts DESC, offset_ DESC LIMIT ?", [run_id, stage, lines])
    return [r["line"] for r in reversed(rows)]


# ----- models and the Pareto front ---------------------------------------------------------------
def splits(home: Path) -> list[str]:
    rows = read(db_path(home), "SELECT DISTINCT split FROM evals ORDER BY split")
    return [r["split"] for r in rows]


MODEL_COLUMNS = ["model", "run_id", "run_name", "stage", "model_stage", "method", "runtime", "step",
                 "split", "corpus",
                 "wer", "wer_lo", "wer_hi", "utterances", "params", "nonzero_params", "bytes",
                 "macs_per_second", "rtf", "decoding", "tags", "superseded"]


def models(home: Path, split: str, choice: str = "final", step: int | None = None,
           dev_split: str = "dev", runs: list[str] | None = None) -> pd.DataFrame:
    """One row per evaluated model on ``split``: which evaluation of each model's weights counts
    is ``choice``: ``final`` (its last evaluated step), ``best-dev`` (the step with the lowest
    WER on ``dev_split`` among the steps also evaluated on ``split``) or ``step`` (the last
    evaluated step at or before ``step``). Where several stages evaluated the same weights at
    the same step, the evaluation on most utterances counts."""
    if choice not in CHOICES:
        raise ValueError(f"unknown evaluation choice {choice!r}; allowed: {', '.join(CHOICES)}")
    if choice == "step" and step is None:
        raise ValueError("choose the step N for 'at step N'")
    run_filter, params = "", [split]
    if runs:
        run_filter = f"AND run_id IN ({', '.join('?' * len(runs))})"
        params += list(runs)
    # each runtime of a model's weights (PyTorch, sherpa-onnx fp32 / int8, ...) is its own point
    if choice == "final":
        pick = "SELECT run_id, ms, rt, max(step) AS step FROM e WHERE split = ? GROUP BY ALL"
        pick_params = [split]
    elif choice == "step":
        pick = ("SELECT run_id, ms, rt, max(step) AS step FROM e WHERE split = ? AND step <= ? "
                "GROUP BY ALL")
        pick_params = [split, int(step)]
    else:
        pick = """SELECT d.run_id, d.ms, d.rt, arg_min(d.step, d.wer) AS step FROM e d
                  JOIN e t ON t.run_id = d.run_id AND t.ms = d.ms AND t.rt = d.rt
                       AND t.step = d.step
                  WHERE d.split = ? AND t.split = ? GROUP BY ALL"""
        pick_params = [dev_split, split]
    rows = read(db_path(home), f"""
        WITH e AS (
            SELECT *, coalesce(model_stage, stage) AS ms, coalesce(runtime, 'torch') AS rt
            FROM evals WHERE split IN (?, ?) {run_filter}
            QUALIFY row_number() OVER (PARTITION BY run_id, ms, rt, split, step
                                       ORDER BY utterances DESC, ts DESC) = 1),
        chosen AS ({pick})
        SELECT e.run_id, r.name AS run_name, e.stage, e.ms AS model_stage,
               CASE WHEN e.rt = 'torch' THEN coalesce(s.kind, 'evaluate')
                    ELSE coalesce(s.kind, 'evaluate') || ' · ' || e.rt END AS method,
               e.rt AS runtime, e.step, e.split, e.wer, e.wer_lo,
               e.wer_hi, e.utterances, e.params, e.nonzero_params, e.bytes, e.macs_per_second,
               e.rtf, e.decoding, r.config
        FROM e JOIN chosen c USING (run_id, ms, rt, step)
        JOIN runs r USING (run_id)
        LEFT JOIN stages s ON s.run_id = e.run_id AND s.name = e.ms
        WHERE e.split = ?
        ORDER BY r.created, e.ms""", [split, dev_split] + params[1:] + pick_params + [split])
    old = superseded(home)
    for r in rows:
        r["model"] = model_key(r["run_id"], r["stage"], r["step"])
        r["superseded"] = (r["run_id"], r["stage"]) in old or (r["run_id"], r["model_stage"]) in old
        config = r.pop("config")
        r["corpus"] = corpus_of(config, home)
        try:
            r["tags"] = ", ".join(json.loads(config or "{}").get("tags") or [])
        except ValueError:
            r["tags"] = ""
    return _frame(rows, MODEL_COLUMNS)


def superseded(home: Path) -> set[tuple[str, str]]:
    """(run_id, stage) of every stage the current code would not compute as it was computed (an
    older recipe, beam search or export format: ``engine.runner.graph.superseded_stages``);
    their evaluations stay in the store but are no longer what the lab's code measures."""
    return client.superseded(home)


def corpora(models: pd.DataFrame) -> list[str]:
    """The corpora these models were scored on, the most common first (ties by name)."""
    counts = models["corpus"].value_counts()
    return [str(c) for c in sorted(counts.index, key=lambda c: (-counts[c], c))]


def main_corpus(models: pd.DataFrame) -> str | None:
    """The corpus most of these models were scored on (the Pareto page's default)."""
    return next(iter(corpora(models)), None)


def model_details(home: Path, key: str) -> dict:
    """Everything known about one model: its evaluations on every split (at its step), the run's
    config, the artifacts of its run."""
    run_id, stage, step = parse_model_key(key)
    db = db_path(home)
    evals = read(db, """SELECT split, wer, wer_lo, wer_hi, utterances, params, nonzero_params,
                               bytes, macs_per_second, rtf, decoding, model, summary,
                               coalesce(model_stage, stage) AS model_stage
                        FROM evals WHERE run_id = ? AND stage = ? AND step = ? ORDER BY split""",
                 [run_id, stage, step])
    run = read(db, "SELECT name, config, git_rev, host, created FROM runs WHERE run_id = ?",
               [run_id])
    artifacts = read(db, "SELECT stage, kind, path, bytes FROM artifacts WHERE run_id = ? "
                         "ORDER BY stage, kind", [run_id])
    return {"model": key, "run_id": run_id, "stage": stage, "step": step,
            "run": run[0] if run else None, "evals": evals, "artifacts": artifacts}


# ----- per-utterance results ---------------------------------------------------------------------
HYP_COLUMNS = ["cut_id", "reference", "hypothesis", "ref_words", "substitutions", "deletions",
               "insertions", "errors", "audio", "start", "duration"]


def hyps(home: Path, key: str, split: str) -> pd.DataFrame:
    run_id, stage, step = parse_model_key(key)
    rows = read(db_path(home), """
        SELECT cut_id, reference, hypothesis, ref_words, substitutions, deletions, insertions,
               substitutions + deletions + insertions AS errors, audio, start, duration
        FROM hyps WHERE run_id = ? AND stage = ? AND split = ? AND step = ?
        ORDER BY cut_id""", [run_id, stage, split, step])
    return _frame(rows, HYP_COLUMNS)


def compare(home: Path, a: str, b: str, split: str) -> dict:
    """Model ``b`` against model ``a`` on the utterances both decoded: the WER difference
    (b - a) with its paired-bootstrap interval, and one row per utterance with both hypotheses
    and the change in errors."""
    ra, sa, pa = parse_model_key(a)
    rb, sb, pb = parse_model_key(b)
    corpora = run_corpora(home)
    ca, cb = corpora.get(ra), corpora.get(rb)
    if ca != cb:  # the same cut ids name different utterances: nothing pairs
        return {"utterances": 0, "rows": pd.DataFrame(), "corpora": (ca, cb)}
    rows = read(db_path(home), """
        SELECT x.cut_id, x.reference, x.hypothesis AS hyp_a, y.hypothesis AS hyp_b,
               x.ref_words, x.substitutions AS sub_a, x.deletions AS del_a, x.insertions AS ins_a,
               y.substitutions AS sub_b, y.deletions AS del_b, y.insertions AS ins_b,
               x.audio, x.start, x.duration
        FROM hyps x JOIN hyps y USING (cut_id, split)
        WHERE x.run_id = ? AND x.stage = ? AND x.step = ? AND y.run_id = ? AND y.stage = ?
              AND y.step = ? AND split = ?""", [ra, sa, pa, rb, sb, pb, split])
    if not rows:
        return {"utterances": 0, "rows": pd.DataFrame()}
    df = pd.DataFrame(rows)
    df["errors_a"] = df.sub_a + df.del_a + df.ins_a
    df["errors_b"] = df.sub_b + df.del_b + df.ins_b
    df["delta"] = df.errors_b - df.errors_a
    res = lambda s: [UtteranceResult(r.cut_id, r.reference, "", r.ref_words,  # noqa: E731
                                     getattr(r, f"sub_{s}"), getattr(r, f"del_{s}"),
                                     getattr(r, f"ins_{s}")) for r in df.itertuples()]
    boot = paired_bootstrap(res("a"), res("b"))
    words = max(int(df.ref_words.sum()), 1)
    return {**boot, "wer_a": 100.0 * df.errors_a.sum() / words,
            "wer_b": 100.0 * df.errors_b.sum() / words,
            "rows": df.sort_values("delta", key=lambda d: -d.abs(), kind="stable")}


def utterances(home: Path, keys: list[str], split: str, search: str = "",
               limit: int = 200, sort: str = "errors") -> pd.DataFrame:
    """Utterances of ``split`` decoded by the first model in ``keys``, with every selected
    model's hypothesis; filtered by a case-insensitive text search, worst first (or by id)."""
    if not keys:
        return pd.DataFrame(columns=HYP_COLUMNS)
    db = db_path(home)
    run_id, stage, step = parse_model_key(keys[0])
    order = "errors DESC, cut_id" if sort == "errors" else "cut_id"
    rows = read(db, f"""
        SELECT cut_id, reference, hypothesis, ref_words, substitutions, deletions, insertions,
               substitutions + deletions + insertions AS errors, audio, start, duration
        FROM hyps WHERE run_id = ? AND stage = ? AND split = ? AND step = ?
              AND (? = '' OR reference ILIKE '%' || ? || '%' OR cut_id ILIKE '%' || ? || '%')
        ORDER BY {order} LIMIT ?""", [run_id, stage, split, step, search, search, search, limit])
    return _frame(rows, HYP_COLUMNS)


def hypotheses_of(home: Path, keys: list[str], split: str, cut_id: str) -> list[dict]:
    """Each model's hypothesis of one utterance (models that did not decode it, or decoded
    another corpus whose cut has the same id, are left out)."""
    out = []
    corpora = run_corpora(home)
    first = corpora.get(parse_model_key(keys[0])[0]) if keys else None
    for key in keys:
        run_id, stage, step = parse_model_key(key)
        if corpora.get(run_id) != first:
            continue
        rows = read(db_path(home), """
            SELECT reference, hypothesis, substitutions + deletions + insertions AS errors,
                   ref_words, audio, start, duration, nbest
            FROM hyps WHERE run_id = ? AND stage = ? AND split = ? AND step = ? AND cut_id = ?""",
                    [run_id, stage, split, step, cut_id])
        if rows:
            r = rows[0]
            r["nbest"] = json.loads(r["nbest"]) if r.get("nbest") else None
            out.append({"model": key, **r})
    return out


def nbest_table(nbest: dict) -> pd.DataFrame:
    """A two-pass model's n-best of one utterance: rank, text, both scores, the combined score
    and which one the rescorer chose."""
    lam = nbest.get("lambda", 0.5)
    rows = [{"rank (first pass)": i + 1, "hypothesis": h["text"], "RNN-T log P": h["rnnt"],
             "LAS log P": h["las"], f"{lam} x LAS + {round(1 - lam, 3)} x RNN-T": h["score"],
             "chosen": i == nbest["chosen"]} for i, h in enumerate(nbest["list"])]
    return pd.DataFrame(rows)


def evaluated(home: Path) -> pd.DataFrame:
    """Every (model, split) with per-utterance results, newest run first, labelled for pickers."""
    rows = read(db_path(home), """
        SELECT e.run_id, r.name AS run_name, e.stage, coalesce(e.model_stage, e.stage) AS model_stage,
               e.step, e.split, e.wer, e.utterances
        FROM evals e JOIN runs r USING (run_id)
        ORDER BY r.created DESC, model_stage, e.step DESC, e.stage, e.split""")
    df = _frame(rows, ["run_id", "run_name", "stage", "model_stage", "step", "split", "wer",
                       "utterances"])
    df["model"] = [model_key(r, s, p) for r, s, p in zip(df.run_id, df.stage, df.step)]
    df["label"] = [model_label(r, n, m, p) + (f" (by {s})" if s != m else "")
                   for r, n, m, p, s in zip(df.run_id, df.run_name, df.model_stage, df.step,
                                            df.stage)]
    return df


# ----- masks (pruning stages) ------------------------------------------------------------------
MASK_COLUMNS = ["block", "module", "unit", "size", "kept_fraction", "kept", "prob"]


def mask_stages(home: Path) -> pd.DataFrame:
    """Every stage that logged masks: run, stage, kind, its last step, newest run first."""
    rows = read(db_path(home), """
        SELECT m.run_id, r.name AS run_name, m.stage, coalesce(s.kind, '') AS kind,
               max(m.step) AS last_step, count(DISTINCT m.step) AS steps
        FROM masks m JOIN runs r USING (run_id)
        LEFT JOIN stages s ON s.run_id = m.run_id AND s.name = m.stage
        GROUP BY ALL ORDER BY max(r.created) DESC, m.stage""")
    df = _frame(rows, ["run_id", "run_name", "stage", "kind", "last_step", "steps"])
    df["key"] = df["run_id"] + "/" + df["stage"]
    df["label"] = [f"{n}#{r.rsplit('-', 1)[-1]} · {s} ({k})"
                   for n, r, s, k in zip(df.run_name, df.run_id, df.stage, df.kind)]
    return df


def mask_steps(home: Path, run_id: str, stage: str) -> list[int]:
    rows = read(db_path(home), "SELECT DISTINCT step FROM masks WHERE run_id = ? AND stage = ? "
                               "ORDER BY step", [run_id, stage])
    return [int(r["step"]) for r in rows]


def masks(home: Path, run_id: str, stage: str, step: int) -> pd.DataFrame:
    """The masks of one stage at one logged step; ``kept`` and ``prob`` as lists (or None)."""
    rows = read(db_path(home), """
        SELECT block, module, unit, size, kept_fraction, kept, prob FROM masks
        WHERE run_id = ? AND stage = ? AND step = ? ORDER BY block, module, unit""",
                [run_id, stage, int(step)])
    for r in rows:
        r["kept"] = json.loads(r["kept"]) if r["kept"] else None
        r["prob"] = json.loads(r["prob"]) if r["prob"] else None
    return _frame(rows, MASK_COLUMNS)


def mask_history(home: Path, run_id: str, stage: str) -> pd.DataFrame:
    """Kept fraction of every block's prunable parameters at each logged step."""
    rows = read(db_path(home), """
        SELECT step, block, kept_fraction FROM masks
        WHERE run_id = ? AND stage = ? AND module = 'block' AND unit = 'params'
        ORDER BY step, block""", [run_id, stage])
    return _frame(rows, ["step", "block", "kept_fraction"])


def head_deaths(home: Path, run_id: str, stage: str) -> pd.DataFrame:
    """For every attention head (block, head): the first logged step from which it stayed
    pruned (None while it lives), from the kept flags of every logged step."""
    rows = read(db_path(home), """
        SELECT step, block, kept FROM masks
        WHERE run_id = ? AND stage = ? AND module = 'attn' AND unit = 'heads' AND kept IS NOT NULL
        ORDER BY step""", [run_id, stage])
    died: dict[tuple[int, int], int | None] = {}
    for r in rows:
        for h, k in enumerate(json.loads(r["kept"])):
            key = (int(r["block"]), h)
            if k:
                died[key] = None
            elif died.get(key) is None:
                died[key] = int(r["step"])
    out = [{"block": b, "head": h, "died_at": s} for (b, h), s in sorted(died.items())]
    return _frame(out, ["block", "head", "died_at"])
