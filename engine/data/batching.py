"""Batches for the transducer trainer: duration-bucketed sampling and padded tensors.

``make_loader`` returns a ``torch.utils.data.DataLoader`` over lhotse's ``DynamicBucketingSampler``
(batches hold at most ``max_duration`` seconds of audio, cuts of similar length together, so
padding stays small). Each batch is a dict:

- ``features``: (B, T, 80) float32 raw log-mel fbank (padded with 0; normalisation is the model's)
- ``feature_lens``: (B,) int64
- ``tokens``: (B, U) int64 token ids, padded with 0 (blank; use ``token_lens``)
- ``token_lens``: (B,) int64
- ``cut_ids``: list of B cut ids; ``texts``: list of B transcripts
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from lhotse.dataset.sampling.dynamic_bucketing import estimate_duration_buckets

from engine.data.features import DEFAULT_FBANK, FbankSettings, SpecAugment, SpeedPerturb, fbank
from engine.data.noise import NoiseAugment
from engine.data.tokenizer import Tokenizer


def cut_text(cut) -> str:
    return " ".join(s.text for s in cut.supervisions if s.text)


class TransducerDataset(torch.utils.data.Dataset):
    """Maps a CutSet (one batch from the sampler) to padded tensors.

    Cuts with cached features are read from the cache; a cut is computed from audio when it has
    none, or when waveform noise augmentation picks it (then the cache cannot be used, so
    ``noise.p`` also sets the share of the batch that pays for on-the-fly features).
    """

    def __init__(self, tokenizer: Tokenizer, *, spec_augment: SpecAugment | None = None,
                 noise: NoiseAugment | None = None, speed: SpeedPerturb | None = None,
                 on_the_fly: bool = False, settings: FbankSettings = DEFAULT_FBANK) -> None:
        self.tokenizer = tokenizer
        self.spec_augment = spec_augment
        self.augment = True  # the trainer turns SpecAugment off before ``spec_augment_from``
        self.noise = noise
        self.speed = speed
        self.on_the_fly = on_the_fly
        self.settings = settings

    def _features(self, cut) -> torch.Tensor:
        noisy = self.noise is not None and self.noise.pick()
        if cut.has_features and not self.on_the_fly and not noisy:
            return torch.from_numpy(np.asarray(cut.load_features(), dtype=np.float32))
        audio = cut.load_audio()[0]
        if noisy:
            audio = self.noise.corrupt(audio)
        return fbank(audio, self.settings)

    def _perturbed(self, cut) -> torch.Tensor:
        f = self._features(cut)
        factor = self.speed.pick() if self.speed is not None else None
        return f if factor is None else self.speed(f, factor)

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        feats = [self._perturbed(c) for c in cuts]
        lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        x = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
        for i, f in enumerate(feats):
            x[i, : f.shape[0]] = f
        if self.spec_augment is not None and self.augment:
            x = self.spec_augment(x, lens)
        texts = [cut_text(c) for c in cuts]
        ids = self.tokenizer.encode_batch(texts)
        token_lens = torch.tensor([len(t) for t in ids], dtype=torch.int64)
        tokens = torch.zeros(len(ids), max(1, int(token_lens.max())), dtype=torch.int64)
        for i, t in enumerate(ids):
            tokens[i, : len(t)] = torch.tensor(t, dtype=torch.int64)
        return {"features": x, "feature_lens": lens, "tokens": tokens, "token_lens": token_lens,
                "cut_ids": [c.id for c in cuts], "texts": texts}


@dataclass(frozen=True)
class LoaderSettings:
    max_duration: float = 60.0  # seconds of audio per batch
    num_buckets: int = 10
    shuffle: bool = True
    num_workers: int = 1
    seed: int = 0


def first_or_spread(cuts, split: str, n: int):
    """The first ``n`` cuts of an evaluation split; of the training split (stored longest
    first) ``n`` cuts spread evenly over it, so a training-set WER is not one of only the
    longest utterances."""
    if split != "train" or n >= len(cuts):
        return cuts.subset(first=n)
    every = list(cuts)
    return CutSet.from_cuts(every[int(i * len(every) / n)] for i in range(n))


def bucket_sampler(cuts: CutSet, max_duration: float, num_buckets: int = 10,
                   shuffle: bool = True, seed: int = 0, bins: list[float] | None = None,
                   **kw) -> DynamicBucketingSampler:
    """lhotse's bucketing sampler with bucket edges estimated from **every** cut.

    Left to itself the sampler estimates its buckets from the first 10,000 cuts it reads, and
    the feature cache writes cuts sorted longest first: on a large corpus the buckets then
    describe only the long half (one bucket took 44% of the audio of ``builtin:full``)."""
    bins = bins if bins is not None else estimate_duration_buckets(cuts, num_buckets=num_buckets)
    return DynamicBucketingSampler(cuts, max_duration=max_duration, num_buckets=num_buckets,
                                   duration_bins=bins, shuffle=shuffle, seed=seed, **kw)


def make_loader(cuts: CutSet, dataset: TransducerDataset,
                settings: LoaderSettings = LoaderSettings()) -> torch.utils.data.DataLoader:
    sampler = bucket_sampler(cuts, settings.max_duration, settings.num_buckets,
                             settings.shuffle, settings.seed, drop_last=False)
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=settings.num_workers,
        persistent_workers=settings.num_workers > 0, worker_init_fn=_seed_worker)


def _seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    torch.set_num_threads(1)
    if info.dataset.noise is not None:
        info.dataset.noise.reseed(info.seed % 2**32)


def batches_of(cuts, max_seconds: float = 60.0):
    """Cached-feature batches of whole cuts, longest first (less padding)."""
    cuts = sorted(cuts, key=lambda c: -c.duration)
    batch, total = [], 0.0
    for c in cuts:
        if batch and total + c.duration > max_seconds:
            yield batch
            batch, total = [], 0.0
        batch.append(c)
        total += c.duration
    if batch:
        yield batch


def audio_of(cut) -> dict:
    """Where an utterance's audio lies (file, start and duration in seconds), for the explorer's
    Listen page; empty when the cut has no file-backed recording."""
    rec = getattr(cut, "recording", None)
    src = rec.sources[0] if rec is not None and rec.sources else None
    if src is None or src.type != "file":
        return {}
    return {"audio": str(Path(src.source).resolve()), "start": float(cut.start),
            "duration": float(cut.duration)}


def accounting_sample(cuts, n: int) -> list:
    """The utterances size and speed are measured on: the ``n`` longest (ties by id), the same
    for every runtime, so a PyTorch figure and an exported model's are taken on the same audio."""
    return sorted(cuts, key=lambda c: (-c.duration, c.id))[:n]
