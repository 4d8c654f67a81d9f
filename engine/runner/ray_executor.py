"""Stages as Ray tasks: the executor behind ``asrlab run/sweep --executor ray [--address ADDR]``.

The supervisor stays the one process that writes the store; Ray only places and runs stages.

- **The lab actor** (``LabActor``, one per lab, detached, named after ``ASRLAB_HOME``, pinned to
  the supervisor's node with no CPU of its own) submits every stage's task, so the tasks outlive
  a supervisor that restarts (a new one finds the actor by name and asks it what finished), and
  is the **event sink**: tasks on any node send it their events in numbered batches; it appends
  each event, once, to the run's spool on the supervisor's disk, which the supervisor ingests
  from committed offsets exactly as it ingests a local worker's spool.
- **A stage task** (``stage_task``) runs the ordinary stage worker (``engine.runner.worker``) in
  a child process on whichever node Ray picks, with the stage's resources (``cpus`` are also its
  threads). The child spools to a node-local file; the task forwards new whole lines to the
  actor a few times a second and once more when the child ends. Each line carries the task's
  token and a sequence number, so a batch sent twice is appended once.
- **Storage**: run folders (experiment, checkpoints, models) live on a path every node reaches
  (``--storage``, default the lab's ``runs`` folder); a stage Ray retries on another node after
  its node died resumes from its last checkpoint there.
- **Failures**: Ray retries a task whose worker or node died (``max_retries``); a child whose Ray
  worker dies is killed with it (``PR_SET_PDEATHSIG``), so a lost node's stage never trains on
  beside its retry. Cancelling asks the task to stop (SIGTERM to the stage: it ends
  ``cancelled``), then, after the grace period, Ray kills it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

NAMESPACE = "asrlab"
MAX_RETRIES = 3
FORWARD_EVERY_S = 0.3

# what a stage asks of a node unless the experiment says otherwise ([resources.KIND] or the
# stage's own `resources`); a data-parallel stage asks for one CPU per rank
DEFAULT_RESOURCES = {
    "train": {"cpus": 1}, "distill": {"cpus": 1}, "prune_magnitude": {"cpus": 1},
    "prune_l0": {"cpus": 1}, "las_train": {"cpus": 1}, "las_distill": {"cpus": 1},
    "finetune": {"cpus": 1}, "evaluate": {"cpus": 1}, "export": {"cpus": 1},
}


def actor_name(home: Path) -> str:
    return "asrlab-lab-" + hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:12]


def stage_resources(exp, stage) -> dict:
    """``{"cpus", "gpus", "memory"}`` of one stage: its kind's default, the experiment's
    ``[resources.KIND]``, the stage's own ``resources``, in that order."""
    from engine.config import memory_bytes

    out = {"cpus": 1.0, "gpus": 0.0, "memory": None, **DEFAULT_RESOURCES.get(stage.kind, {})}
    ranks = getattr(stage, "nproc", 1)
    out["cpus"] = max(out["cpus"], float(ranks))
    for layer in (exp.resources.get(stage.kind), stage.resources):
        if layer is not None:
            out.update({k: v for k, v in layer.model_dump().items() if v is not None})
    out["memory"] = memory_bytes(out["memory"])
    out["nnodes"] = getattr(stage, "nnodes", 1)  # each node gets the cpus, gpus and memory
    return out


