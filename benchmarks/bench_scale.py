"""Scale-out costs: Ray against the local pool, torchrun 2 ranks against 1, and how many training
stages one supervisor can ingest for.

    .venv/bin/python benchmarks/bench_scale.py [--runs 8] [--steps 20] [--corpus lab/corpora/tiny]

- sweep: ``--runs`` tiny runs (``--grid seed=1..N``; train ``--steps`` steps, export, evaluate
  10 utterances), once through the local pool (2 workers x 1 thread) and once through Ray on a
  simulated two-node cluster (``ray.cluster_utils.Cluster``, 1 CPU per node: the same two stages
  at a time); wall-clock from submission to the last stage done, and the overhead per stage;
- torchrun: the tiny model's train stage, 60 steps, 1 process vs ``nproc = 2`` (DDP over gloo),
  alternating 1, 2, 1, 2 in one lab, the stage's 2 threads split between the ranks; training
  seconds per step (from the stage's metrics) and the stage's wall-clock (torchrun's start-up
  included);
- sink: the lab actor's ``append`` (the Ray path of every event: one actor call per batch,
  fsync'd) called back to back from this process, batches of 10 events: calls per second;
- ingestion: the supervisor's spool -> DuckDB rate (``bench_engine.ingestion``, metric events),
  divided by the event rate a training stage produces (measured on the sweep's stages): how many
  stages train at once before one supervisor's writer saturates.
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_data import report  # noqa: E402
from bench_engine import ingestion  # noqa: E402

from engine import testing  # noqa: E402
from engine.runner.ray_executor import FORWARD_EVERY_S as FORWARD_S  # noqa: E402


def sweep(lab: testing.Lab, exp: Path, runs: int, *extra: str) -> tuple[float, list[dict]]:
    seeds = ",".join(str(i) for i in range(1, runs + 1))
    t0 = time.perf_counter()
    ids = json.loads(lab.cli("sweep", str(exp), "--grid", f"seed={seeds}", "--json", *extra,
                             timeout=300))["run_ids"]
    states = [lab.wait(rid, timeout=3600) for rid in ids]
    wall = time.perf_counter() - t0
    bad = [s["run_id"] for s in states if s["state"] != "done"]
    if bad:
        raise SystemExit(f"runs did not finish: {bad}; see `asrlab status` under {lab.home}")
    return wall, states


def stage_seconds(states: list[dict]) -> list[float]:
    return [s["ended"] - s["started"] for r in states for s in r["stages"]
            if s["ended"] and s["started"]]


def event_rate(lab: testing.Lab, states: list[dict]) -> tuple[float, float]:
    """Events and bytes per second of training, over the sweep's train stages."""
    events = size = seconds = 0.0
    for r in states:
        st = next(s for s in r["stages"] if s["kind"] == "train")
        spool = lab.run_dir(r["run_id"]) / "spool" / "model.jsonl"
        events += len(spool.read_bytes().splitlines())
        size += spool.stat().st_size
        seconds += st["ended"] - st["started"]
    return events / seconds, size / seconds


def ddp_experiment(lab: testing.Lab, nproc: int, steps: int) -> Path:
    path = lab.tmp / f"ddp{nproc}.toml"
    path.write_text(f"""name = "ddp{nproc}"
[data]
corpus = "{lab.corpus}"
vocab_size = 64
[[stages]]
kind = "train"
name = "model"
nproc = {nproc}
[stages.model]
preset = "tiny"
[stages.train]
max_steps = {steps}
max_duration = 20.0
warmup_steps = 10
log_every = 10
checkpoint_every = {steps}
""")
    return path


def torchrun(lab: testing.Lab, steps: int, repeats: int) -> dict[int, dict[str, list[float]]]:
    out = {1: {"step_s": [], "wall": []}, 2: {"step_s": [], "wall": []}}
    for _ in range(repeats):
        for n in (1, 2):
            rid = json.loads(lab.cli("run", str(ddp_experiment(lab, n, steps)), "--json"))["run_id"]
            st = lab.wait(rid, timeout=1800)
            assert st["state"] == "done", st
            stage = st["stages"][0]
            rows = [json.loads(line) for line in
                    (lab.run_dir(rid) / "model" / "metrics.jsonl").read_text().splitlines()]
            out[n]["step_s"].append(60 * rows[-1]["train_minutes"] / rows[-1]["step"])
            out[n]["wall"].append(stage["ended"] - stage["started"])
    return out


