"""Where a stage computes and in what precision (engine.devices): ``device`` auto / cpu on a
machine without CUDA, a CUDA device this machine lacks refused at submission naming the field,
bf16 autocast training that learns and resumes exactly, a bf16-trained model evaluated in fp32.
Tests that need a GPU are marked and skipped here."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from engine import devices
from engine.config import ConfigError, TrainConfig, parse_experiment

HAS_CUDA = devices.cuda_count() > 0
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")


def _exp(device="auto", precision="fp32", eval_device=None):
    ev = {"kind": "evaluate", "name": "eval", "model": "model"}
    if eval_device:
        ev["device"] = eval_device
    return {"name": "dev", "data": {"corpus": "builtin:tiny"}, "stages": [
        {"kind": "train", "name": "model", "model": {"preset": "tiny"},
         "train": {"max_steps": 2, "device": device, "precision": precision}}, ev]}


def _trainer(tiny, tiny_tok, out, **train):
    from engine.data.corpus import load_cuts
    from engine.models.build import build, preset
    from engine.train import Trainer

    cfg = TrainConfig(max_duration=20.0, warmup_steps=5, log_every=2, threads=1, **train)
    torch.manual_seed(0)
    model = build(preset("tiny", vocab_size=tiny_tok.vocab_size))
    lines = []
    return Trainer(model, load_cuts(tiny, "train"), tiny_tok, cfg, out, seed=3,
                   log=lines.append), lines


def test_device_settings_resolve_and_bad_ones_name_their_field():
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve("auto").type == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(ConfigError, match=r"stages\[0\]\.train\.device"):
        parse_experiment(_exp(device="gpu"))
    with pytest.raises(ConfigError, match=r"stages\[1\]\.device"):
        parse_experiment(_exp(eval_device="cuda:x"))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.train\.precision"):
        parse_experiment(_exp(precision="fp16"))


@no_cuda
def test_cuda_where_there_is_none_is_refused_at_submission(tmp_path):
    from engine.runner.client import submit

    for exp, field in ((_exp(device="cuda"), r"stages\[0\]\.train\.device = 'cuda'"),
                       (_exp(eval_device="cuda:1"), r"stages\[1\]\.device = 'cuda:1'")):
        with pytest.raises(ConfigError, match=field + ".*no CUDA device"):
            submit(tmp_path / "lab", exp, "e.toml")
    assert not (tmp_path / "lab" / "runs").exists() or not any((tmp_path / "lab" / "runs").iterdir())
    # on a Ray cluster the nodes run it: a CUDA stage must ask for a GPU instead
    with pytest.raises(ConfigError, match=r"stages\[0\]\.train\.device = 'cuda' on a Ray "
                                          r"cluster needs a GPU"):
        submit(tmp_path / "lab", _exp(device="cuda"), "e.toml", executor="ray")
    # and `asrlab train --device cuda` says the same before anything runs
    p = subprocess.run([sys.executable, "-m", "engine.cli", "train", "experiments/tiny.toml",
                        "--device", "cuda", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "no CUDA device" in p.stderr + p.stdout, p.stderr
    assert not (tmp_path / "o").exists()


def test_where_a_stage_runs_is_not_part_of_its_identity():
    from engine.runner.graph import stage_hashes

    cpu = stage_hashes(parse_experiment(_exp(device="cpu", eval_device="cpu")))
    auto = stage_hashes(parse_experiment(_exp()))
    bf16 = stage_hashes(parse_experiment(_exp(precision="bf16")))
    assert cpu == auto
    assert bf16["model"] != auto["model"]  # bf16 computes something else


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_and_auto_train_on_this_machines_device(device, tiny, tiny_tok, tmp_path):
    trainer, lines = _trainer(tiny, tiny_tok, tmp_path, max_steps=2, device=device)
    path = trainer.run()
    want = "cuda" if device == "auto" and HAS_CUDA else "cpu"
    assert next(trainer.model.parameters()).device.type == want
    assert any(f"training on {want}" in l for l in lines), lines
    assert path.exists()


def test_bf16_autocast_learns_resumes_exactly_and_evaluates_in_fp32(tiny, tiny_tok, tmp_path):
    from engine.checkpoint import load_model
    from engine.stages import evaluate_model

    trainer, _ = _trainer(tiny, tiny_tok, tmp_path / "a", max_steps=30, checkpoint_every=15,
                          precision="bf16", device="cpu")
    straight = trainer.run()
    import json

    rows = [json.loads(l) for l in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], (rows[0], rows[-1])
    # resume from step 15 at the same precision: the same weights as the run never stopped
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a", b)
    (b / "checkpoints" / "step-00000030.pt").unlink()
    (b / "model.pt").unlink()
    resumed, lines = _trainer(tiny, tiny_tok, b, max_steps=30, checkpoint_every=15,
                              precision="bf16", device="cpu")
    resumed.run()
    assert any("resumed from" in l and "step 15" in l for l in lines), lines
    m1, _ = load_model(straight, inference=False)
    m2, _ = load_model(b / "model.pt", inference=False)
    for (name, x), y in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert x.dtype == torch.float32 and torch.equal(x, y), name
    # the bf16-trained model is an ordinary fp32 model: it decodes without autocast
    model, _ = load_model(straight)
    res = evaluate_model(model, tiny_tok, tiny, "test-clean", max_utterances=4,
                         accounting_utterances=1, device="cpu")
    assert res["summary"]["utterances"] == 4 and res["summary"]["wer"] >= 0


def test_a_distiller_and_a_two_pass_trainer_move_their_frozen_teacher_with_them():
    from engine.compress.distill import Distiller
    from engine.config import KDConfig
    from engine.models.build import build, preset

    teacher, student = build(preset("tiny", vocab_size=32)), build(preset("tiny", vocab_size=32))
    d = Distiller(student, teacher, KDConfig())
    d.to(torch.float64)  # the same path a .to("cuda") takes
    assert next(d.student.parameters()).dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in d.teacher.parameters())
    assert "_teacher" not in dict(d.named_modules())  # still not trained nor saved
    assert not any(k.startswith("teacher") or "_teacher" in k for k in d.state_dict())


@needs_cuda
def test_training_on_cuda_writes_a_checkpoint_any_device_loads(tiny, tiny_tok, tmp_path):
    trainer, _ = _trainer(tiny, tiny_tok, tmp_path, max_steps=4, checkpoint_every=2,
                          device="cuda", precision="bf16")
    trainer.run()
    st = torch.load(tmp_path / "checkpoints" / "step-00000004.pt", weights_only=True)
    assert all(v.device.type == "cpu" for v in st["model"].values())
    # and resumes on the CPU
    (tmp_path / "model.pt").unlink()
    (tmp_path / "checkpoints" / "step-00000004.pt").unlink()
    again, lines = _trainer(tiny, tiny_tok, tmp_path, max_steps=4, checkpoint_every=2,
                            device="cpu", precision="bf16")
    again.run()
    assert any("step 2" in l for l in lines)


def test_a_stage_with_its_own_seed_keeps_its_identity_across_the_experiments_seed():
    from engine.runner.graph import stage_hashes

    def exp(seed, pinned):
        e = _exp()
        e["seed"] = seed
        if pinned is not None:
            e["stages"][0]["seed"] = pinned
        return parse_experiment(e)

    def model(seed, pinned):
        return stage_hashes(exp(seed, pinned))["model"]

    assert model(0, None) != model(1, None)
    # pinned to 0: the same stage as an unpinned one in a seed-0 experiment, in any experiment
    assert model(1, 0) == model(0, None) == model(5, 0)
    assert model(0, 3) == model(3, None)
    with pytest.raises(ConfigError, match="seed"):
        exp(0, -1)
