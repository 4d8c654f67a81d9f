"""The tiny pruning twins end to end (experiments/tiny_l0.toml, tiny_sparse.toml) on the
session's tiny corpus: the L0 stage lands on its target and leaves a smaller dense model with
uneven blocks; the magnitude stage leaves exactly the asked sparsity, stored sparse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_model
from engine.compress.prune_l0 import prunable_params
from engine.config import load_experiment, parse_experiment
from engine.stages import run_experiment

ROOT = Path(__file__).resolve().parents[2]


def run_twin(name: str, corpus: Path, out: Path) -> dict:
    exp = load_experiment(ROOT / "experiments" / f"{name}.toml").model_dump()
    exp["data"]["corpus"] = str(corpus)
    return run_experiment(parse_experiment(exp), out, progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def l0(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_l0")
    return out, run_twin("tiny_l0", tiny, out)


@pytest.fixture(scope="module")
def sparse(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_sparse")
    return out, run_twin("tiny_sparse", tiny, out)


def test_l0_lands_within_three_points_of_its_target(l0):
    out, outputs = l0
    st = outputs["l0-50"]
    assert abs(st["sparsity"] - 0.5) <= 0.03, st["sparsity"]
    base, _ = load_model(outputs["base"]["model"], inference=False)
    small, _ = load_model(out / "l0-50" / "pruned.pt", inference=False)
    assert 1 - prunable_params(small) / prunable_params(base) == pytest.approx(st["sparsity"],
                                                                               abs=1e-3)
    # the reached sparsity was logged while it trained, beside the expected one and the target
    rows = [json.loads(l) for l in (out / "l0-50" / "metrics.jsonl").read_text().splitlines()]
    assert {"target_sparsity", "expected_sparsity", "sparsity", "lambda1"} <= set(rows[-1])
    assert rows[0]["target_sparsity"] < rows[-1]["target_sparsity"] == 0.5  # warmed up


def test_l0_ends_with_a_real_smaller_model_that_inspect_shows(l0):
    out, outputs = l0
    final = Path(outputs["l0-50"]["model"])
    assert final.parent.name == "finetune" and outputs["l0-50"]["finetune_steps"] == 10
    p = subprocess.run([sys.executable, "-m", "engine.cli", "inspect", str(final), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    sizes = {(b["heads"], b["ffn1"], b["ffn2"], b["conv_channels"]) for b in info["blocks"]}
    assert len(sizes) > 1, info["blocks"]  # uneven per-block sizes
    assert info["params"] < 0.75 * outputs["l0-50"]["params_before"]
    base = json.loads((out / "eval-base" / "results_test-clean.json").read_text())
    small = json.loads((out / "eval-l0-50" / "results_test-clean.json").read_text())
    assert small["params"] < base["params"] and small["bytes"] < base["bytes"]
    assert small["macs_per_second"] < base["macs_per_second"]  # removed, not masked


def test_magnitude_pruning_reaches_its_sparsity_and_is_stored_sparse(sparse):
    out, outputs = sparse
    for name, target in (("sparse-60-kd", 0.6), ("sparse-90", 0.9)):
        assert outputs[name]["sparsity"] == pytest.approx(target, abs=0.005)
        model, _ = load_model(outputs[name]["model"], inference=False)
        pruned = [p for n, p in model.named_parameters()
                  if n.endswith("weight") and p.ndim == 2 and not n.startswith(("ctc", "simple"))
                  and ("encoder.blocks" in n or n.startswith(("joiner", "predictor")))]
        zeros = sum(int((p == 0).sum()) for p in pruned) / sum(p.numel() for p in pruned)
        assert zeros == pytest.approx(target, abs=0.01)
        assert outputs[f"export-{name}"]["format"] == "torch-fp32-sparse"
    b = outputs["export-base"]["bytes"]
    assert outputs["export-sparse-60-kd"]["bytes"] < 0.6 * b
    assert outputs["export-sparse-90"]["bytes"] < 0.3 * b
    assert outputs["export-base"]["format"] == "torch-fp32"
    # the sparse artifact decodes as the model it came from: same WER figures
    a = json.loads((out / "eval-sparse-90" / "results_test-clean.json").read_text())
    assert a["nonzero_params"] < 0.2 * a["params"]
    rows = [json.loads(l) for l in (out / "sparse-60-kd" / "metrics.jsonl").read_text().splitlines()]
    assert "kd" in rows[-1] and rows[-1]["sparsity"] == pytest.approx(0.6, abs=0.005)
    sp = load_model(outputs["export-sparse-90"]["artifact"])[0].state_dict()
    dense = load_model(outputs["sparse-90"]["model"])[0].state_dict()
    assert all(torch.equal(sp[k], dense[k]) for k in dense)


def _l0_experiment(path: Path, corpus: Path) -> Path:
    path.write_text(f"""
