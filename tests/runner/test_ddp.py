"""One stage data-parallel: ``nproc = 2`` runs the train stage under torchrun (DDP over gloo,
two real processes on CPU) through the supervisor. The loss curve equals a single process's
with the same global batch (every rank shards the batch one process would take), and a DDP
stage cancelled after its first checkpoint and resumed goes on from that checkpoint to the same
curve; rank 0 alone reports, so every event is ingested once."""

from __future__ import annotations

import json

import pytest

from engine import testing

pytestmark = pytest.mark.timeout(600)


@pytest.fixture()
def lab(tmp_path, monkeypatch, tiny):
    home = tmp_path / "lab"
    monkeypatch.setenv("ASRLAB_HOME", str(home))
    monkeypatch.setenv("ASRLAB_WORKERS", "1")
    monkeypatch.setenv("ASRLAB_THREADS", "2")  # one per rank
    lab = testing.Lab(home, tiny, tmp_path)
    yield lab
    lab.shutdown()


def _experiment(lab, nproc: int, steps: int = 40):
    path = lab.tmp / f"ddp{nproc}.toml"
    # no dropout, no SpecAugment: nothing random differs between one process and two ranks
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
dropout = 0.0
[stages.train]
max_steps = {steps}
max_duration = 20.0
warmup_steps = 10
log_every = 5
checkpoint_every = 10
spec_augment = false
""")
    return path


def _losses(lab, run_id: str) -> dict[int, float]:
    rows = [json.loads(line) for line in
            (lab.run_dir(run_id) / "model" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_two_ranks_follow_one_process_and_resume(lab):
    ddp = json.loads(lab.cli("run", str(_experiment(lab, 2)), "--json"))["run_id"]
    ckpts = lab.run_dir(ddp) / "model" / "checkpoints"
    # the pid first (a store read), so the pause follows the checkpoint at once
    lab.wait_for(lambda: lab.stage(ddp, "model")["pid"], "the DDP stage to start")
    pid = lab.stage(ddp, "model")["pid"]
    lab.wait_for(lambda: any(ckpts.glob("step-*.pt")), "the DDP stage's first checkpoint")
    lab.cancel_while_paused(pid, ddp)  # its ranks too: cancelled, however fast they train
    assert lab.wait(ddp)["state"] == "cancelled"
    single = json.loads(lab.cli("run", str(_experiment(lab, 1)), "--json"))["run_id"]
    lab.cli("resume", ddp)
    assert lab.wait(single)["state"] == "done"
    st = lab.wait(ddp)
    assert st["state"] == "done", st

    log = (lab.run_dir(ddp) / "logs" / "model.log").read_text()
    assert "2 DDP processes (gloo)" in log
    assert "resumed from" in log  # both ranks from rank 0's checkpoint
    one, two = _losses(lab, single), _losses(lab, ddp)
    assert sorted(one) == sorted(two) == list(range(5, 41, 5))
    for step in one:  # same global batches, the same updates: float summation order only
        assert two[step] == pytest.approx(one[step], rel=2e-3), (step, one[step], two[step])
    assert one[40] < 0.8 * one[5]  # and it learns
    # rank 0 reported alone: one "done", metrics once per step
    spool = (lab.run_dir(ddp) / "spool" / "model.jsonl").read_text().splitlines()
    states = [json.loads(line).get("state") for line in spool if '"type": "state"' in line]
    assert states.count("done") == 1
    lab.assert_ingested_exactly_once(ddp)
    metrics = lab.query("SELECT step FROM metrics WHERE run_id = ? ORDER BY step", [ddp])
    assert [m[0] for m in metrics] == list(range(5, 41, 5))
