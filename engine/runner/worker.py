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


def main(argv: list[str]) -> int:
    run_dir, name = Path(argv[0]).resolve(), argv[1]
    from engine.runner.spool import SpoolWriter

    # a Ray task on another node gives a node-local spool and forwards it (ray_executor)
    spool = SpoolWriter(Path(os.environ.get("ASRLAB_SPOOL") or run_dir / "spool" / f"{name}.jsonl"))
    signal.signal(signal.SIGTERM, _cancel)
    try:
        import torch

        from engine.config import parse_experiment
        from engine.data.corpus import write_json_atomic
        from engine.stages import STAGE_KINDS, Context

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
        log(f"stage {name} ({stage.kind}) started, pid {os.getpid()}")
        outputs = STAGE_KINDS[stage.kind](stage, ctx)
        (run_dir / name).mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / name / "outputs.json", outputs)
        spool.emit("state", state="done", outputs=outputs)
        return 0
    except Cancelled:
        print(f"stage {name} cancelled", flush=True)
        spool.emit("state", state="cancelled")
        return 0
    except BaseException as e:  # noqa: BLE001 - every failure is reported, then re-signalled
        if _cancelled:  # SIGTERM mid-import leaves a half-imported module that fails otherwise
            print(f"stage {name} cancelled ({type(e).__name__} after the signal)", flush=True)
            spool.emit("state", state="cancelled")
            return 0
        traceback.print_exc()
        msg = str(e) or type(e).__name__
        spool.emit("state", state="failed", error=f"{type(e).__name__}: {msg}"[:2000])
        return 1
    finally:
        spool.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
