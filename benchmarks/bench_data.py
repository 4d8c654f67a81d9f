"""Data pipeline benchmark: synthesis speed, feature extraction (cached vs on the fly), loader
throughput, and tokens per word. Prints a table and appends it, dated, to BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_data.py [--size demo] [--work /tmp/asrlab-bench]

Target (issue 3): the loader delivers at least 20x the audio a 3.7 M-parameter model consumes
in training on this machine (about 70 s of audio per second), i.e. 1,400 s of audio per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TRAINER_AUDIO_PER_S = 70.0  # measured for a 3.7 M model on 2 cores (a prototype before the lab's code)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node() or 'host'}: {os.cpu_count()} cores, {cpu}, torch {torch.__version__}"


def loader_rate(cuts, dataset, workers: int, max_duration: float = 60.0, epochs: int = 3) -> float:
    """Median seconds of audio delivered per wall-clock second over ``epochs`` passes."""
    from engine.data.batching import LoaderSettings, make_loader

    total = sum(c.duration for c in cuts)
    rates = []
    loader = make_loader(cuts, dataset, LoaderSettings(max_duration=max_duration,
                                                       num_workers=workers))
    for _ in range(epochs):
        t0 = time.perf_counter()
        for _batch in loader:
            pass
        rates.append(total / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="demo")
    ap.add_argument("--work", default="/tmp/asrlab-bench")
    ap.add_argument("--keep", action="store_true", help="reuse an existing synthesized corpus")
    args = ap.parse_args()

    from engine.data.corpus import corpus_info, load_cuts, load_supervisions
    from engine.data.batching import TransducerDataset
    from engine.data.features import SpecAugment, compute_features, features_dir
    from engine.data.noise import NoiseAugment
    from engine.data.sentences import SentenceGenerator
    from engine.data.synth import synthesize
    from engine.data.tokenizer import Tokenizer, train_tokenizer

    work = Path(args.work)
    corpus = work / args.size
    rows: list[tuple[str, str]] = []

    # 1. synthesis
    if not args.keep and corpus.exists():
        shutil.rmtree(corpus)
    t0 = time.perf_counter()
    meta = synthesize(corpus, size=args.size, seed=0, progress=False)
    synth_s = time.perf_counter() - t0
    info = corpus_info(corpus)["splits"]
    hours = sum(s["hours"] for s in info.values())
    rows.append((f"synthesis, {args.size} corpus ({meta['utterances']} utterances, {hours:.2f} h)",
                 f"{meta['utterances'] / synth_s:.0f} utterances/s, "
                 f"{hours * 3600 / synth_s:.0f} s of audio/s ({synth_s:.0f} s wall)"))

    # 2. features: precompute the train split (all cores), and on-the-fly in one process
    train_dir = features_dir(corpus, "train")
    if train_dir.exists():
        shutil.rmtree(train_dir)
    train_audio = sum(c.duration for c in load_cuts(corpus, "train"))
    t0 = time.perf_counter()
    cuts = compute_features(corpus, "train")
    pre_s = time.perf_counter() - t0
    rows.append(("feature precompute (train, all cores, lilcom cache)",
                 f"{train_audio / pre_s:.0f} s of audio/s"))

    texts = [s.text for s in load_supervisions(corpus, "train")]
    tok_path = work / "tok256"
    train_tokenizer(texts, tok_path, 256)
    tok = Tokenizer(tok_path)
    sample = cuts.subset(first=min(600, len(cuts)))
    for name, ds, workers in [
        ("loader, cached features, 0 workers", TransducerDataset(tok), 0),
        ("loader, cached features, 2 workers", TransducerDataset(tok), 2),
        ("loader, cached + SpecAugment, 2 workers",
         TransducerDataset(tok, spec_augment=SpecAugment()), 2),
        ("loader, on-the-fly fbank, 2 workers", TransducerDataset(tok, on_the_fly=True), 2),
        ("loader, cached + noise aug p=0.5 + SpecAugment, 2 workers",
         TransducerDataset(tok, spec_augment=SpecAugment(), noise=NoiseAugment(0.5, seed=0)), 2),
    ]:
        rate = loader_rate(sample, ds, workers)
        rows.append((name, f"{rate:.0f} s of audio/s ({rate / TRAINER_AUDIO_PER_S:.0f}x a "
                           f"3.7 M model's {TRAINER_AUDIO_PER_S:.0f} s/s)"))

    # 3. tokens per word
    full_texts = [s.text for s in SentenceGenerator("full").unique_sentences(20000, seed=0)]
    for label, tx in ((f"{args.size} train transcripts", texts), ("full-tier sentences", full_texts)):
        for v in (256, 500):
            try:
                r = train_tokenizer(tx, work / f"tpw-{v}", v)
                rows.append((f"tokens per word, unigram {v}, {label}", f"{r.tokens_per_word:.2f}"))
            except RuntimeError as e:
                import re

                limit = re.search(r"<= (\d+)", str(e))
                why = (f"the transcripts allow at most {limit.group(1)} unigram pieces" if limit
                       else str(e).splitlines()[-1])
                rows.append((f"tokens per word, unigram {v}, {label}", f"n/a ({why})"))

    report("Data pipeline", f"`benchmarks/bench_data.py --size {args.size}`", rows)


def report(title: str, command: str, rows: list[tuple[str, str]]) -> None:
    """Print ``rows`` and append them to BENCHMARKS.md under a dated, machine-stamped heading."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    width = max(len(k) for k, _ in rows)
    print(f"\n## {title}, {stamp}\n{machine()}\n")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    with open(ROOT / "BENCHMARKS.md", "a") as f:
        if f.tell() == 0:
            f.write("# Benchmarks\n\nFigures written by the scripts in `benchmarks/`; newest "
                    "sections last. Each section names its date and machine.\n")
        f.write(f"\n## {title} ({stamp})\n\n{command} on {machine()}\n\n"
                "| what | measured |\n|---|---|\n")
        for k, v in rows:
            f.write(f"| {k} | {v} |\n")


if __name__ == "__main__":
    main()
