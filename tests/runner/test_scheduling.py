"""How the supervisor shares the cores: a stage alone trains on every core, stages that start
together split them, and none starts on a core another stage holds (oversubscribed OpenMP threads
spin: a run next to another once got half its updates)."""

from __future__ import annotations

import json
import os
import re
import tomllib

import pytest

from engine import testing
from engine.config import to_toml
from engine.runner.supervisor import Supervisor


def sup(cores: int, workers: int, fixed: int = 0, running: dict | None = None) -> Supervisor:
    s = Supervisor.__new__(Supervisor)  # the scheduling state only, no store
    s.cores, s.workers, s.fixed_threads = cores, workers, fixed
    s.procs = {k: object() for k in (running or {})}
    s.proc_threads = {k: t for k, t in (running or {}).items() if t}
    return s


def test_a_lone_stage_gets_every_core_and_stages_ready_together_split_them():
    assert sup(2, 2)._share_cores([("r", "a")]) == [(("r", "a"), 2)]
    assert sup(2, 2)._share_cores([("r", "a"), ("r", "b")]) == [(("r", "a"), 1), (("r", "b"), 1)]
    assert sup(8, 8)._share_cores([("r", "a"), ("r", "b"), ("r", "c")]) == [
        (("r", "a"), 3), (("r", "b"), 3), (("r", "c"), 2)]


def test_no_stage_starts_on_a_core_another_holds():
    assert sup(2, 2, running={("r", "t"): 2})._share_cores([("r", "a")]) == []
    assert sup(2, 2, running={("r", "t"): 1})._share_cores([("r", "a"), ("r", "b")]) == [
        (("r", "a"), 1)]
    # a worker adopted from an earlier supervisor (threads unknown) may hold every core
    assert sup(4, 4, running={("r", "t"): None})._share_cores([("r", "a")]) == []
    # a fixed ASRLAB_THREADS is what every stage gets
    assert sup(2, 2, fixed=1, running={("r", "t"): 1})._share_cores([("r", "a")]) == [
        (("r", "a"), 1)]


def test_a_ready_evaluation_goes_ahead_of_the_next_training_stage():
    s = sup(2, 1)
    s.runs = {"r": {"created": 0, "executor": "local", "sweep_id": None, "reuse": False}}
    names = [("teacher", "train", "done", []), ("student", "distill", "queued", ["teacher"]),
             ("pruned", "prune_l0", "queued", ["teacher"]),
             ("eval-teacher", "evaluate", "queued", ["teacher"])]
    s.stages = {("r", n): {"kind": k, "state": st, "deps": d, "stage_hash": n, "reused_from": None}
                for n, k, st, d in names}
    s.by_run, s.active = {"r": [("r", n) for n, *_ in names]}, {"r"}
    started = []
    s.launch = lambda key, threads=None: started.append((key[1], threads))
    s.schedule()
    assert started == [("eval-teacher", 2)]  # one worker: the result first, on every core
    s.workers = 2
    started.clear()
    s.schedule()
    assert started == [("eval-teacher", 1), ("student", 1)]  # then training, in file order


def test_the_training_stage_heading_the_longest_chain_starts_first():
    """A sweep's serial chain (s1 -> s2 -> s3) starts before lone arms, wherever the file puts
    it, so it does not start last and set the sweep's end alone; equal chains keep file order."""
    s = sup(2, 1)
    s.runs = {r: {"created": i, "executor": "local", "sweep_id": None, "reuse": False}
              for i, r in enumerate(("a", "b"))}
    names = {"a": [("teacher", "train", "done", []), ("lone", "prune_l0", "queued", ["teacher"]),
                   ("eval-lone", "evaluate", "queued", ["lone"])],
             "b": [("teacher", "train", "done", []), ("other", "distill", "queued", ["teacher"]),
                   ("s1", "distill", "queued", ["teacher"]), ("s2", "distill", "queued", ["s1"]),
                   ("eval-s2", "evaluate", "queued", ["s2"]), ("s3", "distill", "queued", ["s2"])]}
    s.stages = {(r, n): {"kind": k, "state": st, "deps": d, "stage_hash": r + n,
                         "reused_from": None}
                for r, rows in names.items() for n, k, st, d in rows}
    s.by_run = {r: [(r, n) for n, *_ in rows] for r, rows in names.items()}
    s.active = {"a", "b"}
    assert s._chain(("b", "s1")) == 3 and s._chain(("b", "s2")) == 2
    assert s._chain(("a", "lone")) == 1 and s._chain(("b", "other")) == 1
    started = []
    s.launch = lambda key, threads=None: started.append(key)
    s.schedule()
    assert started == [("b", "s1")]
    s.workers, s.cores, started[:] = 3, 3, []
    s.schedule()  # then the lone arms, run a's before run b's
    assert started == [("b", "s1"), ("a", "lone"), ("b", "other")]


def test_an_adopted_worker_keeps_the_cores_it_was_launched_with():
    """After a supervisor restart, a worker's ASRLAB_THREADS says how many cores it holds, so the
    next stage starts on the cores left instead of waiting for every adopted worker to end."""
    import subprocess
    import sys

    from engine.runner.supervisor import _worker_threads

    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "ASRLAB_THREADS": "1"})
    try:
        assert proc.stdout.readline() == b"up\n"  # it runs: its environment is its own
        assert _worker_threads(proc.pid) == 1
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    assert _worker_threads(proc.pid) is None  # gone: unknown, so it may hold every core
    assert sup(2, 2, running={("r", "t"): 1})._share_cores([("r", "a")]) == [(("r", "a"), 1)]


@pytest.fixture()
def lab(tmp_path, monkeypatch, tiny):
    home = tmp_path / "lab"
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    monkeypatch.delenv("ASRLAB_WORKERS", raising=False)
    monkeypatch.delenv("ASRLAB_THREADS", raising=False)
    lab = testing.Lab(home, tiny, tmp_path)
    yield lab
    lab.shutdown()


def test_two_stages_ready_at_once_run_side_by_side_on_the_cores(lab, tmp_path):
    exp = tomllib.loads(lab.experiment(steps=6).read_text())
    train = next(s for s in exp["stages"] if s["kind"] == "train")
    exp["stages"] = [train, {**train, "name": "twin"}]  # neither waits for the other
    path = tmp_path / "two.toml"
    path.write_text(to_toml(exp))
    run_id = json.loads(lab.cli("run", str(path), "--json"))["run_id"]
    assert lab.wait(run_id)["state"] == "done", lab.status(run_id)
    log = (lab.home / "supervisor.log").read_text()
    started = dict(re.findall(rf"{run_id}/(\w+): started \(pid \d+, attempt 1, (\d+) thread", log))
    cores = os.cpu_count() or 2
    assert set(started) == {train["name"], "twin"}, log
    if cores >= 2:  # both started together, each on half the cores
        assert sorted(int(t) for t in started.values()) == [cores // 2, cores - cores // 2], log
