"""The engine's costs: ingestion rate, how soon readers see an event, and the overhead of running
a short stage through the supervisor instead of calling it directly.

    .venv/bin/python benchmarks/bench_engine.py [--events 200000] [--corpus lab/corpora/tiny]

- ingestion: ``--events`` metric events in one spool, through the supervisor's ingest + flush
  (spool -> parse -> DuckDB, exactly-once offsets included) in this process; events per second;
- visibility: a real supervisor process and a real training worker; events appended to the
  worker's spool while it trains; seconds until a read-only reader sees each (median, max);
- overhead: the tiny experiment (train 20 steps, export, evaluate 10 utterances) run by
  ``asrlab train`` in the foreground vs ``asrlab run --wait`` through the supervisor (one worker
  process per stage), wall-clock each, median of ``--repeats``.

Targets (issue 6): at least 20,000 metric rows per second; visible within 2 s.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_data import report  # noqa: E402

from engine import testing  # noqa: E402


def ingestion(home: Path, exp: Path, n: int) -> float:
    from engine.config import load_experiment
    from engine.runner.graph import prepare_run
    from engine.runner.supervisor import Supervisor

    rec = prepare_run(load_experiment(exp), home / "runs")
    sup = Supervisor(home)
    sup.cmd_submit({"run_dir": rec["run_dir"]})
    sup.flush(force=True)
    spool = Path(rec["run_dir"]) / "spool" / "model.jsonl"
    row = {"loss": 3.21, "rnnt": 3.0, "lr": 1e-3, "grad_norm": 1.5, "audio_s_per_s": 100.0,
           "rss_mb": 900.0, "train_minutes": 1.0, "audio_hours": 0.5}
    with open(spool, "w") as f:
        for i in range(n):
            f.write(json.dumps({"type": "metrics", "ts": time.time(), "step": i + 1,
                                "data": {**row, "step": i + 1}}) + "\n")
    size = spool.stat().st_size
    t0 = time.perf_counter()
    while sup.offsets.get(str(spool), 0) < size or sup.writer.has_pending():
        sup.ingest()
        sup.flush(force=True)
    dt = time.perf_counter() - t0
    got = sup.writer.query("SELECT count(*) FROM metrics")[0][0]
    assert got == n, (got, n)
    return n / dt


def visibility(home: Path, lab: testing.Lab, probes: int = 20) -> list[float]:
    from engine.store import read

    run_id = json.loads(lab.cli("run", str(lab.experiment(steps=100000)), "--json"))["run_id"]
    lab.wait_for(lambda: lab.stage(run_id, "model")["state"] == "running", "training")
    spool = lab.run_dir(run_id) / "spool" / "model.jsonl"
    delays = []
    for i in range(probes):
        step = 10**9 + i
        t0 = time.perf_counter()
        with open(spool, "a") as f:
            f.write(json.dumps({"type": "metrics", "ts": time.time(), "step": step,
                                "data": {"probe": i}}) + "\n")
        while not read(lab.db, "SELECT 1 FROM metrics WHERE step = ?", [step]):
            time.sleep(0.01)
        delays.append(time.perf_counter() - t0)
        time.sleep(0.3)
    lab.cli("cancel", run_id)
    lab.wait(run_id)
    return delays


def overhead(lab: testing.Lab, repeats: int) -> tuple[float, float]:
    exp = lab.experiment(steps=20)
    direct, engine = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        lab.cli("train", str(exp), "--out", str(lab.tmp / f"direct{i}"), "--quiet", timeout=600)
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lab.cli("run", str(exp), "--wait", timeout=600)
        engine.append(time.perf_counter() - t0)
    return statistics.median(direct), statistics.median(engine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--corpus", default=str(ROOT / "lab" / "corpora" / "tiny"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    corpus = testing.tiny_corpus(Path(args.corpus))
    with tempfile.TemporaryDirectory(prefix="asrlab-bench-engine-") as tmp:
        tmp = Path(tmp)
        os.environ["ASRLAB_HOME"] = str(tmp / "lab")
        lab = testing.Lab(tmp / "lab", corpus, tmp)
        try:
            rate = ingestion(tmp / "ingest", lab.experiment(), args.events)
            print(f"ingestion: {rate:,.0f} metric rows/s", flush=True)
            delays = visibility(lab.home, lab)
            print(f"visibility: median {statistics.median(delays):.2f} s, max {max(delays):.2f} s",
                  flush=True)
            direct, engine = overhead(lab, args.repeats)
        finally:
            lab.shutdown()
    rows = [
        (f"ingestion, {args.events:,} metric events, spool -> DuckDB (one process)",
         f"{rate:,.0f} rows/s (target 20,000)"),
        ("event visible to a read-only reader, 20 probes during training",
         f"median {statistics.median(delays):.2f} s, max {max(delays):.2f} s (target 2 s)"),
        ("tiny experiment (train 20 steps, export, evaluate 10), wall-clock",
         f"foreground `asrlab train` {direct:.1f} s, through the supervisor `asrlab run --wait` "
         f"{engine:.1f} s: overhead {engine - direct:+.1f} s ({engine / direct:.2f}x), mostly one "
         f"Python + torch start per stage worker and the 2 s polling of --wait"),
    ]
    report("Engine", "`benchmarks/bench_engine.py`", rows)


if __name__ == "__main__":
    main()
