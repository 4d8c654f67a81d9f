"""The CUDA and NCCL paths, proven on a machine without a GPU (issue: every method on a GPU).

``engine.fakecuda`` makes CUDA tensors that hold their values on the CPU and are checked as the
CUDA backend checks them (one device per operation, or "Expected all tensors to be on the same
device"), so every stage kind runs here with ``device = "cuda"``, and each fix below has a test
that fails without it. What a GPU run verified, and what only these tests did: docs/gpu.md.
"""

from __future__ import annotations

import pytest
import torch

from engine import devices
from engine.config import ConfigError, parse_experiment
from engine.fakecuda import CudaTensor, FakeCuda

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_fake_cuda_refuses_what_cuda_refuses_and_counts_host_syncs():
    with FakeCuda() as fc:
        x = torch.randn(3, 4, device="cuda")
        lin = torch.nn.Linear(4, 2)
        weight = lin.weight
        lin.to("cuda")
        assert isinstance(x, CudaTensor) and x.device == torch.device("cuda", 0)
        assert lin.weight is weight and lin.weight.device.type == "cuda"  # as .to moves it
        with pytest.raises(RuntimeError, match="found at least two devices, cpu and cuda:0"):
            x @ torch.randn(4, 2)
        with pytest.raises(RuntimeError, match="two devices"):
            torch.zeros(2, 4).mul_(lin.weight)  # a CPU weight times a GPU mask
        assert (x * torch.tensor(2.0)).device.type == "cuda"  # a CPU scalar is allowed
        lin(x).sum().backward()
        assert lin.weight.grad.device.type == "cuda"
        fc.reset()
        float(x.sum())
        x[x > 0]  # boolean indexing waits for the data
        x.cpu()
        assert fc.syncs["_local_scalar_dense"] == 1 and fc.syncs["copy to cpu"] == 1, fc.syncs
        assert fc.host_syncs >= 3
        with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
            x.numpy()
    assert not torch.cuda.is_available() or devices.cuda_count()  # restored on exit


@pytest.fixture(scope="module")
def fake_run(tiny, tmp_path_factory):
    """experiments/tiny_devices.toml (every stage kind) with every model on fake CUDA."""
    from engine.config import load_experiment
    from engine.testing import run_on_fake_cuda

    exp = load_experiment(ROOT / "experiments" / "tiny_devices.toml").model_dump()
    exp["data"]["corpus"] = str(tiny)
    fc = FakeCuda()
    lines = []
    out = tmp_path_factory.mktemp("fake_cuda")
    outputs = run_on_fake_cuda(parse_experiment(exp), out, fc, log=lines.append)
    return outputs, lines, fc


def test_every_stage_kind_runs_on_cuda(fake_run):
    """Train (three losses, an LSTM predictor, eval probes), distill (y/blank/rest, full,
    layerwise), sharing, prune_magnitude (its final masks on the CPU copy), prune_l0 (its
    gates folded into a CPU copy, fine-tuned), las_train / las_distill / finetune, export,
    evaluate (greedy, beam, two-pass, sherpa-onnx int8)."""
    from engine.checkpoint import load_model
    from engine.config import load_experiment

    outputs, lines, fc = fake_run
    kinds = {st.kind for st in load_experiment(ROOT / "experiments" / "tiny_devices.toml").stages}
    assert kinds == {"train", "distill", "prune_magnitude", "prune_l0", "las_train",
                     "las_distill", "finetune", "export", "evaluate"}
    assert sum("training on cuda" in l for l in lines) >= 10, lines
    sparse, _ = load_model(outputs["sparse"]["model"])
    assert outputs["sparse"]["sparsity"] > 0.4
    zeros = [float((w == 0).float().mean()) for n, w in sparse.encoder.named_parameters()
             if n.endswith("weight") and w.ndim == 2]
    assert min(zeros) > 0.4, zeros  # the final file is as sparse as its masks
    small, _ = load_model(outputs["l0"]["model"], inference=False)
    assert outputs["l0"]["params_after"] < outputs["l0"]["params_before"]
    assert sum(p.numel() for p in small.parameters()) == outputs["l0"]["params_after"]
    assert outputs["l0"]["finetune_steps"] == 2
    for name in ("eval-l0", "eval-sparse-beam", "eval-s-deep", "eval-l0-int8"):
        assert outputs[name]["results"]["test-clean"]["utterances"] == 3
    assert fc.kernels > 1000 and fc.host_syncs > 0


