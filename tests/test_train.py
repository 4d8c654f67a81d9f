"""Training: the loss falls, and a run killed with kill -9 resumes to the same weights."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from engine.checkpoint import load_model

ASRLAB = [sys.executable, "-m", "engine.cli"]


def _experiment(path, corpus, steps, every=5):
    path.write_text(f"""
name = "kill"
seed = 3
[data]
corpus = "{corpus}"
vocab_size = 64
[[stages]]
kind = "train"
name = "model"
[stages.model]
preset = "tiny"
[stages.train]
max_steps = {steps}
max_duration = 20.0
warmup_steps = 5
log_every = 2
checkpoint_every = {every}
noise_p = 0.5
threads = 1
""")
    return path


def test_loss_falls(tiny, tmp_path):
    exp = _experiment(tmp_path / "e.toml", tiny, 40, every=20)
    p = subprocess.run(ASRLAB + ["train", str(exp), "--out", str(tmp_path / "o"), "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(l) for l in (tmp_path / "o/model/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], (rows[0], rows[-1])
    for key in ("loss", "rnnt", "ctc", "lr", "grad_norm", "audio_s_per_s", "rss_mb"):
        assert key in rows[-1]


def test_kill_9_and_resume_reaches_the_same_weights(tiny, tmp_path):
    exp = _experiment(tmp_path / "e.toml", tiny, 30)
    straight = tmp_path / "straight"
    p = subprocess.run(ASRLAB + ["train", str(exp), "--out", str(straight), "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(ASRLAB + ["train", str(exp), "--out", str(killed), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    ckpt = killed / "model" / "checkpoints" / "step-00000015.pt"
    deadline = time.time() + 120
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model" / "model.pt").exists()  # it really died mid-run
    logged = (killed / "model" / "metrics.jsonl").read_text().splitlines()
    p = subprocess.run(ASRLAB + ["train", str(exp), "--out", str(killed), "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    a, _ = load_model(straight / "model" / "model.pt")
    b, _ = load_model(killed / "model" / "model.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    # nothing logged before the checkpoint was lost, nothing after it is duplicated
    steps = [json.loads(l)["step"] for l in (killed / "model" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
    assert [json.loads(l)["step"] for l in logged if json.loads(l)["step"] <= 15] == \
        [s for s in steps if s <= 15]