def _die_with_parent() -> None:
    """In the stage's child: SIGKILL when the Ray worker that started it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


def spool_root(env: dict) -> Path:
    """Where a node keeps the spools of the stages it runs (node-local disk)."""
    return Path(env.get("ASRLAB_RAY_SPOOL") or Path(tempfile.gettempdir()) / "asrlab-ray")


def _read_lines(path: Path, offset: int) -> tuple[list[str], int]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except OSError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    lines = chunk[: end + 1].decode("utf-8", "replace").splitlines()
    return [line for line in lines if line.strip()], offset + end + 1


def _start_worker(run_dir: str, stage: str, log_name: str, local: Path, threads: int,
                  env: dict) -> subprocess.Popen:
    """The ordinary stage worker in a child that dies with this Ray worker, spooling to the
    node-local ``local``, its output appended to ``RUN_DIR/logs/log_name``."""
    log_dir = Path(run_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **env, "ASRLAB_SPOOL": str(local), "ASRLAB_THREADS": str(threads),
                 "PYTHONUNBUFFERED": "1"}
    with open(log_dir / log_name, "a") as log:
        return subprocess.Popen([sys.executable, "-m", "engine.runner.worker", run_dir, stage],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env, preexec_fn=_die_with_parent,
                                cwd=env.get("ASRLAB_CWD") or os.getcwd())


def run_stage_here(run_dir: str, stage: str, attempt: int, threads: int, env: dict, sink) -> dict:
    """The body of a stage task (on whatever node Ray chose): start the worker, forward its
    events to ``sink`` until it ends. Returns ``{"code", "node", "token"}``."""
    import ray

    token = uuid.uuid4().hex[:12]
    node = ray.get_runtime_context().get_node_id()
    local = spool_root(env) / token / f"{stage}.jsonl"
    local.parent.mkdir(parents=True, exist_ok=True)
    key = [Path(run_dir).name, stage]
    node_rank = int(env.get("ASRLAB_NODE_RANK") or 0)
    env = dict(env)
    if "ASRLAB_NNODES" in env:  # one node of a multi-node torchrun stage
        env["ASRLAB_MASTER"] = _rendezvous(sink, key, attempt, node_rank)
    if node_rank > 0:  # a helper node: its ranks train, node 0 reports
        return _helper(run_dir, stage, threads, env, node, token, local)
    retry = ray.get(sink.started.remote(key, attempt))
    seq, offset = 0, 0

    def forward(extra: list[dict] = ()) -> None:
        """Send what is new; offset and sequence move only once the actor has it, so a batch
        interrupted midway (ray.cancel's KeyboardInterrupt) is sent again, and appended once."""
        nonlocal seq, offset
        lines, new_offset = _read_lines(local, offset)
        events = []
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:  # passed on as it is: the supervisor reports malformed lines
                events.append(line)
                continue
            events.append(json.dumps({**ev, "ray_token": token, "seq": seq + len(events)}))
        for ev in extra:
            events.append(json.dumps({**ev, "ray_token": token, "seq": seq + len(events)}))
        if events:
            ray.get(sink.append.remote(run_dir, stage, token, seq, events))
            seq += len(events)
        offset = new_offset

    # the stage is running once a node runs it (a task waiting for resources stays queued)
    forward([{"type": "state", "state": "running", "pid": None, "attempt": attempt + retry,
              "ts": time.time(), "node": node},
             {"type": "log", "ts": time.time(),
              "line": f"stage {stage}: Ray task on node {node[:12]} "
                      f"({os.uname().nodename}), attempt {attempt + retry}"}])
    child = _start_worker(run_dir, stage, f"{stage}.log", local, threads,
                          {**env, "ASRLAB_ATTEMPT": str(attempt + retry)})
    stopping = None
    try:
        while True:
            try:  # ray.cancel interrupts wherever the task is, forwarding included
                try:
                    code = child.wait(timeout=FORWARD_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                forward()
            except KeyboardInterrupt:  # ray.cancel: ask the stage to end cancelled
                if stopping is None:
                    stopping = time.monotonic()
                    os.killpg(child.pid, signal.SIGTERM)
        for _ in range(3):  # its last words ("cancelled" included), even through a second cancel
            try:
                forward()
                break
            except KeyboardInterrupt:
                continue
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return {"code": code, "node": node, "token": token, "cancelled": stopping is not None}


def _rendezvous(sink, key: list, attempt: int, node_rank: int, timeout: float = 600.0) -> str:
    """``host:port`` of node 0's torchrun master: node 0 picks a free port on its address and
    tells the lab actor; the other nodes ask it until it is there."""
    import socket

    import ray

    if node_rank == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        master = f"{ray.util.get_node_ip_address()}:{port}"
        ray.get(sink.set_master.remote(key, attempt, master))
        return master
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        master = ray.get(sink.get_master.remote(key, attempt))
        if master:
            return master
        time.sleep(0.2)
    raise TimeoutError(f"node 0 of {key[0]}/{key[1]} never started its torchrun master")


def _helper(run_dir: str, stage: str, threads: int, env: dict, node: str, token: str,
            local: Path) -> dict:
    """Node ``ASRLAB_NODE_RANK`` > 0 of a multi-node stage: its torchrun ranks, quiet."""
    child = _start_worker(run_dir, stage, f"{stage}.node{env['ASRLAB_NODE_RANK']}.log", local,
                          threads, env)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        os.killpg(child.pid, signal.SIGTERM)
        code = child.wait()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return {"code": code, "node": node, "token": token, "cancelled": False}


class LabActor:
    """Owner of a lab's Ray tasks and sink of their events (see the module docstring)."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], object] = {}  # (run_id, stage) -> ObjectRef
        self.next_seq: dict[str, int] = {}  # per task token: events appended so far
        self.starts: dict[tuple, int] = {}
        self.files: dict[str, object] = {}
        self.helpers: dict[tuple[str, str], list] = {}  # the other nodes of a multi-node stage
        self.groups: dict[tuple[str, str], object] = {}  # their placement groups
        self.masters: dict[tuple, str] = {}
        self.helper_error: dict[tuple[str, str], str] = {}
        import ray

        self.task = ray.remote(run_stage_here)

    def ping(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def submit(self, run_id: str, run_dir: str, stage: str, attempt: int, res: dict,
               env: dict) -> str | None:
        """Start the stage's task unless one runs already (a restarted supervisor that
        submits again is a no-op). Returns why it may wait long (too few nodes), or None."""
        if (run_id, stage) in self.tasks:
            return None
        opts = {"num_cpus": res["cpus"], "num_gpus": res["gpus"], "max_retries": MAX_RETRIES,
                "retry_exceptions": False}
        if res.get("memory"):
            opts["memory"] = res["memory"]
        threads = max(1, int(res["cpus"]))
        nnodes = int(res.get("nnodes") or 1)
        if nnodes == 1:
            self.tasks[(run_id, stage)] = self.task.options(**opts).remote(
                run_dir, stage, attempt, threads, env, self._self())
            return None
        # one task per node, each on its own node (STRICT_SPREAD); a lost node fails the
        # stage as a whole (its peers' collectives break), and resume restarts it from its
        # last checkpoint, so the tasks are not retried one by one
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"CPU": res["cpus"]}
        if res["gpus"]:
            bundle["GPU"] = res["gpus"]
        if res.get("memory"):
            bundle["memory"] = res["memory"]
        pg = placement_group([bundle] * nnodes, strategy="STRICT_SPREAD")
        refs = []
        for i in range(nnodes):
            o = {**opts, "max_retries": 0, "scheduling_strategy": PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=i)}
            refs.append(self.task.options(**o).remote(
                run_dir, stage, attempt, threads,
                {**env, "ASRLAB_NNODES": str(nnodes), "ASRLAB_NODE_RANK": str(i)}, self._self()))
        self.tasks[(run_id, stage)] = refs[0]
        self.helpers[(run_id, stage)] = refs[1:]
        self.groups[(run_id, stage)] = pg
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        if alive < nnodes:
            return (f"waits for {nnodes} nodes with {res['cpus']:g} CPU(s) each; the cluster has "
                    f"{alive} alive now")
        return None

    def set_master(self, key: list, attempt: int, master: str) -> None:
        self.masters[(key[0], key[1], attempt)] = master

    def get_master(self, key: list, attempt: int) -> str | None:
        return self.masters.get((key[0], key[1], attempt))

    def _end_group(self, k: tuple, force_main: bool = False) -> None:
        import ray

        for ref in self.helpers.pop(k, []):
            ray.cancel(ref, force=True)
        if force_main and k in self.tasks:
            ray.cancel(self.tasks[k], force=True)
        pg = self.groups.pop(k, None)
        if pg is not None:
            ray.util.remove_placement_group(pg)

    def _self(self):
        import ray

        return ray.get_runtime_context().current_actor

    def started(self, key: list, attempt: int) -> int:
        """How many times this stage's attempt started before (Ray's retries of it)."""
        k = (key[0], key[1], attempt)
        n = self.starts.get(k, 0)
        self.starts[k] = n + 1
        return n

    def append(self, run_dir: str, stage: str, token: str, first_seq: int,
               lines: list[str]) -> int:
        """Append events ``first_seq...`` of task ``token`` to the run's spool; events already
        appended (a batch sent again) are skipped. Returns the next sequence number."""
        have = self.next_seq.get(token, 0)
        fresh = lines[max(0, have - first_seq):] if first_seq <= have else None
        if fresh is None:
            raise ValueError(f"{token}: events {have}..{first_seq - 1} never arrived")
        if fresh:
            path = Path(run_dir) / "spool" / f"{stage}.jsonl"
            f = self.files.get(str(path))
            if f is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                f = self.files[str(path)] = open(path, "a", encoding="utf-8")
            f.write("".join(line + "\n" for line in fresh))
            f.flush()
            os.fsync(f.fileno())
        self.next_seq[token] = max(have, first_seq + len(lines))
        return self.next_seq[token]

    def poll(self, keys: list) -> dict:
        """For each ``[run_id, stage]`` asked about: "running", "unknown" (this actor never
        ran it), or the finished task's ``{"code", ...}`` / ``{"error": ...}``."""
        import ray

        out = {}
        refs = {tuple(k): self.tasks.get(tuple(k)) for k in keys}
        helpers = [h for k in refs for h in self.helpers.get(k, [])]
        live = [r for r in refs.values() if r is not None] + helpers
        ready = set(ray.wait(live, num_returns=len(live), timeout=0)[0]) if live else set()
        for k in refs:  # a helper node that ended first: the stage cannot go on without it
            for i, h in enumerate(self.helpers.get(k, []), start=1):
                if h in ready and refs[k] not in ready:
                    try:
                        got = ray.get(h)
                        why = f"node {i} of the stage's torchrun ended (status {got['code']})"
                    except Exception as e:  # noqa: BLE001
                        why = f"node {i} of the stage's torchrun failed: {type(e).__name__}: {e}"
                    self.helper_error[k] = why[-600:]
                    self._end_group(k, force_main=True)
                    break
        for k, ref in refs.items():
            name = f"{k[0]}/{k[1]}"
            if ref is None:
                out[name] = "unknown"
            elif ref not in ready:
                out[name] = "running"
            else:
                helper_error = self.helper_error.pop(k, None)
                try:
                    out[name] = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    out[name] = {"cancelled": True, "code": None}
                except Exception as e:  # noqa: BLE001 - Ray's reason, for the stage's error
                    out[name] = {"error": f"{type(e).__name__}: {str(e).strip()[-600:]}"}
                if helper_error:
                    out[name] = {"error": helper_error}
                del self.tasks[k]
                self._end_group(k)
        return out

    def cancel(self, run_id: str, stage: str, force: bool = False) -> bool:
        import ray

        ref = self.tasks.get((run_id, stage))
        if ref is None:
            return False
        ray.cancel(ref, force=force)
        for h in self.helpers.get((run_id, stage), []):
            ray.cancel(h, force=force)
        return True