def test_ddp_log_step_reduces_on_the_training_device(tiny, tiny_tok, tmp_path, monkeypatch):
    """NCCL reduces GPU tensors only: the window of losses summed over ranks is on the GPU."""
    import torch.distributed as dist

    from engine.config import TrainConfig
    from engine.data.corpus import load_cuts
    from engine.models.build import build, preset
    from engine.train import Trainer

    seen = []

    def nccl_all_reduce(t, *a, **k):  # what ProcessGroupNCCL says of a CPU tensor
        if t.device.type != "cuda":
            raise RuntimeError("No backend type associated with device type cpu")
        seen.append(t.device)

    with FakeCuda():
        trainer = Trainer(build(preset("tiny", vocab_size=tiny_tok.vocab_size)),
                          load_cuts(tiny, "train"), tiny_tok,
                          TrainConfig(max_duration=20.0, device="cuda"), tmp_path)
        trainer.world = 2
        monkeypatch.setattr(dist, "all_reduce", nccl_all_reduce)
        w = {"loss": 3.0, "tokens": 7, "audio": 1.5, "grad": 1.0, "steps": 1, "time": 0.1}
        out = trainer._sum_ranks(w)
    assert seen == [torch.device("cuda", 0)] and out["tokens"] == 7 and out["loss"] == 3.0


def _dp_exp(device="cuda", nproc=2, resources=None):
    st = {"kind": "train", "name": "model", "model": {"preset": "tiny"}, "nproc": nproc,
          "train": {"max_steps": 2, "device": device}}
    if resources:
        st["resources"] = resources
    return {"name": "dp", "data": {"corpus": "builtin:tiny"}, "stages": [st]}


def test_ranks_never_share_a_gpu(monkeypatch):
    from engine.runner.ray_executor import stage_resources

    with FakeCuda(devices=2):
        with pytest.raises(ConfigError, match=r"stages\[0\]\.train\.device = 'cuda:1' with "
                                              r"stages\[0\]\.nproc = 2: every rank"):
            devices.check_experiment(parse_experiment(_dp_exp("cuda:1")), "e.toml")
        with pytest.raises(ConfigError, match=r"stages\[0\]\.nproc = 3 ranks on CUDA need a "
                                              r"GPU each; this machine has 2"):
            devices.check_experiment(parse_experiment(_dp_exp("cuda", 3)), "e.toml")
        assert devices.check_experiment(parse_experiment(_dp_exp("cuda", 2)), "e.toml") == []
        # a rank past the GPUs it sees is refused, not folded onto another rank's GPU
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert devices.resolve("cuda", distributed=True) == torch.device("cuda", 1)
        monkeypatch.setenv("LOCAL_RANK", "2")
        with pytest.raises(ValueError, match="rank 2 .* has no GPU of its own"):
            devices.resolve("cuda", distributed=True)
    # on Ray each rank needs a GPU of the stage's node
    exp = parse_experiment(_dp_exp("cuda", 2, {"gpus": 1}))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.nproc = 2 ranks with gpus = 1 per "
                                          r"node: each rank needs a GPU of its own"):
        devices.check_experiment(exp, "e.toml", lambda st: stage_resources(exp, st)["gpus"])


def test_ray_hiding_the_gpus_of_an_auto_stage_is_said(monkeypatch):
    from engine.runner.ray_executor import stage_resources

    exp = parse_experiment(_dp_exp("auto", 1))
    notes = devices.check_experiment(exp, "e.toml",
                                     lambda st: stage_resources(exp, st)["gpus"])
    assert len(notes) == 1 and "stages[0].train.device = 'auto' with gpus = 0 on Ray" in notes[0]
    exp = parse_experiment(_dp_exp("auto", 1, {"gpus": 1}))
    assert devices.check_experiment(exp, "e.toml",
                                    lambda st: stage_resources(exp, st)["gpus"]) == []
    # and the stage's log says why it trains on the CPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "gpus = 0" in devices.where_note("auto", torch.device("cpu"))
    assert devices.where_note("cpu", torch.device("cpu")) == ""


