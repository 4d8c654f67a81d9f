"""The supervisor: the one process that writes the store and starts stage workers.

``python -m engine.runner.supervisor`` (``asrlab supervisor start`` runs it in the background).
Under ``ASRLAB_HOME`` it holds ``supervisor.lock`` for its lifetime (one supervisor per lab), and
loops, a few times a second:

1. **commands**: ``commands/*.json`` files written by the CLI or the explorer (submit, cancel,
   resume, stop); a command file is deleted only after the flush that records its effect, so a
   supervisor killed in between redoes it (every command is idempotent);
2. **workers**: notices workers that ended (a ``kill -9`` shows as a signal);
3. **spools**: reads every active run's spools from the committed offsets and applies the events;
4. **scheduling**: starts queued stages whose inputs are done, at most ``workers`` at once; a stage
   whose identity matches a finished stage of another run in the same sweep reuses its outputs;
5. **flush**: about twice a second, one transaction of events, stage states and spool offsets;
   the file is closed in between so readers get their window. A flush that finds a reader
   holding the file keeps everything in memory and tries again.

Workers run in their own sessions: stopping or killing the supervisor does not stop them. A new
supervisor finds them by pid, ingests what they spooled meanwhile, and watches them to the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from engine.locks import try_lock
from engine.runner.spool import SpoolWriter, read_new
from engine.store import Writer, is_lock_error

TERMINAL = ("done", "failed", "cancelled", "skipped")
RESULT_KINDS = ("export", "evaluate")  # minutes, not hours: they go first
CANCEL_GRACE_S = 15.0
TICK_S = 0.2
RAY_MISSES = 5  # polls in a row without an answer before the Ray stages count as lost
FLUSH_EVERY_S = 0.5


def lab_paths(home: Path) -> dict[str, Path]:
    home = Path(home)
    return {"home": home, "db": home / "lab.duckdb", "runs": home / "runs",
            "commands": home / "commands", "lock": home / "supervisor.lock",
            "info": home / "supervisor.json", "log": home / "supervisor.log"}


def default_workers() -> int:
    """Stages at once: one per core (threads then follow the free cores, ``Supervisor.
    schedule``), or with a fixed ``ASRLAB_THREADS`` as many as fit; at least one."""
    env = os.environ.get("ASRLAB_WORKERS")
    if env:
        return max(1, int(env))
    fixed = int(os.environ.get("ASRLAB_THREADS") or 0)
    return max(1, (os.cpu_count() or 2) // max(fixed, 1))


def signal_name(code: int) -> str:
    try:
        return f"{signal.Signals(code).name} ({code})"
    except ValueError:
        return str(code)


def _run_extras(run_dir: str) -> dict:
    """What a run's run.json keeps beside the store: ``--reuse`` and the Ray address."""
    try:
        rec = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        rec = {}
    return {"reuse": bool(rec.get("reuse")), "ray_address": rec.get("ray_address")}


