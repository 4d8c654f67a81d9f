"""One stage in its own OS process: ``python -m engine.runner.worker RUN_DIR STAGE``.

The worker never opens the store. It appends its events (state, progress, metrics, evaluations
with every hypothesis, artifacts, log lines) to ``RUN_DIR/spool/STAGE.jsonl`` and writes the
stage's outputs to ``RUN_DIR/STAGE/outputs.json``; its stdout and stderr go to
``RUN_DIR/logs/STAGE.log`` (the supervisor opens that file). SIGTERM (``asrlab cancel``) ends it
as cancelled; a training stage started again resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path


class Cancelled(BaseException):
    """Raised in the worker by SIGTERM: the run was cancelled."""


_cancelled = False


def _cancel(signum, frame):
    global _cancelled
    _cancelled = True
    raise Cancelled()


def _rank() -> int | None:
    """This process's DDP rank when torchrun started it for a data-parallel stage, else None."""
    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"])
    return None


class _Quiet:
    """The spool of a DDP rank other than 0: rank 0 alone reports."""

    def emit(self, type_: str, **data) -> None:
        pass

    def close(self) -> None:
        pass


def _node_rank() -> int:
    """Which node of a multi-node stage this launcher is (the Ray executor sets it)."""
    return int(os.environ.get("ASRLAB_NODE_RANK") or 0)


