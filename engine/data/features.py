"""80-dim log-mel filterbank features exactly as sherpa-onnx computes them, a feature cache,
global mean/variance statistics, and SpecAugment.

Frame settings (Kaldi's fbank, as kaldi-native-fbank in sherpa-onnx): 16 kHz, 25 ms povey window,
10 ms shift, pre-emphasis 0.97, DC offset removed, dither 0, ``snip_edges=False`` (T = round(N /
160) frames), 80 mel bins from 20 Hz to 7,600 Hz, FFT size rounded up to 512, log of the mel
energies with energy floor 1e-10. Samples are floats in [-1, 1]. No normalisation here: the model
puts ``GlobalCMVN`` first, so an exported encoder takes raw fbank.

The cache stores features with lhotse's ``LilcomChunkyWriter`` (lilcom: lossy log-domain
compression, about 0.5% of the feature range, the storage icefall uses) under
``CORPUS/features/{key}/`` where ``key`` hashes the settings and the split's recordings: change
either and the features are recomputed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio
from lhotse import CutSet, Features, LilcomChunkyWriter

from engine.data.corpus import atomic_dir, load_cuts, manifest_path, write_json_atomic

FEATURES_VERSION = 1


@dataclass(frozen=True)
class FbankSettings:
    num_mel_bins: int = 80
    sample_rate: int = 16_000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    preemphasis: float = 0.97
    window: str = "povey"
    snip_edges: bool = False
    low_freq: float = 20.0
    high_freq: float = -400.0  # Kaldi convention: negative = Nyquist + value = 7,600 Hz

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


DEFAULT_FBANK = FbankSettings()


def fbank(samples: np.ndarray | torch.Tensor, settings: FbankSettings = DEFAULT_FBANK
          ) -> torch.Tensor:
    """(num_samples,) float waveform in [-1, 1] -> (num_frames, num_mel_bins) log-mel fbank."""
    x = torch.as_tensor(samples, dtype=torch.float32)
    if x.ndim == 2:
        assert x.shape[0] == 1, f"fbank takes mono audio, got shape {tuple(x.shape)}"
    else:
        assert x.ndim == 1, x.shape
        x = x.unsqueeze(0)
    window = int(settings.sample_rate * settings.frame_length_ms / 1000)
    if x.shape[1] < window:
        raise ValueError(f"audio of {x.shape[1]} samples is shorter than one "
                         f"{settings.frame_length_ms:g} ms frame ({window} samples)")
    return torchaudio.compliance.kaldi.fbank(
        x, num_mel_bins=settings.num_mel_bins, sample_frequency=settings.sample_rate,
        frame_length=settings.frame_length_ms, frame_shift=settings.frame_shift_ms,
        dither=settings.dither, preemphasis_coefficient=settings.preemphasis,
        window_type=settings.window, snip_edges=settings.snip_edges,
        low_freq=settings.low_freq, high_freq=settings.high_freq, energy_floor=1e-10)


def num_frames(num_samples: int, settings: FbankSettings = DEFAULT_FBANK) -> int:
    """Frames Kaldi's fbank yields for ``num_samples`` with ``snip_edges=False``."""
    shift = int(settings.sample_rate * settings.frame_shift_ms / 1000)
    return (num_samples + shift // 2) // shift


# ----- the cache -------------------------------------------------------------------------------
def features_dir(corpus: Path, split: str, settings: FbankSettings = DEFAULT_FBANK) -> Path:
    """Folder for one split's cached features; the name changes when anything they depend on does."""
    h = hashlib.sha1()
    h.update(f"v{FEATURES_VERSION}-{settings.key()}".encode())
    h.update(manifest_path(corpus, "recordings", split).read_bytes())
    return Path(corpus) / "features" / f"{split}-{h.hexdigest()[:12]}"


def _compute_shard(args: tuple[list[dict], str, FbankSettings]) -> list[dict]:
    cut_dicts, path, settings = args
    torch.set_num_threads(1)
    out = []
    with LilcomChunkyWriter(path) as writer:
        for d in cut_dicts:
            cut = CutSet.from_dicts([d])[0]
            feats = fbank(cut.load_audio()[0], settings).numpy()
            key = writer.write(cut.id, feats)
            cut.features = Features(
                type="kaldi-fbank", num_frames=feats.shape[0], num_features=feats.shape[1],
                frame_shift=settings.frame_shift_ms / 1000.0, sampling_rate=settings.sample_rate,
                start=cut.start, duration=cut.duration, storage_type=writer.name,
                storage_path=str(Path(path).resolve()), storage_key=key,
                recording_id=cut.recording_id, channels=0)
            out.append(cut.to_dict())
    return out


def compute_features(corpus: Path, split: str, settings: FbankSettings = DEFAULT_FBANK,
                     jobs: int | None = None, progress: bool = False) -> CutSet:
    """The split's cuts with cached features attached; computed (in parallel) on first use."""
    target = features_dir(corpus, split, settings)
    cuts_path = target / "cuts.jsonl.gz"
    if cuts_path.exists():
        return CutSet.from_file(cuts_path)
    cuts = load_cuts(corpus, split).to_eager()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(cuts)))
    # the same features whoever computes them: a cache finished first by another worker stays
    with atomic_dir(target, keep_existing=True) as work:
        dicts = [c.to_dict() for c in cuts]
        # Shards of ~100 cuts: a fine-grained progress bar and balanced workers.
        step = max(1, min(100, -(-len(dicts) // jobs)))
        shards = [(dicts[i:i + step], str(work / f"feats-{i // step:05d}.lca"), settings)
                  for i in range(0, len(dicts), step)]
        done: list[dict] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(dicts), desc=f"features {split}", unit="utt", mininterval=0.5)
        try:
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
                for fut in as_completed([pool.submit(_compute_shard, sh) for sh in shards]):
                    shard = fut.result()
                    done += shard
                    if bar is not None:
                        bar.update(len(shard))
        except BrokenProcessPool as e:
            raise RuntimeError(f"a feature worker died ({e}); nothing was cached for {split}: "
                               f"rerun to compute its features") from e
        finally:
            if bar is not None:
                bar.close()
        # The storage paths point into `work`; rewrite them to the final folder before renaming.
        for d in done:
            d["features"]["storage_path"] = str((target / Path(d["features"]["storage_path"]).name
                                                 ).resolve())
        CutSet.from_dicts(done).sort_by_duration().to_file(work / "cuts.jsonl.gz")
        write_json_atomic(work / "settings.json", {"split": split, **asdict(settings)})
    return CutSet.from_file(cuts_path)


# ----- normalisation statistics ----------------------------------------------------------------
def compute_cmvn(cuts: CutSet, settings: FbankSettings = DEFAULT_FBANK) -> dict:
    """Global per-bin mean and standard deviation over every frame of ``cuts`` (float64 sums)."""
    total = np.zeros(settings.num_mel_bins)
    total_sq = np.zeros(settings.num_mel_bins)
    frames = 0
    for cut in cuts:
        f = (cut.load_features() if cut.has_features else
             fbank(cut.load_audio()[0], settings).numpy()).astype(np.float64)
        total += f.sum(0)
        total_sq += (f ** 2).sum(0)
        frames += f.shape[0]
    if frames == 0:
        raise ValueError("no frames to compute normalisation statistics from")
    mean = total / frames
    std = np.sqrt(np.maximum(total_sq / frames - mean ** 2, 1e-10))
    return {"mean": mean.tolist(), "std": std.tolist(), "frames": frames}


def train_cmvn(corpus: Path, settings: FbankSettings = DEFAULT_FBANK) -> dict:
    """Statistics of the train split, cached next to its features as ``cmvn.json``."""
    target = features_dir(corpus, "train", settings)
    path = target / "cmvn.json"
    if path.exists():
        return json.loads(path.read_text())
    stats = compute_cmvn(compute_features(corpus, "train", settings), settings)
    write_json_atomic(path, stats)
    return stats


class GlobalCMVN(torch.nn.Module):
    """Fixed first layer of an encoder: (x - mean) / std with statistics from the train split.

    Buffers, not parameters: they are saved and exported with the model and never trained.
    """

    def __init__(self, mean: list[float] | torch.Tensor, std: list[float] | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", 1.0 / torch.as_tensor(std, dtype=torch.float32))

    @classmethod
    def from_stats(cls, stats: dict) -> "GlobalCMVN":
        return cls(stats["mean"], stats["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F) -> (B, T, F)."""
        return (x - self.mean) * self.inv_std


# ----- SpecAugment -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SpecAugmentSettings:
    """Park et al. 2019 (LibriSpeech "LD" policy widths; time masks scale with length)."""

    num_freq_masks: int = 2
    freq_mask_width: int = 27
    num_time_masks: int = 10
    time_mask_width: int = 40
    max_frames_fraction: float = 0.15
    time_warp: int = 20  # 0 disables; warp window in frames (80 in the paper is for 15 s
    # LibriSpeech utterances; ours are 2-5 s)
    p: float = 0.9


class SpecAugment:
    """SpecAugment on a padded batch, inside each utterance's length only.

    Per utterance, with probability ``p``: time warp (lhotse's ``time_warp``), then frequency
    masks, then time masks whose total is at most ``max_frames_fraction`` of the utterance (so a
    short utterance gets fewer, narrower masks). Masks are filled with the utterance's mean, so
    they carry no level cue. Padding is never touched.
    """

    def __init__(self, settings: SpecAugmentSettings = SpecAugmentSettings(),
                 generator: torch.Generator | None = None) -> None:
        self.s = settings
        self.g = generator

    def _rand(self, high: int) -> int:
        """Uniform integer in [0, high]."""
        return int(torch.randint(0, max(high, 0) + 1, (1,), generator=self.g))

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F), lengths: (B,) -> augmented copy of x."""
        from lhotse.dataset.signal_transforms import time_warp

        assert x.ndim == 3 and lengths.shape == (x.shape[0],), (x.shape, lengths.shape)
        s, out = self.s, x.clone()
        for i, n in enumerate(lengths.tolist()):
            if torch.rand(1, generator=self.g).item() >= s.p or n < 2:
                continue
            u = out[i, :n]
            if s.time_warp and n > 2 * s.time_warp:
                u = time_warp(u, factor=s.time_warp)
            fill = u.mean()
            for _ in range(s.num_freq_masks):
                w = self._rand(min(s.freq_mask_width, u.shape[1] - 1))
                f0 = self._rand(u.shape[1] - w)
                u[:, f0:f0 + w] = fill
            budget = int(s.max_frames_fraction * n)
            count = min(s.num_time_masks, -(-budget // max(s.time_mask_width, 1)))
            width = min(s.time_mask_width, budget // max(count, 1))
            for _ in range(count):
                w = self._rand(width)
                t0 = self._rand(n - w)
                u[t0:t0 + w] = fill
            out[i, :n] = u
        return out


# ----- speed perturbation on features ----------------------------------------------------------
def _mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def _inv_mel(mel: np.ndarray) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


class SpeedPerturb:
    """Speed perturbation (Ko et al., Interspeech 2015: Kaldi's 0.9 / 1.0 / 1.1) done on log-mel
    features, so cached features stay usable and no audio is decoded again.

    Playing audio ``f`` times faster shortens it by ``f`` and moves every frequency up by ``f``
    (pitch and formants, as a shorter vocal tract would: it stands in for a voice the corpus
    lacks). Both are resampling: frames by linear interpolation at ``t * f``, and each mel bin
    by linear interpolation of the log energy at the bin centre's frequency divided by ``f``
    (past the top or bottom bin, the edge bin). Per utterance, with probability ``p``, ``f`` is
    drawn uniformly from ``factors``; the frame count changes, so the batch is padded after it.
    """

    def __init__(self, p: float = 0.5, factors: tuple[float, float] = (0.9, 1.1),
                 seed: int | None = None, settings: FbankSettings = DEFAULT_FBANK) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"speed perturbation probability must be in [0, 1], got {p}")
        lo, hi = factors
        if not 0.5 <= lo <= hi <= 2.0:
            raise ValueError(f"speed factors must satisfy 0.5 <= low <= high <= 2, got {factors}")
        self.p, self.factors = p, (float(lo), float(hi))
        self.rng = np.random.default_rng(seed)
        nyquist = settings.sample_rate / 2
        high = settings.high_freq if settings.high_freq > 0 else nyquist + settings.high_freq
        m_lo, m_hi = _mel(settings.low_freq), _mel(high)
        n = settings.num_mel_bins
        # Kaldi's bin centres: n + 2 equally spaced mel points, the inner n
        self.centres_hz = _inv_mel(m_lo + (m_hi - m_lo) * np.arange(1, n + 1) / (n + 1))
        self._m_lo, self._step = m_lo, (m_hi - m_lo) / (n + 1)

    def pick(self) -> float | None:
        """The next utterance's factor, or None (left as it is)."""
        if self.rng.random() >= self.p:
            return None
        return float(self.rng.uniform(*self.factors))

    def __call__(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        """x: (T, F) log-mel of one utterance -> (round(T / factor), F)."""
        t, n = x.shape
        # frequency: the new bin k holds what the original had at centre_k / factor
        pos = (_mel(self.centres_hz / factor) - self._m_lo) / self._step - 1.0
        pos = torch.as_tensor(np.clip(pos, 0.0, n - 1.0), dtype=torch.float32)
        i0 = pos.floor().long().clamp(max=n - 2)
        w = pos - i0
        y = x[:, i0] * (1 - w) + x[:, i0 + 1] * w
        # time: the new frame j is the original at j * factor
        t_new = max(1, int(round(t / factor)))
        tpos = torch.clamp(torch.arange(t_new, dtype=torch.float32) * factor, max=t - 1.0)
        j0 = tpos.floor().long().clamp(max=max(t - 2, 0))
        wt = (tpos - j0)[:, None]
        j1 = (j0 + 1).clamp(max=t - 1)
        return y[j0] * (1 - wt) + y[j1] * wt


def split_features(corpus: Path, split: str, progress: bool = False):
    """Cached-feature cuts of one split; workers side by side compute a cache once."""
    from engine.locks import file_lock

    with file_lock(corpus / ".prepare.lock"):
        return compute_features(corpus, split, progress=progress)
