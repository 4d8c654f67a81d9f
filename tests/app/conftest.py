"""A lab filled by the real engine for the explorer's tests: a real supervisor runs a two-run
sweep of the tiny experiment (periodic dev and test evaluations, export, final evaluation) on the
session's tiny corpus; the tests read the real DuckDB file it wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import testing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def filled_lab(tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explorer")
    home = tmp / "lab"
    env = {"ASRLAB_HOME": str(home), "ASRLAB_WORKERS": "1", "ASRLAB_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    lab = testing.Lab(home, tiny, tmp)
    try:
        exp = lab.experiment(steps=30, checkpoint_every=10, eval_every=10, utterances=12,
                             splits=("test-clean", "test-other"), tags=("explorer-test",))
        out = json.loads(lab.cli("sweep", str(exp), "--grid", "stages.model.train.peak_lr=3e-3,1e-2",
                                 "--json"))
        ids = out["run_ids"]
        prune = json.loads(lab.cli("run", str(lab.pruning_experiment()), "--json"))["run_id"]
        for run_id in ids + [prune]:
            assert lab.wait(run_id)["state"] == "done", lab.status(run_id)
        lab.runs = ids
        lab.prune_run = prune
        yield lab
    finally:
        lab.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