def _torchrun(stage, run_dir: Path, name: str, log) -> dict | None:
    """Run the stage data-parallel: ``torchrun`` starts ``nproc`` ranks of this worker (DDP over
    NCCL on CUDA, gloo on the CPU; one GPU per rank); rank 0 reports and writes the outputs,
    this process waits for them all. On a multi-node stage one launcher runs per node
    (``ASRLAB_NODE_RANK``, ``ASRLAB_MASTER`` from the Ray executor); the others return None."""
    import subprocess

    threads = max(1, int(os.environ.get("ASRLAB_THREADS") or 1) // stage.nproc)
    errors = run_dir / name / "ranks"
    node_rank, nnodes = _node_rank(), int(os.environ.get("ASRLAB_NNODES") or 1)
    if nnodes != stage.nnodes:
        raise RuntimeError(f"stage {name} asks for nnodes = {stage.nnodes}; the lab starts "
                           f"multi-node stages through the Ray executor (--executor ray)")
    if node_rank == 0:
        errors.mkdir(parents=True, exist_ok=True)
        for f in errors.glob("*.error"):
            f.unlink()
        (run_dir / name / "outputs.json").unlink(missing_ok=True)
    if nnodes == 1:
        where = ["--standalone", "--nnodes", "1"]
    else:
        host, port = os.environ["ASRLAB_MASTER"].rsplit(":", 1)
        where = [f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--master-addr={host}",
                 f"--master-port={port}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *where,
           f"--nproc-per-node={stage.nproc}", "-m", "engine.runner.worker", str(run_dir), name]
    from engine import devices

    backend = "NCCL" if devices.resolve(stage.train.device).type == "cuda" else "gloo"
    log(f"stage {name}: {stage.nproc * nnodes} DDP processes ({backend}) on {nnodes} node(s), "
        f"{threads} thread(s) each" + (f"; this is node {node_rank}" if nnodes > 1 else ""))
    p = subprocess.Popen(cmd, env={**os.environ, "ASRLAB_THREADS": str(threads),
                                   "OMP_NUM_THREADS": str(threads)})
    try:
        code = p.wait()
    except Cancelled:
        p.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        raise
    if node_rank > 0:
        if code != 0:
            raise RuntimeError(f"torchrun on node {node_rank} exited with status {code}")
        return None
    done = run_dir / name / "outputs.json"
    if code != 0 or not done.exists():
        why = [f.read_text() for f in sorted(errors.glob("*.error"))]
        raise RuntimeError(f"torchrun exited with status {code}"
                           + (f"; {why[0]}" if why else "; see the stage's log"))
    return json.loads(done.read_text())


def main(argv: list[str]) -> int:
    run_dir, name = Path(argv[0]).resolve(), argv[1]
    from engine.runner.spool import SpoolWriter

    rank = _rank()
    # a Ray task on another node gives a node-local spool and forwards it (ray_executor); the
    # ranks other than 0 and the launchers of a multi-node stage's other nodes stay quiet
    spool = _Quiet() if rank or _node_rank() else SpoolWriter(
        Path(os.environ.get("ASRLAB_SPOOL") or run_dir / "spool" / f"{name}.jsonl"))
    signal.signal(signal.SIGTERM, _cancel)
    try:
        import torch

        from engine.config import parse_experiment
        from engine.data.corpus import write_json_atomic
        from engine.stages import Context, run_stage

        if os.environ.get("ASRLAB_THREADS"):
            torch.set_num_threads(int(os.environ["ASRLAB_THREADS"]))
        exp_file = run_dir / "experiment.json"
        exp = parse_experiment(json.loads(exp_file.read_text()), str(exp_file))
        stage = exp.stage(name)

        def log(line: str) -> None:
            print(line, flush=True)
            spool.emit("log", line=line)

        ctx = Context(exp, run_dir, progress=False, log=log, emit=spool.emit)
        for st in exp.stages:
            done = run_dir / st.name / "outputs.json"
            if st.name != name and done.exists():
                ctx.outputs[st.name] = json.loads(done.read_text())
        if rank is not None:  # one of torchrun's ranks
            import torch.distributed as dist

            from engine import devices

            # NCCL between GPUs when this stage trains on CUDA, gloo between CPU processes
            train = getattr(stage, "train", None)
            dev = devices.resolve(train.device, True) if train is not None else None
            on_gpu = dev is not None and dev.type == "cuda"
            if on_gpu:
                torch.cuda.set_device(dev)
            # NCCL for the GPU tensors, gloo for any CPU tensor a collective meets
            dist.init_process_group("cpu:gloo,cuda:nccl" if on_gpu else "gloo")
            torch.set_num_threads(int(os.environ.get("ASRLAB_THREADS") or 1))
            try:
                outputs = run_stage(stage, ctx)
                if rank == 0:  # the launcher reports it done
                    write_json_atomic(run_dir / name / "outputs.json", outputs)
            finally:
                dist.destroy_process_group()
            return 0
        log(f"stage {name} ({stage.kind}) started, pid {os.getpid()}")
        if getattr(stage, "nproc", 1) > 1 or getattr(stage, "nnodes", 1) > 1:
            outputs = _torchrun(stage, run_dir, name, log)
            if outputs is None:  # another node of the stage: node 0 reports
                return 0
        else:
            outputs = run_stage(stage, ctx)
        (run_dir / name).mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / name / "outputs.json", outputs)
        spool.emit("state", state="done", outputs=outputs)
        return 0
    except Cancelled:
        print(f"stage {name} cancelled", flush=True)
        if rank is None:
            spool.emit("state", state="cancelled")
        return 0
    except BaseException as e:  # noqa: BLE001 - every failure is reported, then re-signalled
        if _cancelled:  # SIGTERM mid-import leaves a half-imported module that fails otherwise
            print(f"stage {name} cancelled ({type(e).__name__} after the signal)", flush=True)
            spool.emit("state", state="cancelled")
            return 0
        traceback.print_exc()
        msg = str(e) or type(e).__name__
        if rank is not None:  # the launcher reports the first rank's error
            try:
                (run_dir / name / "ranks" / f"{rank}.error").write_text(
                    f"rank {rank}: {type(e).__name__}: {msg}"[:2000])
            except OSError:
                pass
            return 1
        spool.emit("state", state="failed", error=f"{type(e).__name__}: {msg}"[:2000])
        return 1
    finally:
        spool.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
