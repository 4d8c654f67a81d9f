"""The engine with real processes: a real supervisor, real stage workers, a real DuckDB file.

Every test gets its own ASRLAB_HOME; runs train the tiny preset on the session's tiny corpus.
Faults are real too: ``kill -9`` of a worker and of the supervisor, a reader holding the store,
a malformed spool line, a stage folder that cannot be written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from engine import testing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def lab(tmp_path, monkeypatch, tiny):
    home = tmp_path / "lab"
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    monkeypatch.setenv("ASRLAB_WORKERS", "1")
    monkeypatch.setenv("ASRLAB_THREADS", "1")
    lab = testing.Lab(home, tiny, tmp_path)
    yield lab
    lab.shutdown()


def test_a_run_goes_through_the_supervisor_and_lands_in_the_store(lab):
    exp = lab.experiment(steps=30)
    out = lab.cli("run", str(exp), "--json")
    run_id = json.loads(out)["run_id"]
    # at once, before the supervisor has done anything much, the run is known
    st = json.loads(lab.cli("status", run_id, "--json"))
    assert st["run_id"] == run_id and st["state"] in ("queued", "running")
    st = lab.wait(run_id)
    assert st["state"] == "done", st
    assert [(s["name"], s["kind"], s["state"], s["progress"]) for s in st["stages"]] == [
        ("model", "train", "done", 1.0), ("export", "export", "done", 1.0),
        ("eval", "evaluate", "done", 1.0)]
    sup = json.loads(lab.cli("supervisor", "status", "--json"))
    assert sup["running"] is True and isinstance(sup["pid"], int)

    rows = json.loads(lab.cli("results", "--json"))
    assert {r["split"] for r in rows} == {"test-clean"}
    r = rows[0]
    for key in ("run_id", "stage", "split", "wer", "wer_ci", "params", "bytes",
                "macs_per_second", "rtf"):
        assert key in r, key
    assert r["run_id"] == run_id and r["stage"] == "eval" and len(r["wer_ci"]) == 2
    export_bytes = (lab.run_dir(run_id) / "export" / "model.pt").stat().st_size
    assert r["bytes"] == export_bytes  # the exported file's size, measured

    # every spooled event is in the store exactly once
    lab.assert_ingested_exactly_once(run_id)
    run = lab.query("SELECT config_hash, git_rev, versions, host, seed FROM runs")[0]
    assert run[0] and run[3] and run[4] == 0 and "torch" in json.loads(run[2])
    hyps = lab.query("SELECT count(*) FROM hyps WHERE run_id = ?", [run_id])[0][0]
    assert hyps == 10
    assert "eval test-clean: WER" in lab.cli("logs", run_id, "eval")


def _training_past_a_checkpoint(lab) -> tuple[str, int]:
    """A run whose model stage has written a checkpoint, and its worker's pid (still training:
    stop it at once, to be mid-stage however fast it trains)."""
    exp = lab.experiment(steps=160, checkpoint_every=20)
    run_id = json.loads(lab.cli("run", str(exp), "--json"))["run_id"]
    ckpts = lab.run_dir(run_id) / "model" / "checkpoints"
    lab.wait_for(lambda: lab.stage(run_id, "model")["pid"], "training to start")
    pid = lab.stage(run_id, "model")["pid"]
    lab.wait_for(lambda: any(ckpts.glob("step-*.pt")), "a first checkpoint")
    return run_id, pid


def test_a_killed_worker_fails_its_stage_and_resume_continues_from_the_checkpoint(lab):
    run_id, pid = _training_past_a_checkpoint(lab)
    os.kill(pid, signal.SIGSTOP)
    assert testing.is_worker(pid, run_id)
    os.kill(pid, signal.SIGKILL)
    st = lab.wait(run_id)
    model = next(s for s in st["stages"] if s["name"] == "model")
    assert st["state"] == "failed" and model["state"] == "failed"
    assert "SIGKILL" in model["error"], model["error"]
    # the stages after it are not left queued for ever: skipped, naming why (the run has ended)
    lab.wait_for(lambda: [s["state"] for s in lab.status(run_id)["stages"][1:]]
                 == ["skipped", "skipped"], "the stages after the failed one to be skipped")
    later = lab.status(run_id)["stages"][1:]
    assert all("not run: its input" in s["error"] for s in later), later

    lab.cli("resume", run_id)
    st = lab.wait(run_id)
    assert st["state"] == "done", st
    assert lab.stage(run_id, "model")["attempt"] == 2
    log = lab.cli("logs", run_id, "model")
    assert "resumed from" in log and "step-000000" in log
    steps = [r[0] for r in lab.query("SELECT step FROM metrics WHERE run_id = ? ORDER BY step",
                                     [run_id])]
    assert steps == list(range(5, 161, 5))  # every logged step once, redone ones replaced
    lab.assert_ingested_exactly_once(run_id)


def test_a_killed_supervisor_loses_nothing_and_its_successor_adopts_the_worker(lab):
    exp = lab.experiment(steps=120)
    run_id = json.loads(lab.cli("run", str(exp), "--json"))["run_id"]
    lab.wait_for(lambda: lab.stage(run_id, "model")["pid"], "training to start")
    worker = lab.stage(run_id, "model")["pid"]
    lab.wait_for(lambda: (lab.run_dir(run_id) / "model" / "metrics.jsonl").exists(), "training")
    # frozen (its whole session) while the supervisor dies: a tiny stage can otherwise finish
    # before the supervisor is gone, and then nothing is left to spool on (seen on a loaded CI)
    os.killpg(worker, signal.SIGSTOP)
    try:
        sup = json.loads(lab.cli("supervisor", "status", "--json"))["pid"]
        os.kill(sup, signal.SIGKILL)
        lab.wait_for(lambda: not json.loads(lab.cli("supervisor", "status", "--json"))["running"],
                     "the supervisor to die")
        assert _alive(worker)  # the supervisor's death did not take its worker with it
        spool = lab.run_dir(run_id) / "spool" / "model.jsonl"
        size = spool.stat().st_size
    finally:
        os.killpg(worker, signal.SIGCONT)
    lab.wait_for(lambda: spool.stat().st_size > size, "the worker to spool on, unsupervised")
    lab.cli("supervisor", "start")
    st = lab.wait(run_id)
    assert st["state"] == "done", st
    assert lab.stage(run_id, "model")["attempt"] == 1  # adopted, not restarted
    lab.assert_ingested_exactly_once(run_id)


def test_resume_after_a_crash_that_took_the_supervisor_and_its_worker(lab):
    """A reboot: supervisor and worker gone at once, the store still saying "running". `asrlab
    resume` starts a supervisor, which marks the stage failed, and then resumes it."""
    run_id, worker = _training_past_a_checkpoint(lab)
    os.killpg(worker, signal.SIGSTOP)
    assert testing.is_worker(worker, run_id)
    sup = json.loads(lab.cli("supervisor", "status", "--json"))["pid"]
    os.kill(sup, signal.SIGKILL)
    lab.wait_for(lambda: not json.loads(lab.cli("supervisor", "status", "--json"))["running"],
                 "the supervisor to die")
    os.killpg(worker, signal.SIGKILL)
    from engine.runner.supervisor import _pid_alive  # a zombie left unreaped counts as dead

    lab.wait_for(lambda: not _pid_alive(worker), "the worker to die")
    assert lab.stage(run_id, "model")["state"] == "running"  # nobody told the store
    assert "no supervisor is running, so nothing above moves" in lab.cli("status", run_id)

    out = lab.cli("resume", run_id, timeout=300)  # beyond its own wait for the supervisor
    assert "model" in out, out
    st = lab.wait(run_id)
    assert st["state"] == "done", st
    assert lab.stage(run_id, "model")["attempt"] == 2
    assert "resumed from" in lab.cli("logs", run_id, "model")
    lab.assert_ingested_exactly_once(run_id)


def test_a_reader_holding_the_store_delays_the_supervisor_and_loses_nothing(lab):
    exp = lab.experiment(steps=60)
    run_id = json.loads(lab.cli("run", str(exp), "--json"))["run_id"]
    lab.wait_for(lambda: lab.stage(run_id, "model")["state"] == "running", "training")
    con = testing.retry(lambda: duckdb.connect(str(lab.db), read_only=True))  # will not let go
    # held until the supervisor has met it (a fixed few seconds missed it on a loaded machine,
    # where the worker logged nothing in that time)
    lab.wait_for(lambda: "store busy" in (lab.home / "supervisor.log").read_text(),
                 "the supervisor finding the store busy", timeout=120)
    time.sleep(2)
    con.close()
    st = lab.wait(run_id)
    assert st["state"] == "done"
    lab.assert_ingested_exactly_once(run_id)


def test_cancel_stops_the_stage_and_resume_finishes_the_run(lab):
    exp = lab.experiment(steps=150, checkpoint_every=20)  # still training when cancelled
    run_id = json.loads(lab.cli("run", str(exp), "--json"))["run_id"]
    lab.wait_for(lambda: lab.stage(run_id, "model")["state"] == "running"
                 and lab.stage(run_id, "model")["pid"], "training")
    lab.cancel_while_paused(lab.stage(run_id, "model")["pid"], run_id)
    st = lab.wait(run_id)
    assert st["state"] == "cancelled"
    assert [s["state"] for s in st["stages"]] == ["cancelled"] * 3
    lab.cli("resume", run_id)
    assert lab.wait(run_id)["state"] == "done"


def test_bad_input_gets_a_clear_message_and_other_runs_go_on(lab):
    bad = lab.tmp / "bad.toml"
    bad.write_text("name = 'x'\n[[stages]\nkind = 'train'\n")
    r = lab.cli("run", str(bad), check=False)
    assert r.returncode == 2 and "bad.toml: invalid TOML" in r.stderr and "Traceback" not in r.stderr
    bad.write_text("name = 'x'\n[[stages]]\nkind = 'prun'\nname = 'p'\n")
    r = lab.cli("run", str(bad), check=False)
    assert r.returncode == 2 and "stages[0].kind: unknown stage kind 'prun'" in r.stderr
    r = lab.cli("sweep", str(lab.experiment()), "--grid", "stages.nope.model.preset=tiny",
                check=False)
    assert r.returncode == 2 and "no stage named 'nope'" in r.stderr
    r = lab.cli("status", "no-such-run", check=False)
    assert r.returncode == 2 and "no run 'no-such-run'" in r.stderr

    # a stage whose folder cannot be written fails with the path; the next run goes on
    from engine.config import load_experiment
    from engine.runner.client import send, start_supervisor
    from engine.runner.graph import prepare_run

    rec = prepare_run(load_experiment(lab.experiment(steps=10)), lab.home / "runs")
    (Path(rec["run_dir"]) / "model").write_text("a file where the stage folder goes")
    start_supervisor(lab.home)
    send(lab.home, "submit", run_dir=rec["run_dir"])
    good = json.loads(lab.cli("run", str(lab.experiment(steps=200)), "--json"))["run_id"]
    st = lab.wait(rec["run_id"])
    model = st["stages"][0]
    assert model["state"] == "failed" and str(Path(rec["run_dir"]) / "model") in model["error"]
    # a malformed line in a running stage's spool is reported and skipped; the rest goes in
    lab.wait_for(lambda: lab.stage(good, "model")["state"] == "running", "the next run")
    with open(lab.run_dir(good) / "spool" / "model.jsonl", "a") as f:
        f.write("{this is not json\n")
    st = lab.wait(good)
    assert st["state"] == "done", ([(s["name"], s["state"], s["error"]) for s in st["stages"]],
                                   lab.cli("logs", good, check=False).stdout[-3000:])
    lab.wait_for(lambda: lab.query("SELECT count(*) FROM ingest_errors")[0][0] == 1,
                 "the malformed line to be reported")
    assert "malformed spool line" in lab.query("SELECT error FROM ingest_errors")[0][0]
    lab.assert_ingested_exactly_once(good)


def test_a_sweep_computes_identical_stages_once(lab):
    exp = lab.experiment(steps=20)
    out = json.loads(lab.cli("sweep", str(exp), "--grid", "stages.eval.max_utterances=4,6",
                             "--json"))
    assert len(out["run_ids"]) == 2
    states = [lab.wait(r) for r in out["run_ids"]]
    assert all(s["state"] == "done" for s in states)
    trains = [s["stages"][0] for s in states]
    reused = [t["reused_from"] for t in trains]
    assert reused.count(None) == 1, reused  # one trained, the other took its model
    n = {r["run_id"]: r for r in json.loads(lab.cli("results", "--json"))}
    assert sorted(lab.query("SELECT utterances FROM evals ORDER BY utterances")) == [(4,), (6,)]
    assert set(n) == set(out["run_ids"])


def test_reuse_takes_a_finished_stage_of_an_earlier_run_and_only_with_reuse(lab):
    exp = lab.experiment(steps=20)
    first = json.loads(lab.cli("run", str(exp), "--json"))["run_id"]
    assert lab.wait(first)["state"] == "done"
    plain = json.loads(lab.cli("run", str(exp), "--json"))["run_id"]
    again = json.loads(lab.cli("run", str(exp), "--reuse", "--json"))["run_id"]
    s_plain, s_again = lab.wait(plain), lab.wait(again)
    assert s_plain["state"] == s_again["state"] == "done"
    assert all(s["reused_from"] is None for s in s_plain["stages"])  # a plain run recomputes
    reused = {s["name"]: s["reused_from"] for s in s_again["stages"]}
    assert all(r is not None and r.split("/")[0] in (first, plain) for r in reused.values()), reused
    # nothing ran for it: no stage worker wrote a log, and each stage's outputs are its twin's
    logs = lab.run_dir(again) / "logs"
    assert not logs.exists() or not any(logs.iterdir())
    outputs = dict(lab.query("SELECT name, outputs FROM stages WHERE run_id = ?", [again]))
    twins = dict(lab.query("SELECT name, outputs FROM stages WHERE run_id = ?",
                           [reused["model"].split("/")[0]]))
    assert outputs["model"] == twins["model"] and "model.pt" in outputs["model"]
    # the compression table of the reusing run finds its evaluations under the twin's run
    table = json.loads(lab.cli("summary", again, "--json"))
    twin = json.loads(lab.cli("summary", reused["eval"].split("/")[0], "--json"))
    assert [r["model"] for r in table["rows"]] == ["model"] and table["reference"] == "model"
    assert table["rows"][0]["splits"] == twin["rows"][0]["splits"]
    assert table["rows"][0]["splits"]["test-clean"]["utterances"] == 10
    # its Pareto link names the run that computed the models it shows
    assert table["pareto_url"].endswith(f"runs={reused['eval'].split('/')[0]}")
    assert "/pareto?" in table["pareto_url"]


def test_grid_expansion_validates_every_combination():
    from engine.config import ConfigError
    from engine.runner.graph import expand_grid, parse_grid

    data = {"name": "x", "stages": [{"kind": "train", "name": "m"},
                                    {"kind": "evaluate", "name": "e", "model": "m"}]}
    runs = expand_grid(data, parse_grid(["stages.m.model.preset=tiny,student-s", "seed=1,2"]), "x")
    assert [(a["stages.m.model.preset"], e.seed) for a, e in runs] == [
        ("tiny", 1), ("tiny", 2), ("student-s", 1), ("student-s", 2)]
    assert runs[2][1].stages[0].model.preset == "student-s"
    with pytest.raises(ConfigError, match=r"stages\[0\].model.preset"):
        expand_grid(data, parse_grid(["stages.m.model.preset=huge"]), "x")
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        parse_grid(["seed"])


def test_a_run_with_a_stage_that_can_still_run_reads_running():
    """A cancelled (or failed) branch does not end a run whose other branch waits for a slot:
    `asrlab status` showed a live run as "cancelled" after `cancel --stage` of a side arm, while
    the supervisor went on to run its queued chain."""
    from engine.runner.client import _blocked, run_state

    deps = {("r", "model"): [], ("r", "export"): ["model"], ("r", "eval"): ["export"],
            ("r", "share"): ["model"], ("r", "share-eval"): ["share"]}
    states = {"model": "done", "export": "done", "eval": "queued", "share": "cancelled",
              "share-eval": "queued"}
    assert not _blocked("eval", states, deps, "r")
    assert _blocked("share-eval", states, deps, "r")  # behind the cancelled stage
    waiting = lambda: any(st == "queued" and not _blocked(n, states, deps, "r")  # noqa: E731
                          for n, st in states.items())
    assert run_state(list(states.values()), waiting()) == "running"
    states["eval"] = "done"  # nothing left that can run: the cancelled branch ends the run
    assert run_state(list(states.values()), waiting()) == "cancelled"
    states.update(share="failed", eval="queued")
    assert run_state(list(states.values()), waiting()) == "running"
    states.update(eval="done")
    assert run_state(list(states.values()), waiting()) == "failed"
    assert run_state(["queued", "queued"], True) == "queued"
    assert run_state(["done", "done"]) == "done"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_commands_say_what_is_true_and_fail_where_nothing_matched(lab, tmp_path):
    exp = lab.experiment(steps=4)
    run_id = json.loads(lab.cli("run", str(exp), "--json"))["run_id"]
    assert lab.wait(run_id)["state"] == "done"
    for op in ("cancel", "resume"):  # a finished run: nothing to do, and it says so
        p = lab.cli(op, run_id, check=False)
        assert p.returncode != 0 and f"nothing to {op} in run {run_id}" in p.stderr, p.stderr
        assert "model done" in p.stderr
    p = lab.cli("logs", run_id, "nosuch", check=False)
    assert p.returncode != 0 and "has no stage 'nosuch'; its stages: model" in p.stderr
    p = lab.cli("results", "nosuch-run", check=False)
    assert p.returncode != 0 and "no run 'nosuch-run'" in p.stderr
    # another folder, no ASRLAB_HOME: the lab it looked in is named, and none is created there
    env = {k: v for k, v in os.environ.items() if k != "ASRLAB_HOME"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = subprocess.run([sys.executable, "-m", "engine.cli", "status"], cwd=elsewhere, env=env,
                       capture_output=True, text=True)
    assert p.returncode != 0 and f"no lab at {elsewhere / 'lab'}" in p.stderr, p.stderr
    assert not (elsewhere / "lab").exists()
