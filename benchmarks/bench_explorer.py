"""Explorer speed at scale: the Pareto page with 1,000 models and 200,000 per-utterance rows in
the store (target at most 1 s of server time), the Listen page with 5,000 utterances (target at
most 0.5 s per interaction).

The store is filled through the engine's own writer (``engine.store.Writer``, the supervisor's
code path) with synthetic evaluations: 1,000 models of 10 runs x 100 stages, each evaluated at 3
steps on dev and at its last step on test-clean, 200 utterances each; plus two models with 5,000
utterances on test-other for Listen, every utterance pointing at one real WAV file. The numbers
are synthetic, the store, queries and pages are real. Server time is the time Streamlit's
AppTest takes to run the page script (queries, pandas, figure building, element serialisation),
median of ``--repeats`` runs, measured on this machine; the browser's drawing is not included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import report  # noqa: E402

from engine.store import Writer  # noqa: E402


def fill(db: Path, wav: Path, models: int, utts: int, listen_utts: int) -> int:
    rng = np.random.default_rng(0)
    w = Writer(db)
    runs = 10
    per_run = models // runs
    now = time.time()
    words = ("the cat sat on a mat while seven mice ran to boston in the evening and "
             "her little writer bought a good taxi").split()
    rows = 0
    for r in range(runs):
        run_id = f"20261124-000000-bench-{r:04x}"
        stages = [{"kind": "train", "name": f"m{s}"} for s in range(per_run)]
        w.add("runs", {"run_id": run_id, "name": f"bench{r}", "experiment": "bench",
                       "config": json.dumps({"name": f"bench{r}", "tags": [f"t{r % 3}"],
                                             "stages": stages}),
                       "created": now + r, "run_dir": "/nonexistent", "versions": "{}"})
        for s in range(per_run):
            name = f"m{s}"
            w.add("stages", {"run_id": run_id, "name": name, "kind": ("train", "prune",
                                                                        "distill")[s % 3],
                             "position": s, "state": "done", "progress": 1.0, "attempt": 1})
            params = int(rng.uniform(2e5, 9e6))
            for step in (100, 200, 300):
                splits = ("dev", "test-clean") if step == 300 else ("dev",)
                for split in splits:
                    wer = float(np.clip(60 - 6 * np.log(params / 2e5) + rng.normal(0, 4)
                                        - step / 100, 3, 100))
                    w.add("evals", {"run_id": run_id, "stage": name, "split": split,
                                    "step": step, "model_stage": name, "decoding": "greedy",
                                    "wer": wer, "wer_lo": wer - 2, "wer_hi": wer + 2,
                                    "utterances": utts, "params": params,
                                    "nonzero_params": params, "bytes": params * 4 + 20_000,
                                    "macs_per_second": params * 50.0, "rtf": params / 1e9,
                                    "summary": "{}", "ts": now})
                    if split == "test-clean":
                        for u in range(utts):
                            ref = " ".join(rng.choice(words, 10))
                            e = int(rng.poisson(wer / 10))
                            w.add("hyps", {"run_id": run_id, "stage": name, "split": split,
                                           "step": step, "cut_id": f"tc-{u:06d}",
                                           "reference": ref, "hypothesis": ref,
                                           "ref_words": 10, "substitutions": e, "deletions": 0,
                                           "insertions": 0, "audio": str(wav), "start": 0.0,
                                           "duration": 2.0})
                            rows += 1
        w.flush()
    for m in range(2):  # Listen: two models with listen_utts utterances each
        run_id = "20261124-000000-bench-0000"
        name = f"m{m}"
        w.add("evals", {"run_id": run_id, "stage": name, "split": "test-other", "step": 300,
                        "model_stage": name, "decoding": "greedy", "wer": 30.0, "wer_lo": 28.0,
                        "wer_hi": 32.0, "utterances": listen_utts, "params": 1, "bytes": 1,
                        "summary": "{}", "ts": now})
        for u in range(listen_utts):
            ref = " ".join(rng.choice(words, 12))
            w.add("hyps", {"run_id": run_id, "stage": name, "split": "test-other", "step": 300,
                           "cut_id": f"to-{u:06d}", "reference": ref,
                           "hypothesis": " ".join(rng.choice(words, 12)), "ref_words": 12,
                           "substitutions": int(rng.integers(0, 12)), "deletions": 0,
                           "insertions": 0, "audio": str(wav), "start": 0.0, "duration": 2.0})
            rows += 1
        w.flush()
    return rows


def timed(at_run, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        at = at_run()
        out.append(time.perf_counter() - t0)
        assert not at.exception, [e.value for e in at.exception]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--listen-utterances", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    from streamlit.testing.v1 import AppTest

    from app import charts, data, pareto

    with tempfile.TemporaryDirectory(prefix="asrlab-bench-explorer-") as tmp:
        tmp = Path(tmp)
        home = tmp / "lab"
        os.environ["ASRLAB_HOME"] = str(home)
        os.chdir(ROOT)
        wav = tmp / "utt.wav"
        sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(32000), 16000)
        t0 = time.perf_counter()
        hyp_rows = fill(home / "lab.duckdb", wav, args.models, args.utterances,
                        args.listen_utterances)
        print(f"store filled: {hyp_rows:,} per-utterance rows in {time.perf_counter() - t0:.0f} s",
              flush=True)

        q = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            m = data.models(home, "test-clean", "best-dev")
            q.append(time.perf_counter() - t)
        assert len(m) == args.models, len(m)
        f = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            charts.pareto(pareto.with_front(m, "bytes"), "bytes", "test-clean").to_json()
            f.append(time.perf_counter() - t)

        def pareto_page(choice: str):
            def run():
                at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
                at.switch_page("app/pages/pareto.py")
                at.query_params.update({"split": "test-clean", "choice": choice})
                return at.run()
            return run

        page_final = timed(pareto_page("final"), args.repeats)
        page_best = timed(pareto_page("best-dev"), args.repeats)

        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
        at.switch_page("app/pages/listen.py")
        at.query_params.update({"split": "test-other"})
        t = time.perf_counter()
        at.run()
        first = time.perf_counter() - t
        assert not at.exception, [e.value for e in at.exception]
        interactions = []
        keys = data.models(home, "test-other")["model"].tolist()
        steps = [lambda: at.text_input(key="q").set_value("boston").run(),
                 lambda: at.selectbox(key="sort").set_value("id").run(),
                 lambda: at.multiselect(key="models").set_value(keys).run(),
                 lambda: at.text_input(key="q").set_value("").run(),
                 lambda: at.selectbox(key="sort").set_value("errors").run()]
        for _ in range(max(1, args.repeats // len(steps) + 1)):
            for s in steps:
                t = time.perf_counter()
                s()
                interactions.append(time.perf_counter() - t)
                assert not at.exception, [e.value for e in at.exception]

    med = statistics.median
    rows = [
        (f"store: {args.models:,} models ({args.models // 10} stages x 10 runs, 4 evaluations "
         f"each), {hyp_rows:,} per-utterance rows", "filled through engine.store.Writer"),
        ("Pareto query `data.models` (best on dev: one window + arg_min over 4,000 evaluations)",
         f"median {med(q) * 1000:.0f} ms"),
        (f"Pareto figure for {args.models:,} points (front + plotly JSON)",
         f"median {med(f) * 1000:.0f} ms"),
        (f"Pareto page, server time, {args.models:,} models, final evaluation",
         f"median {med(page_final):.2f} s, max {max(page_final):.2f} s (target 1 s)"),
        (f"Pareto page, server time, {args.models:,} models, best on dev",
         f"median {med(page_best):.2f} s, max {max(page_best):.2f} s (target 1 s)"),
        (f"Listen page, {args.listen_utterances:,} utterances, first render",
         f"{first:.2f} s"),
        (f"Listen page, per interaction (search, sort, add a model, clear; {len(interactions)} "
         f"interactions)", f"median {med(interactions):.2f} s, max {max(interactions):.2f} s "
                           f"(target 0.5 s)"),
    ]
    for k, v in rows:
        print(f"{k}: {v}")
    report("Explorer at scale", "`benchmarks/bench_explorer.py`", rows)


if __name__ == "__main__":
    main()