class RayExecutor:
    """The supervisor's side: connect (or start a local Ray), get the lab actor, and submit,
    poll and cancel stages through it."""

    def __init__(self, home: Path, address: str | None) -> None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        self.ray = ray
        self.address = address
        if not ray.is_initialized():
            kwargs = {"namespace": NAMESPACE, "log_to_driver": False,
                      "include_dashboard": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(**kwargs)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        cls = ray.remote(LabActor)
        self.actor = cls.options(
            name=actor_name(home), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            num_cpus=0, max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote()
        ray.get(self.actor.ping.remote(), timeout=120)

    def submit(self, run_id: str, run_dir: str, stage: str, attempt: int,
               res: dict) -> str | None:
        env = {k: v for k, v in os.environ.items()
               if k.startswith(("ASRLAB_", "OMP_", "PYTHONPATH"))}
        env["ASRLAB_CWD"] = os.getcwd()
        return self.ray.get(self.actor.submit.remote(run_id, run_dir, stage, attempt, res, env))

    def poll(self, keys: list[tuple[str, str]]) -> dict:
        if not keys:
            return {}
        return self.ray.get(self.actor.poll.remote([list(k) for k in keys]), timeout=60)

    def cancel(self, key: tuple[str, str], force: bool = False) -> None:
        self.ray.get(self.actor.cancel.remote(key[0], key[1], force))

    def shutdown(self) -> None:
        self.ray.shutdown()