name = "kill-l0"
seed = 5
[data]
corpus = "{corpus}"
vocab_size = 64
[[stages]]
kind = "train"
name = "base"
[stages.model]
preset = "tiny"
[stages.train]
max_steps = 10
max_duration = 20.0
warmup_steps = 5
checkpoint_every = 10
threads = 1
[[stages]]
kind = "prune_l0"
name = "l0"
model = "base"
teacher = "base"
[stages.train]
max_steps = 30
max_duration = 20.0
warmup_steps = 5
log_every = 2
checkpoint_every = 10
noise_p = 0.5
threads = 1
[stages.prune]
target = 0.4
warmup_steps = 15
gate_lr = 0.2
finetune_steps = 6
""")
    return path


def test_a_killed_l0_stage_resumes_to_the_same_pruned_model(tiny, tmp_path):
    """Gates, multipliers, layer maps and RNG states are checkpointed: kill -9 mid-pruning and
    the rerun reaches the same smaller model, fine-tuned to the same weights."""
    import os
    import signal
    import time

    exp = _l0_experiment(tmp_path / "e.toml", tiny)
    # on the CPU: bit-exact resume is a CPU property (on CUDA scatter_add, CTC's backward and
    # cuDNN are not deterministic), and on a GPU machine "auto" would pick the GPU
    cli = [sys.executable, "-m", "engine.cli", "train", str(exp), "--quiet", "--device", "cpu",
           "--out"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    p = subprocess.run(cli + [str(straight)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    proc = subprocess.Popen(cli + [str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    ckpt = killed / "l0" / "checkpoints" / "step-00000010.pt"
    deadline = time.time() + 300
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "l0" / "pruned.pt").exists()  # it died while pruning
    p = subprocess.run(cli + [str(killed)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    a, _ = load_model(straight / "l0" / "finetune" / "model.pt", inference=False)
    b, _ = load_model(killed / "l0" / "finetune" / "model.pt", inference=False)
    assert a.config() == b.config()
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_an_l0_stage_that_fine_tunes_keeps_its_kd_schedule_across_both_phases(tiny, tmp_path):
    """beta falls over the whole stage, pruning and fine-tuning, not twice."""
    text = _l0_experiment(tmp_path / "l0.toml", tiny).read_text()
    text += '[stages.kd]\nloss = "yblank"\nweight = 2.0\nschedule = "linear"\n'
    text = text.replace("finetune_steps = 6", "finetune_steps = 6\nmask_every = 1000")
    exp = parse_experiment(__import__("tomllib").loads(text))
    run_experiment(exp, tmp_path / "out", progress=False, log=lambda s: None)

    def logged(folder: Path) -> list:
        rows = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["kd_weight"]) for r in rows]

    total = 30 + 6
    prune = logged(tmp_path / "out" / "l0")
    tune = logged(tmp_path / "out" / "l0" / "finetune")
    # logged after update s of its phase, taken with beta at the stage's update offset + s - 1
    assert prune == [(s, pytest.approx(2.0 * (1 - (s - 1) / total), abs=1e-5))
                     for s in range(2, 31, 2)]
    assert [w for _, w in tune] == [pytest.approx(2.0 * (1 - (30 + s - 1) / total), abs=1e-5)
                                    for s, _ in tune] and tune
