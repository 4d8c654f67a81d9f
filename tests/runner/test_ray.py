"""The Ray executor on a simulated two-node cluster (``ray.cluster_utils.Cluster``: two raylets
on this machine, loopback only): a sweep runs across both nodes through the CLI; one node's
raylet is killed mid-stage and Ray retries that stage on the other node, where it resumes from
its checkpoint; every event reaches the store once, through the lab actor (the supervisor stays
the only DuckDB writer and never reads a remote node's disk)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from engine import testing

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    from ray.cluster_utils import Cluster

    # a lost node is noticed in about 3 s instead of 30
    fast = {"health_check_initial_delay_ms": 500, "health_check_period_ms": 1000,
            "health_check_failure_threshold": 3}
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": fast})
    second = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield [c, second]  # a test that kills the second node puts a new one in its place
    c.shutdown()


@pytest.fixture()
def lab(tmp_path, monkeypatch, tiny):
    home = tmp_path / "lab"
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    monkeypatch.setenv("ASRLAB_THREADS", "1")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("ASRLAB_RAY_SPOOL", str(tmp_path / "node-spools"))
    lab = testing.Lab(home, tiny, tmp_path)
    yield lab
    lab.shutdown()


def _events(path: Path) -> list[dict]:
    """The spool's whole lines (a line still being written is left for the next read)."""
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]


def test_a_sweep_survives_a_lost_node(cluster, lab, tmp_path):
    c, second = cluster
    exp = lab.experiment(steps=60, checkpoint_every=10, log_every=5)
    storage = tmp_path / "shared"
    storage.mkdir()
    out = lab.cli("sweep", str(exp), "--grid", "seed=1,2", "--executor", "ray",
                  "--address", c.address, "--storage", str(storage), "--json")
    run_ids = json.loads(out)["run_ids"]
    assert len(run_ids) == 2
    # run folders on the shared storage, linked from the lab
    for rid in run_ids:
        assert lab.run_dir(rid).resolve() == storage / rid

    spools = {rid: lab.run_dir(rid) / "spool" / "model.jsonl" for rid in run_ids}

    def running_on() -> dict:
        nodes = {}
        for rid, p in spools.items():
            if p.exists():
                for ev in _events(p):
                    if ev["type"] == "state" and ev["state"] == "running":
                        nodes[rid] = ev["node"]
        return nodes

    # both train stages run at once, one per node (each asks for the one CPU a node has)
    lab.wait_for(lambda: len(running_on()) == 2, "both train stages to run", timeout=240)
    on = running_on()
    assert set(on.values()) == {c.head_node.node_id, second.node_id}, on
    victim = next(rid for rid, node in on.items() if node == second.node_id)
    ckpts = lab.run_dir(victim) / "model" / "checkpoints"
    # the pid line is forwarded by the actor (every 0.3 s), the checkpoint is on disk at once
    lab.wait_for(lambda: any(ckpts.glob("step-*.pt")) and _started_pid(spools[victim]),
                 "a checkpoint on the second node", timeout=240)
    first_pid = _started_pid(spools[victim])
    # frozen, so it is still mid-stage when its node dies, however fast it trains (a stopped
    # process still dies with its Ray worker)
    for p in testing.process_tree(first_pid):
        os.kill(p, signal.SIGSTOP)
    second.kill_raylet()
    killed_at = time.monotonic()

    for rid in run_ids:
        st = lab.wait(rid, timeout=400)
        assert st["state"] == "done", st
        assert {s["executor"] for s in st["stages"]} == {"ray"}
    # the stage's process on the lost node died with it (it never trained beside its retry)
    assert not testing.is_worker(first_pid, victim)
    starts = [ev for ev in _events(spools[victim])
              if ev["type"] == "state" and ev["state"] == "running"]
    assert [s["node"] for s in starts] == [second.node_id, c.head_node.node_id], starts
    assert [s["attempt"] for s in starts] == [1, 2]
    log = (lab.run_dir(victim) / "logs" / "model.log").read_text()
    assert "resumed from" in log and "step-000000" in log, log[-2000:]
    assert lab.stage(victim, "model")["attempt"] == 2
    print(f"retried and finished {time.monotonic() - killed_at:.0f} s after the kill")

    for rid in run_ids:
        lab.assert_ingested_exactly_once(rid)
        # every event arrived once: per task token, sequence numbers 0..n-1 without a gap or
        # a repeat; a surviving task's node-local spool is all there
        by_token: dict[str, list[int]] = {}
        for p in (lab.run_dir(rid) / "spool").glob("*.jsonl"):
            for ev in _events(p):
                by_token.setdefault(ev["ray_token"], []).append(ev["seq"])
        for token, seqs in by_token.items():
            assert seqs == list(range(len(seqs))), (token, seqs)
            local = list((tmp_path / "node-spools" / token).glob("*.jsonl"))
            assert len(local) == 1
            sent = len(_events(local[0])) + 2  # + the task's own "running" and log line
            if rid == victim and starts[0]["ray_token"] == token:
                assert len(seqs) <= sent  # what the dead node had not forwarded is gone
            else:
                assert len(seqs) == sent, (token, len(seqs), sent)
    assert lab.query("SELECT count(*) FROM ingest_errors")[0][0] == 0
    # a new second node for the tests after this one (the nnodes = 2 stage needs two)
    c.remove_node(second, allow_graceful=False)
    cluster[1] = c.add_node(num_cpus=1)
    c.wait_for_nodes()


