"""The compression table of one run: each evaluated model beside a reference model (the teacher),
with its size, cost, WER and the paired-bootstrap difference to the reference on the same
utterances.

A stage reused from an earlier run (``asrlab run --reuse``, a sweep) has its evaluations under
that run, so each stage is first resolved to the run that computed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

from engine.evaluate import UtteranceResult, paired_bootstrap
from engine.runner.supervisor import lab_paths
from engine.store import read


def _stages(db: Path, run_id: str) -> list[dict]:
    rows = read(db, """SELECT s.name, s.kind, s.position, s.reused_from, r.config
                       FROM stages s JOIN runs r USING (run_id)
                       WHERE s.run_id = ? ORDER BY s.position""", [run_id])
    if not rows:
        raise ValueError(f"no run {run_id!r} in {db}")
    config = {s.get("name"): s for s in json.loads(rows[0]["config"] or "{}").get("stages", [])}
    for r in rows:
        src = r["reused_from"]
        r["source"] = tuple(src.split("/", 1)) if src else (run_id, r["name"])
        r["config"] = config.get(r["name"], {})
    return rows


def _results(db: Path, source: tuple[str, str], split: str, step: int) -> list[UtteranceResult]:
    rows = read(db, """SELECT cut_id, reference, hypothesis, ref_words, substitutions, deletions,
                              insertions FROM hyps
                       WHERE run_id = ? AND stage = ? AND split = ? AND step = ?""",
                [source[0], source[1], split, step])
    return [UtteranceResult(r["cut_id"], r["reference"], r["hypothesis"], r["ref_words"],
                            r["substitutions"], r["deletions"], r["insertions"]) for r in rows]


def _method(stages: dict[str, dict], name: str) -> str:
    """What made a model, in a few words: the stage kind and the settings that name the method."""
    st = stages.get(name)
    if st is None:
        return "?"
    cfg, kind = st["config"], st["kind"]
    if kind == "train":
        return f"train {cfg.get('model', {}).get('preset', '')}".strip()
    if kind == "distill":
        kd = cfg.get("kd", {}).get("loss", "yblank")
        return f"distill {cfg.get('model', {}).get('preset', '')} ({kd} KD)".replace("  ", " ")
    if kind == "prune_l0":
        return f"L0 prune to {cfg.get('prune', {}).get('target', '?')}"
    if kind == "prune_magnitude":
        return f"magnitude prune {cfg.get('prune', {}).get('sparsity', '?')}"
    return kind


def compression_table(home: Path, run_id: str, reference: str | None = None,
                      splits: list[str] | None = None) -> dict:
    """``{"run_id", "reference", "splits", "rows"}``: one row per model of the run and runtime
    that scored it, with bytes, MACs per audio second and, per split, the WER, its
    interval and the paired difference to the reference model's evaluation on that split
    (``splits``: default test-clean and test-other where evaluated, else every split).

    ``reference`` names a model stage (default: the model of the first evaluate stage whose
    model is a ``train`` stage)."""
    db = lab_paths(home)["db"]
    stages = _stages(db, run_id)
    by_name = {s["name"]: s for s in stages}
    groups: dict[tuple[str, str], dict] = {}  # (model stage, runtime) -> its evaluations
    for st in stages:
        if st["kind"] != "evaluate":
            continue
        src = st["source"]
        rows = read(db, """SELECT split, step, wer, wer_lo, wer_hi, utterances, params, bytes,
                                  macs_per_second, rtf, coalesce(runtime, 'torch') AS runtime
                           FROM evals WHERE run_id = ? AND stage = ?
                           QUALIFY row_number() OVER (PARTITION BY split ORDER BY step DESC) = 1
                           ORDER BY split""", list(src))
        model = st["config"].get("model", st["name"])
        for r in rows:
            g = groups.setdefault((model, r["runtime"]), {"model": model, "stage": st["name"],
                                                          "runtime": r["runtime"], "evals": {}})
            g["evals"].setdefault(r["split"], {**r, "source": src})
    evals = list(groups.values())
    if not evals:
        return {"run_id": run_id, "reference": reference, "splits": splits or [], "rows": [],
                "mask_stages": [], "best": None}
    if not splits:  # the test sets when evaluated, else every split
        have = {s for e in evals for s in e["evals"]}
        splits = [s for s in ("test-clean", "test-other") if s in have] or sorted(have)
    if reference is None:
        trained = [e for e in evals if by_name.get(e["model"], {}).get("kind") == "train"]
        reference = (trained or evals)[0]["model"]
    ref = groups.get((reference, "torch")) or next(
        (e for e in evals if e["model"] == reference), None)
    if ref is None:
        known = sorted({e["model"] for e in evals})
        raise ValueError(f"reference {reference!r} has no evaluation in run {run_id}; "
                         f"evaluated models: {', '.join(known)}")
    out = []
    for e in evals:
        first = next(iter(e["evals"].values()))
        # the explorer's id of these weights on each split (app.data.model_key: run/stage/step)
        keys = {sp: f"{ev['source'][0]}/{ev['source'][1]}/{int(ev['step'])}"
                for sp, ev in e["evals"].items()}
        row = {"stage": e["stage"], "model": e["model"], "method": _method(by_name, e["model"]),
               "keys": keys,
               "runtime": e["runtime"], "params": first["params"], "bytes": first["bytes"],
               "macs_per_second": first["macs_per_second"], "rtf": first["rtf"],
               "reference": e is ref, "splits": {}}
        for split in splits:
            ev = e["evals"].get(split)
            if ev is None:
                continue
            cell = {"wer": ev["wer"], "wer_ci": [ev["wer_lo"], ev["wer_hi"]],
                    "utterances": ev["utterances"], "delta": None, "delta_ci": None}
            rev = ref["evals"].get(split)
            if e is not ref and rev is not None:
                a = _results(db, rev["source"], split, rev["step"])
                b = _results(db, ev["source"], split, ev["step"])
                try:
                    boot = paired_bootstrap(a, b)
                    cell.update(delta=boot["delta"], delta_ci=boot["ci"],
                                paired_utterances=boot["utterances"])
                except ValueError:  # no shared utterances: no paired difference
                    pass
            row["splits"][split] = cell
        out.append(row)
    masks = [s["source"] for s in stages if s["kind"] in ("prune_l0", "prune_magnitude")]
    table = {"run_id": run_id, "reference": reference, "splits": splits, "rows": out,
             "mask_stages": [list(m) for m in masks]}
    table["best"] = best_model(table)
    return table


def best_model(table: dict, split: str | None = None, within: float = 3.0) -> dict | None:
    """The model to ship: the fewest bytes among the compressed rows whose paired difference to
    the reference on ``split`` (default: the table's first) is at most ``within`` points at the
    upper end of its 95% interval; where none is, the compressed row with the lowest WER there.
    ``{"model", "runtime", "bytes", "within", "reason"}``, or None without compressed rows."""
    split = split or (table["splits"] or [None])[0]
    rows = [r for r in table["rows"] if not r["reference"] and split in r["splits"]]
    if not rows:
        return None
    close = [r for r in rows if r["splits"][split]["delta_ci"] is not None
             and r["splits"][split]["delta_ci"][1] <= within]
    if close:
        r = min(close, key=lambda r: (r["bytes"] or float("inf"), r["splits"][split]["wer"]))
        reason = (f"fewest bytes within {within:g} points of {table['reference']} on {split} "
                  f"(upper end of the paired 95% interval)")
    else:
        r = min(rows, key=lambda r: r["splits"][split]["wer"])
        reason = (f"no compressed model is within {within:g} points of {table['reference']} on "
                  f"{split}; this one has the lowest WER")
    return {"model": r["model"], "runtime": r["runtime"], "bytes": r["bytes"], "split": split,
            "key": r["keys"].get(split), "within": bool(close), "reason": reason}


def format_table(table: dict) -> list[str]:
    """The table as text lines, one model per line."""
    if not table["rows"]:
        return [f"run {table['run_id']}: no evaluated models yet"]
    head = f"{'model':<16} {'method':<30} {'runtime':<17} {'bytes':>10} {'MMACs/s':>8}"
    for split in table["splits"]:
        head += f"  {split + ' WER [95% CI]':<24} {'vs ' + table['reference']:<22}"
    lines = [head]
    for r in table["rows"]:
        line = (f"{r['model']:<16} {r['method'][:30]:<30} {r['runtime']:<17} "
                f"{_bytes(r['bytes']):>10} {(r['macs_per_second'] or 0) / 1e6:>8.1f}")
        for split in table["splits"]:
            c = r["splits"].get(split)
            if c is None:
                line += f"  {'-':<24} {'':<22}"
                continue
            wer = f"{c['wer']:.1f} [{c['wer_ci'][0]:.1f}, {c['wer_ci'][1]:.1f}]"
            if r["reference"]:
                diff = "(reference)"
            elif c["delta"] is None:
                diff = "no shared utterances"
            else:
                lo, hi = c["delta_ci"]
                verdict = "n.s." if lo <= 0 <= hi else ("worse" if lo > 0 else "better")
                diff = f"{c['delta']:+.1f} [{lo:+.1f}, {hi:+.1f}] {verdict}"
            line += f"  {wer:<24} {diff:<22}"
        lines.append(line)
    return lines


def _bytes(n) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def pareto_url(base: str, run_id: str | list[str], split: str = "test-clean") -> str:
    """The explorer's Pareto page showing only these runs' models."""
    runs = [run_id] if isinstance(run_id, str) else list(run_id)
    return f"{base.rstrip('/')}/pareto?{urlencode({'split': split, 'runs': runs}, doseq=True)}"


def source_runs(table: dict) -> list[str]:
    """The runs whose evaluations the table shows, in order: the run itself, or for stages it
    reused, the earlier runs that computed them (the Pareto page filters on these)."""
    runs = []
    for r in table["rows"]:
        for key in r.get("keys", {}).values():
            run = key.split("/", 1)[0]
            if run not in runs:
                runs.append(run)
    return runs or [table["run_id"]]


def explorer_urls(base: str, table: dict) -> dict[str, str]:
    """Links into the explorer for the run: its Pareto front; Compare set to the reference
    against the best compressed model; Listen with every model; Masks of its first pruning
    stage (the pages read these query strings)."""
    base = base.rstrip("/")
    split = (table["splits"] or ["test-clean"])[0]
    urls = {"pareto": pareto_url(base, source_runs(table), split)}
    ref = next((r for r in table["rows"] if r["reference"]), None)
    best = table.get("best")
    if ref and best and ref["keys"].get(split) and best.get("key"):
        urls["compare"] = f"{base}/compare?" + urlencode(
            {"split": split, "a": ref["keys"][split], "b": best["key"]})
    keys = [r["keys"][split] for r in table["rows"] if split in r["keys"]]
    if keys:
        urls["listen"] = f"{base}/listen?" + urlencode({"split": split, "models": keys},
                                                      doseq=True)
    if table.get("mask_stages"):
        run, stage = table["mask_stages"][0]
        urls["masks"] = f"{base}/masks?" + urlencode({"run": run, "stage": stage})
    return urls
