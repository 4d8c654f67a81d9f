"""What the CLI (and later the explorer) does with the engine, without ever writing the store:
start or find the supervisor, drop commands into its queue folder, and read the store with
short read-only connections."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from engine.locks import try_lock
from engine.runner.supervisor import lab_paths
from engine.store import loads, read

STATES = ("queued", "running", "done", "failed", "cancelled", "skipped")


class EngineError(RuntimeError):
    """Something the user can fix: no such run, a supervisor that will not start."""


# ----- the supervisor ---------------------------------------------------------------------------
def supervisor_info(home: Path) -> dict:
    p = lab_paths(home)
    fd = try_lock(p["lock"])
    running = fd is None
    if fd is not None:
        os.close(fd)
    info = {}
    if p["info"].exists():
        try:
            info = json.loads(p["info"].read_text())
        except ValueError:
            info = {}
    return {"pid": info.get("pid") if running else None, "running": running,
            "home": str(Path(home).resolve()), "started": info.get("started") if running else None,
            "workers": info.get("workers"), "log": str(p["log"]),
            "ready": bool(info.get("ready")) if running else False}


def start_supervisor(home: Path, timeout: float = 30.0, ready: bool = False) -> dict:
    """Start the supervisor unless one runs. ``ready``: when this call starts it, wait too until
    it has taken stock (workers that ended while no supervisor watched them marked failed, the
    spools caught up, all of it in the store), so that what the caller reads next is current."""
    info = supervisor_info(home)
    if info["running"] and (info["ready"] or not ready):
        return info
    if info["running"]:  # started a moment ago, by another command: wait for it to be ready
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and info["running"] and not info["ready"]:
            time.sleep(0.1)
            info = supervisor_info(home)
        if info["running"]:  # ready, or older code that never says so: go on with it
            return info
    p = lab_paths(home)
    p["home"].mkdir(parents=True, exist_ok=True)
    p["info"].unlink(missing_ok=True)
    with open(p["log"], "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "engine.runner.supervisor"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "ASRLAB_HOME": str(p["home"])},
                                start_new_session=True)
    # a long-lived caller (the explorer) reaps it when it ends, leaving no zombie
    threading.Thread(target=proc.wait, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = supervisor_info(home)
        if info["running"] and info["pid"] and (info["ready"] or not ready):
            return info
        time.sleep(0.1)
    what = "take stock of the lab" if info["running"] else "start"
    raise EngineError(f"the supervisor did not {what} within {timeout:.0f} s; see {p['log']}")


def stop_supervisor(home: Path, timeout: float = 30.0) -> dict:
    info = supervisor_info(home)
    if not info["running"]:
        return info
    send(home, "stop")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and supervisor_info(home)["running"]:
        time.sleep(0.1)
    return supervisor_info(home)


def send(home: Path, op: str, **fields) -> Path:
    """Queue a command for the supervisor (written whole, then renamed into the queue)."""
    folder = lab_paths(home)["commands"]
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{op}.json"
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps({"op": op, "sent": time.time(), **fields}))
    os.replace(tmp, folder / name)
    return folder / name


def _check_address(address: str) -> None:
    """A Ray address that nothing answers at fails now, not in the supervisor (whose
    ``ray.init`` would wait a minute for it)."""
    import socket

    from engine.config import ConfigError

    hostport = address.split("://", 1)[-1]
    if address == "auto" or ":" not in hostport:
        return
    host, port = hostport.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError) as e:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({e}); start one "
                          f"with `ray start --head` or leave --address out for a local Ray"
                          ) from None


def submit(home: Path, data: dict, source: str, grids: list[str] | tuple = (),
           executor: str = "local", reuse: bool = False, address: str | None = None,
           storage: Path | None = None) -> list[dict]:
    """Validate an experiment (plain data, as read from TOML or built by the explorer's form),
    expand its sweep grid, prepare one run folder per combination and queue them; returns the
    run records. Raises ``ConfigError`` naming ``source`` and the field at fault."""
    from engine.runner.graph import expand_grid, new_run_id, parse_grid, prepare_run
    from engine.stages import check_data, resolve_corpus

    from engine.config import ConfigError

    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor {executor!r}: expected local or ray")
    if executor == "local" and (address or storage):
        raise ConfigError("--address and --storage are for --executor ray")
    if storage and not Path(storage).is_dir():
        raise ConfigError(f"--storage {storage}: no such folder (it must exist and be "
                          f"reachable from every node)")
    if address:
        _check_address(address)
    combos = expand_grid(data, parse_grid(list(grids)), source)
    for _, exp in combos:
        for st in exp.stages:
            if getattr(st, "nnodes", 1) > 1 and executor != "ray":
                raise ConfigError(f"{source}: stage {st.name!r}: nnodes = {st.nnodes} needs "
                                  f"--executor ray (the local pool has one node)")
    from engine import devices

    notes: list[str] = []
    for _, exp in combos:  # a device this machine (or the stage's Ray node) lacks fails now
        if executor == "ray":
            from engine.runner.ray_executor import stage_resources

            found = devices.check_experiment(exp, source,
                                             lambda st: stage_resources(exp, st)["gpus"])
        else:
            found = devices.check_experiment(exp, source)
        notes += [n for n in found if n not in notes]
    for i, (assignment, exp) in enumerate(combos):
        if not exp.data.corpus.startswith("builtin:"):
            # a missing folder fails now, not in a worker; a relative one means here
            d = exp.data.model_copy(update={"corpus": str(resolve_corpus(exp.data.corpus))})
            combos[i] = (assignment, exp.model_copy(update={"data": d}))
        check_data(combos[i][1], source)  # a split the corpus lacks fails now, not in a stage
    sweep = new_run_id(f"sweep-{combos[0][1].name}") if grids else None
    runs = [prepare_run(exp, lab_paths(home)["runs"], source, sweep, assignment, executor, reuse,
                        address, storage) for assignment, exp in combos]
    start_supervisor(home)
    for rec in runs:
        send(home, "submit", run_dir=rec["run_dir"])
        rec["notes"] = notes  # for the user, e.g. a stage that will run on the CPU
    return runs


# ----- reading ----------------------------------------------------------------------------------
def run_state(states: list[str], waiting: bool = False) -> str:
    """One word for a run from its stages' states. ``waiting``: a queued stage of it can still
    run (none of its inputs failed, was cancelled or skipped), so the run is not over even if
    another stage failed or was cancelled: it reads running while it waits for a free slot."""
    if "running" in states:
        return "running"
    if waiting:
        return "running" if any(s != "queued" for s in states) else "queued"
    if "failed" in states:
        return "failed"
    if "cancelled" in states:
        return "cancelled"
    if states and all(s == "done" for s in states):
        return "done"
    return "running" if "done" in states else "queued"


def _pending_run(home: Path, run_id: str) -> dict | None:
    """A run submitted but not yet registered by the supervisor: queued, from its folder."""
    f = lab_paths(home)["runs"] / run_id / "run.json"
    if not f.exists():
        return None
    rec = json.loads(f.read_text())
    return {"run_id": run_id, "name": rec["name"], "state": "queued", "sweep_id": rec["sweep_id"],
            "created": rec["created"], "run_dir": rec["run_dir"],
            "stages": [{"name": s["name"], "kind": s["kind"], "state": "queued", "progress": 0.0,
                        "attempt": 0, "executor": rec.get("executor", "local")}
                       for s in rec["stages"]]}


def _blocked(name: str, states: dict[str, str], deps: dict, run_id: str) -> bool:
    """Whether a stage cannot run until `resume`: an input of it (or of its inputs) failed, was
    cancelled or skipped (the supervisor's rule, read from the store)."""
    seen, todo = set(), list(deps.get((run_id, name), []))
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        if states.get(d) in ("failed", "cancelled", "skipped"):
            return True
        todo += deps.get((run_id, d), [])
    return False


def status(home: Path, run_id: str | None = None) -> list[dict]:
    db = lab_paths(home)["db"]
    where, params = ("WHERE r.run_id = ?", [run_id]) if run_id else ("", [])
    rows = read(db, f"""
        SELECT r.run_id, r.name, r.sweep_id, r.created, r.run_dir, r.executor, s.name AS stage,
               s.kind, s.state, s.progress, s.attempt, s.pid, s.error, s.last_metrics,
               s.reused_from, s.started, s.ended, s.deps
        FROM runs r JOIN stages s USING (run_id) {where}
        ORDER BY r.created, s.position""", params)
    runs: dict[str, dict] = {}
    deps: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        run = runs.setdefault(r["run_id"], {
            "run_id": r["run_id"], "name": r["name"], "sweep_id": r["sweep_id"],
            "created": r["created"], "run_dir": r["run_dir"], "stages": []})
        run["stages"].append({
            "name": r["stage"], "kind": r["kind"], "state": r["state"],
            "progress": round(r["progress"] or 0.0, 4), "attempt": r["attempt"],
            "pid": r["pid"], "error": r["error"], "executor": r["executor"] or "local",
            "last_metrics": loads(r["last_metrics"]), "reused_from": r["reused_from"],
            "started": r["started"], "ended": r["ended"]})
        deps[(r["run_id"], r["stage"])] = loads(r["deps"]) or []
    for run in runs.values():
        states = {s["name"]: s["state"] for s in run["stages"]}
        run["state"] = run_state(list(states.values()), any(
            st == "queued" and not _blocked(name, states, deps, run["run_id"])
            for name, st in states.items()))
    if run_id and run_id not in runs:
        pending = _pending_run(home, run_id)
        if pending is None:
            raise EngineError(f"no run {run_id!r} under {lab_paths(home)['home']}")
        return [pending]
    if not run_id:  # runs whose submission the supervisor has not picked up yet
        queue = lab_paths(home)["commands"]
        for f in sorted(queue.glob("*-submit.json")) if queue.exists() else []:
            try:
                rid = Path(json.loads(f.read_text())["run_dir"]).name
            except (ValueError, KeyError, OSError):
                continue
            if rid not in runs and (p := _pending_run(home, rid)):
                runs[rid] = p
    return list(runs.values())


def results(home: Path, run_id: str | None = None) -> list[dict]:
    where, params = ("WHERE e.run_id = ?", [run_id]) if run_id else ("", [])
    rows = read(lab_paths(home)["db"], f"""
        SELECT e.run_id, r.name AS run_name, e.stage, e.split, e.step,
               coalesce(e.model_stage, e.stage) AS model_stage, e.decoding, e.model, e.wer,
               e.wer_lo, e.wer_hi, e.utterances, e.params, e.nonzero_params, e.bytes,
               e.macs_per_second, e.rtf
        FROM evals e JOIN runs r USING (run_id) {where}
        ORDER BY r.created, e.stage, e.step, e.split""", params)
    old = superseded(home, {r["run_id"] for r in rows})
    for r in rows:
        r["wer_ci"] = [r.pop("wer_lo"), r.pop("wer_hi")]
        r["superseded"] = (r["run_id"], r["stage"]) in old or (r["run_id"], r["model_stage"]) in old
    return rows


def superseded(home: Path, run_ids: set[str] | None = None) -> set[tuple[str, str]]:
    """(run_id, stage) of the stages (of ``run_ids``, default every run) that the current code
    would not compute as they were computed: an older recipe, beam search or export format
    (``engine.runner.graph.superseded_stages``). Their results stay, marked."""
    if run_ids is not None and not run_ids:
        return set()
    where, params = ("WHERE r.run_id IN (SELECT unnest(?))", [sorted(run_ids)]) \
        if run_ids is not None else ("", [])
    rows = read(lab_paths(home)["db"], f"""
        SELECT r.run_id, any_value(r.config) AS config, list(s.name) AS names,
               list(s.stage_hash) AS hashes
        FROM runs r JOIN stages s USING (run_id) {where} GROUP BY r.run_id""", params)
    return {(r["run_id"], name) for r in rows
            for name in _superseded(r["config"], tuple(zip(r["names"], r["hashes"])))}


@functools.lru_cache(maxsize=4096)
def _superseded(config: str | None, stored: tuple) -> frozenset[str]:
    # a pure function of a run's config and stored identities (no connection is cached): a
    # long-lived caller (the explorer) parses and hashes only runs it has not seen in this form
    from engine.runner.graph import superseded_stages

    return frozenset(superseded_stages(config, dict(stored)))


def log_files(home: Path, run_id: str, stage: str | None = None) -> list[Path]:
    run_dir = lab_paths(home)["runs"] / run_id
    if not run_dir.exists():
        raise EngineError(f"no run {run_id!r} under {lab_paths(home)['home']}")
    known = [s["name"] for s in json.loads((run_dir / "run.json").read_text())["stages"]]
    if stage and stage not in known:
        raise EngineError(f"run {run_id} has no stage {stage!r}; its stages: {', '.join(known)}")
    return [run_dir / "logs" / f"{n}.log" for n in ([stage] if stage else known)]
