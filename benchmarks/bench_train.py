"""Training and decoding speed per preset, side by side in one run, on this machine.

    .venv/bin/python benchmarks/bench_train.py [--corpus data/demo] [--steps 12]

- the matrix-multiply bound: the fp32 GFLOP/s of a large matmul here, divided by the training
  FLOPs one second of audio costs a preset (forward + backward, counted by FlopCounterMode):
  the most audio per second training could reach if every FLOP ran at matmul speed;
- measured training throughput (seconds of audio per second, median over ``--steps`` steps after
  2 warm-up steps) with the pruned loss, our pure-PyTorch full-lattice loss and torchaudio's;
- decoding real-time factor at 1 thread, greedy and modified beam search (beam 4).

Appends a dated section to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_data import report  # noqa: E402


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def batches(corpus: Path, tok, seconds: float, n: int):
    from engine.data.batching import TransducerDataset
    from engine.data.features import compute_features
    from lhotse.dataset import DynamicBucketingSampler

    cuts = compute_features(corpus, "train")
    sampler = DynamicBucketingSampler(cuts, max_duration=seconds, shuffle=True, seed=0,
                                      num_buckets=10)
    ds = TransducerDataset(tok)
    out = []
    for c in sampler:
        out.append((ds[c], sum(x.duration for x in c)))
        if len(out) == n:
            break
    return out


def train_speed(model, data, warmup: int = 2) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    rates = []
    for i, (b, audio) in enumerate(data):
        t0 = time.perf_counter()
        out = model(b["features"], b["feature_lens"], b["tokens"], b["token_lens"])
        opt.zero_grad()
        (out["loss"] / b["features"].shape[0]).backward()
        opt.step()
        if i >= warmup:
            rates.append(audio / (time.perf_counter() - t0))
    return statistics.median(rates)


def train_flops_per_audio_second(model, b, audio: float) -> float:
    model.train()
    with FlopCounterMode(display=False) as fc:
        out = model(b["features"], b["feature_lens"], b["tokens"], b["token_lens"])
        out["loss"].backward()
    model.zero_grad()
    return fc.get_total_flops() / audio


def decode_rtf(model, feats: list[torch.Tensor], method: str) -> float:
    from engine.compress.accounting import one_thread
    from engine.decode import decode

    model.eval()
    audio = sum(f.shape[0] for f in feats) / 100.0
    times = []
    with one_thread(), torch.no_grad():
        decode(model, feats[0][None], torch.tensor([feats[0].shape[0]]), method)
        for _ in range(3):
            t0 = time.perf_counter()
            for f in feats:
                decode(model, f[None], torch.tensor([f.shape[0]]), method, beam=4)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default=str(ROOT / "data" / "demo"))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-seconds", type=float, default=45.0)
    ap.add_argument("--trained", default=None,
                    help="a trained model.pt: decoding RTF is also measured on it")
    args = ap.parse_args()

    from engine.data.features import compute_features, train_cmvn
    from engine.models.build import build, preset
    from engine.stages import corpus_tokenizer

    torch.set_num_threads(2)
    corpus = Path(args.corpus)
    tok = corpus_tokenizer(corpus, 256, "unigram")
    stats = train_cmvn(corpus)
    data = batches(corpus, tok, args.batch_seconds, args.steps + 2)
    test = [torch.as_tensor(c.load_features()) for c in
            compute_features(corpus, "test-clean").subset(first=20)]
    gflops = matmul_gflops()
    rows = [("fp32 matmul 1024x1024, 2 threads", f"{gflops:.1f} GFLOP/s")]
    for name in ("tiny", "student-s", "student-m", "teacher"):
        torch.manual_seed(0)
        speeds = {}
        for loss in ("pruned", "full", "torchaudio"):
            model = build(preset(name, vocab_size=tok.vocab_size, loss=loss), stats)
            speeds[loss] = train_speed(model, data)
            if loss == "pruned":
                flops = train_flops_per_audio_second(model, *data[0])
        params = sum(p.numel() for p in model.for_inference().parameters())
        bound = gflops * 1e9 / flops
        rows.append((f"train {name} ({params / 1e6:.2f} M), {args.batch_seconds:.0f} s batches",
                     f"pruned loss {speeds['pruned']:.0f} s/s, our full loss "
                     f"{speeds['full']:.0f} s/s, torchaudio loss {speeds['torchaudio']:.0f} s/s "
                     f"(pruned {speeds['pruned'] / speeds['torchaudio']:.2f}x torchaudio); "
                     f"matmul bound "
                     f"{bound:.0f} s/s ({flops / 1e9:.2f} GFLOP per audio second)"))
        rows.append((f"decode {name}, untrained weights, 1 thread",
                     f"RTF greedy {decode_rtf(model, test, 'greedy'):.4f}, "
                     f"beam 4 {decode_rtf(model, test, 'beam'):.4f}"))
    if args.trained:
        from engine.checkpoint import load_model

        m, _ = load_model(args.trained)
        rows.append((f"decode trained {Path(args.trained).parent.parent.name}, 1 thread",
                     f"RTF greedy {decode_rtf(m, test, 'greedy'):.4f}, "
                     f"beam 4 {decode_rtf(m, test, 'beam'):.4f}"))

    report("Training and decoding speed",
           f"`benchmarks/bench_train.py --corpus {corpus}` (vocabulary {tok.vocab_size})", rows)


if __name__ == "__main__":
    main()