def sink_rate(address: str, tmp: Path, calls: int = 2000) -> float:
    """Batches per second the lab actor appends (round trip included), one caller."""
    import ray

    from engine.runner.ray_executor import LabActor

    ray.init(address=address, namespace="asrlab-bench", log_to_driver=False)
    try:
        actor = ray.remote(LabActor).options(num_cpus=0).remote()
        run_dir = tmp / "sink-run"
        (run_dir / "spool").mkdir(parents=True)
        batch = [json.dumps({"type": "metrics", "ts": 0.0, "step": i, "data": {"loss": 1.0}})
                 for i in range(10)]
        ray.get(actor.append.remote(str(run_dir), "model", "warm", 0, batch))
        t0 = time.perf_counter()
        for i in range(calls):
            ray.get(actor.append.remote(str(run_dir), "model", "bench", i * 10, batch))
        return calls / (time.perf_counter() - t0)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ddp-steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--corpus", default=str(ROOT / "lab" / "corpora" / "tiny"))
    args = ap.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["ASRLAB_THREADS"] = "1"
    corpus = testing.tiny_corpus(Path(args.corpus))
    from ray.cluster_utils import Cluster

    with tempfile.TemporaryDirectory(prefix="asrlab-bench-scale-") as tmp:
        tmp = Path(tmp)
        local = testing.Lab(tmp / "local", corpus, tmp)
        remote = testing.Lab(tmp / "ray", corpus, tmp)
        cluster = None
        try:
            exp = local.experiment(steps=args.steps, utterances=10)
            os.environ["ASRLAB_WORKERS"] = "2"
            local_wall, local_states = sweep(local, exp, args.runs)
            print(f"local pool: {args.runs} runs in {local_wall:.1f} s", flush=True)
            cluster = Cluster(initialize_head=True,
                              head_node_args={"num_cpus": 1, "include_dashboard": False})
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray_wall, ray_states = sweep(remote, exp, args.runs, "--executor", "ray",
                                         "--address", cluster.address)
            print(f"ray, two nodes: {args.runs} runs in {ray_wall:.1f} s", flush=True)
            rate, byte_rate = event_rate(remote, ray_states)
            sink = sink_rate(cluster.address, tmp)
            print(f"lab actor: {sink:,.0f} appends/s", flush=True)
            local.shutdown()
            os.environ["ASRLAB_WORKERS"] = "1"
            os.environ["ASRLAB_THREADS"] = "2"
            ddp = torchrun(local, args.ddp_steps, args.repeats)
            print(f"torchrun: {ddp}", flush=True)
            ingest = ingestion(tmp / "ingest", exp, args.events)
            print(f"ingestion: {ingest:,.0f} events/s", flush=True)
        finally:
            local.shutdown()
            remote.shutdown()
            if cluster is not None:
                cluster.shutdown()
    n_stages = sum(len(r["stages"]) for r in ray_states)
    ls, rs = stage_seconds(local_states), stage_seconds(ray_states)
    med = {n: (statistics.median(v["step_s"]), statistics.median(v["wall"]))
           for n, v in ddp.items()}
    teacher_rate = 2 / 10  # a real stage: ~1 step/s, metrics + progress every 10 steps
    rows = [
        (f"sweep of {args.runs} tiny runs ({n_stages} stages), local pool 2 workers x 1 thread",
         f"{local_wall:.1f} s wall; stage median {statistics.median(ls):.1f} s"),
        ("the same sweep on Ray, simulated 2-node cluster (1 CPU each)",
         f"{ray_wall:.1f} s wall ({ray_wall / local_wall:.2f}x); stage median "
         f"{statistics.median(rs):.1f} s; overhead {(ray_wall - local_wall) / n_stages * 2:+.2f} "
         f"s per stage (2 at a time)"),
        (f"torchrun, tiny model, {args.ddp_steps} steps, 1 process x 2 threads vs 2 DDP ranks "
         f"(gloo) x 1 thread, median of {args.repeats}",
         f"{med[1][0] * 1000:.0f} vs {med[2][0] * 1000:.0f} ms per step "
         f"({med[1][0] / med[2][0]:.2f}x the speed); stage wall {med[1][1]:.1f} vs "
         f"{med[2][1]:.1f} s ({med[2][1] - med[1][1]:+.1f} s: torchrun's start-up and a second "
         f"Python + torch)"),
        (f"supervisor ingestion, {args.events:,} metric events spool -> DuckDB",
         f"{ingest:,.0f} events/s"),
        ("events a tiny train stage produces (log every 5 steps, periodic evals off)",
         f"{rate:.1f} events/s, {byte_rate / 1000:.1f} kB/s"),
        ("lab actor (Ray event sink), batches of 10 events, one caller, fsync each",
         f"{sink:,.0f} batches/s = {10 * sink:,.0f} events/s"),
        ("on paper: training stages one supervisor can ingest for",
         f"DuckDB writer: {ingest / rate:,.0f} tiny stages at once, or "
         f"{ingest / teacher_rate:,.0f} real ones (~1 step/s, metrics + progress every 10 steps: "
         f"{teacher_rate:.1f} events/s). Through Ray the lab actor comes first: each stage "
         f"forwards every {FORWARD_S} s while it has news, so {sink * FORWARD_S:,.0f} stages "
         f"forwarding at once saturate it. Evaluations (one hyps row per utterance) are bursts: "
         f"2,600 rows are {2600 / ingest * 1000:.0f} ms of the writer"),
    ]
    report("Scale out", "`benchmarks/bench_scale.py`", rows)


if __name__ == "__main__":
    main()