def _started_pid(spool) -> int | None:
    """The stage worker's pid from its "started, pid N" log line, once forwarded."""
    if not spool.exists():
        return None
    return next((int(ev["line"].rsplit("pid ", 1)[1]) for ev in _events(spool)
                 if ev["type"] == "log" and "started, pid" in ev["line"]), None)


def test_cancel_stops_the_ray_task_and_resume_continues(cluster, lab):
    c, _ = cluster
    exp = lab.experiment(steps=150, checkpoint_every=10, log_every=5)
    rid = json.loads(lab.cli("run", str(exp), "--executor", "ray", "--address", c.address,
                             "--json"))["run_id"]
    ckpts = lab.run_dir(rid) / "model" / "checkpoints"
    spool = lab.run_dir(rid) / "spool" / "model.jsonl"
    lab.wait_for(lambda: any(ckpts.glob("step-*.pt")) and _started_pid(spool), "a checkpoint",
                 timeout=240)
    pid = _started_pid(spool)
    lab.cancel_while_paused(pid, rid)  # however fast the tiny stage trains, it is cancelled
    st = lab.wait(rid, timeout=120)
    assert st["state"] == "cancelled"
    assert [s["state"] for s in st["stages"]] == ["cancelled"] * 3
    # the stage's process ends with its task (it reported "cancelled" just before)
    lab.wait_for(lambda: not testing.is_worker(pid, rid), "the worker to end", timeout=30)
    # Not asserted: that the worker's own "cancelled" event reaches the lab's spool. In two CI
    # runs on a loaded machine the task ended within a second of the cancel and the worker's
    # spool stopped at its last metrics (killed, not stopped: no last words), never locally;
    # the stage is cancelled either way and resume starts from its last checkpoint (below).
    # Filed in the session notes for the hardening issue.
    # resume: a new Ray task, from the last checkpoint, to the end
    lab.cli("resume", rid)
    lab.wait_for(lambda: lab.status(rid)["state"] != "cancelled", "the resume", timeout=60)
    lab.cli("cancel", rid, "--stage", "eval")  # one arm of it only
    states = lambda: [s["state"] for s in lab.status(rid)["stages"]]  # noqa: E731
    lab.wait_for(lambda: states() == ["done", "done", "cancelled"], "model and export to end",
                 timeout=400)
    assert "resumed from" in (lab.run_dir(rid) / "logs" / "model.log").read_text()
    lab.assert_ingested_exactly_once(rid)


def test_a_killed_supervisor_leaves_its_ray_stages_running(cluster, lab):
    """The lab actor owns the tasks: a supervisor killed with kill -9 loses no stage, and the
    next one finds the actor by name and follows the same task to its end."""
    import signal

    c, _ = cluster
    exp = lab.experiment(steps=80, checkpoint_every=10, log_every=5)
    rid = json.loads(lab.cli("run", str(exp), "--executor", "ray", "--address", c.address,
                             "--json"))["run_id"]
    spool = lab.run_dir(rid) / "spool" / "model.jsonl"
    lab.wait_for(lambda: spool.exists() and '"metrics"' in spool.read_text(), "training")
    sup = json.loads(lab.cli("supervisor", "status", "--json"))["pid"]
    os.kill(sup, signal.SIGKILL)
    time.sleep(3)  # the stage trains on, its events wait in the spool
    lab.cli("supervisor", "start")
    st = lab.wait(rid, timeout=300)
    assert st["state"] == "done", st
    assert lab.stage(rid, "model")["attempt"] == 1  # the same task, never started again
    starts = [ev for ev in _events(spool) if ev["type"] == "state" and ev["state"] == "running"]
    assert len(starts) == 1
    lab.assert_ingested_exactly_once(rid)


def test_a_stage_across_two_nodes_follows_one_process(cluster, lab):
    """nnodes = 2: one torchrun per node (a Ray task each, STRICT_SPREAD), node 0's master
    address handed over by the lab actor; DDP across the two nodes gives one process's loss
    curve for the same global batches, and node 0 alone reports."""
    c, second = cluster

    def exp(nnodes: int, executor: str):
        path = lab.tmp / f"nodes{nnodes}.toml"
        path.write_text(f"""name = "nodes{nnodes}"
[data]
corpus = "{lab.corpus}"
vocab_size = 64
[[stages]]
kind = "train"
name = "model"
nnodes = {nnodes}
[stages.model]
preset = "tiny"
dropout = 0.0
[stages.train]
max_steps = 20
max_duration = 20.0
warmup_steps = 10
log_every = 5
checkpoint_every = 10
spec_augment = false
""")
        return path

    two = json.loads(lab.cli("run", str(exp(2, "ray")), "--executor", "ray", "--address",
                             c.address, "--json"))["run_id"]
    st = lab.wait(two, timeout=300)
    assert st["state"] == "done", st
    one = json.loads(lab.cli("run", str(exp(1, "ray")), "--executor", "ray", "--address",
                             c.address, "--json"))["run_id"]
    assert lab.wait(one, timeout=300)["state"] == "done"

    def losses(rid):
        rows = [json.loads(line) for line in
                (lab.run_dir(rid) / "model" / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows}

    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [5, 10, 15, 20]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=2e-3), (step, a[step], b[step])
    log = (lab.run_dir(two) / "logs" / "model.log").read_text()
    assert "2 DDP processes (gloo) on 2 node(s)" in log
    assert (lab.run_dir(two) / "logs" / "model.node1.log").exists()  # the other node's ranks
    starts = [ev for ev in _events(lab.run_dir(two) / "spool" / "model.jsonl")
              if ev["type"] == "state" and ev["state"] == "running"]
    assert len(starts) == 1  # node 0 reports; node 1 is quiet
    lab.assert_ingested_exactly_once(two)