def _batch(vocab=32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 120, 80, generator=g), torch.tensor([120, 100]),
            torch.randint(1, vocab, (2, 6), generator=g), torch.tensor([6, 4]))


def test_torchaudio_loss_trains_under_bf16_autocast():
    from engine.models.build import build, preset

    torch.manual_seed(0)
    model = build(preset("tiny", vocab_size=32, loss="torchaudio"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_batch())
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["rnnt"].dtype == torch.float32


def test_recurrent_parts_run_in_fp32_under_bf16_autocast():
    """The LSTM predictor and the LAS rescorer's LSTMs stay fp32 (oneDNN has no bf16 LSTM on
    some CPUs; the lab computes them outside autocast on every device)."""
    from engine.models.build import build, preset
    from engine.models.las import LASConfig

    torch.manual_seed(0)
    model = build(preset("tiny", vocab_size=32, predictor="lstm"))
    model.with_las(LASConfig(embed_dim=16, layers=(16,), attn_dim=16, out_dim=16))
    model.eval()
    x, x_lens, y, y_lens = _batch()
    ref_pred, _ = model.predict(y)
    enc, enc_lens = model.encode(x, x_lens)
    las_out = []
    model.las.lstms[0].register_forward_hook(lambda m, a, out: las_out.append(out[0]))
    model.las.loss(enc, enc_lens, y, y_lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred, _ = model.predict(y)
        ce, _ = model.las.loss(enc, enc_lens, y, y_lens)
    assert pred.dtype == torch.float32 and torch.allclose(pred, ref_pred, atol=1e-6)
    assert las_out[1].dtype == torch.float32 and torch.allclose(las_out[0], las_out[1], atol=1e-6)
    assert torch.isfinite(ce)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, x_lens, y, y_lens)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_simple_loss_normaliser_is_fp32_under_autocast():
    from engine.losses.pruned import simple_logprobs

    g = torch.Generator().manual_seed(0)
    am, lm = torch.randn(2, 50, 32, generator=g) * 3, torch.randn(2, 7, 32, generator=g) * 3
    tokens = torch.randint(1, 32, (2, 6), generator=g)
    ref = simple_logprobs(am, lm, tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = simple_logprobs(am, lm, tokens)
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_bit_exact_resume_tests_pin_the_cpu():
    """On a GPU machine "auto" picks the GPU, where resume is not bit-exact: the tests that
    compare weights bit for bit say device cpu."""
    for path, needle in (("tests/test_train.py", 'device = "cpu"'),
                         ("tests/compress/test_prune_stage.py", '"--device", "cpu"')):
        assert needle in (ROOT / path).read_text(), path


def test_a_trainer_on_cuda_syncs_the_host_once_a_logged_window(tiny, tiny_tok, tmp_path):
    """The logged sums stay on the device, the fused AdamW skips a non-finite step there, the
    lattice and the band are one kernel each: 4 updates with log_every = 4 make one host sync
    (reading the window), where the trainer used to make about nine every update."""
    from engine.config import TrainConfig
    from engine.data.corpus import load_cuts
    from engine.models.build import build, preset
    from engine.train import Trainer

    with FakeCuda() as fc:
        torch.manual_seed(0)
        trainer = Trainer(build(preset("tiny", vocab_size=tiny_tok.vocab_size)),
                          load_cuts(tiny, "train"), tiny_tok,
                          TrainConfig(max_duration=20.0, device="cuda", log_every=4,
                                      warmup_steps=2), tmp_path)
        window = {"loss": 0.0, "rnnt": 0.0, "ctc": 0.0, "simple": 0.0, "tokens": 0,
                  "audio": 0.0, "time": 0.0, "grad": 0.0, "steps": 0, "zeroed": 0,
                  "utterances": 0}
        trainer.model.train()
        batches = iter(trainer._sampler(0))
        trainer._step(next(batches), window)  # the first update creates the optimizer's state
        trainer._log_window(window)
        fc.reset()
        for _ in range(4):
            trainer._step(next(batches), window)
            trainer.progress.step  # noqa: B018
        trainer._log_window(window)
        assert fc.host_syncs == 1, (dict(fc.syncs), fc.sync_sites)
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and '"loss"' in rows[-1]