class RayTask:
    """A stage handed to the Ray executor (``procs`` holds it in place of a local process)."""

    def __repr__(self) -> str:
        return "RayTask()"


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _worker_threads(pid: int) -> int | None:
    """The torch threads a worker was launched with (its ASRLAB_THREADS), None when unreadable."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"ASRLAB_THREADS="):
            value = item.split(b"=", 1)[1]
            return int(value) if value.isdigit() and int(value) > 0 else None
    return None


def _is_our_worker(pid: int, run_dir: str, stage: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"engine.runner.worker" in cmd and run_dir.encode() in cmd and stage.encode() in cmd


class Supervisor:
    def __init__(self, home: Path, workers: int | None = None) -> None:
        self.paths = lab_paths(Path(home).resolve())
        self.workers = workers or default_workers()
        # ASRLAB_THREADS fixes each stage's torch threads; unset, a stage gets the cores free
        # when it starts, shared with the stages that start beside it: one stage alone trains on
        # every core, two ready together on one each (measured on 2 cores: side by side trains
        # 1.5x the audio per second of one at a time; benchmarks/bench_threads.py), and a stage
        # that would find no free core waits (oversubscribed OpenMP threads spin)
        self.cores = os.cpu_count() or 2
        self.fixed_threads = int(os.environ.get("ASRLAB_THREADS") or 0)
        self.threads = self.fixed_threads or max(1, self.cores // self.workers)
        self.proc_threads: dict[tuple[str, str], int] = {}  # its threads, when known
        self.writer = Writer(self.paths["db"])
        self.runs: dict[str, dict] = {}
        self.stages: dict[tuple[str, str], dict] = {}
        self.by_run: dict[str, list[tuple[str, str]]] = {}  # run -> its stages, in order
        self.procs: dict[tuple[str, str], subprocess.Popen | int] = {}
        self.cancel_at: dict[tuple[str, str], float] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.done_commands: list[Path] = []
        self.active: set[str] = set()
        self.offsets: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # lines ingested per spool, committed with the offset
        self.resume_after: set[tuple[str, str]] = set()
        self.started = time.time()
        self.stop = False
        self.last_flush = 0.0
        self.flush_delay = FLUSH_EVERY_S
        self.ray = None  # engine.runner.ray_executor.RayExecutor, on the first Ray stage
        self.ray_misses = 0  # polls in a row that Ray did not answer
        self.info: dict = {}  # what main() wrote to supervisor.json; "ready" is added once

    # ----- start-up ----------------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild the in-memory state from the store, then catch up with the spools."""
        w = self.writer
        cols = ("run_id", "name", "sweep_id", "run_dir", "created", "executor")
        for r in w.query(f"SELECT {', '.join(cols)} FROM runs"):
            self.runs[r[0]] = dict(zip(cols, r))
        scols = ("run_id", "name", "kind", "position", "deps", "stage_hash", "state", "progress",
                 "pid", "attempt", "started", "ended", "error", "outputs", "last_metrics",
                 "reused_from")
        for r in w.query(f"SELECT {', '.join(scols)} FROM stages"):
            st = dict(zip(scols, r))
            st["deps"] = json.loads(st["deps"] or "[]")
            self.stages[(st["run_id"], st["name"])] = st
            self.by_run.setdefault(st["run_id"], []).append((st["run_id"], st["name"]))
        for keys in self.by_run.values():
            keys.sort(key=lambda k: self.stages[k]["position"])
        for run in self.runs.values():
            run.update(_run_extras(run["run_dir"]))
        saved = w.load_offsets()
        self.offsets = {k: o for k, (o, _) in saved.items()}
        self.counts = {k: n for k, (_, n) in saved.items()}
        self.active = set(self.runs)  # every run's spools are read once at start
        self.ingest()  # what workers spooled while no supervisor ran, launches included
        for key, st in self.stages.items():
            if st["state"] == "running":
                run_dir = self.runs[key[0]]["run_dir"]
                ours = st["pid"] and _pid_alive(st["pid"]) and _is_our_worker(
                    st["pid"], run_dir, key[1])
                # adopted and watched by pid; -1: it ended unwatched (reap marks it failed)
                self.procs[key] = st["pid"] if ours else -1
                if ours and (threads := _worker_threads(st["pid"])):
                    self.proc_threads[key] = threads  # the cores it holds, from its launch
        self._adopt_ray()

    def _adopt_ray(self) -> None:
        """Stages a previous supervisor handed to Ray: the lab actor still owns those that run
        (queued ones included: they may wait for a node); the others ended unwatched."""
        keys = [k for k, st in self.stages.items() if st["state"] in ("queued", "running")
                and self.runs[k[0]].get("executor") == "ray" and k[0] in self.active]
        if not keys:
            return
        try:
            ex = self._ray_for(keys[0][0])
            seen = ex.poll(keys)
        except Exception as e:  # noqa: BLE001 - no cluster: every running Ray stage is lost
            self.say(f"cannot reach Ray to adopt its stages: {type(e).__name__}: {e}")
            seen = {}
        for key in keys:
            got = seen.get(f"{key[0]}/{key[1]}", "unknown")
            if got == "running":
                self.procs[key] = RayTask()
            elif self.stages[key]["state"] == "running":
                self.procs[key] = -1

    # ----- commands ----------------------------------------------------------------------------
    def commands(self) -> None:
        folder = self.paths["commands"]
        if not folder.exists():
            return
        for f in sorted(folder.glob("*.json")):
            if f in self.done_commands:
                continue
            try:
                cmd = json.loads(f.read_text())
                if cmd["op"] == "stop":
                    # not replayed: a stop left behind must not end the next supervisor
                    f.unlink(missing_ok=True)
                getattr(self, f"cmd_{cmd['op']}")(cmd)
            except (ValueError, KeyError, AttributeError, OSError) as e:
                self.say(f"ignored command {f.name}: {type(e).__name__}: {e}")
            self.done_commands.append(f)

    def cmd_submit(self, cmd: dict) -> None:
        run_dir = Path(cmd["run_dir"])
        rec = json.loads((run_dir / "run.json").read_text())
        run_id = rec["run_id"]
        if run_id in self.runs:
            return
        exp = (run_dir / "experiment.json").read_text()
        self.runs[run_id] = {k: rec[k] for k in ("run_id", "name", "sweep_id", "run_dir",
                                                  "created", "executor")}
        self.runs[run_id]["reuse"] = bool(rec.get("reuse"))
        self.runs[run_id]["ray_address"] = rec.get("ray_address")
        self.writer.add("runs", {**rec, "config": exp, "versions": json.dumps(rec["versions"])})
        for s in rec["stages"]:
            st = {"run_id": run_id, **s, "state": "queued", "progress": 0.0, "pid": None,
                  "attempt": 0, "started": None, "ended": None, "error": None, "outputs": None,
                  "last_metrics": None, "reused_from": None}
            self.stages[(run_id, s["name"])] = st
            self.by_run.setdefault(run_id, []).append((run_id, s["name"]))
            self.dirty.add((run_id, s["name"]))
        self.active.add(run_id)
        self.say(f"run {run_id} submitted ({len(rec['stages'])} stages)")

    def _picked(self, cmd: dict):
        """The run's stages a command names (``stages``), or all of them."""
        only = set(cmd.get("stages") or [])
        return [(k, st) for k, st in self._run_stages(cmd["run_id"]) if not only or k[1] in only]

    def cmd_cancel(self, cmd: dict) -> None:
        for key, st in self._picked(cmd):
            if st["state"] == "queued" and not isinstance(self.procs.get(key), RayTask):
                self._set(key, state="cancelled", ended=time.time())
            elif st["state"] in ("queued", "running") and key not in self.cancel_at:
                self.cancel_at[key] = time.time()
                self._signal(key, signal.SIGTERM)
        only = cmd.get("stages")
        self.say(f"run {cmd['run_id']} cancelled" + (f" ({', '.join(only)})" if only else ""))

    def cmd_resume(self, cmd: dict) -> None:
        for key, st in self._picked(cmd):
            if st["state"] in ("failed", "cancelled"):
                self._set(key, state="queued", error=None, ended=None)
        for key, st in self._run_stages(cmd["run_id"]):
            if st["state"] == "skipped":  # skipped again at once if its input still is not run
                self._set(key, state="queued", error=None, ended=None)
            elif key in self.cancel_at:
                self.resume_after.add(key)  # still stopping: queue it again once it has
        self.active.add(cmd["run_id"])
        only = cmd.get("stages")
        self.say(f"run {cmd['run_id']} resumed" + (f" ({', '.join(only)})" if only else ""))

    def cmd_stop(self, cmd: dict) -> None:
        if cmd.get("sent", time.time()) >= self.started - 1.0:
            self.stop = True

    def _run_stages(self, run_id: str):
        if run_id not in self.runs:
            raise KeyError(f"no run {run_id!r}")
        return [(k, self.stages[k]) for k in self.by_run.get(run_id, [])]

    # ----- events ------------------------------------------------------------------------------
    def _set(self, key: tuple[str, str], **changes) -> None:
        self.stages[key].update(changes)
        self.dirty.add(key)

    def ingest(self, only: tuple[str, str] | None = None) -> int:
        n = 0
        runs = [only[0]] if only else list(self.active)
        for run_id in runs:
            spool_dir = Path(self.runs[run_id]["run_dir"]) / "spool"
            files = [spool_dir / f"{only[1]}.jsonl"] if only else sorted(spool_dir.glob("*.jsonl"))
            for path in files:
                source = str(path)
                stage = path.stem
                for start, nxt, ev, err in read_new(path, self.offsets.get(source, 0)):
                    if err:
                        self.say(err)
                        self.writer.add("ingest_errors", {"source": source, "offset_": start,
                                                          "error": err, "ts": time.time()})
                    elif (run_id, stage) in self.stages:
                        try:
                            self.apply(run_id, stage, source, start, ev)
                        except (KeyError, TypeError, ValueError, IndexError) as e:
                            err = (f"{path}: byte {start}: unusable {ev.get('type')!r} event "
                                   f"({type(e).__name__}: {e})")
                            self.say(err)
                            self.writer.add("ingest_errors", {"source": source, "offset_": start,
                                                              "error": err, "ts": time.time()})
                    self.offsets[source] = nxt
                    self.counts[source] = self.counts.get(source, 0) + 1
                    self.writer.set_offset(source, nxt, self.counts[source])
                    n += 1
        return n

    def apply(self, run_id: str, stage: str, source: str, offset: int, ev: dict) -> None:
        key, t, ts = (run_id, stage), ev["type"], ev.get("ts", time.time())
        base = {"run_id": run_id, "stage": stage, "ts": ts}
        if t == "state":
            s = ev["state"]
            if s == "running":
                self._set(key, state="running", pid=ev.get("pid"), started=ts,
                          attempt=ev.get("attempt", self.stages[key]["attempt"]), error=None)
                if key not in self.procs:  # launched by a supervisor before this one: watch it
                    pid = int(ev.get("pid") or 0)
                    ours = pid > 0 and _pid_alive(pid) and _is_our_worker(
                        pid, self.runs[run_id]["run_dir"], stage)
                    self.procs[key] = pid if ours else -1
            elif s == "done":
                self._set(key, state="done", progress=1.0, ended=ts,
                          outputs=json.dumps(ev.get("outputs", {})))
            elif s in ("failed", "cancelled"):
                self._set(key, state=s, ended=ts, error=ev.get("error"))
        elif t == "progress":
            self._set(key, progress=min(max(float(ev["progress"]), 0.0), 1.0))
        elif t == "metrics":
            self.writer.add("metrics", {**base, "ts": float(ts), "step": int(ev["step"]),
                                        "data": json.dumps(ev["data"])})
            self._set(key, last_metrics=json.dumps(ev["data"]))
        elif t == "eval":
            s = ev["summary"]
            num = lambda k, cast=float: None if s.get(k) is None else cast(s[k])  # noqa: E731
            self.writer.add("evals", {**base, "split": str(ev["split"]),
                                      "step": int(ev.get("step") or 0),
                                      "model_stage": str(ev.get("model_stage") or stage),
                                      "model": ev.get("model"), "decoding": s.get("decoding"),
                                      "wer": float(s["wer"]), "wer_lo": float(s["wer_ci"][0]),
                                      "wer_hi": float(s["wer_ci"][1]),
                                      "utterances": int(s["utterances"]),
                                      "params": num("params", int),
                                      "nonzero_params": num("nonzero_params", int),
                                      "bytes": num("bytes", int),
                                      "macs_per_second": num("macs_per_second"),
                                      "rtf": num("rtf"), "summary": json.dumps(s),
                                      "runtime": str(s.get("runtime") or "torch")})
        elif t == "hyps":
            step = int(ev.get("step") or 0)
            rows = [{"run_id": run_id, "stage": stage, "split": str(ev["split"]), "step": step,
                     "cut_id": str(u["cut_id"]), "reference": str(u["reference"]),
                     "hypothesis": str(u["hypothesis"]),
                     **{k: int(u[k]) for k in ("ref_words", "substitutions", "deletions",
                                               "insertions")},
                     "audio": None if u.get("audio") is None else str(u["audio"]),
                     **{k: None if u.get(k) is None else float(u[k])
                        for k in ("start", "duration")},
                     "nbest": None if u.get("nbest") is None else json.dumps(u["nbest"])}
                    for u in ev["rows"]]
            for r in rows:  # all checked before any is added
                self.writer.add("hyps", r)
        elif t == "masks":
            step = int(ev["step"])
            rows = [{**base, "ts": float(ts), "step": step, "block": int(m["block"]),
                     "module": str(m["module"]), "unit": str(m["unit"]), "size": int(m["size"]),
                     "kept_fraction": float(m["kept_fraction"]),
                     "kept": None if m.get("kept") is None else json.dumps([int(k) for k in m["kept"]]),
                     "prob": None if m.get("prob") is None else json.dumps([float(p) for p in m["prob"]])}
                    for m in ev["rows"]]
            for r in rows:  # all checked before any is added
                self.writer.add("masks", r)
        elif t == "artifact":
            self.writer.add("artifacts", {"run_id": run_id, "stage": stage, "kind": str(ev["kind"]),
                                          "path": str(ev["path"]),
                                          "bytes": None if ev.get("bytes") is None
                                          else int(ev["bytes"])})
        elif t == "log":
            self.writer.add("logs", {**base, "source": source, "offset_": offset,
                                     "line": str(ev["line"])})

    # ----- workers -----------------------------------------------------------------------------
    def _signal(self, key, sig) -> None:
        p = self.procs.get(key)
        if isinstance(p, RayTask):
            try:  # SIGTERM: the task stops its stage (cancelled); SIGKILL: Ray kills the task
                self.ray.cancel(key, force=sig == signal.SIGKILL)
            except Exception as e:  # noqa: BLE001 - the cluster is gone: reap will see it
                self.say(f"{key[0]}/{key[1]}: cannot cancel the Ray task: {e}")
            return
        pid = p.pid if isinstance(p, subprocess.Popen) else p
        if pid and pid > 0:
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _poll_ray(self) -> dict:
        keys = [k for k, p in self.procs.items() if isinstance(p, RayTask)]
        if not keys:
            return {}
        try:
            got = self.ray.poll(keys)
            self.ray_misses = 0
            return got
        except Exception as e:  # noqa: BLE001 - a slow answer once is no lost cluster
            self.ray_misses += 1
            self.say(f"Ray does not answer ({type(e).__name__}: {e}); "
                     f"{self.ray_misses} of {RAY_MISSES} tries")
            if self.ray_misses < RAY_MISSES:
                return {}
            return {f"{k[0]}/{k[1]}": {"error": f"the Ray cluster stopped answering "
                                                f"({type(e).__name__})"} for k in keys}

    def reap(self) -> None:
        now = time.time()
        ray_done = self._poll_ray()
        for key, p in list(self.procs.items()):
            if isinstance(p, RayTask):
                got = ray_done.get(f"{key[0]}/{key[1]}", "running")
                alive = got == "running"
                if not alive:
                    if got == "unknown":
                        why = ("its Ray task is gone (the cluster restarted?); `asrlab resume "
                               f"{key[0]}` continues from its last checkpoint")
                    elif "error" in got:  # Ray's retries for a lost node used up, or a peer node
                        why = f"its Ray task failed: {got['error']}"
                    elif got.get("cancelled"):
                        why = "cancelled"
                    else:
                        why = (f"worker exited with status {got.get('code')} without reporting; "
                               f"see `asrlab logs {key[0]} {key[1]}`")
            elif isinstance(p, subprocess.Popen):
                code = p.poll()
                if code is None:
                    alive = True
                else:
                    alive = False
                    why = (f"worker killed by signal {signal_name(-code)}" if code < 0 else
                           f"worker exited with status {code} without reporting; see "
                           f"`asrlab logs {key[0]} {key[1]}`")
            else:
                alive = p > 0 and _pid_alive(p)
                why = (f"worker (pid {self.stages[key]['pid']}) ended without reporting while "
                       f"no supervisor watched "
                       f"it; `asrlab resume {key[0]}` continues from its last checkpoint")
            if alive:
                if key in self.cancel_at and now - self.cancel_at[key] > CANCEL_GRACE_S:
                    self._signal(key, signal.SIGKILL)
                continue
            del self.procs[key]
            self.proc_threads.pop(key, None)
            self.ingest(only=key)  # its last words first
            st = self.stages[key]
            if st["state"] == "running" or (st["state"] == "queued" and isinstance(p, RayTask)):
                if key in self.cancel_at or why == "cancelled":
                    self._set(key, state="cancelled", ended=now, error=None)
                else:
                    self._set(key, state="failed", ended=now, error=why)
                    self.say(f"{key[0]}/{key[1]}: {why}")
            self.cancel_at.pop(key, None)
            if key in self.resume_after and self.stages[key]["state"] in ("failed", "cancelled"):
                self._set(key, state="queued", error=None, ended=None)
                self.active.add(key[0])
            self.resume_after.discard(key)

    def schedule(self) -> None:
        # Ray stages wait for a node in Ray's queue, not for one of the local worker slots
        running = sum(not isinstance(p, RayTask) for p in self.procs.values())
        ready = []  # local stages that may start, in order; _share_cores decides
        for run_id in sorted(self.active, key=lambda r: self.runs[r]["created"] or 0):
            stages = self._run_stages(run_id)
            by_name = {k[1]: s for k, s in stages}
            ray_run = self.runs[run_id].get("executor") == "ray"
            for key, st in stages:
                if st["state"] != "queued" or key in self.procs:
                    continue
                cause = self._blocker(key)
                if cause is not None:  # it cannot run until `resume`: say so, and end the run
                    self._set(key, state="skipped", ended=time.time(),
                              error=f"not run: its input {cause[0]!r} {cause[1]}")
                    continue
                deps = [by_name[d]["state"] for d in st["deps"]]
                if any(d != "done" for d in deps):
                    continue
                twin = self._twin(key, st)
                if twin == "wait":
                    continue
                if twin is not None:  # reusing takes no worker: done even while all are busy
                    self._reuse(key, twin)
                    continue
                if ray_run:
                    self.launch_ray(key)
                    continue
                ready.append(key)
        # results first: an export or evaluation that can run goes ahead of the next training
        # stage (minutes against an hour), so a long run shows its models' WERs as they finish;
        # then the training stage heading the longest chain of training stages still to run
        # (s1 -> s2 -> s3 before a lone arm), so the chain does not start last and set the
        # sweep's end alone; ties keep the runs' and the file's order
        ready.sort(key=lambda k: (self.stages[k]["kind"] not in RESULT_KINDS, -self._chain(k)))
        ready = ready[:max(self.workers - running, 0)]
        for key, threads in self._share_cores(ready):
            self.launch(key, threads)

    def _share_cores(self, ready: list) -> list[tuple[tuple[str, str], int]]:
        """Which of the ``ready`` stages start now, and with how many threads each."""
        if not ready:
            return []
        if self.fixed_threads:
            return [(k, self.fixed_threads) for k in ready]
        # an adopted worker whose threads cannot be read may use every core
        busy = sum(self.proc_threads.get(k, self.cores) for k, p in self.procs.items()
                   if not isinstance(p, RayTask))
        free = self.cores - busy
        n = min(len(ready), free)
        if n <= 0:
            return []
        return [(k, free // n + (1 if i < free % n else 0)) for i, k in enumerate(ready[:n])]

    def _chain(self, key) -> int:
        """How many training stages, this one included, the longest path of queued stages from
        it to the end of its run holds (exports and evaluations count as none)."""
        below: dict[str, list[str]] = {}
        for k in self.by_run[key[0]]:
            for d in self.stages[k]["deps"]:
                below.setdefault(d, []).append(k[1])
        memo: dict[str, int] = {}

        def length(name: str) -> int:
            if name not in memo:
                st = self.stages[(key[0], name)]
                own = st["kind"] not in RESULT_KINDS and st["state"] in ("queued", "running")
                memo[name] = own + max((length(n) for n in below.get(name, [])), default=0)
            return memo[name]

        return length(key[1])

    def _blocker(self, key) -> tuple[str, str] | None:
        """(input, its state) when a queued stage cannot run until `resume`: an input of it (or
        of its inputs) failed, was cancelled or was itself skipped."""
        seen, todo = set(), list(self.stages[key]["deps"])
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            dep = self.stages[(key[0], d)]
            if dep["state"] in ("failed", "cancelled", "skipped"):
                return d, dep["state"]
            todo += dep["deps"]
        return None

    def _blocked(self, key) -> bool:
        return self._blocker(key) is not None

    def _twin(self, key, st):
        """A stage of another run in the same sweep (or, for a run submitted with ``--reuse``,
        of any run) with the same identity: its key when done, "wait" while it runs (or is
        queued ahead of this one), else None."""
        sweep = self.runs[key[0]]["sweep_id"]
        anywhere = self.runs[key[0]].get("reuse")
        if not sweep and not anywhere:
            return None
        for other, o in self.stages.items():
            if other == key or o["stage_hash"] != st["stage_hash"]:
                continue
            if not anywhere and self.runs[other[0]]["sweep_id"] != sweep:
                continue
            if o["state"] == "done" and not o["reused_from"]:
                return other
            if o["state"] == "running" or (o["state"] == "queued" and other < key
                                           and not self._blocked(other)):
                return "wait"
        return None

    def _reuse(self, key, twin) -> None:
        outputs = self.stages[twin]["outputs"] or "{}"
        folder = Path(self.runs[key[0]]["run_dir"]) / key[1]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "outputs.json").write_text(outputs)
        except OSError as e:
            self._set(key, state="failed", error=f"{folder}: {e}", ended=time.time())
            return
        self._set(key, state="done", progress=1.0, outputs=outputs, started=time.time(),
                  ended=time.time(), reused_from=f"{twin[0]}/{twin[1]}")
        self.say(f"{key[0]}/{key[1]}: same stage as {twin[0]}/{twin[1]}, reused")

    def launch(self, key, threads: int | None = None) -> None:
        run_dir = Path(self.runs[key[0]]["run_dir"])
        st = self.stages[key]
        attempt = (st["attempt"] or 0) + 1
        threads = threads or self.threads
        env = {**os.environ, "ASRLAB_HOME": str(self.paths["home"]),
               "ASRLAB_THREADS": str(threads), "ASRLAB_ATTEMPT": str(attempt),
               "PYTHONUNBUFFERED": "1"}
        p = None
        try:
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
            with open(run_dir / "logs" / f"{key[1]}.log", "a") as log:
                p = subprocess.Popen([sys.executable, "-m", "engine.runner.worker",
                                      str(run_dir), key[1]], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True, cwd=os.getcwd())
            # recorded in the spool, so a supervisor that dies now still finds this worker
            spool = SpoolWriter(run_dir / "spool" / f"{key[1]}.jsonl")
            spool.emit("state", state="running", pid=p.pid, attempt=attempt)
            spool.close()
        except OSError as e:
            if p is not None:  # a worker nobody could follow must not run on
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            self._set(key, state="failed", ended=time.time(),
                      error=f"cannot start the worker in {run_dir}: {e}")
            self.say(f"{key[0]}/{key[1]}: cannot start: {e}")
            return
        self.procs[key] = p
        self.proc_threads[key] = threads
        self._set(key, state="running", pid=p.pid, attempt=attempt, started=time.time())
        self.say(f"{key[0]}/{key[1]}: started (pid {p.pid}, attempt {attempt}, "
                 f"{threads} thread{'s' if threads > 1 else ''})")

    def _ray_for(self, run_id: str):
        """The Ray executor, connected on first use to the run's address (or a local Ray)."""
        address = self.runs[run_id].get("ray_address")
        if self.ray is None:
            from engine.runner.ray_executor import RayExecutor

            self.say(f"connecting to Ray at {address or 'a new local instance'}")
            self.ray = RayExecutor(self.paths["home"], address)
            self.say(f"Ray ready: {self.ray.ray.cluster_resources()}")
        elif (address or None) != (self.ray.address or None):
            raise RuntimeError(f"this supervisor drives the Ray cluster at "
                               f"{self.ray.address or 'local'}, not {address or 'local'}; "
                               f"`asrlab supervisor stop` once its runs end, then submit again")
        return self.ray

    def launch_ray(self, key) -> None:
        from engine.config import parse_experiment
        from engine.runner.ray_executor import stage_resources

        run_dir = Path(self.runs[key[0]]["run_dir"])
        st = self.stages[key]
        attempt = (st["attempt"] or 0) + 1
        try:
            exp = parse_experiment(json.loads((run_dir / "experiment.json").read_text()),
                                   str(run_dir / "experiment.json"))
            res = stage_resources(exp, exp.stage(key[1]))
            note = self._ray_for(key[0]).submit(key[0], str(run_dir), key[1], attempt, res)
        except Exception as e:  # noqa: BLE001 - the stage fails with the reason, the lab goes on
            self._set(key, state="failed", ended=time.time(),
                      error=f"cannot hand the stage to Ray: {type(e).__name__}: {e}")
            self.say(f"{key[0]}/{key[1]}: cannot hand to Ray: {e}")
            return
        self.procs[key] = RayTask()
        # queued until a node runs it; a note (too few nodes) shows as the queued stage's error
        self._set(key, attempt=attempt, error=note)
        self.say(f"{key[0]}/{key[1]}: handed to Ray (attempt {attempt}, {res})"
                 + (f": {note}" if note else ""))

    # ----- store -------------------------------------------------------------------------------
    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_flush < self.flush_delay:
            return
        if not (self.dirty or self.writer.has_pending() or self.done_commands):
            return
        for key in self.dirty:
            st = self.stages[key]
            self.writer.add("stages", {**st, "deps": json.dumps(st["deps"]), "updated": time.time()})
        self.dirty = set()
        try:
            self._flush_through_readers()
        except (duckdb.Error, OSError, ValueError, TypeError) as e:
            # readers kept the file all along (or the disk is full): keep everything, retry soon
            self.flush_delay = min(self.flush_delay * 2, 2.0)
            self.last_flush = now
            if is_lock_error(e):
                self.say(f"store busy (a reader holds it); retrying in {self.flush_delay:.1f} s")
            else:
                self.say(f"store write failed ({type(e).__name__}: {e}); everything is kept "
                         f"and retried in {self.flush_delay:.1f} s")
            return
        self.flush_delay = FLUSH_EVERY_S
        self.last_flush = now
        for f in self.done_commands:
            f.unlink(missing_ok=True)
        self.done_commands = []
        # runs with nothing left to do (finished, or blocked behind a failed or cancelled
        # stage until `resume`) stop being polled
        for run_id in list(self.active):
            stages = self._run_stages(run_id)
            waiting = [k for k, s in stages if s["state"] == "queued" and not self._blocked(k)]
            if not any(k[0] == run_id for k in self.procs) and not waiting and all(
                    s["state"] != "running" for _, s in stages):
                self.active.discard(run_id)

    def _flush_through_readers(self, attempts: int = 10) -> None:
        """Readers hold the file for milliseconds at a time: try again at once, a few times,
        with jitter, before giving the tick up (a busy explorer must not starve the writer)."""
        for i in range(attempts):
            try:
                self.writer.flush()
                return
            except duckdb.Error as e:
                if not is_lock_error(e) or i == attempts - 1:
                    raise
                time.sleep(0.005 * (i + 1) * (1 + random.random()))

    def say(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    def _mark_ready(self) -> None:
        """Once the store holds what this supervisor found at start (stages whose workers ended
        while none watched them marked failed, the spools caught up), say so in supervisor.json:
        `asrlab resume` after a crash or a reboot waits for it before it reads the run."""
        if self.info.get("ready") or self.dirty or self.writer.has_pending():
            return
        from engine.data.corpus import write_json_atomic

        self.info["ready"] = True
        write_json_atomic(self.paths["info"], self.info)

    def loop(self) -> None:
        while not self.stop:
            t0 = time.monotonic()
            self.commands()
            self.reap()
            self.ingest()
            self.schedule()
            self.flush(force=bool(self.done_commands))
            self._mark_ready()
            time.sleep(max(0.0, TICK_S - (time.monotonic() - t0)))
        self.flush(force=True)
        if self.ray is not None:  # a detached lab actor keeps running its tasks
            self.ray.shutdown()


def main() -> int:
    from engine.stages import lab_home

    home = lab_home()
    paths = lab_paths(home)
    home.mkdir(parents=True, exist_ok=True)
    fd = None
    for _ in range(20):  # `supervisor status` takes the lock for an instant to test it
        fd = try_lock(paths["lock"])
        if fd is not None:
            break
        time.sleep(0.05)
    if fd is None:
        print(f"a supervisor already runs for {home}", file=sys.stderr)
        return 3
    sup = Supervisor(home)

    def _stop(signum, frame):
        sup.stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    from engine.data.corpus import write_json_atomic

    sup.info = {"pid": os.getpid(), "started": time.time(), "home": str(home),
                "workers": sup.workers}
    write_json_atomic(paths["info"], sup.info)
    sup.say(f"supervisor {os.getpid()} for {home}: {sup.workers} worker(s), "
            + (f"{sup.fixed_threads} thread(s) each" if sup.fixed_threads else
               f"{sup.cores} cores shared out as stages start"))
    sup.load()
    sup.flush(force=True)
    sup.loop()
    sup.say("supervisor stopped; running workers go on and the next supervisor adopts them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
