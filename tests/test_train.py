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
speed_perturb = 0.5      # its draws are in the checkpoint too: resume stays exact
threads = 1
device = "cpu"           # bit-exact resume is a CPU property: on CUDA scatter_add, CTC's
                         # backward and cuDNN are not deterministic ("auto" would pick a GPU)
""")
    return path


def test_loss_falls(tiny, tmp_path):
    exp = _experiment(tmp_path / "e.toml", tiny, 40, every=20)
    p = subprocess.run(ASRLAB + ["train", str(exp), "--out", str(tmp_path / "o"), "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(l) for l in (tmp_path / "o/model/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], (rows[0], rows[-1])
    # the default schedule is tied to the budget: at max_steps the rate is near zero
    assert rows[-1]["lr"] <= 1.01 * 0.02 * 2.5e-3, rows[-1]["lr"]
    for key in ("loss", "rnnt", "ctc", "lr", "grad_norm", "audio_s_per_s", "rss_mb",
                "zeroed_losses", "utterances"):
        assert key in rows[-1]
    assert sum(r["zeroed_losses"] for r in rows) == 0 and rows[-1]["utterances"] > 0


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
    ckpt = killed / "model" / "checkpoints" / "step-00000005.pt"  # 25 steps before the end
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
    assert [json.loads(l)["step"] for l in logged if json.loads(l)["step"] <= 5] == \
        [s for s in steps if s <= 5]


def test_buckets_are_estimated_from_every_cut(tiny, tmp_path):
    """The feature cache writes cuts longest first and lhotse estimates buckets from the first
    10,000 it reads: the trainer's buckets must describe the whole duration distribution."""
    from lhotse import CutSet
    from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets
    from lhotse.testing.dummies import dummy_cut

    from engine.config import TrainConfig
    from engine.models.build import build, preset
    from engine.testing import tiny_tokenizer
    from engine.train import Trainer

    n = 12_000
    cuts = CutSet.from_cuts(dummy_cut(i, duration=10.0 - 9.0 * i / n) for i in range(n))
    tok = tiny_tokenizer(tiny)
    trainer = Trainer(build(preset("tiny", vocab_size=tok.vocab_size)), cuts, tok,
                      TrainConfig(max_duration=40.0), tmp_path)
    bins = [float(b) for b in trainer._sampler(0).duration_bins]
    whole = [float(b) for b in estimate_duration_buckets(cuts, num_buckets=10)]
    first = [float(b) for b in estimate_duration_buckets(cuts.subset(first=10_000), num_buckets=10)]
    assert bins == whole, (bins, whole)
    assert bins[0] < first[0] - 0.5, (bins, first)


def test_learning_rate_warms_up_then_anneals_to_the_budget():
    from engine.train import lr_factor

    f = [lr_factor(s, 10, "cosine", 100, 0.02) for s in range(1, 121)]
    assert f[0] == 0.1 and f[9] == 1.0  # linear warm-up to the peak at step 10
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # then only down
    assert abs(f[99] - 0.02) < 1e-9 and f[119] == f[99]  # near zero at the last step, then flat
    assert abs(lr_factor(55, 10, "cosine", 100, 0.0) - 0.5) < 1e-9  # half way: half the peak
    old = [lr_factor(s, 10, "inv_sqrt") for s in (10, 40, 1000)]
    assert old == [1.0, 0.5, 0.1]


def test_spec_augment_starts_at_its_step(tiny, tmp_path):
    """``spec_augment_from``: the first updates see clean features, every later one SpecAugment."""
    from engine.config import TrainConfig
    from engine.data.corpus import load_cuts
    from engine.models.build import build, preset
    from engine.testing import tiny_tokenizer
    from engine.train import Trainer

    tok = tiny_tokenizer(tiny)
    cfg = TrainConfig(max_steps=5, max_duration=10.0, warmup_steps=1, spec_augment=True,
                      spec_augment_from=3, checkpoint_every=100, threads=1)
    trainer = Trainer(build(preset("tiny", vocab_size=tok.vocab_size)), load_cuts(tiny, "train"),
                      tok, cfg, tmp_path)
    inner, seen = trainer.dataset.spec_augment, []

    def spy(x, lens):
        seen.append(trainer.progress.step)
        return inner(x, lens)

    trainer.dataset.spec_augment = spy
    trainer.run()
    assert trainer.progress.step == 5 and seen == [3, 4]


def test_an_evaluation_without_an_export_stage_reports_the_deployable_bytes(tiny, tmp_path):
    # the training file keeps the CTC and simple-joiner heads; the size a user would ship is
    # the exported one, so an evaluate stage with no export stage before it exports implicitly
    exp = _experiment(tmp_path / "e.toml", tiny, 4, every=4)
    exp.write_text(exp.read_text() + """
[[stages]]
kind = "evaluate"
name = "eval"
model = "model"
splits = ["test-clean"]
max_utterances = 4
""")
    p = subprocess.run(ASRLAB + ["train", str(exp), "--out", str(tmp_path / "o"), "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "o/eval/results_test-clean.json").read_text())
    deployable = tmp_path / "o/eval/deployable/model.pt"
    assert s["bytes_from"] == "implicit export" and s["bytes"] == deployable.stat().st_size
    assert s["bytes"] < (tmp_path / "o/model/model.pt").stat().st_size
